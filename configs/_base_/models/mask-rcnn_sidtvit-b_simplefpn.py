# Mask R-CNN with a ViTDet-style SIDTViT-B and the simple feature pyramid (docs/method.md,
# section 4).
# The detector, heads, losses and train/test settings are mmdet's; only what a plain ViT needs
# changes: the backbone (windows of 14 with global blocks 2/5/8/11, relative positions), the
# pyramid built from its single stride-16 map, a 2-conv RPN head and LN-normed RoI heads
# (ViTDet's choices). Leaf configs pick the arch, weights and schedule.
_base_ = 'mmdet::_base_/models/mask-rcnn_r50_fpn.py'
custom_imports = dict(imports=['sidt_mmdet'], allow_failed_imports=False)

# LayerNorm over channels of NCHW maps (ViTDet's LN2d), under our own registry name.
head_norm_cfg = dict(type='SIDTLN2d')
model = dict(
    data_preprocessor=dict(pad_size_divisor=32),
    backbone=dict(
        _delete_=True,
        type='SIDTViT',
        arch='base',
        patch_size=16,
        # Grid of the position embedding and of the global blocks' rel-pos tables: the
        # detection input size (ViTDet); 224-px checkpoints are resampled on load.
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
                       norm_cfg=head_norm_cfg),
        mask_head=dict(norm_cfg=head_norm_cfg)))
