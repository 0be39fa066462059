# Dense Mask R-CNN with a ViTDet-style SIDTViT-B (MAE weights) and the simple feature pyramid,
# mmdet's 1x schedule on COCO (data/coco/) with AdamW lr 1e-4, wd 0.1, layer decay 0.7.
# Batch 16 (8 GPUs x 2); on another batch add --auto-scale-lr.
# Weights: https://dl.fbaipublicfiles.com/mae/pretrain/mae_pretrain_vit_base.pth
# saved as checkpoints/mae_pretrain_vit_base.pth (or --cfg-options
# model.backbone.init_cfg.checkpoint=PATH; timm/DeiT/MAE files are converted on load).
#   bash tools/dist_train.sh configs/vit/sidt-dense_mask-rcnn_sidtvit-b_simplefpn_1x_coco.py 8
# This is the first stage of SiDT: configs/sidt/search/ starts from its checkpoint.
_base_ = [
    '../_base_/models/mask-rcnn_sidtvit-b_simplefpn.py',
    'mmdet::_base_/datasets/coco_instance.py',
    '../_base_/schedules/adamw-layer-decay_1x.py',
    'mmdet::_base_/default_runtime.py',
]
default_scope = 'mmdet'
