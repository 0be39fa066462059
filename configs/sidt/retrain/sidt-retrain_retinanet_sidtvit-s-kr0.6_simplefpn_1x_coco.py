# Retrain stage (configs/sidt/README.md): reads the export of the search config
# of the same name; for another export DIR add --cfg-options
#   model.backbone.subnet=DIR/subnet.json load_from=DIR/pruned.pth
_base_ = '../../vit/sidt-dense_retinanet_sidtvit-s_simplefpn_1x_coco.py'
default_scope = 'mmdet'

export_dir = 'work_dirs/sidt-search_retinanet_sidtvit-s-kr0.6_simplefpn_4e_coco/export'
model = dict(
    type='SIDTModel',
    model_type='RetinaNet',
    backbone=dict(mode='pruned', subnet=export_dir + '/subnet.json', init_cfg=None))
load_from = export_dir + '/pruned.pth'
