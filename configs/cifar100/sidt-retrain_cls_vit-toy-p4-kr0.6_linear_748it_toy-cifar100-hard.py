# Retrain (fine-tune) stage of a pruned toy ViT on the hard toy CIFAR-100 preset: every
# selection method of the selection study gets this same schedule, about 20% of the dense
# iterations (748 of 3,756), warmup then cosine. The subnet and the sliced weights come from the
# export of the search (or of a baseline criterion):
#   python tools/train.py $CFG \
#       --cfg-options model.backbone.subnet=DIR/subnet.json load_from=DIR/pruned.pth
_base_ = './sidt-dense_cls_vit-toy-p4_linear_12e_toy-cifar100-hard.py'

export_dir = 'work_dirs/sidt-search_cls_vit-toy-p4-kr0.6_linear_374it_toy-cifar100-hard/export'
model = dict(
    type='mmdet.SIDTModel',
    model_type='ImageClassifier',
    backbone=dict(mode='pruned', subnet=export_dir + '/subnet.json', init_cfg=None))
load_from = export_dir + '/pruned.pth'

optim_wrapper = dict(optimizer=dict(lr=1e-3))
retrain_iters = 748
warmup_iters = 75
train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=retrain_iters,
                 val_interval=retrain_iters)
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-2, by_epoch=False, begin=0, end=warmup_iters),
    dict(type='CosineAnnealingLR', by_epoch=False, begin=warmup_iters, end=retrain_iters,
         eta_min=1e-5),
]
default_hooks = dict(checkpoint=dict(by_epoch=False, interval=retrain_iters))
log_processor = dict(by_epoch=False)
