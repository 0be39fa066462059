# Faster R-CNN with a ViTDet-style SIDTViT-B and the simple feature pyramid: the same backbone,
# pyramid, RPN and box head as mask-rcnn_sidtvit-b_simplefpn.py, on mmdet's Faster R-CNN.
_base_ = 'mmdet::_base_/models/faster-rcnn_r50_fpn.py'
custom_imports = dict(imports=['sidt_mmdet'], allow_failed_imports=False)

head_norm_cfg = dict(type='SIDTLN2d')
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
        norm_cfg=head_norm_cfg),
    rpn_head=dict(num_convs=2),
    roi_head=dict(
        bbox_head=dict(type='Shared4Conv1FCBBoxHead', conv_out_channels=256,
                       norm_cfg=head_norm_cfg)))
