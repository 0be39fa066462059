# Dense baseline: ViT-tiny (192 wide, 12 blocks, 3 heads) on 32x32 CIFAR-100 with 4x4 patches
# (64 tokens + a class token), trained from scratch through mmpretrain's ImageClassifier.
#
# Registry: SIDTViT and SIDTModel are registered in mmdet's MODELS only, and mmpretrain
# configs reach them across scopes as type='mmdet.SIDTViT' / type='mmdet.SIDTModel'
# (likewise 'mmdet.SIDTLayerDecayOptimWrapperConstructor'). One registration means one name
# and one class for both frameworks, and `import sidt_mmdet` needs nothing from mmpretrain's
# registry to register the backbone; everything else here (ImageClassifier, LinearClsHead,
# CIFAR100, Accuracy) resolves in mmpretrain, the default scope of these configs.
#
# Data: data/cifar100/cifar-100-python/{train,test,meta} from the official archive
# (https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz), read by mmpretrain's stock
# CIFAR100, which checks their md5. download=False keeps an offline run from trying the
# network: pass `--cfg-options train_dataloader.dataset.download=True` to fetch it.
# Stages: this config -> sidt-search_... (sparsity search) -> tools/export_subnet.py
# (subnet.json + pruned checkpoint) -> sidt-retrain_... -> tools/test.py (top-1/top-5).
_base_ = [
    'mmpretrain::_base_/datasets/cifar100_bs16.py',
    'mmpretrain::_base_/schedules/cifar10_bs128.py',
    'mmpretrain::_base_/default_runtime.py',
]
# sidt_mmdet.datasets.toy_cifar100 registers ToyCIFAR100 (an mmpretrain dataset, which
# `import sidt_mmdet` alone leaves out).
custom_imports = dict(imports=['sidt_mmdet', 'sidt_mmdet.datasets.toy_cifar100'],
                      allow_failed_imports=False)

data_root = 'data/cifar100/'
num_classes = 100
embed_dims = 192

model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='mmdet.SIDTViT',
        arch='tiny',
        patch_size=4,
        img_size=32,
        with_cls_token=True,
        final_norm=True,
        out_type='cls_token',
        drop_path_rate=0.1),
    neck=None,
    head=dict(
        type='LinearClsHead',
        num_classes=num_classes,
        in_channels=embed_dims,  # SIDTModel (search/retrain) resizes it to the kept width
        loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
        topk=(1, 5)),
)

train_dataloader = dict(
    batch_size=128,
    num_workers=2,
    persistent_workers=True,
    dataset=dict(data_root=data_root, download=False))
val_dataloader = dict(
    batch_size=256,
    num_workers=2,
    persistent_workers=True,
    dataset=dict(data_root=data_root, download=False))
test_dataloader = val_dataloader
val_evaluator = dict(type='Accuracy', topk=(1, 5))
test_evaluator = val_evaluator

# AdamW with warmup + cosine, the usual recipe for ViTs trained from scratch on CIFAR.
# The SIDT constructor (layer_decay_rate 1.0 here: no decay) keeps norms, biases, cls_token
# and pos_embed out of weight decay, and gives search masks their own group without it.
optim_wrapper = dict(
    optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.05, betas=(0.9, 0.999),
                   _delete_=True),
    constructor='mmdet.SIDTLayerDecayOptimWrapperConstructor',
    paramwise_cfg=dict(layer_decay_rate=1.0),
    clip_grad=dict(max_norm=5.0))
max_epochs = 200
warmup_epochs = 10
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=True, begin=0, end=warmup_epochs,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', by_epoch=True, begin=warmup_epochs, end=max_epochs,
         eta_min=1e-5),
]
train_cfg = dict(by_epoch=True, max_epochs=max_epochs, val_interval=10)
auto_scale_lr = dict(base_batch_size=128)

default_hooks = dict(
    logger=dict(type='LoggerHook', interval=50),
    checkpoint=dict(type='CheckpointHook', interval=10, max_keep_ckpts=2))
randomness = dict(seed=0, deterministic=False)
