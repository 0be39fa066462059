# Toy variant of sidt-hybrid-retrain_mask-rcnn_sidtvit-b-p0.5_simplefpn_1x_coco.py: fine-tune
# the toy Mask R-CNN with pruned MLPs and low-rank attention at 60% of the dense backbone's
# params (its patch embedding alone is ~22% of them, so 50% would leave attention almost
# nothing), rebuilt from the subnet file alone, from the factorized checkpoint. For another DIR add
#   --cfg-options model.backbone.subnet=DIR/subnet.json load_from=DIR/lowrank.pth
_base_ = '../toy/sidt-retrain_mask-rcnn_sidtvit-toy-kr0.6_simplefpn_100it_toy-coco.py'

lowrank_dir = ('work_dirs/sidt-hybrid-search_mask-rcnn_sidtvit-toy-mlp_simplefpn_100it_toy-coco/'
               'hybrid-p0.6')
model = dict(backbone=dict(subnet=lowrank_dir + '/subnet.json'))
load_from = lowrank_dir + '/lowrank.pth'
