# SiDT retrain stage of the ViT-small p4 CIFAR-100 classifier from the export of the search
# config of the same name; see sidt-retrain_cls_vit-tiny-p4-kr0.6_linear_100e_cifar100.py.
#   python tools/train.py $CFG \
#       --cfg-options model.backbone.subnet=DIR/subnet.json load_from=DIR/pruned.pth
_base_ = './sidt-dense_cls_vit-small-p4_linear_200e_cifar100.py'

export_dir = 'work_dirs/sidt-search_cls_vit-small-p4-kr0.6_linear_50e_cifar100/export'
model = dict(
    type='mmdet.SIDTModel',
    model_type='ImageClassifier',
    backbone=dict(mode='pruned', subnet=export_dir + '/subnet.json', init_cfg=None))
load_from = export_dir + '/pruned.pth'

optim_wrapper = dict(optimizer=dict(lr=5e-4))
max_epochs = 100
warmup_epochs = 5
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-2, by_epoch=True, begin=0, end=warmup_epochs,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', by_epoch=True, begin=warmup_epochs, end=max_epochs,
         eta_min=1e-5, convert_to_iter_based=True),
]
train_cfg = dict(max_epochs=max_epochs)
