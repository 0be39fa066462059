"""Which stack this import runs on: the detection stack (mmdet, and with it mmcv and OpenCV)
or the backbone path alone (torch, timm and mmengine, e.g. a GPU machine given only the
wheels of ``tools/deploy/``).

mmcv imports OpenCV as it is imported, and mmengine's runner imports its visualiser, which
imports OpenCV too; a machine that only times backbones needs neither. So, where mmdet is
not installed, ``import sidt_mmdet`` imports the backbone path only: SIDTViT (in a
registry of this package), subnets, selection, complexity counts, export slicing and the
latency table and study. The components that need mmdet (the neck, ``SIDTModel``, the
hooks, the optimizer constructor) and the safe checkpoint loader are left out, and asking
for one says why. Where mmdet is installed nothing changes: everything is imported, and an
error of the stack shows as it did.
"""
from __future__ import annotations

import importlib.util

from torch import nn

__all__ = ['DETECTION_STACK', 'MODELS', 'build_norm', 'needs_detection_stack']

DETECTION_STACK = importlib.util.find_spec('mmdet') is not None

if DETECTION_STACK:
    from mmdet.registry import MODELS
else:
    from mmengine.registry import Registry

    # no detector is built without mmdet: this registry only keeps the names registered
    MODELS = Registry('model')


def build_norm(cfg: dict, dim: int) -> nn.Module:
    """mmcv's ``build_norm_layer(cfg, dim)[1]``; without mmdet (so without mmcv), the
    LayerNorm of ``type='LN'`` built the same way, and any other type refused."""
    if DETECTION_STACK:
        from mmcv.cnn import build_norm_layer
        return build_norm_layer(cfg, dim)[1]
    cfg = dict(cfg)
    kind = cfg.pop('type', None)
    if kind != 'LN':
        raise ValueError(f"norm_cfg: without mmdet and mmcv only type='LN' is built, got "
                         f'{kind!r}')
    requires_grad = cfg.pop('requires_grad', True)
    cfg.setdefault('eps', 1e-5)  # mmcv's default
    layer = nn.LayerNorm(dim, **cfg)
    for p in layer.parameters():
        p.requires_grad = requires_grad
    return layer


def needs_detection_stack(module: str, name: str) -> ImportError:
    """The error for ``module.name``, left out of a backbone-only import."""
    return ImportError(f'{module}.{name} needs mmdet (and mmcv), which is not installed: this '
                       'import of sidt_mmdet has the backbone path only')
