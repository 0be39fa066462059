# Dense toy version of configs/vitdet/: ViTDet's recipe shrunk for a CPU. The backbone is
# written with ViTDet's argument names (embed_dim, depth, num_heads, window_block_indexes,
# pretrain_img_size, pretrain_use_cls_token, ...): width 64, 4 blocks of 4 heads, windows of 4
# with one global block (3), relative positions. Large-scale jitter at 160 px (resize by
# 0.5-2.0, random 160 crop, training batches padded to 160 x 160), toy COCO (see
# configs/_base_/datasets/toy-coco_instance.py for the data root).
#   python tools/train.py
#   configs/toy/sidt-dense_mask-rcnn_sidtvit-toy-vitdet_simplefpn_lsj-100it_toy-coco.py
_base_ = './sidt-dense_mask-rcnn_sidtvit-toy_simplefpn_100it_toy-coco.py'
default_scope = 'mmdet'

image_size = (160, 160)
model = dict(
    data_preprocessor=dict(
        batch_augments=[dict(type='BatchFixedSizePad', size=image_size, pad_mask=True)]),
    backbone=dict(
        _delete_=True,
        type='SIDTViT',
        embed_dim=64,
        depth=4,
        num_heads=4,
        mlp_ratio=4,
        qkv_bias=True,
        patch_size=16,
        drop_path_rate=0.1,
        norm_cfg=dict(type='LN', eps=1e-6),
        window_size=4,
        window_block_indexes=[0, 1, 2],
        use_abs_pos=True,
        use_rel_pos=True,
        rel_pos_zero_init=True,
        pretrain_img_size=160,
        pretrain_use_cls_token=True,
        out_type='featmap',
        init_cfg=None))

train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomResize', scale=image_size, ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_type='absolute_range', crop_size=image_size,
         recompute_bbox=True, allow_negative_crop=True),
    dict(type='FilterAnnotations', min_gt_bbox_wh=(1e-2, 1e-2)),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
# The test pipeline is the toy Mask R-CNN's, without ViTDet's Pad to 160: Pad makes the padded
# area part of img_shape, so an untrained model's boxes can lie wholly outside the image,
# where mmdet's mask pasting fails (empty arange); trained COCO models do not predict there.
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
