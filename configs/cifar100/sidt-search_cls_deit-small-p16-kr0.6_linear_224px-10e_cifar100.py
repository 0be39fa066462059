# SiDT search of the fine-tuned DeiT-small CIFAR-100 classifier at 224: masks on attention
# head dims and MLP units + the sparsity loss, starting from the dense fine-tuned model
# (load_from; the ImageNet init_cfg is not needed then). Stages as in
# sidt-search_cls_vit-tiny-p4-kr0.6_linear_50e_cifar100.py:
#   python tools/train.py $CFG
#   python tools/export_subnet.py $CFG $WORK/epoch_10.pth --keep-ratio 0.6 -o $WORK/export
#   (or --macs 2.5G: a backbone MACs-per-image target at 224x224)
# To search straight from the ImageNet weights instead: --cfg-options load_from=None
#   model.backbone.init_cfg.type=Pretrained model.backbone.init_cfg.checkpoint=PATH
_base_ = './sidt-dense_cls_deit-small-p16_linear_224px-30e_cifar100.py'

model = dict(
    type='mmdet.SIDTModel',
    model_type='ImageClassifier',
    sparsity=dict(keep_ratio=0.6, lambda_attn=2e-4, lambda_mlp=5e-5, keep_threshold=0.05),
    backbone=dict(mode='search', search_dims=('attn', 'mlp'), init_cfg=None))
load_from = 'work_dirs/sidt-dense_cls_deit-small-p16_linear_224px-30e_cifar100/epoch_30.pth'

optim_wrapper = dict(optimizer=dict(lr=5e-5), paramwise_cfg=dict(mask_lr=5e-4))
max_epochs = 10
param_scheduler = [
    dict(type='CosineAnnealingLR', by_epoch=True, begin=0, end=max_epochs, eta_min=1e-6,
         convert_to_iter_based=True),
]
train_cfg = dict(max_epochs=max_epochs, val_interval=5)
# stop at once, naming the layer, if a mask goes NaN/Inf (before a checkpoint is saved)
custom_hooks = [dict(type='mmdet.SIDTMaskCheckHook')]
# The selection this search is for: tools/export_subnet.py CONFIG CKPT -o OUT exports at it
# (a budget flag replaces the budget, any other flag its setting).
sidt_export = dict(keep_ratio=0.6)
