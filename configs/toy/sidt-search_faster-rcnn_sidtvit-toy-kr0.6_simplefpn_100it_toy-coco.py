# SiDT search stage of the toy Faster R-CNN: the dense toy config with learnable masks on every
# attention head dim and MLP hidden unit, and the sparsity loss (method.md section 1). Masks
# get their own optimizer group (lr 1e-2, no weight decay). Logged every interval:
# loss_sparsity, sparsity_mean_abs_{attn,mlp} and sparsity_kept_{attn,mlp} (threshold 0.05).
# kr0.6: the keep ratio it is exported at; the retrain config of that name reads the export.
# CFG = this file, WORK = work_dirs/<its name without .py>:
#   python tools/train.py $CFG           (or on 2 CPU processes: bash tools/dist_train.sh $CFG 2)
#   python tools/export_subnet.py $CFG $WORK/iter_100.pth --keep-ratio 0.6 -o $WORK/export
# It starts from scratch; to search from the trained dense toy detector add
#   --cfg-options
#   load_from=work_dirs/sidt-dense_faster-rcnn_sidtvit-toy_simplefpn_100it_toy-coco/iter_100.pth
_base_ = './sidt-dense_faster-rcnn_sidtvit-toy_simplefpn_100it_toy-coco.py'
custom_imports = dict(imports=['sidt_mmdet'], allow_failed_imports=False)
default_scope = 'mmdet'

model = dict(
    type='SIDTModel',
    model_type='FasterRCNN',
    # Larger than COCO's lambdas (~1e-4) so that 100 iterations show the pull.
    sparsity=dict(lambda_attn=2e-3, lambda_mlp=1e-3, keep_threshold=0.05),
    backbone=dict(mode='search', search_dims=('attn', 'mlp')))
optim_wrapper = dict(paramwise_cfg=dict(mask_lr=1e-2))
