# Dense Faster R-CNN with a ViTDet-style SIDTViT-Ti (DeiT-Ti weights, 192 wide, 3 heads): the
# ViT-B config (sidt-dense_faster-rcnn_sidtvit-b_simplefpn_1x_coco.py) with the tiny arch and a
# pyramid
# reading 192 channels. Weights:
# https://dl.fbaipublicfiles.com/deit/deit_tiny_patch16_224-a1311bcf.pth -> checkpoints/
_base_ = './sidt-dense_faster-rcnn_sidtvit-b_simplefpn_1x_coco.py'
default_scope = 'mmdet'

model = dict(
    backbone=dict(
        arch='tiny',
        init_cfg=dict(checkpoint='checkpoints/deit_tiny_patch16_224-a1311bcf.pth')),
    neck=dict(backbone_channel=192, in_channels=[48, 96, 192, 192]))
