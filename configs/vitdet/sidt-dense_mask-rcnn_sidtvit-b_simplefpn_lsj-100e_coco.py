# ViTDet's recipe (Li et al. 2022; detectron2 model zoo; mmdet projects/ViTDet) with SIDTViT:
# Mask R-CNN, ViT-B from MAE weights, simple feature pyramid, COCO with large-scale jitter at
# 1024 (padded to 1024 x 1024), AdamW lr 1e-4 wd 0.1, drop path 0.1, layer decay 0.7,
# windows of 14 with global blocks [2, 5, 8, 11], relative positions, 184,375 iterations at
# batch 64 (16 GPUs x 4 images). ViTDet reports 51.6 box / 45.9 mask AP (mmdet's port 51.6 /
# 45.7). The backbone is written with ViTDet's argument names, which SIDTViT accepts.
# pretrain_img_size is the grid its position embedding and global rel-pos tables are made for
# (ViTDet's img_size=1024); MAE's 224 embedding and cls token are converted on load.
# Weights: https://dl.fbaipublicfiles.com/mae/pretrain/mae_pretrain_vit_base.pth -> checkpoints/
#   bash tools/dist_train.sh
#   configs/vitdet/sidt-dense_mask-rcnn_sidtvit-b_simplefpn_lsj-100e_coco.py 16
# SiDT stages: sidt-search_*/sidt-retrain_* beside this file.
_base_ = [
    '../_base_/models/mask-rcnn_sidtvit-b_simplefpn.py',
    '../_base_/datasets/coco-instance_lsj-1024.py',
    '../_base_/schedules/vitdet_lsj-100e.py',
]
default_scope = 'mmdet'

image_size = (1024, 1024)
model = dict(
    data_preprocessor=dict(
        batch_augments=[dict(type='BatchFixedSizePad', size=image_size, pad_mask=True)]),
    backbone=dict(
        _delete_=True,
        type='SIDTViT',
        embed_dim=768,
        depth=12,
        num_heads=12,
        mlp_ratio=4,
        qkv_bias=True,
        patch_size=16,
        drop_path_rate=0.1,
        norm_cfg=dict(type='LN', eps=1e-6),
        window_size=14,
        window_block_indexes=[0, 1, 3, 4, 6, 7, 9, 10],
        use_abs_pos=True,
        use_rel_pos=True,
        rel_pos_zero_init=True,
        pretrain_img_size=1024,
        pretrain_use_cls_token=True,
        out_type='featmap',
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/mae_pretrain_vit_base.pth')))
optim_wrapper = dict(paramwise_cfg=dict(layer_decay_rate=0.7))
