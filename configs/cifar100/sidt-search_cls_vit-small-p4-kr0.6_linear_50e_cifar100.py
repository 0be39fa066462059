# SiDT search of the ViT-small p4 CIFAR-100 classifier, from the trained dense model; see
# sidt-search_cls_vit-tiny-p4-kr0.6_linear_50e_cifar100.py for the stages and commands.
#   python tools/train.py $CFG
#   python tools/export_subnet.py $CFG $WORK/epoch_50.pth --keep-ratio 0.6 -o $WORK/export
_base_ = './sidt-dense_cls_vit-small-p4_linear_200e_cifar100.py'

model = dict(
    type='mmdet.SIDTModel',
    model_type='ImageClassifier',
    sparsity=dict(keep_ratio=0.6, lambda_attn=2e-4, lambda_mlp=5e-5, keep_threshold=0.05),
    backbone=dict(mode='search', search_dims=('attn', 'mlp')))
load_from = 'work_dirs/sidt-dense_cls_vit-small-p4_linear_200e_cifar100/epoch_200.pth'

optim_wrapper = dict(optimizer=dict(lr=5e-4), paramwise_cfg=dict(mask_lr=5e-4))
max_epochs = 50
param_scheduler = [
    dict(type='CosineAnnealingLR', by_epoch=True, begin=0, end=max_epochs, eta_min=1e-5,
         convert_to_iter_based=True),
]
train_cfg = dict(max_epochs=max_epochs, val_interval=10)
# stop at once, naming the layer, if a mask goes NaN/Inf (before a checkpoint is saved)
custom_hooks = [dict(type='mmdet.SIDTMaskCheckHook')]
# The selection this search is for: tools/export_subnet.py CONFIG CKPT -o OUT exports at it
# (a budget flag replaces the budget, any other flag its setting).
sidt_export = dict(keep_ratio=0.6)
