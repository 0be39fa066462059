# Dense baseline: ViT-small (384 wide, 12 blocks, 6 heads) on 32x32 CIFAR-100 with 4x4
# patches, from scratch. Same recipe, data and registry choice as the ViT-tiny config
# (sidt-dense_cls_vit-tiny-p4_linear_200e_cifar100.py, see its header); more drop path.
_base_ = './sidt-dense_cls_vit-tiny-p4_linear_200e_cifar100.py'

embed_dims = 384
model = dict(
    backbone=dict(arch='small', drop_path_rate=0.2),
    head=dict(in_channels=embed_dims))
