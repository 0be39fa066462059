# ViTDet's recipe with ViT-H (MAE weights): the ViT-B config of this folder with depth 32,
# width 1280, 16 heads, global blocks [7, 15, 23, 31], drop path 0.5, layer decay 0.9.
# ViTDet reports 56.7 box / 50.2 mask AP. MAE's ViT-H uses 14-px patches; its patch
# embedding is resized to 16 on load, as ViTDet does.
# Weights: https://dl.fbaipublicfiles.com/mae/pretrain/mae_pretrain_vit_huge.pth -> checkpoints/
_base_ = './sidt-dense_mask-rcnn_sidtvit-b_simplefpn_lsj-100e_coco.py'
default_scope = 'mmdet'

model = dict(
    backbone=dict(
        embed_dim=1280,
        depth=32,
        num_heads=16,
        drop_path_rate=0.5,
        window_block_indexes=[i for i in range(32) if i not in (7, 15, 23, 31)],
        init_cfg=dict(checkpoint='checkpoints/mae_pretrain_vit_huge.pth')),
    neck=dict(backbone_channel=1280, in_channels=[320, 640, 1280, 1280]))
optim_wrapper = dict(paramwise_cfg=dict(layer_decay_rate=0.9))
