# Search stage of the quarter-width toy Mask R-CNN on the hard toy COCO preset (the dense
# config sidt-dense_mask-rcnn_sidtvit-toy-xs_simplefpn_100it_toy-coco-hard.py; search
# settings as in sidt-search_mask-rcnn_sidtvit-toy-kr0.6_simplefpn_100it_toy-coco-hard.py). With
# CFG = this file, WORK = work_dirs/<its name without .py>:
#   python tools/train.py $CFG
#   python tools/export_subnet.py $CFG $WORK/iter_100.pth --keep-ratio 0.6 -o $WORK/export
_base_ = ['./sidt-dense_mask-rcnn_sidtvit-toy-xs_simplefpn_100it_toy-coco-hard.py',
          '../_base_/stages/sidt-search_100it_toy-coco.py']
default_scope = 'mmdet'

model = dict(type='SIDTModel', model_type='MaskRCNN',
             sparsity={{_base_.sidt_search.sparsity}},
             backbone={{_base_.sidt_search.backbone}})
optim_wrapper = {{_base_.sidt_search.optim_wrapper}}
