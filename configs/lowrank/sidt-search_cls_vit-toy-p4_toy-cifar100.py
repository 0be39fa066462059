# SiDT search of the toy CIFAR-100 classifier (ViT 64 wide, 4 blocks, 4x4 patches), from
# scratch: the dense toy recipe with learnable masks on the attention head dims and MLP hidden
# units and the sparsity loss; masks get their own optimizer group (lr 1e-2, no weight decay).
# tools/analysis/compare_lowrank.py trains it once and compares, at equal params, the low-rank
# methods on it, and pruning alone against Kumar's hybrid. By hand:
#   python tools/train.py $CFG --cfg-options train_dataloader.dataset.data_root=DATA \
#       val_dataloader.dataset.data_root=DATA
#   python tools/lowrank.py $CFG WORK/epoch_6.pth --mlp-keep-ratio 0.6 \
#       --targets attn.qkv attn.proj --backbone-ratio 0.5 --method svd -o DIR
#   then sidt-lowrank-retrain_cls_vit-toy-p4_toy-cifar100.py with DIR (see its header).
_base_ = '../cifar100/sidt-dense_cls_vit-toy-p4_toy-cifar100.py'

model = dict(
    type='mmdet.SIDTModel',
    model_type='ImageClassifier',
    sparsity=dict(lambda_attn=5e-4, lambda_mlp=5e-4, keep_threshold=0.05),
    backbone=dict(mode='search', search_dims=('attn', 'mlp')))
optim_wrapper = dict(paramwise_cfg=dict(mask_lr=1e-2))

max_epochs = 6
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-2, by_epoch=True, begin=0, end=1,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', by_epoch=True, begin=1, end=max_epochs, eta_min=1e-5,
         convert_to_iter_based=True),
]
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
default_hooks = dict(checkpoint=dict(interval=max_epochs))
