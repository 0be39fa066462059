"""The one place that knows where the backbone sits in a model config.

A model config is either flat (``dict(type='MaskRCNN', backbone=..., ...)``) or wrapped in
``SIDTModel``, nested (``dict(type='SIDTModel', model=dict(type=..., backbone=...))``) or
flat beside ``model_type`` (``dict(type='SIDTModel', model_type='MaskRCNN', backbone=...)``).
Type names may carry a scope (``mmdet.SIDTViT``) or be the class itself.
"""
from __future__ import annotations

import copy

__all__ = ['is_type', 'inner_model_cfg', 'backbone_cfg', 'with_pruned_backbone',
           'runner_model_cfg']


def is_type(cfg, name: str) -> bool:
    """True when ``cfg`` is a dict whose ``type`` is ``name``, ``scope.name`` or a class
    called ``name``."""
    t = cfg.get('type') if isinstance(cfg, dict) else None
    if isinstance(t, type):
        return t.__name__ == name
    return isinstance(t, str) and (t == name or t.endswith('.' + name))


def inner_model_cfg(model_cfg: dict) -> dict:
    """The config dict holding ``backbone`` (a reference into ``model_cfg``)."""
    inner = model_cfg.get('model') if is_type(model_cfg, 'SIDTModel') else None
    return inner if isinstance(inner, dict) else model_cfg


def backbone_cfg(model_cfg: dict, where: str = 'config') -> dict:
    """The SIDTViT backbone config (a reference into ``model_cfg``).

    Raises:
        ValueError: ``'{where}: model.backbone must be a SIDTViT, got ...'``.
    """
    backbone = inner_model_cfg(model_cfg).get('backbone')
    if not is_type(backbone, 'SIDTViT'):
        got = backbone.get('type') if isinstance(backbone, dict) else backbone
        raise ValueError(f'{where}: model.backbone must be a SIDTViT, got {got!r}')
    return backbone


def with_pruned_backbone(model_cfg: dict, subnet, where: str = 'config') -> dict:
    """A copy of ``model_cfg`` as a retrain config builds it: the backbone in pruned mode
    on ``subnet``, no sparsity loss, wrapped in ``SIDTModel`` so the layers reading the
    backbone (neck, head) follow its width."""
    cfg = copy.deepcopy(model_cfg)
    if is_type(cfg, 'SIDTModel'):
        cfg.pop('sparsity', None)
    else:
        cfg = type(cfg)(type='mmdet.SIDTModel', model=cfg) if isinstance(cfg, dict) else cfg
    backbone_cfg(cfg, where).update(mode='pruned', subnet=subnet, init_cfg=None)
    return cfg


def runner_model_cfg(cfg) -> dict:
    """A copy of ``cfg.model`` as mmengine's Runner builds it: the config's top-level
    ``data_preprocessor`` (mmpretrain's convention: the normalisation lives there) merged in
    unless the model sets its own. A model built from ``cfg.model`` alone would see
    unnormalised pixels."""
    model_cfg = copy.deepcopy(cfg.model)
    if cfg.get('data_preprocessor') is not None:
        model_cfg.setdefault('data_preprocessor', copy.deepcopy(cfg.data_preprocessor))
    return model_cfg
