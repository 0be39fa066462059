# SiDT search stage of the toy detectors (docs/method.md section 1): lambdas larger than
# COCO's (~1e-4) so that 100 iterations show the pull, masks in their own optimizer group
# (lr 1e-2, no weight decay); the dense toy schedule. A variable, not model keys: mmengine
# refuses a key that two bases both define (see configs/README.md).
sidt_search = dict(
    sparsity=dict(lambda_attn=2e-3, lambda_mlp=1e-3, keep_threshold=0.05),
    backbone=dict(mode='search', search_dims=('attn', 'mlp')),
    optim_wrapper=dict(paramwise_cfg=dict(mask_lr=1e-2)),
)
