# SiDT search of the toy CIFAR-100 classifier (sidt-dense_cls_vit-toy-p4_linear_6e_toy-cifar100.py),
# starting from the trained dense toy model: masks on attention head dims and MLP units and
# the sparsity loss, with lambdas and a mask lr large enough for a few CPU epochs to rank the
# dims (the recipe of the full-size configs, shortened). `make demo-cifar` runs it:
#   python tools/train.py $CFG --cfg-options load_from=DENSE_WORK/epoch_6.pth
#   python tools/export_subnet.py $CFG $WORK/epoch_2.pth --keep-ratio 0.6 -o $WORK/export
_base_ = './sidt-dense_cls_vit-toy-p4_linear_6e_toy-cifar100.py'

model = dict(
    type='mmdet.SIDTModel',
    model_type='ImageClassifier',
    sparsity=dict(keep_ratio=0.6, lambda_attn=1e-3, lambda_mlp=1e-3, keep_threshold=0.05),
    backbone=dict(mode='search', search_dims=('attn', 'mlp')))
load_from = 'work_dirs/sidt-dense_cls_vit-toy-p4_linear_6e_toy-cifar100/epoch_6.pth'

optim_wrapper = dict(optimizer=dict(lr=1e-3), paramwise_cfg=dict(mask_lr=1e-2))
max_epochs = 2
param_scheduler = [
    dict(type='CosineAnnealingLR', by_epoch=True, begin=0, end=max_epochs, eta_min=1e-5,
         convert_to_iter_based=True),
]
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
default_hooks = dict(checkpoint=dict(interval=max_epochs))
# stop at once, naming the layer, if a mask goes NaN/Inf (before a checkpoint is saved)
custom_hooks = [dict(type='mmdet.SIDTMaskCheckHook')]
# The selection this search is for: tools/export_subnet.py CONFIG CKPT -o OUT exports at it
# (a budget flag replaces the budget, any other flag its setting).
sidt_export = dict(keep_ratio=0.6)
