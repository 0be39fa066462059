# Dense toy RetinaNet: the toy ViTDet-style SIDTViT of
# sidt-dense_mask-rcnn_sidtvit-toy_simplefpn_100it_toy-coco.py on mmdet's RetinaNet (pyramid P2-P6
# as
# in configs/_base_/models/retinanet_sidtvit-b_simplefpn.py), boxes only.
#   python tools/train.py configs/toy/sidt-dense_retinanet_sidtvit-toy_simplefpn_100it_toy-coco.py
_base_ = [
    '../_base_/models/retinanet_sidtvit-b_simplefpn.py',
    '../_base_/datasets/toy-coco_detection.py',
    '../_base_/schedules/toy_adamw_100it.py',
]
default_scope = 'mmdet'

width = 32
model = dict(
    backbone=dict(
        arch=dict(_delete_=True, embed_dims=64, num_layers=4, num_heads=4, mlp_ratio=4.0),
        img_size=160,
        window_size=4,
        global_attn_indexes=[3],
        drop_path_rate=0.0,
        init_cfg=None),
    neck=dict(backbone_channel=64, in_channels=[16, 32, 64, 64], out_channels=width),
    bbox_head=dict(num_classes=4, in_channels=width, feat_channels=width, stacked_convs=2),
    # score_thr 0: a few iterations from scratch score below mmdet's 0.05 everywhere
    test_cfg=dict(nms_pre=300, score_thr=0.0))
