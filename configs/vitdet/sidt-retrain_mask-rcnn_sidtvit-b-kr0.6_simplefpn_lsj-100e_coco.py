# Retrain stage (configs/vitdet/README.md): reads the export of the search config
# of the same name; for another export DIR add --cfg-options
#   model.backbone.subnet=DIR/subnet.json load_from=DIR/pruned.pth
_base_ = './sidt-dense_mask-rcnn_sidtvit-b_simplefpn_lsj-100e_coco.py'
default_scope = 'mmdet'

export_dir = 'work_dirs/sidt-search_mask-rcnn_sidtvit-b-kr0.6_simplefpn_lsj-25e_coco/export'
model = dict(
    type='SIDTModel',
    model_type='MaskRCNN',
    backbone=dict(mode='pruned', subnet=export_dir + '/subnet.json', init_cfg=None))
load_from = export_dir + '/pruned.pth'
