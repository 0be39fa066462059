# The order of arXiv 2308.10839 (docs/method.md section 3): prune first, then factorize. Fine-tune
# Mask R-CNN with a SiDT-pruned SIDTViT-B whose remaining Linears are low rank. The backbone is
# rebuilt from the subnet file alone (kept dims + lowrank.ranks); weights from the checkpoint
# tools/lowrank.py wrote beside it. With RETRAIN = the SiDT retrain config of configs/sidt/
# retrain/ and its trained checkpoint CKPT:
#   python tools/lowrank.py $RETRAIN CKPT --method svd --energy 0.95 -o DIR
#   bash tools/dist_train.sh $CFG 8 --cfg-options model.backbone.subnet=DIR/subnet.json \
#       load_from=DIR/lowrank.pth
# (a dense model works the same way: give its config and checkpoint to tools/lowrank.py).
# The default DIR is the one below.
_base_ = '../sidt/retrain/sidt-retrain_mask-rcnn_sidtvit-b-kr0.6_simplefpn_1x_coco.py'

lowrank_dir = 'work_dirs/sidt-retrain_mask-rcnn_sidtvit-b-kr0.6_simplefpn_1x_coco/lowrank'
model = dict(backbone=dict(subnet=lowrank_dir + '/subnet.json'))
load_from = lowrank_dir + '/lowrank.pth'
