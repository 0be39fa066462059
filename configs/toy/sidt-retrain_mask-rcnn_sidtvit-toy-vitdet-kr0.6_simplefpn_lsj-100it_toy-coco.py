# SiDT retrain stage of the toy ViTDet recipe: the backbone rebuilt, pruned (heads, MLP and
# embedding widths), from the subnet file; SIDTModel narrows the simple pyramid's input layers
# to the kept embedding width, so the exported checkpoint loads with no missing or unexpected
# keys. Both files default to the export of the search config of the same name; for another
# directory DIR:
#   python tools/train.py $CFG \
#       --cfg-options model.backbone.subnet=DIR/subnet.json load_from=DIR/pruned.pth
_base_ = './sidt-dense_mask-rcnn_sidtvit-toy-vitdet_simplefpn_lsj-100it_toy-coco.py'
custom_imports = dict(imports=['sidt_mmdet'], allow_failed_imports=False)
default_scope = 'mmdet'

export_dir = ('work_dirs/sidt-search_mask-rcnn_sidtvit-toy-vitdet-kr0.6_simplefpn_lsj-100it_'
              'toy-coco/export')
model = dict(
    type='SIDTModel',
    model_type='MaskRCNN',
    backbone=dict(mode='pruned', subnet=export_dir + '/subnet.json', init_cfg=None))
load_from = export_dir + '/pruned.pth'
