# Dense toy Mask R-CNN on the hard toy COCO preset (make_toy_coco.py --preset hard: eight
# classes told apart by shape detail, small overlapping objects, clutter) at 256 px: the toy
# SIDTViT of sidt-dense_mask-rcnn_sidtvit-toy_simplefpn_100it_toy-coco.py (width 64, 4 blocks
# of 4 heads, windows of 4 with one global block and relative positions) on a 16 x 16 token
# grid, with heads for eight classes. (At 160 px the objects are 13 px across, under one
# token: the dense model reached box mAP 8 and a 40%-narrower one did as well.)
# The data root is data/toy_coco_hard/ unless the environment variable SIDT_TOY_COCO_HARD
# names another directory. The detection selection study (sidt_mmdet/studies/selection.py,
# task 'detection') sets its own number of iterations.
#   python tools/dataset/make_toy_coco.py --preset hard --img-size 256 \
#       --out-dir data/toy_coco_hard
#   python tools/train.py \
#       configs/toy/sidt-dense_mask-rcnn_sidtvit-toy_simplefpn_100it_toy-coco-hard.py
_base_ = './sidt-dense_mask-rcnn_sidtvit-toy_simplefpn_100it_toy-coco.py'
default_scope = 'mmdet'

data_root = '{{$SIDT_TOY_COCO_HARD:data/toy_coco_hard}}/'
metainfo = dict(classes=('rectangle', 'cross', 'ellipse', 'octagon', 'triangle', 'arrow',
                         'star5', 'star6'))
num_classes = 8
img_scale = (256, 256)
# 64 sampled RoIs an image in training (mmcv's CPU RoIAlign backward is a third of a step at
# 128) and mmdet's usual score threshold at test time (the easy set's 0 keeps 100 masks an
# image for CocoMetric, 50 s for 256 images): the heads' cost, the same for every backbone.
model = dict(backbone=dict(img_size=img_scale[0]),
             roi_head=dict(bbox_head=dict(num_classes=num_classes),
                           mask_head=dict(num_classes=num_classes)),
             train_cfg=dict(rcnn=dict(sampler=dict(num=64))),
             test_cfg=dict(rcnn=dict(score_thr=0.05)))
train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(dataset=dict(data_root=data_root, metainfo=metainfo,
                                     pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(data_root=data_root, metainfo=metainfo,
                                   pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val2017.json')
test_evaluator = val_evaluator
