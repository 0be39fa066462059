# SiDT search stage of the ViTDet recipe (docs/method.md sections 1 and 4): attention, MLP and
# embedding masks with a MACs-weighted sparsity loss at 1024x1024, a quarter of the dense
# schedule (46,094 iterations) at constant lr after a 250-iteration warm-up, masks in their own
# optimizer group. A variable, not model/train_cfg keys: mmengine refuses a key that two bases
# both define (see configs/README.md).
sidt_search = dict(
    sparsity=dict(keep_ratio=0.6,  # the export ratio: sparsity_cut_*/done_* figures
                  lambda_attn=2e-4, lambda_mlp=5e-5, lambda_embed=2e-4, macs_weighted=True,
                  input_size=(1024, 1024), keep_threshold=0.05),
    # every weight comes from load_from (the dense detector); the masks start at 1.0
    backbone=dict(mode='search', search_dims=('attn', 'mlp', 'embed'), init_cfg=None),
    train_cfg=dict(max_iters=46094, dynamic_intervals=None),
    param_scheduler=[
        dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=250),
    ],
    optim_wrapper=dict(paramwise_cfg=dict(mask_lr=5e-4)),
)
# Not in the dense bases, so a plain key: stop at once, naming the layer, if a mask goes
# NaN/Inf (runs before the CheckpointHook, so no checkpoint of it is saved).
custom_hooks = [dict(type='SIDTMaskCheckHook')]
# The selection this search is for: tools/export_subnet.py CONFIG CKPT -o OUT exports at it
# (a budget flag replaces the budget, any other flag its setting).
sidt_export = dict(keep_ratio=0.6)
