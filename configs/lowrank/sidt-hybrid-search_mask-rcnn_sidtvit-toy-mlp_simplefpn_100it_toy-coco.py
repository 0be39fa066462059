# Toy variant of sidt-hybrid-search_mask-rcnn_sidtvit-b-mlp_simplefpn_4e_coco.py (the hybrid
# of arXiv 2203.13444, stage 1): the toy Mask R-CNN searched with masks on the MLP hidden
# units only. On CPU:
# CFG = this file, WORK = work_dirs/<its name without .py>, RETRAIN = configs/lowrank/
# sidt-hybrid-retrain_mask-rcnn_sidtvit-toy-p0.6_simplefpn_100it_toy-coco.py:
#   python tools/train.py $CFG
#   python tools/lowrank.py $CFG $WORK/iter_100.pth --mlp-keep-ratio 0.5 \
#       --targets attn.qkv attn.proj --backbone-ratio 0.6 --method svd -o $WORK/hybrid-p0.6
#   python tools/train.py $RETRAIN
_base_ = '../toy/sidt-search_mask-rcnn_sidtvit-toy-kr0.6_simplefpn_100it_toy-coco.py'

model = dict(
    sparsity=dict(lambda_attn=0.0),
    backbone=dict(search_dims=('mlp',)))
# stop at once, naming the layer, if a mask goes NaN/Inf (before a checkpoint is saved)
custom_hooks = [dict(type='SIDTMaskCheckHook')]
