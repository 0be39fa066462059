# SiDT retrain stage on ViTDet's recipe, ViT-B: the dense detector of this folder with its
# backbone rebuilt, pruned (heads, MLP and embedding widths), from the subnet file of the
# search stage; the simple pyramid's input layers follow the pruned embedding width.
# Fine-tuned from the pruned checkpoint with the full schedule. Both files default to the
# export of sidt-search_mask-rcnn_sidtvit-b-kr0.6_simplefpn_lsj-25e_coco.py.
# CFG = this file, WORK = work_dirs/<its name without .py>:
#   bash tools/dist_train.sh $CFG 16
#   bash tools/dist_test.sh $CFG $WORK/iter_184375.pth 8
# For another export directory DIR add, to both:
#   --cfg-options model.backbone.subnet=DIR/subnet.json load_from=DIR/pruned.pth
_base_ = './sidt-dense_mask-rcnn_sidtvit-b_simplefpn_lsj-100e_coco.py'
custom_imports = dict(imports=['sidt_mmdet'], allow_failed_imports=False)
default_scope = 'mmdet'

export_dir = 'work_dirs/sidt-search_mask-rcnn_sidtvit-b-kr0.6_simplefpn_lsj-25e_coco/export'
model = dict(
    type='SIDTModel',
    model_type='MaskRCNN',
    backbone=dict(mode='pruned', subnet=export_dir + '/subnet.json', init_cfg=None))
load_from = export_dir + '/pruned.pth'
