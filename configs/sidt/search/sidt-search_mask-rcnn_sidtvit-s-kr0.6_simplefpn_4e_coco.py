# SiDT search stage for Mask R-CNN with SIDTViT-S on COCO (method.md section 1): the dense
# detector of configs/vit/ with learnable masks on every attention head dim and MLP hidden
# unit, and the sparsity loss lambda_attn*sum|m_attn| + lambda_mlp*sum|m_mlp| (ViT-Slim's
# lambdas). Starts from the trained dense detector (load_from; masks start at 1.0); 4 epochs
# at constant lr after warm-up; the masks get their own optimizer group (lr 5e-4, no weight
# decay). Logged every interval: loss_sparsity, sparsity_mean_abs_*, sparsity_kept_*.
# kr0.6: the keep ratio it is exported at; the retrain config of that name reads the export.
# CFG = this file, WORK = work_dirs/sidt-search_mask-rcnn_sidtvit-s-kr0.6_simplefpn_4e_coco:
#   bash tools/dist_train.sh $CFG 8 [--cfg-options load_from=DENSE_CHECKPOINT]
#   python tools/export_subnet.py $CFG $WORK/epoch_4.pth --keep-ratio 0.6 -o $WORK/export
_base_ = '../../vit/sidt-dense_mask-rcnn_sidtvit-s_simplefpn_1x_coco.py'
custom_imports = dict(imports=['sidt_mmdet'], allow_failed_imports=False)
default_scope = 'mmdet'

model = dict(
    type='SIDTModel',
    model_type='MaskRCNN',
    sparsity=dict(lambda_attn=2e-4, lambda_mlp=5e-5, keep_threshold=0.05),
    # every weight comes from load_from
    backbone=dict(mode='search', search_dims=('attn', 'mlp'), init_cfg=None))
load_from = 'work_dirs/sidt-dense_mask-rcnn_sidtvit-s_simplefpn_1x_coco/epoch_12.pth'

train_cfg = dict(max_epochs=4, val_interval=4)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
]
optim_wrapper = dict(paramwise_cfg=dict(mask_lr=5e-4))
