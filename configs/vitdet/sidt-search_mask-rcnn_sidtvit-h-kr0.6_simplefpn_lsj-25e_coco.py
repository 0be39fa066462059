# Search stage (configs/vitdet/README.md); with CFG = this file, WORK = work_dirs/<its name>:
#   python tools/export_subnet.py $CFG $WORK/iter_46094.pth --keep-ratio 0.6 \
#       --input-size 1024 1024 -o $WORK/export
_base_ = ['./sidt-dense_mask-rcnn_sidtvit-h_simplefpn_lsj-100e_coco.py',
          '../_base_/stages/sidt-search_lsj-25e_coco.py']
default_scope = 'mmdet'

model = dict(type='SIDTModel', model_type='MaskRCNN',
             sparsity={{_base_.sidt_search.sparsity}},
             backbone={{_base_.sidt_search.backbone}})
train_cfg = {{_base_.sidt_search.train_cfg}}
param_scheduler = {{_base_.sidt_search.param_scheduler}}
optim_wrapper = {{_base_.sidt_search.optim_wrapper}}
load_from = 'work_dirs/sidt-dense_mask-rcnn_sidtvit-h_simplefpn_lsj-100e_coco/iter_184375.pth'
