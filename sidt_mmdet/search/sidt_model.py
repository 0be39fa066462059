"""``SIDTModel``: wrap any mmdet detector or mmpretrain classifier with a SIDTViT backbone.

It does two things a plain config cannot:

- makes the layers that read the backbone follow its (pruned) embedding width:
  ``SIDTSimpleFPN.input_channels`` and a classifier head's ``in_channels``;
- in search mode, adds the sparsity loss to the model's ``loss()``.

The result IS the wrapped model (a MaskRCNN stays a MaskRCNN, with the same state
dict keys), so mmdet's and mmpretrain's tools, hooks and metrics work unchanged.
The wrapped model is given whole, or flat with ``model_type`` so that a stage
config can inherit the dense config and override only what changes::

    model = dict(type='SIDTModel', sparsity=dict(lambda_attn=1e-4, lambda_mlp=1e-4),
                 model=dict(type='MaskRCNN', backbone=dict(type='SIDTViT', mode='search'), ...))
    # or, in a config whose _base_ is the dense MaskRCNN config:
    model = dict(type='SIDTModel', model_type='MaskRCNN', sparsity=dict(...),
                 backbone=dict(mode='search'))
"""
from __future__ import annotations

import copy

from mmdet.registry import MODELS

from ..models.backbones.sidt_vit import SIDTViT
from ..models.stride_check import check_pyramid_strides
from ..utils.config import is_type
from .checks import watch_mask_groups
from .sparsity import SparsityLoss

__all__ = ['SIDTModel', 'backbone_out_channels']

_SEARCH_CLASSES: dict[type, type] = {}


def backbone_out_channels(backbone_cfg: dict) -> int:
    """Width of the map a SIDTViT config produces, without building it."""
    return SIDTViT.out_channels_from_cfg(backbone_cfg)


class _SparsitySearch:
    """Mixed into the wrapped model's class: adds the sparsity terms to ``loss()``."""

    def loss(self, inputs, data_samples):
        watch_mask_groups(self)
        losses = super().loss(inputs, data_samples)
        losses.update(self.sidt_sparsity(self.backbone))
        return losses


def _search_class(base: type) -> type:
    if base not in _SEARCH_CLASSES:
        _SEARCH_CLASSES[base] = type(f'SIDTSearch{base.__name__}', (_SparsitySearch, base),
                                     {'__module__': __name__})
    return _SEARCH_CLASSES[base]


@MODELS.register_module()
def SIDTModel(model: dict | None = None, sparsity: dict | None = None,  # noqa: N802
              model_type: str | None = None, **model_kwargs):
    """Build the wrapped model with its readers of the backbone sized to it; see module doc."""
    if (model is None) == (model_type is None):
        raise ValueError('SIDTModel: give either model=dict(type=..., ...) or model_type=... '
                         'with the model\'s fields beside it')
    if model is not None and model_kwargs:
        raise ValueError(f'SIDTModel: unexpected keys {sorted(model_kwargs)} beside model=...')
    cfg = copy.deepcopy(dict(model) if model is not None else dict(model_kwargs, type=model_type))
    backbone = cfg.get('backbone')
    if not is_type(backbone, 'SIDTViT'):
        raise ValueError("SIDTModel: model.backbone must be dict(type='SIDTViT', ...), got "
                         f"{backbone.get('type') if isinstance(backbone, dict) else backbone!r}")
    width = backbone_out_channels(backbone)
    neck = cfg.get('neck')
    if is_type(neck, 'SIDTSimpleFPN'):
        given = neck.get('input_channels')
        if given is not None and given != width:
            raise ValueError(f'SIDTModel: neck.input_channels={given} but the backbone gives '
                             f'{width} channels')
        neck['input_channels'] = width
    head = cfg.get('head')
    if neck is None and isinstance(head, dict) and 'in_channels' in head and \
            backbone.get('out_type', 'featmap') != 'featmap':
        dense = SIDTViT.out_channels_from_cfg(dict(backbone, mode='dense', subnet=None))
        if head['in_channels'] not in (width, dense):
            raise ValueError(f'SIDTModel: head.in_channels={head["in_channels"]} fits neither the '
                             f'backbone width {width} nor its dense width {dense}')
        head['in_channels'] = width
    if sparsity is not None and backbone.get('mode') != 'search':
        raise ValueError("SIDTModel: sparsity needs the backbone in mode='search', got "
                         f"mode={backbone.get('mode', 'dense')!r}")
    built = MODELS.build(cfg)
    check_pyramid_strides(built, where='SIDTModel')  # heads vs the pyramid, at build
    if sparsity is not None:
        built.__class__ = _search_class(type(built))
        built.sidt_sparsity = SparsityLoss(**sparsity)
    return built
