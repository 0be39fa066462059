# ViTDet's recipe with ViT-L (MAE weights): the ViT-B config of this folder with depth 24,
# width 1024, 16 heads, global blocks [5, 11, 17, 23], drop path 0.4, layer decay 0.8.
# ViTDet reports 55.5 box / 49.2 mask AP.
# Weights: https://dl.fbaipublicfiles.com/mae/pretrain/mae_pretrain_vit_large.pth -> checkpoints/
_base_ = './sidt-dense_mask-rcnn_sidtvit-b_simplefpn_lsj-100e_coco.py'
default_scope = 'mmdet'

model = dict(
    backbone=dict(
        embed_dim=1024,
        depth=24,
        num_heads=16,
        drop_path_rate=0.4,
        window_block_indexes=[i for i in range(24) if i not in (5, 11, 17, 23)],
        init_cfg=dict(checkpoint='checkpoints/mae_pretrain_vit_large.pth')),
    neck=dict(backbone_channel=1024, in_channels=[256, 512, 1024, 1024]))
optim_wrapper = dict(paramwise_cfg=dict(layer_decay_rate=0.8))
