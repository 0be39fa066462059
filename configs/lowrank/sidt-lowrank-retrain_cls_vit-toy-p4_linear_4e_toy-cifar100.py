# Fine-tune a factorized (low-rank, optionally pruned) toy CIFAR-100 classifier written by
# tools/lowrank.py: the SiDT retrain config of the toy classifier with the backbone rebuilt from
# the subnet file alone (kept dims + lowrank.ranks) and the weights from the factorized
# checkpoint beside it. tools/analysis/compare_lowrank.py runs it once per compressed variant.
#   python tools/lowrank.py CFG CKPT --method svd --energy 0.9 -o DIR
#   python tools/train.py $THIS --cfg-options model.backbone.subnet=DIR/subnet.json \
#       load_from=DIR/lowrank.pth
# (CFG/CKPT: the dense, search or retrain toy classifier and its checkpoint.)
_base_ = '../cifar100/sidt-retrain_cls_vit-toy-p4-kr0.6_linear_4e_toy-cifar100.py'

lowrank_dir = 'work_dirs/lowrank_cls_vit-toy-p4_toy-cifar100'
model = dict(backbone=dict(subnet=lowrank_dir + '/subnet.json'))
load_from = lowrank_dir + '/lowrank.pth'
