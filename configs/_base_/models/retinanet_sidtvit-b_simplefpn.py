# RetinaNet with a ViTDet-style SIDTViT-B and the simple feature pyramid.
# The simple pyramid gives strides 4-64 (P2-P6), not RetinaNet's usual P3-P7. The anchor
# generator follows the pyramid's strides with octave_base_scale=8, so the anchor sizes are
# RetinaNet's own (32 px at the finest level to 512 px at the coarsest, 3 scales x 3 ratios);
# the head runs on a 2x finer grid per level, which costs more head MACs than P3-P7.
# For mmdet's P3-P7 instead, set neck start_level=1 and keep mmdet's anchors (strides
# 8-128, octave_base_scale=4); a head whose strides miss the pyramid's is refused.
_base_ = 'mmdet::_base_/models/retinanet_r50_fpn.py'
custom_imports = dict(imports=['sidt_mmdet'], allow_failed_imports=False)

model = dict(
    data_preprocessor=dict(pad_size_divisor=32),
    backbone=dict(
        _delete_=True,
        type='SIDTViT',
        arch='base',
        patch_size=16,
        img_size=1024,
        drop_path_rate=0.1,
        window_size=14,
        global_attn_indexes=[2, 5, 8, 11],
        use_rel_pos=True,
        out_type='featmap',
        mode='dense',
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/mae_pretrain_vit_base.pth')),
    neck=dict(
        _delete_=True,
        type='SIDTSimpleFPN',
        backbone_channel=768,
        in_channels=[192, 384, 768, 768],
        out_channels=256,
        num_outs=5,
        norm_cfg=dict(type='SIDTLN2d')),
    bbox_head=dict(
        anchor_generator=dict(octave_base_scale=8, strides=[4, 8, 16, 32, 64])))
