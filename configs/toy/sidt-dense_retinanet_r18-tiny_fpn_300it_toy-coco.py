# A dense RetinaNet small enough to train on CPU in minutes: ResNet-18 at a quarter of its
# width, FPN and head at 32 channels, toy COCO images of at most 160 px
# (tools/dataset/make_toy_coco.py). It exercises the real mmdet/mmengine paths (Runner,
# CocoDataset, CocoMetric, checkpoints, resume, DDP) without a GPU, downloads or COCO.
_base_ = [
    'mmdet::_base_/models/retinanet_r50_fpn.py',
    '../_base_/datasets/toy-coco_detection.py',
    'mmdet::_base_/default_runtime.py',
]
custom_imports = dict(imports=['sidt_mmdet'], allow_failed_imports=False)

model = dict(
    backbone=dict(depth=18, base_channels=16, frozen_stages=-1, norm_eval=False,
                  init_cfg=None),  # no pretrained download: trained from scratch
    neck=dict(in_channels=[16, 32, 64, 128], out_channels=32),
    bbox_head=dict(num_classes=4, in_channels=32, feat_channels=32,
                   stacked_convs=2))

# The toy COCO data (data root, pipelines) come from the shared base; larger batches here.
train_dataloader = dict(batch_size=4)
val_dataloader = dict(batch_size=4)
test_dataloader = val_dataloader

max_iters = 300
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters,
                 val_interval=max_iters)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
optim_wrapper = dict(type='OptimWrapper',
                     optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.05),
                     clip_grad=dict(max_norm=10, norm_type=2))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=20),
    dict(type='CosineAnnealingLR', by_epoch=False, begin=20, end=max_iters, eta_min=1e-5),
]
auto_scale_lr = dict(enable=False, base_batch_size=4)

default_hooks = dict(
    logger=dict(interval=10),
    checkpoint=dict(by_epoch=False, interval=100, max_keep_ckpts=2))
log_processor = dict(by_epoch=False)
# gloo so that dist_train.sh runs on CPU; tools/*.py accept SIDT_DIST_BACKEND=nccl on GPUs.
env_cfg = dict(dist_cfg=dict(backend='gloo'))
