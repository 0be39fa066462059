"""A CIFAR-sized SiDT search run by the stock tools in a few seconds, for the integration
tests of interruption and distributed runs.

It inherits the toy CIFAR-100 search config and makes everything that could differ
between two runs of the same seed deterministic: an iteration-based loop with a
checkpoint every iteration, no random augmentation (every image is 32x32, so no padding
either), no dense checkpoint to start from.
"""
from __future__ import annotations

from pathlib import Path

from helpers import REPO

SEARCH_CFG = (REPO / 'configs/cifar100/'
              'sidt-search_cls_vit-toy-p4-kr0.6_linear_2e_toy-cifar100.py')


def write_config(path: Path, data_root: Path, max_iters: int, batch_size: int,
                 extra: str = '') -> Path:
    path.write_text(f'''\
_base_ = {str(SEARCH_CFG)!r}
load_from = None
data_root = {str(data_root) + '/'!r}
train_pipeline = [dict(type='PackInputs')]
train_dataloader = dict(batch_size={batch_size}, sampler=dict(type='InfiniteSampler',
                        shuffle=True), dataset=dict(data_root=data_root,
                        pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(data_root=data_root))
test_dataloader = val_dataloader
train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters={max_iters},
                 val_interval={max_iters + 1})
val_cfg = None
val_evaluator = None
val_dataloader = None
param_scheduler = [dict(type='CosineAnnealingLR', by_epoch=False, begin=0, end={max_iters},
                        eta_min=1e-5)]
default_hooks = dict(checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=1,
                                     max_keep_ckpts=3),
                     logger=dict(type='LoggerHook', interval=1))
log_processor = dict(by_epoch=False)
randomness = dict(seed=0, deterministic=True)
env_cfg = dict(dist_cfg=dict(backend='gloo'))
{extra}
''')
    return path


def build_search_model(cfg_path: Path = SEARCH_CFG):
    """The search model of ``cfg_path``, built in this process (no data needed)."""
    from mmengine.config import Config
    from mmengine.registry import MODELS, init_default_scope

    import sidt_mmdet  # noqa: F401

    cfg = Config.fromfile(str(cfg_path))
    init_default_scope(cfg.get('default_scope', 'mmpretrain'))
    return MODELS.build(cfg.model)


def write_search_checkpoint(path: Path, seed: int = 0, model=None) -> Path:
    """A checkpoint of the toy CIFAR search model with random masks in [0.5, 1.5)."""
    import torch

    model = model or build_search_model()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.backbone.mask_parameters().values():
            m.copy_(torch.rand(m.shape, generator=g) + 0.5)
    torch.save({'state_dict': model.state_dict(), 'meta': {}}, path)
    return path


def select_from_checkpoint(path: Path, keep_ratio: float = 0.6):
    """The subnet ``select_subnet`` picks from the masks of a search checkpoint."""
    from sidt_mmdet.search import select_subnet
    from sidt_mmdet.utils import load_checkpoint_safe

    model = build_search_model()
    model.load_state_dict(load_checkpoint_safe(path)['state_dict'])
    return select_subnet(model.backbone, keep_ratio=keep_ratio, round_to=1)
