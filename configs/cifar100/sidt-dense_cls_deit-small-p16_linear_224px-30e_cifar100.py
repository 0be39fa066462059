# Dense baseline: fine-tune ImageNet DeiT-small (timm/DeiT weights, 384 wide, 12 blocks,
# 6 heads, 16x16 patches) on CIFAR-100 resized to 224x224 (196 tokens + a class token).
# SIDTViT converts the timm/DeiT checkpoint on load (its head is dropped; a new 100-class
# LinearClsHead is trained). Registry choice and data layout: see
# sidt-dense_cls_vit-tiny-p4_linear_200e_cifar100.py. With no network, download the weights first
# and point at the file:
#   --cfg-options model.backbone.init_cfg.checkpoint=checkpoints/deit_small_patch16_224-cd65a155.pth
# Layer-wise lr decay (0.75) through SIDTLayerDecayOptimWrapperConstructor.
_base_ = './sidt-dense_cls_vit-tiny-p4_linear_200e_cifar100.py'

embed_dims = 384
img_size = 224
model = dict(
    backbone=dict(
        arch='small',
        patch_size=16,
        img_size=img_size,
        drop_path_rate=0.1,
        init_cfg=dict(
            type='Pretrained',
            checkpoint='https://dl.fbaipublicfiles.com/deit/deit_small_patch16_224-cd65a155.pth')),
    head=dict(in_channels=embed_dims))
# The ImageNet statistics the DeiT weights were trained with.
data_preprocessor = dict(
    num_classes=100,
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    to_rgb=False)

train_pipeline = [
    dict(type='RandomCrop', crop_size=32, padding=4),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='Resize', scale=(img_size, img_size), interpolation='bicubic'),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='Resize', scale=(img_size, img_size), interpolation='bicubic'),
    dict(type='PackInputs'),
]
train_dataloader = dict(batch_size=64, dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(batch_size=128, dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

optim_wrapper = dict(
    optimizer=dict(lr=1e-4, weight_decay=0.05),
    paramwise_cfg=dict(layer_decay_rate=0.75),
    clip_grad=dict(max_norm=5.0))
max_epochs = 30
warmup_epochs = 2
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=True, begin=0, end=warmup_epochs,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', by_epoch=True, begin=warmup_epochs, end=max_epochs,
         eta_min=1e-6, convert_to_iter_based=True),
]
train_cfg = dict(max_epochs=max_epochs, val_interval=5)
auto_scale_lr = dict(base_batch_size=64)
default_hooks = dict(checkpoint=dict(interval=5))
