# SiDT retrain stage of the ViT-tiny p4 CIFAR-100 classifier: the dense config with the
# backbone rebuilt, pruned, from the subnet file of the search stage, starting from the pruned
# checkpoint tools/export_subnet.py wrote beside it. SIDTModel sets the LinearClsHead's
# in_channels to the kept embedding width (and export slices head.fc to it). Both files default
# to the export of the search config of the same name; for another directory DIR:
#   python tools/train.py $CFG \
#       --cfg-options model.backbone.subnet=DIR/subnet.json load_from=DIR/pruned.pth
#   python tools/test.py $CFG CHECKPOINT --cfg-options model.backbone.subnet=DIR/subnet.json
# A subnet searched on another architecture (e.g. a detector's ViT-B) is refused when the
# model is built, naming each field that differs.
_base_ = './sidt-dense_cls_vit-tiny-p4_linear_200e_cifar100.py'

export_dir = 'work_dirs/sidt-search_cls_vit-tiny-p4-kr0.6_linear_50e_cifar100/export'
model = dict(
    type='mmdet.SIDTModel',
    model_type='ImageClassifier',
    backbone=dict(mode='pruned', subnet=export_dir + '/subnet.json', init_cfg=None))
load_from = export_dir + '/pruned.pth'

optim_wrapper = dict(optimizer=dict(lr=5e-4))
max_epochs = 100
warmup_epochs = 5
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-2, by_epoch=True, begin=0, end=warmup_epochs,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', by_epoch=True, begin=warmup_epochs, end=max_epochs,
         eta_min=1e-5, convert_to_iter_based=True),
]
train_cfg = dict(max_epochs=max_epochs)
