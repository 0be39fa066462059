# SiDT search stage of the toy detectors (docs/method.md section 1): lambdas larger than
# COCO's (~1e-4) so that 100 iterations show the pull, masks in their own optimizer group
# (lr 1e-2, no weight decay); the dense toy schedule. A variable, not model keys: mmengine
# refuses a key that two bases both define (see configs/README.md).
sidt_search = dict(
    sparsity=dict(keep_ratio=0.6,  # the export ratio: sparsity_cut_*/done_* figures
                  lambda_attn=2e-3, lambda_mlp=1e-3, keep_threshold=0.05),
    backbone=dict(mode='search', search_dims=('attn', 'mlp')),
    optim_wrapper=dict(paramwise_cfg=dict(mask_lr=1e-2)),
)
# Not in the dense bases, so a plain key: stop at once, naming the layer, if a mask goes
# NaN/Inf (runs before the CheckpointHook, so no checkpoint of it is saved).
custom_hooks = [dict(type='SIDTMaskCheckHook')]
# The selection this search is for: tools/export_subnet.py CONFIG CKPT -o OUT exports at it
# (a budget flag replaces the budget, any other flag its setting).
sidt_export = dict(keep_ratio=0.6)
