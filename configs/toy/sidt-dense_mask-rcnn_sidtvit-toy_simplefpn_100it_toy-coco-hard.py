# Dense toy Mask R-CNN on the hard toy COCO preset (make_toy_coco.py --preset hard: eight
# classes told apart by shape detail, small overlapping objects, clutter): the toy SIDTViT of
# sidt-dense_mask-rcnn_sidtvit-toy_simplefpn_100it_toy-coco.py (width 64, 4 blocks of 4 heads,
# windows of 4 with one global block and relative positions) with heads for eight classes.
# The data root is data/toy_coco_hard/ unless the environment variable SIDT_TOY_COCO_HARD
# names another directory. The detection selection study (sidt_mmdet/studies/selection.py,
# task 'detection') sets its own number of iterations.
#   python tools/dataset/make_toy_coco.py --preset hard --out-dir data/toy_coco_hard
#   python tools/train.py \
#       configs/toy/sidt-dense_mask-rcnn_sidtvit-toy_simplefpn_100it_toy-coco-hard.py
_base_ = './sidt-dense_mask-rcnn_sidtvit-toy_simplefpn_100it_toy-coco.py'
default_scope = 'mmdet'

data_root = '{{$SIDT_TOY_COCO_HARD:data/toy_coco_hard}}/'
metainfo = dict(classes=('rectangle', 'cross', 'ellipse', 'octagon', 'triangle', 'arrow',
                         'star5', 'star6'))
num_classes = 8
# 64 sampled RoIs an image in training (mmcv's CPU RoIAlign backward is a third of a step at
# 128) and mmdet's usual score threshold at test time (the easy set's 0 keeps 100 masks an
# image for CocoMetric, 50 s for 256 images): the heads' cost, the same for every backbone.
model = dict(roi_head=dict(bbox_head=dict(num_classes=num_classes),
                           mask_head=dict(num_classes=num_classes)),
             train_cfg=dict(rcnn=dict(sampler=dict(num=64))),
             test_cfg=dict(rcnn=dict(score_thr=0.05)))
train_dataloader = dict(dataset=dict(data_root=data_root, metainfo=metainfo))
val_dataloader = dict(dataset=dict(data_root=data_root, metainfo=metainfo))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val2017.json')
test_evaluator = val_evaluator
