# SiDT retrain stage of the DeiT-small CIFAR-100 classifier at 224, from the export of the
# search config of the same name (subnet.json + pruned.pth); see
# sidt-retrain_cls_vit-tiny-p4-kr0.6_linear_100e_cifar100.py.
#   python tools/train.py $CFG \
#       --cfg-options model.backbone.subnet=DIR/subnet.json load_from=DIR/pruned.pth
_base_ = './sidt-dense_cls_deit-small-p16_linear_224px-30e_cifar100.py'

export_dir = 'work_dirs/sidt-search_cls_deit-small-p16-kr0.6_linear_224px-10e_cifar100/export'
model = dict(
    type='mmdet.SIDTModel',
    model_type='ImageClassifier',
    backbone=dict(mode='pruned', subnet=export_dir + '/subnet.json', init_cfg=None))
load_from = export_dir + '/pruned.pth'
