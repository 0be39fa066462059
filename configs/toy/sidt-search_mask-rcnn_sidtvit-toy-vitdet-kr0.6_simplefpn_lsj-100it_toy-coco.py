# SiDT search stage of the toy ViTDet recipe, with embedding pruning: masks on every
# attention head dim, MLP hidden unit and embedding channel (one mask for the residual stream
# of all blocks), sparsity loss weighted by MACs at 160 x 160 (as configs/vitdet/ does at
# 1024). After export, the retrain config rebuilds the whole detector (pruned backbone and
# the pyramid's narrower input layers) from the config and the subnet file alone.
# CFG = this file, WORK = work_dirs/<its name without .py>:
#   python tools/train.py $CFG
#   python tools/export_subnet.py $CFG $WORK/iter_100.pth --keep-ratio 0.6 -o $WORK/export
_base_ = './sidt-dense_mask-rcnn_sidtvit-toy-vitdet_simplefpn_lsj-100it_toy-coco.py'
default_scope = 'mmdet'

model = dict(
    type='SIDTModel',
    model_type='MaskRCNN',
    # Larger than COCO's lambdas (~1e-4) so that 100 iterations show the pull.
    sparsity=dict(keep_ratio=0.6,
                  lambda_attn=2e-3, lambda_mlp=1e-3, lambda_embed=2e-3, macs_weighted=True,
                  input_size=(160, 160), keep_threshold=0.05),
    backbone=dict(mode='search', search_dims=('attn', 'mlp', 'embed')))
optim_wrapper = dict(paramwise_cfg=dict(mask_lr=1e-2))
# stop at once, naming the layer, if a mask goes NaN/Inf (before a checkpoint is saved)
custom_hooks = [dict(type='SIDTMaskCheckHook')]
# The selection this search is for: tools/export_subnet.py CONFIG CKPT -o OUT exports at it
# (a budget flag replaces the budget, any other flag its setting).
sidt_export = dict(keep_ratio=0.6)
