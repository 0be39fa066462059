# SiDT retrain stage of the toy CIFAR-100 classifier, from the export of the search config
# of the same name (subnet.json + pruned.pth); `make demo-cifar` runs it:
#   python tools/train.py $CFG \
#       --cfg-options model.backbone.subnet=DIR/subnet.json load_from=DIR/pruned.pth
#   python tools/test.py $CFG WORK/epoch_4.pth --cfg-options model.backbone.subnet=DIR/subnet.json
_base_ = './sidt-dense_cls_vit-toy-p4_linear_6e_toy-cifar100.py'

export_dir = 'work_dirs/sidt-search_cls_vit-toy-p4-kr0.6_linear_2e_toy-cifar100/export'
model = dict(
    type='mmdet.SIDTModel',
    model_type='ImageClassifier',
    backbone=dict(mode='pruned', subnet=export_dir + '/subnet.json', init_cfg=None))
load_from = export_dir + '/pruned.pth'

optim_wrapper = dict(optimizer=dict(lr=1e-3))
max_epochs = 4
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-2, by_epoch=True, begin=0, end=1,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', by_epoch=True, begin=1, end=max_epochs, eta_min=1e-5,
         convert_to_iter_based=True),
]
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
default_hooks = dict(checkpoint=dict(interval=max_epochs))
