# Retrain stage of the hard-preset toy Mask R-CNN: the pruned backbone from a subnet file
# and the sliced weights of its export DIR:
#   --cfg-options model.backbone.subnet=DIR/subnet.json load_from=DIR/pruned.pth
_base_ = './sidt-dense_mask-rcnn_sidtvit-toy_simplefpn_100it_toy-coco-hard.py'
default_scope = 'mmdet'

export_dir = ('work_dirs/sidt-search_mask-rcnn_sidtvit-toy-kr0.6_simplefpn_100it_'
              'toy-coco-hard/export')
model = dict(
    type='SIDTModel',
    model_type='MaskRCNN',
    backbone=dict(mode='pruned', subnet=export_dir + '/subnet.json', init_cfg=None))
load_from = export_dir + '/pruned.pth'
