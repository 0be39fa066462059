# SiDT search stage on COCO (docs/method.md section 1): ViT-Slim's lambdas, the masks in their
# own optimizer group (lr 5e-4, no weight decay), 4 epochs at constant lr after a 500-iteration
# warm-up. A variable, not model/train_cfg keys: mmengine refuses a key that two bases both
# define, and the dense base defines them (see configs/README.md). The search configs
# reference it as {{_base_.sidt_search.<key>}}.
sidt_search = dict(
    sparsity=dict(keep_ratio=0.6,  # the export ratio: sparsity_cut_*/done_* figures
                  lambda_attn=2e-4, lambda_mlp=5e-5, keep_threshold=0.05),
    # every weight comes from load_from (the dense detector); the masks start at 1.0
    backbone=dict(mode='search', search_dims=('attn', 'mlp'), init_cfg=None),
    train_cfg=dict(max_epochs=4, val_interval=4),
    param_scheduler=[
        dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    ],
    optim_wrapper=dict(paramwise_cfg=dict(mask_lr=5e-4)),
)
# Not in the dense bases, so a plain key: stop at once, naming the layer, if a mask goes
# NaN/Inf (runs before the CheckpointHook, so no checkpoint of it is saved).
custom_hooks = [dict(type='SIDTMaskCheckHook')]
# The selection this search is for: tools/export_subnet.py CONFIG CKPT -o OUT exports at it
# (a budget flag replaces the budget, any other flag its setting).
sidt_export = dict(keep_ratio=0.6)
