# Dense toy Faster R-CNN: the toy ViTDet-style SIDTViT of
# sidt-dense_mask-rcnn_sidtvit-toy_simplefpn_100it_toy-coco.py on mmdet's Faster R-CNN, boxes only.
#   python tools/train.py configs/toy/sidt-dense_faster-rcnn_sidtvit-toy_simplefpn_100it_toy-coco.py
_base_ = [
    '../_base_/models/faster-rcnn_sidtvit-b_simplefpn.py',
    '../_base_/datasets/toy-coco_detection.py',
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
        init_cfg=None),
    neck=dict(backbone_channel=64, in_channels=[16, 32, 64, 64], out_channels=width),
    rpn_head=dict(in_channels=width, feat_channels=width),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=width),
        bbox_head=dict(in_channels=width, conv_out_channels=width, fc_out_channels=64,
                       num_classes=num_classes)),
    train_cfg=dict(rpn_proposal=dict(nms_pre=500, max_per_img=200),
                   rcnn=dict(sampler=dict(num=128))),
    # score_thr 0: see the toy Mask R-CNN config
    test_cfg=dict(rpn=dict(nms_pre=300, max_per_img=100), rcnn=dict(score_thr=0.0)))
