# Dense toy Mask R-CNN: the ViTDet-style detector of configs/vit/ shrunk until it trains on a
# CPU in seconds. SIDTViT of width 64, 4 blocks of 4 heads, patch 16, windows of 4 with one
# global block and relative positions; pyramid and heads at 32 channels; toy COCO at 160 px
# (configs/_base_/datasets/toy-coco_instance.py says how to point it at another data root).
#   python tools/dataset/make_toy_coco.py --out-dir data/toy_coco
#   python tools/train.py configs/toy/sidt-dense_mask-rcnn_sidtvit-toy_simplefpn_100it_toy-coco.py
_base_ = [
    '../_base_/models/mask-rcnn_sidtvit-b_simplefpn.py',
    '../_base_/datasets/toy-coco_instance.py',
    '../_base_/schedules/toy_adamw_100it.py',
]
default_scope = 'mmdet'

num_classes = 4
width = 32
model = dict(
    backbone=dict(
        arch=dict(_delete_=True, embed_dims=64, num_layers=4, num_heads=4, mlp_ratio=4.0),
        img_size=160,
        window_size=4,
        global_attn_indexes=[3],
        drop_path_rate=0.0,
        init_cfg=None),  # trained from scratch: no download
    neck=dict(backbone_channel=64, in_channels=[16, 32, 64, 64], out_channels=width),
    rpn_head=dict(in_channels=width, feat_channels=width),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=width),
        bbox_head=dict(in_channels=width, conv_out_channels=width, fc_out_channels=64,
                       num_classes=num_classes),
        mask_roi_extractor=dict(out_channels=width),
        mask_head=dict(in_channels=width, conv_out_channels=width, num_convs=2,
                       num_classes=num_classes)),
    train_cfg=dict(rpn_proposal=dict(nms_pre=500, max_per_img=200),
                   rcnn=dict(sampler=dict(num=128))),
    # score_thr 0: a few iterations from scratch score below mmdet's 0.05, and an empty
    # result list would leave CocoMetric with nothing to evaluate.
    test_cfg=dict(rpn=dict(nms_pre=300, max_per_img=100), rcnn=dict(score_thr=0.0)))
