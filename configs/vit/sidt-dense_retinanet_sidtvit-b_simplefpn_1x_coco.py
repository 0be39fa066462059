# Dense RetinaNet with a ViTDet-style SIDTViT-B (MAE weights) and the simple feature pyramid,
# mmdet's 1x schedule on COCO boxes (data/coco/) with AdamW lr 1e-4, wd 0.1, layer decay 0.7.
# Batch 16 (8 GPUs x 2); on another batch add --auto-scale-lr. Weights as in
# sidt-dense_mask-rcnn_sidtvit-b_simplefpn_1x_coco.py.
#   bash tools/dist_train.sh configs/vit/sidt-dense_retinanet_sidtvit-b_simplefpn_1x_coco.py 8
_base_ = [
    '../_base_/models/retinanet_sidtvit-b_simplefpn.py',
    'mmdet::_base_/datasets/coco_detection.py',
    '../_base_/schedules/adamw-layer-decay_1x.py',
    'mmdet::_base_/default_runtime.py',
]
default_scope = 'mmdet'
