# SiDT search of the ViT-tiny p4 CIFAR-100 classifier: the dense config with learnable masks
# (initialised to 1) on every attention head dim and MLP hidden unit, and the sparsity loss
# lambda_attn*sum|m_attn| + lambda_mlp*sum|m_mlp| (docs/method.md section 1; ViT-Slim's DeiT-S
# lambdas). It starts from the trained dense model (load_from) and keeps training the weights
# with the masks; masks get their own optimizer group (constant-ratio lr, no weight decay).
# Logged: loss_sparsity, sparsity_mean_abs_{attn,mlp}, sparsity_kept_{attn,mlp}.
# kr0.6: the keep ratio it is exported at; the retrain config of that name reads the export.
# CFG = this file, WORK = work_dirs/<its name without .py>:
#   python tools/train.py $CFG
#   python tools/export_subnet.py $CFG $WORK/epoch_50.pth --keep-ratio 0.6 -o $WORK/export
#   (or --params 3.2M / --macs 200M: a backbone params / MACs-per-image target at 32x32)
# For another dense checkpoint: --cfg-options load_from=PATH; from scratch: load_from=None.
_base_ = './sidt-dense_cls_vit-tiny-p4_linear_200e_cifar100.py'

model = dict(
    type='mmdet.SIDTModel',
    model_type='ImageClassifier',
    sparsity=dict(keep_ratio=0.6, lambda_attn=2e-4, lambda_mlp=5e-5, keep_threshold=0.05),
    backbone=dict(mode='search', search_dims=('attn', 'mlp')))
load_from = 'work_dirs/sidt-dense_cls_vit-tiny-p4_linear_200e_cifar100/epoch_200.pth'

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
