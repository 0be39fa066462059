# SiDT search on the hard toy CIFAR-100 preset, from the trained dense model of
# sidt-dense_cls_vit-toy-p4_linear_12e_toy-cifar100-hard.py: the recipe of the easy toy search
# (masks on attention head dims and MLP units, L1 sparsity, mask lr 1e-2), for about 10% of
# the dense iterations (374 of 3,756). The studies (sidt_mmdet/studies/) set their own
# lengths as fractions of the dense run.
_base_ = './sidt-dense_cls_vit-toy-p4_linear_12e_toy-cifar100-hard.py'

model = dict(
    type='mmdet.SIDTModel',
    model_type='ImageClassifier',
    sparsity=dict(lambda_attn=1e-3, lambda_mlp=1e-3, keep_threshold=0.05),
    backbone=dict(mode='search', search_dims=('attn', 'mlp')))
load_from = 'work_dirs/sidt-dense_cls_vit-toy-p4_linear_12e_toy-cifar100-hard/epoch_12.pth'

optim_wrapper = dict(optimizer=dict(lr=1e-3), paramwise_cfg=dict(mask_lr=1e-2))
search_iters = 374
train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=search_iters,
                 val_interval=search_iters)
param_scheduler = [
    dict(type='CosineAnnealingLR', by_epoch=False, begin=0, end=search_iters, eta_min=1e-5),
]
default_hooks = dict(checkpoint=dict(by_epoch=False, interval=search_iters))
log_processor = dict(by_epoch=False)
# The selection this search is for: tools/export_subnet.py CONFIG CKPT -o OUT exports at it
# (a budget flag replaces the budget, any other flag its setting).
sidt_export = dict(keep_ratio=0.6)
