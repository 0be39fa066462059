# Retrain stage of the quarter-width toy Mask R-CNN on the hard toy COCO preset: the pruned
# backbone from the search config's export directory.
_base_ = './sidt-dense_mask-rcnn_sidtvit-toy-xs_simplefpn_100it_toy-coco-hard.py'
default_scope = 'mmdet'

export_dir = ('work_dirs/sidt-search_mask-rcnn_sidtvit-toy-xs-kr0.6_simplefpn_100it_'
              'toy-coco-hard/export')
model = dict(
    type='SIDTModel',
    model_type='MaskRCNN',
    backbone=dict(mode='pruned', subnet=export_dir + '/subnet.json', init_cfg=None))
load_from = export_dir + '/pruned.pth'
