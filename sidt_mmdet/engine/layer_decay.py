"""Layer-wise lr decay for SIDTViT models, with the search masks in their own group."""
from __future__ import annotations

from mmdet.registry import OPTIM_WRAPPER_CONSTRUCTORS
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from mmengine.optim import DefaultOptimWrapperConstructor

__all__ = ['SIDTLayerDecayOptimWrapperConstructor']

_NO_DECAY_SUFFIXES = ('pos_embed', 'cls_token', 'rel_pos_h', 'rel_pos_w')


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class SIDTLayerDecayOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """ViTDet's recipe: lr of backbone layer i scaled by ``decay ** (L + 1 - i)``.

    ``paramwise_cfg`` keys:
        layer_decay_rate: e.g. 0.7 (ViT-B), 0.8 (L), 0.9 (H); 1.0 disables it.
        mask_lr: lr of the search masks (default: the base lr); masks get no
            weight decay, which would fight the sparsity loss's own pull.
        mask_lr_mult: alternative to ``mask_lr``, relative to the base lr.

    1-D parameters (norms, biases), position embeddings, class token and
    relative-position tables get no weight decay. Layer depths come from the
    backbone's ``get_layer_depth``, which mmpretrain's constructor also uses.
    """

    def __init__(self, optim_wrapper_cfg: dict, paramwise_cfg: dict | None = None):
        # mmengine skips add_params when paramwise_cfg is empty; ours always groups.
        paramwise_cfg = dict(paramwise_cfg or {})
        paramwise_cfg.setdefault('layer_decay_rate', 1.0)
        super().__init__(optim_wrapper_cfg, paramwise_cfg)

    def add_params(self, params: list[dict], module, **kwargs) -> None:
        if is_model_wrapper(module):
            module = module.module
        cfg = self.paramwise_cfg or {}
        decay = float(cfg.get('layer_decay_rate', 1.0))
        if not 0 < decay <= 1:
            raise ValueError(f'paramwise_cfg.layer_decay_rate: expected (0, 1], got {decay}')
        base_lr = self.base_lr
        base_wd = self.base_wd or 0.
        mask_lr = cfg.get('mask_lr', base_lr * float(cfg.get('mask_lr_mult', 1.0)))
        backbone = getattr(module, 'backbone', None)
        get_depth = getattr(backbone, 'get_layer_depth', None)
        groups: dict[tuple, dict] = {}
        for name, p in module.named_parameters():
            if not p.requires_grad:
                continue
            if name.endswith('_mask'):
                key = ('mask',)
                lr, wd = mask_lr, 0.
            else:
                scale = 1.
                if get_depth is not None and name.startswith('backbone.'):
                    layer, num = get_depth(name, 'backbone.')
                    scale = decay ** (num - 1 - layer)
                no_decay = p.ndim == 1 or name.endswith(_NO_DECAY_SUFFIXES)
                lr, wd = base_lr * scale, 0. if no_decay else base_wd
                key = (round(scale, 12), no_decay)
            group = groups.setdefault(key, dict(params=[], lr=lr, weight_decay=wd, names=[]))
            group['params'].append(p)
            group['names'].append(name)
        for key, group in groups.items():
            names = group.pop('names')
            print_log(f'param group {key}: {len(names)} tensors, lr={group["lr"]:.3g}, '
                      f'weight_decay={group["weight_decay"]:.3g}', logger='current')
            params.append(group)
