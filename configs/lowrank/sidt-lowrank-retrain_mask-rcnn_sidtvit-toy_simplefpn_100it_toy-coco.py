# Toy variant of sidt-lowrank-retrain_mask-rcnn_sidtvit-b_simplefpn_1x_coco.py: fine-tune the
# toy Mask R-CNN (windows + relative positions) after pruning and low-rank factorization,
# rebuilt from the subnet file alone. With the toy SiDT retrain config RETRAIN and its CKPT:
#   python tools/lowrank.py $RETRAIN CKPT --method svd --energy 0.95 -o DIR
#   python tools/train.py $CFG --cfg-options model.backbone.subnet=DIR/subnet.json \
#       load_from=DIR/lowrank.pth
# The default DIR is the one below.
_base_ = '../toy/sidt-retrain_mask-rcnn_sidtvit-toy-kr0.6_simplefpn_100it_toy-coco.py'

lowrank_dir = 'work_dirs/sidt-retrain_mask-rcnn_sidtvit-toy-kr0.6_simplefpn_100it_toy-coco/lowrank'
model = dict(backbone=dict(subnet=lowrank_dir + '/subnet.json'))
load_from = lowrank_dir + '/lowrank.pth'
