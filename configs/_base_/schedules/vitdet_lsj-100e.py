# ViTDet's schedule (detectron2 model zoo; mmdet projects/ViTDet): 100 epochs of COCO as
# 184,375 iterations at batch 64 (16 GPUs x 4), AdamW lr 1e-4, weight decay 0.1, layer-wise
# lr decay 0.7 for ViT-B (0.8 L, 0.9 H), 250 warm-up iterations, lr x0.1 at 88.9% and 96.3%.
# Mixed precision as ViTDet (GPU only; use --cfg-options optim_wrapper.type=OptimWrapper
# on CPU).
_base_ = 'mmdet::_base_/default_runtime.py'

max_iters = 184375
interval = 5000
train_cfg = dict(
    type='IterBasedTrainLoop',
    max_iters=max_iters,
    val_interval=interval,
    dynamic_intervals=[(max_iters // interval * interval + 1, max_iters)])
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')

optim_wrapper = dict(
    type='AmpOptimWrapper',
    constructor='SIDTLayerDecayOptimWrapperConstructor',
    paramwise_cfg=dict(layer_decay_rate=0.7),
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.1))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=250),
    dict(type='MultiStepLR', begin=0, end=max_iters, by_epoch=False,
         milestones=[163889, 177546], gamma=0.1),
]

default_hooks = dict(
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, save_last=True, interval=interval,
                    max_keep_ckpts=5))
log_processor = dict(type='LogProcessor', window_size=50, by_epoch=False)
# The learning rate above is for 64 images per iteration (tools/train.py --auto-scale-lr).
auto_scale_lr = dict(enable=False, base_batch_size=64)
