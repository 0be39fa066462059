# Dense baseline on the generated toy CIFAR-100 (tools/dataset/make_toy_cifar100.py, the real
# pickle format, 5000 train / 1000 test images by default) with a ViT small enough for a CPU:
# 64 wide, 4 blocks, 2 heads of 32, MLP 256, 4x4 patches on 32x32 images (65 tokens). Used by
# `make demo-cifar`, tests/test_cifar100.py and tools/analysis/cifar_prune_benchmark.py; the
# recipe is the ViT-tiny one (sidt-dense_cls_vit-tiny-p4_linear_200e_cifar100.py, see its header for
# the registry choice), shortened.
#
# Data: ToyCIFAR100 is mmpretrain's CIFAR100 without the md5 check of the official archive
# (sidt_mmdet/datasets/toy_cifar100.py); a data root without cifar-100-python/ is an error
# naming the missing file.
_base_ = './sidt-dense_cls_vit-tiny-p4_linear_200e_cifar100.py'

data_root = 'data/toy_cifar100/'
embed_dims = 64

model = dict(
    backbone=dict(
        arch=dict(embed_dims=embed_dims, num_layers=4, num_heads=2, mlp_ratio=4.0,
                  _delete_=True),
        drop_path_rate=0.0),
    head=dict(in_channels=embed_dims))

# Each toy class is a grating whose orientation is part of the label: no horizontal flip.
train_pipeline = [
    dict(type='RandomCrop', crop_size=32, padding=4),
    dict(type='PackInputs'),
]
test_pipeline = [dict(type='PackInputs')]
# Worker processes cost more than they save on 32x32 arrays held in memory.
train_dataloader = dict(
    batch_size=64,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(type='ToyCIFAR100', data_root=data_root, pipeline=train_pipeline,
                 _delete_=True, split='train'))
val_dataloader = dict(
    batch_size=200,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(type='ToyCIFAR100', data_root=data_root, pipeline=test_pipeline,
                 _delete_=True, split='test'))
test_dataloader = val_dataloader

optim_wrapper = dict(optimizer=dict(lr=2e-3))
max_epochs = 6
warmup_epochs = 1
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-2, by_epoch=True, begin=0, end=warmup_epochs,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', by_epoch=True, begin=warmup_epochs, end=max_epochs,
         eta_min=1e-5, convert_to_iter_based=True),
]
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
auto_scale_lr = dict(base_batch_size=64)
default_hooks = dict(
    logger=dict(interval=20),
    checkpoint=dict(interval=max_epochs, max_keep_ckpts=1))
