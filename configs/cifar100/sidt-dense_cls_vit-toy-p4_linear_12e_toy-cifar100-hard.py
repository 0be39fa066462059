# Dense baseline on the HARD generated CIFAR-100 preset (tools/dataset/make_toy_cifar100.py
# --preset hard: shape x texture x colour of the largest object among distractors and clutter,
# 20000 train / 10000 test images), with the same toy ViT as the easy set. The studies
# (sidt_mmdet/studies/) compare pruning methods on it: the toy ViT learns it only partly and
# a narrower one less, so a worse selection shows as a lower top-1.
#
# Schedule, calibrated once for the set (not per method): 12 epochs (3,756 iterations of 64),
# one epoch of warmup, then cosine; about 7 minutes on one CPU thread.
_base_ = './sidt-dense_cls_vit-toy-p4_linear_6e_toy-cifar100.py'

data_root = 'data/toy_cifar100_hard/'
train_dataloader = dict(dataset=dict(data_root=data_root))
val_dataloader = dict(dataset=dict(data_root=data_root))
test_dataloader = val_dataloader

max_epochs = 12
warmup_epochs = 1
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-2, by_epoch=True, begin=0, end=warmup_epochs,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', by_epoch=True, begin=warmup_epochs, end=max_epochs,
         eta_min=1e-5, convert_to_iter_based=True),
]
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
default_hooks = dict(logger=dict(interval=50),
                     checkpoint=dict(interval=max_epochs, max_keep_ckpts=1))
