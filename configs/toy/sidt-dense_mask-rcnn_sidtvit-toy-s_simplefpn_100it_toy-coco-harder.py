# Dense half-width toy Mask R-CNN (sidt-dense_mask-rcnn_sidtvit-toy-s_simplefpn_100it_
# toy-coco-hard.py) on the harder toy COCO preset (make_toy_coco.py --preset harder: twelve
# classes in groups that share an outline, smaller objects, up to 14 an image, more clutter),
# with heads for twelve classes. The data root is data/toy_coco_harder/ unless the
# environment variable SIDT_TOY_COCO_HARDER names another directory.
#   python tools/dataset/make_toy_coco.py --preset harder --img-size 256 \
#       --out-dir data/toy_coco_harder
#   python tools/train.py \
#       configs/toy/sidt-dense_mask-rcnn_sidtvit-toy-s_simplefpn_100it_toy-coco-harder.py
_base_ = './sidt-dense_mask-rcnn_sidtvit-toy-s_simplefpn_100it_toy-coco-hard.py'
default_scope = 'mmdet'

data_root = '{{$SIDT_TOY_COCO_HARDER:data/toy_coco_harder}}/'
metainfo = dict(classes=('rectangle', 'cross', 'tee', 'ell', 'ellipse', 'hexagon', 'octagon',
                         'triangle', 'arrow', 'star5', 'star6', 'star7'))
num_classes = 12
model = dict(roi_head=dict(bbox_head=dict(num_classes=num_classes),
                           mask_head=dict(num_classes=num_classes)))
train_dataloader = dict(dataset=dict(data_root=data_root, metainfo=metainfo))
val_dataloader = dict(dataset=dict(data_root=data_root, metainfo=metainfo))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val2017.json')
test_evaluator = val_evaluator
