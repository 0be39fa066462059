# mmdet's 1x schedule (12 epochs, steps at 8 and 11, batch 16 = 8 GPUs x 2) with ViTDet's
# optimizer: AdamW lr 1e-4, weight decay 0.1, layer-wise lr decay 0.7 (ViT-B). The
# constructor puts 1-D parameters, position embeddings and rel-pos tables in no-decay groups
# and search masks (if any) in a group of their own.
_base_ = 'mmdet::_base_/schedules/schedule_1x.py'

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    constructor='SIDTLayerDecayOptimWrapperConstructor',
    paramwise_cfg=dict(layer_decay_rate=0.7),
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.1))
