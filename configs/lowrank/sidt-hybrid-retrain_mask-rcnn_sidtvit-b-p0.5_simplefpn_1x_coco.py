# The hybrid (arXiv 2203.13444), stage 2: fine-tune Mask R-CNN with SIDTViT-B whose MLPs are
# pruned and whose attention projections (qkv, proj) are low rank, at 50% of the dense
# backbone's params. The
# backbone is rebuilt from the subnet file alone (kept MLP units + lowrank.ranks); the weights
# come from the factorized checkpoint tools/lowrank.py wrote beside it (no missing or
# unexpected keys). Both default to the output of the command in
# sidt-hybrid-search_mask-rcnn_sidtvit-b-mlp_simplefpn_4e_coco.py; for another DIR add
#   --cfg-options model.backbone.subnet=DIR/subnet.json load_from=DIR/lowrank.pth
# CFG = this file:  bash tools/dist_train.sh $CFG 8 ;  bash tools/dist_test.sh $CFG CKPT 8
_base_ = '../sidt/retrain/sidt-retrain_mask-rcnn_sidtvit-b-kr0.6_simplefpn_1x_coco.py'

lowrank_dir = ('work_dirs/sidt-hybrid-search_mask-rcnn_sidtvit-b-mlp_simplefpn_4e_coco/'
               'hybrid-p0.5')
model = dict(backbone=dict(subnet=lowrank_dir + '/subnet.json'))
load_from = lowrank_dir + '/lowrank.pth'
