# Fine-tune a factorized (low-rank, optionally pruned) toy CIFAR-100 classifier written by
# tools/lowrank.py: the backbone is rebuilt from the subnet file alone (kept dims +
# lowrank.ranks), the weights come from the factorized checkpoint beside it; a short schedule
# at a lower lr. tools/analysis/compare_lowrank.py runs it once per compressed variant.
#   python tools/lowrank.py DENSE_OR_SEARCH_OR_RETRAIN_CFG CKPT --method svd --energy 0.9 -o DIR
#   python tools/train.py $CFG --cfg-options model.backbone.subnet=DIR/subnet.json \
#       load_from=DIR/lowrank.pth train_dataloader.dataset.data_root=DATA \
#       val_dataloader.dataset.data_root=DATA
_base_ = '../cifar100/sidt-dense_cls_vit-toy-p4_toy-cifar100.py'

lowrank_dir = 'work_dirs/lowrank_cls_vit-toy-p4_toy-cifar100'
model = dict(
    type='mmdet.SIDTModel',
    model_type='ImageClassifier',
    backbone=dict(mode='pruned', subnet=lowrank_dir + '/subnet.json', init_cfg=None))
load_from = lowrank_dir + '/lowrank.pth'

optim_wrapper = dict(optimizer=dict(lr=5e-4))
max_epochs = 3
param_scheduler = [
    dict(type='CosineAnnealingLR', by_epoch=True, begin=0, end=max_epochs, eta_min=1e-5,
         convert_to_iter_based=True),
]
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
default_hooks = dict(checkpoint=dict(interval=max_epochs))
