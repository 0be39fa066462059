# SiDT search stage on ViTDet's recipe, ViT-B: the dense detector of this folder with
# masks on every attention head dim, MLP hidden unit and embedding channel (the residual
# stream: one mask shared by all blocks), and the sparsity loss with each dim's |m| weighted
# by the MACs it costs at 1024 x 1024 (resource-aware; the weights have mean 1 per kind, so
# the lambdas keep ViT-Slim's scale). Starts from the trained dense detector; a quarter of the
# schedule (25 epochs = 46,094 iterations at batch 64), constant lr after warm-up; masks in
# their own optimizer group (lr 5e-4, no weight decay).
# kr0.6: the keep ratio it is exported at; the retrain config of that name reads the export.
# CFG = this file, WORK = work_dirs/<its name without .py>:
#   bash tools/dist_train.sh $CFG 16 [--cfg-options load_from=DENSE_CHECKPOINT]
#   python tools/export_subnet.py $CFG $WORK/iter_46094.pth --keep-ratio 0.6 \
#       --input-size 1024 1024 -o $WORK/export
_base_ = './sidt-dense_mask-rcnn_sidtvit-b_simplefpn_lsj-100e_coco.py'
custom_imports = dict(imports=['sidt_mmdet'], allow_failed_imports=False)
default_scope = 'mmdet'

model = dict(
    type='SIDTModel',
    model_type='MaskRCNN',
    sparsity=dict(lambda_attn=2e-4, lambda_mlp=5e-5, lambda_embed=2e-4, macs_weighted=True,
                  input_size=(1024, 1024), keep_threshold=0.05),
    # every weight comes from load_from
    backbone=dict(mode='search', search_dims=('attn', 'mlp', 'embed'), init_cfg=None))
load_from = 'work_dirs/sidt-dense_mask-rcnn_sidtvit-b_simplefpn_lsj-100e_coco/iter_184375.pth'

max_iters = 46094
train_cfg = dict(max_iters=max_iters, dynamic_intervals=None)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=250),
]
optim_wrapper = dict(paramwise_cfg=dict(mask_lr=5e-4))
