# SiDT retrain stage of the toy Faster R-CNN: the dense toy config with the backbone rebuilt,
# pruned, from the subnet file of the search stage, starting from the pruned checkpoint that
# tools/export_subnet.py wrote beside it (it loads with no missing or unexpected keys; the
# neck's input width follows the subnet's embedding width through SIDTModel). Both files
# default to the export of the search config of the same name; for another directory DIR:
#   python tools/train.py $CFG \
#       --cfg-options model.backbone.subnet=DIR/subnet.json load_from=DIR/pruned.pth
#   python tools/test.py $CFG CHECKPOINT --cfg-options model.backbone.subnet=DIR/subnet.json
# (mmdet's own tools/test.py works the same way).
_base_ = './sidt-dense_faster-rcnn_sidtvit-toy_simplefpn_100it_toy-coco.py'
custom_imports = dict(imports=['sidt_mmdet'], allow_failed_imports=False)
default_scope = 'mmdet'

export_dir = 'work_dirs/sidt-search_faster-rcnn_sidtvit-toy-kr0.6_simplefpn_100it_toy-coco/export'
model = dict(
    type='SIDTModel',
    model_type='FasterRCNN',
    backbone=dict(mode='pruned', subnet=export_dir + '/subnet.json', init_cfg=None))
load_from = export_dir + '/pruned.pth'
