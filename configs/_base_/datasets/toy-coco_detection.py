# The generated toy COCO set (tools/dataset/make_toy_coco.py; 4 shape classes, images of at
# most 160 px) in COCO's layout, for box detection. Built on mmdet's coco_detection.py.
#
# The data root is data/toy_coco/ unless the environment variable SIDT_TOY_COCO names another
# directory (mmengine substitutes it while parsing; the tests use this). With --cfg-options,
# set every reader of the root instead:
#   train_dataloader.dataset.data_root=DIR/ val_dataloader.dataset.data_root=DIR/
#   test_dataloader.dataset.data_root=DIR/
#   val_evaluator.ann_file=DIR/annotations/instances_val2017.json
#   test_evaluator.ann_file=DIR/annotations/instances_val2017.json
_base_ = 'mmdet::_base_/datasets/coco_detection.py'

data_root = '{{$SIDT_TOY_COCO:data/toy_coco}}/'
metainfo = dict(classes=('rectangle', 'ellipse', 'triangle', 'star'))
img_scale = (160, 160)

train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
# Worker processes cost more than they save on 160 px images and 2 cores.
train_dataloader = dict(
    batch_size=2, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, metainfo=metainfo, pipeline=train_pipeline,
                 filter_cfg=dict(filter_empty_gt=True, min_size=4)))
val_dataloader = dict(
    batch_size=2, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, metainfo=metainfo, pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val2017.json',
                     metric='bbox')
test_evaluator = val_evaluator
