# Dense RetinaNet with a ViTDet-style SIDTViT-S (DeiT-S weights, 384 wide, 6 heads): the
# ViT-B config (sidt-dense_retinanet_sidtvit-b_simplefpn_1x_coco.py) with the small arch and a
# pyramid
# reading 384 channels. Weights:
# https://dl.fbaipublicfiles.com/deit/deit_small_patch16_224-cd65a155.pth -> checkpoints/
_base_ = './sidt-dense_retinanet_sidtvit-b_simplefpn_1x_coco.py'
default_scope = 'mmdet'

model = dict(
    backbone=dict(
        arch='small',
        init_cfg=dict(checkpoint='checkpoints/deit_small_patch16_224-cd65a155.pth')),
    neck=dict(backbone_channel=384, in_channels=[96, 192, 384, 384]))
