"""Layer-wise lr decay for SIDTViT models, with the search masks in their own group."""
from __future__ import annotations

from mmdet.registry import OPTIM_WRAPPER_CONSTRUCTORS
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from mmengine.optim import DefaultOptimWrapperConstructor

from ..search.checks import check_sparsity_attached
from .resume import config_wins_on_resume

__all__ = ['SIDTLayerDecayOptimWrapperConstructor']

_NO_DECAY_SUFFIXES = ('pos_embed', 'cls_token', 'rel_pos_h', 'rel_pos_w')
_OWN_KEYS = ('layer_decay_rate', 'mask_lr', 'mask_lr_mult')
# mmengine's DefaultOptimWrapperConstructor rules, applied as mmengine applies them.
_MMENGINE_KEYS = ('custom_keys', 'bias_lr_mult', 'bias_decay_mult', 'norm_decay_mult',
                  'dwconv_decay_mult', 'flat_decay_mult', 'dcn_offset_lr_mult',
                  'bypass_duplicate')


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class SIDTLayerDecayOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """ViTDet's recipe: lr of backbone layer i scaled by ``decay ** (L + 1 - i)``.

    Layer ids come from the backbone's ``get_layer_depth`` (mmpretrain's constructor
    asks the same method): 0 for the patch/position embeddings and the class token,
    ``i + 1`` for block ``i``, ``L + 1`` for everything after the last block and for
    every parameter outside the backbone (scale 1).

    ``paramwise_cfg`` keys of its own:
        layer_decay_rate: e.g. 0.7 (ViT-B), 0.8 (L), 0.9 (H); 1.0 disables it.
        mask_lr: lr of the search masks (default: the base lr).
        mask_lr_mult: alternative to ``mask_lr``, relative to the base lr.

    mmengine's keys (``custom_keys``, ``bias_lr_mult``, ``bias_decay_mult``,
    ``norm_decay_mult``, ``dwconv_decay_mult``, ``flat_decay_mult``,
    ``dcn_offset_lr_mult``, ``bypass_duplicate``) are honoured: each parameter first
    gets the lr and weight decay mmengine's ``DefaultOptimWrapperConstructor`` gives
    it, then the layer-decay scale multiplies that lr. Any other key is refused.

    Weight decay: a parameter that no mmengine rule gave a weight decay gets none
    when it is 1-D (norms, biases), a position embedding, the class token or a
    relative-position table, else the optimizer's. The search masks (``*_mask``)
    always form one group of lr ``mask_lr`` and weight decay 0 (decay would fight
    the sparsity loss's own pull); mmengine's rules and the layer decay do not
    apply to them, and a custom key that would have matched a mask is logged.

    A model with trainable masks but no sparsity loss (not built by ``SIDTModel`` with
    ``sparsity``) is refused when the wrapper is built. On ``--resume`` the config's lr,
    weight decay and mask lr win over the checkpoint's (see :mod:`.resume`).
    """

    def __init__(self, optim_wrapper_cfg: dict, paramwise_cfg: dict | None = None):
        # mmengine skips add_params when paramwise_cfg is empty; ours always groups.
        paramwise_cfg = dict(paramwise_cfg or {})
        unknown = sorted(set(paramwise_cfg) - set(_OWN_KEYS) - set(_MMENGINE_KEYS))
        if unknown:
            raise ValueError(f'paramwise_cfg: unknown key(s) {unknown} for '
                             f'SIDTLayerDecayOptimWrapperConstructor; expected some of '
                             f'{sorted(_OWN_KEYS + _MMENGINE_KEYS)}')
        paramwise_cfg.setdefault('layer_decay_rate', 1.0)
        decay = paramwise_cfg['layer_decay_rate']
        if not isinstance(decay, (int, float)) or not 0 < decay <= 1:
            raise ValueError(f'paramwise_cfg.layer_decay_rate: expected a number in (0, 1], '
                             f'got {decay!r}')
        if 'mask_lr' in paramwise_cfg and 'mask_lr_mult' in paramwise_cfg:
            raise ValueError('paramwise_cfg: give mask_lr or mask_lr_mult, not both')
        super().__init__(optim_wrapper_cfg, paramwise_cfg)
        if self.base_lr is None:
            raise ValueError('optim_wrapper.optimizer.lr: must be set (layer-wise lr decay '
                             'scales it)')
        mm_cfg = {k: v for k, v in paramwise_cfg.items() if k in _MMENGINE_KEYS}
        # mmengine's rules (only its add_params is used: the optimizer config is enough)
        self._rules = DefaultOptimWrapperConstructor(dict(optimizer=dict(self.optimizer_cfg)),
                                                     mm_cfg)

    def __call__(self, model):
        check_sparsity_attached(model.module if is_model_wrapper(model) else model)
        self._group_names: list[list[str]] = []
        return config_wins_on_resume(super().__call__(model), self._group_names,
                                     model.module if is_model_wrapper(model) else model)

    def add_params(self, params: list[dict], module, **kwargs) -> None:
        # mmengine's __call__ hands over the model unwrapped (DDP's ``.module``)
        cfg = self.paramwise_cfg
        decay = float(cfg['layer_decay_rate'])
        mask_lr = cfg.get('mask_lr', self.base_lr * float(cfg.get('mask_lr_mult', 1.0)))
        custom_keys = cfg.get('custom_keys', {})
        backbone = getattr(module, 'backbone', None)
        get_depth = getattr(backbone, 'get_layer_depth', None)
        names = {id(p): n for n, p in module.named_parameters()}

        # mmengine's rules, one entry per trainable parameter occurrence: it leaves frozen
        # tensors out, and with ``bypass_duplicate`` the repeats of a shared one.
        rules: list[dict] = []
        self._rules.add_params(rules, module)

        groups: dict[tuple, dict] = {}
        seen: set[int] = set()
        for rule in rules:
            p = rule['params'][0]
            name = names[id(p)]
            if id(p) in seen:
                raise ValueError(f'parameter {name} is shared by several modules; set '
                                 'paramwise_cfg.bypass_duplicate=True to optimise it once')
            seen.add(id(p))
            if name.endswith('_mask'):
                matched = [k for k in custom_keys if k in name]
                if matched:
                    print_log(f'paramwise_cfg.custom_keys {matched} not applied to the search '
                              f'mask {name} (masks use mask_lr / mask_lr_mult)',
                              logger='current')
                group = dict(lr=mask_lr, weight_decay=0.)
            else:
                scale = 1.
                if get_depth is not None and name.startswith('backbone.'):
                    layer, num = get_depth(name, 'backbone.')
                    scale = decay ** (num - 1 - layer)
                group = {k: v for k, v in rule.items() if k != 'params'}
                group['lr'] = group.get('lr', self.base_lr) * scale
                if 'weight_decay' not in group:
                    if p.ndim == 1 or name.endswith(_NO_DECAY_SUFFIXES):
                        group['weight_decay'] = 0.
                    elif self.base_wd is not None:
                        group['weight_decay'] = self.base_wd
            key = (name.endswith('_mask'),) + tuple(sorted((k, repr(v)) for k, v in group.items()))
            entry = groups.setdefault(key, dict(group, params=[], names=[]))
            entry['params'].append(p)
            entry['names'].append(name)
        for i, group in enumerate(groups.values()):
            group_names = group.pop('names')
            if hasattr(self, '_group_names'):
                self._group_names.append(group_names)
            wd = group.get('weight_decay')
            print_log(f'param group {i}: {len(group_names)} tensors (first {group_names[0]}), '
                      f'lr={group["lr"]:.4g}, weight_decay='
                      f'{"optimizer default" if wd is None else format(wd, ".4g")}',
                      logger='current')
            params.append(group)
