"""The real ViTDet-B Mask R-CNN config (configs/vitdet/, ViT-B at ViTDet's 1024 grid, windowed
and global blocks with relative positions, simple feature pyramid, layer-decay AdamW) trains one
step on CPU through the stock ``tools/train.py``. Only what CPU cannot afford is changed, in a
config that inherits the real one: the input (256 px LSJ on the generated toy COCO, the 1024
pad of the batch made 256), the MAE weights (none can be downloaded), fp16 AMP (mmengine's
``AmpOptimizerWrapper`` refuses a CPU; the optimizer and its layer decay stay), one image per
batch and one iteration. The model, its heads, its optimizer constructor and its schedule are
the real ones."""
from __future__ import annotations

import math
import re
import sys

import pytest
from helpers import REPO, run_command

from sidt_mmdet.datasets.generation.toy_coco import TOY_COCO_CLASSES
from sidt_mmdet.utils import load_checkpoint_safe

pytestmark = pytest.mark.slow
VITDET_B = REPO / 'configs/vitdet/sidt-dense_mask-rcnn_sidtvit-b_simplefpn_lsj-100e_coco.py'
SIZE = 256
GLOBAL_BLOCKS = (2, 5, 8, 11)


def _small_input_config(path, data_root):
    path.write_text(f"""\
_base_ = {str(VITDET_B)!r}
image_size = ({SIZE}, {SIZE})
data_root = {str(data_root) + '/'!r}
metainfo = dict(classes={TOY_COCO_CLASSES!r})
model = dict(
    data_preprocessor=dict(
        batch_augments=[dict(type='BatchFixedSizePad', size=image_size, pad_mask=True)]),
    backbone=dict(init_cfg=None))
optim_wrapper = dict(type='OptimWrapper')
train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomResize', scale=image_size, ratio_range=(0.8, 1.25), keep_ratio=True),
    dict(type='RandomCrop', crop_type='absolute_range', crop_size=image_size,
         recompute_bbox=True, allow_negative_crop=True),
    dict(type='FilterAnnotations', min_gt_bbox_wh=(1e-2, 1e-2)),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
train_dataloader = dict(
    batch_size=1, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, metainfo=metainfo, pipeline=train_pipeline))
# no validation: mmengine validates after the last iteration, here at the real config's 1024
# test resolution (its pipeline is resolved in the base file)
val_dataloader = val_cfg = val_evaluator = None
test_dataloader = test_cfg = test_evaluator = None
train_cfg = dict(max_iters=1, val_interval=1000)
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=1))
randomness = dict(seed=0)
""")
    return path


def test_vitdet_b_mask_rcnn_trains_one_step_on_cpu(tmp_path, toy_coco_dir):
    """Catches a real-size config that only the toy models ever ran: a backbone option of
    ViTDet's spelling that breaks at ViT-B size (rel-pos tables at the 1024 grid resized to the
    256 input, windows of 14 on a 16 x 16 grid that must be padded), heads that do not accept
    the pyramid, or the layer-decay constructor failing on the real parameter names."""
    cfg = _small_input_config(tmp_path / 'vitdet_b_256.py', toy_coco_dir)
    work = tmp_path / 'work'
    out = run_command([sys.executable, 'tools/train.py', str(cfg), '--work-dir', str(work)],
                      timeout=600)
    log = out.stdout + out.stderr
    losses = {k: float(v) for k, v in re.findall(r'\b(loss(?:_\w+)?): (\S+)', log)}
    for name in ('loss', 'loss_rpn_cls', 'loss_rpn_bbox', 'loss_cls', 'loss_bbox', 'loss_mask'):
        assert name in losses, (name, log[-3000:])
        assert math.isfinite(losses[name]) and losses[name] >= 0, (name, losses)
    assert losses['loss'] > 0
    ckpt = load_checkpoint_safe(str(work / 'iter_1.pth'))
    state = ckpt['state_dict']
    assert state['backbone.pos_embed'].shape == (1, 64 * 64, 768)  # ViTDet's 1024 grid
    for i in range(12):
        # ViTDet-B: global blocks keep the 1024 grid's table (2*64-1), windows of 14 theirs
        want = 2 * (64 if i in GLOBAL_BLOCKS else 14) - 1
        assert state[f'backbone.blocks.{i}.attn.rel_pos_h'].shape == (want, 64), i
    # one AdamW step was taken on every trainable parameter, with the layer decays
    opt = ckpt['optimizer']
    stepped = [s for s in opt['state'].values() if 'exp_avg' in s]
    assert stepped and all(int(s['step']) == 1 for s in stepped)
    lrs = sorted({g['lr'] for g in opt['param_groups']})
    assert len(lrs) > 12, 'layer decay gives each of the 12 blocks its own learning rate'
