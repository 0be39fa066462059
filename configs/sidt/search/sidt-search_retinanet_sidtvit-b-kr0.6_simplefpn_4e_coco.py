# Search stage (configs/sidt/README.md); with CFG = this file, WORK = work_dirs/<its name>:
#   python tools/export_subnet.py $CFG $WORK/epoch_4.pth --keep-ratio 0.6 \
#       -o $WORK/export
_base_ = ['../../vit/sidt-dense_retinanet_sidtvit-b_simplefpn_1x_coco.py',
          '../../_base_/stages/sidt-search_4e_coco.py']
default_scope = 'mmdet'

model = dict(type='SIDTModel', model_type='RetinaNet',
             sparsity={{_base_.sidt_search.sparsity}},
             backbone={{_base_.sidt_search.backbone}})
train_cfg = {{_base_.sidt_search.train_cfg}}
param_scheduler = {{_base_.sidt_search.param_scheduler}}
optim_wrapper = {{_base_.sidt_search.optim_wrapper}}
load_from = 'work_dirs/sidt-dense_retinanet_sidtvit-b_simplefpn_1x_coco/epoch_12.pth'
