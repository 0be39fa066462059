# The hybrid (arXiv 2203.13444, docs/method.md section 3), stage 1: the SiDT search of Mask
# R-CNN with SIDTViT-B with masks on the MLP hidden units only. Pruning alone removes mostly
# MLP dims; the hybrid keeps attention whole here and compresses it by low rank afterwards.
# CFG = this file, WORK = work_dirs/sidt-hybrid-search_mask-rcnn_sidtvit-b-mlp_simplefpn_4e_coco:
#   bash tools/dist_train.sh $CFG 8 [--cfg-options load_from=DENSE_CHECKPOINT]
#   python tools/lowrank.py $CFG $WORK/epoch_4.pth --mlp-keep-ratio 0.5 \
#       --targets attn.qkv attn.proj --backbone-ratio 0.5 --method svd -o $WORK/hybrid-p0.5
# (keep 50% of the MLP units, then the attention ranks that bring the backbone to 50% of its
# dense params), then sidt-hybrid-retrain_mask-rcnn_sidtvit-b-p0.5_simplefpn_1x_coco.py.
# The split is the knob: with ViT-B at 1024 px, MLP keep 0.5 leaves qkv ranks near 150 of 768,
# keep 0.6 near 30 (the MLP holds 2/3 of a block's params); sweep it on a validation set.
# A search over attention too (configs/sidt/search/) works as well: --mlp-keep-ratio reads only
# the MLP masks and keeps every attention dim.
_base_ = '../sidt/search/sidt-search_mask-rcnn_sidtvit-b-kr0.6_simplefpn_4e_coco.py'

model = dict(
    sparsity=dict(lambda_attn=0.0),
    backbone=dict(search_dims=('mlp',)))
# stop at once, naming the layer, if a mask goes NaN/Inf (before a checkpoint is saved)
custom_hooks = [dict(type='SIDTMaskCheckHook')]
