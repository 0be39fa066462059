# SiDT retrain stage for Mask R-CNN with SIDTViT-Ti on COCO: the dense detector of
# configs/vit/ with its backbone rebuilt, pruned, from the subnet file of the search stage,
# fine-tuned from the pruned checkpoint with mmdet's 1x schedule. The neck follows the
# subnet's embedding width (SIDTModel). Both files default to the export of
# configs/sidt/search/sidt-search_mask-rcnn_sidtvit-t-kr0.6_simplefpn_4e_coco.py.
# CFG = this file, WORK = work_dirs/sidt-retrain_mask-rcnn_sidtvit-t-kr0.6_simplefpn_1x_coco:
#   bash tools/dist_train.sh $CFG 8
#   bash tools/dist_test.sh $CFG $WORK/epoch_12.pth 8
# For another export directory DIR add, to both:
#   --cfg-options model.backbone.subnet=DIR/subnet.json load_from=DIR/pruned.pth
_base_ = '../../vit/sidt-dense_mask-rcnn_sidtvit-t_simplefpn_1x_coco.py'
custom_imports = dict(imports=['sidt_mmdet'], allow_failed_imports=False)
default_scope = 'mmdet'

export_dir = 'work_dirs/sidt-search_mask-rcnn_sidtvit-t-kr0.6_simplefpn_4e_coco/export'
model = dict(
    type='SIDTModel',
    model_type='MaskRCNN',
    backbone=dict(mode='pruned', subnet=export_dir + '/subnet.json', init_cfg=None))
load_from = export_dir + '/pruned.pth'
