"""Run-time guards of a search: finite masks, masks in their own optimizer group, a
sparsity loss attached.

They catch mistakes that otherwise run to the end without a word: masks that went NaN
or Inf (and would be exported as garbage), masks optimised with the weights' lr and
weight decay because the optimizer wrapper's constructor put them in the weights' group,
and masks trained without the sparsity loss (moved by the task gradient only).
"""
from __future__ import annotations

import weakref

import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook

__all__ = ['NonFiniteMaskError', 'MaskGroupError', 'MissingSparsityError', 'check_masks_finite',
           'check_sparsity_attached', 'watch_mask_groups']


class NonFiniteMaskError(FloatingPointError, ValueError):
    """A search mask holds NaN or Inf entries (a ValueError too: tools report it as a bad
    input, not as a crash)."""


class MaskGroupError(RuntimeError):
    """The search masks share an optimizer group with other weights, or get weight decay."""


class MissingSparsityError(ValueError):
    """A model with search masks is trained without the sparsity loss (a ValueError: a
    config mistake, reported as a bad input)."""


def check_sparsity_attached(model: torch.nn.Module) -> None:
    """Raise :class:`MissingSparsityError` when ``model`` (the model a Runner trains) has
    trainable search masks but no sparsity loss, i.e. it was not built by ``SIDTModel``
    with ``sparsity=dict(...)``.

    Only mmengine models are checked: a bare ``nn.Module`` holding a search backbone
    computes its loss in its caller's own loop, which may well add the sparsity terms.
    """
    from mmengine.model import BaseModel

    backbone = getattr(model, 'backbone', None)
    if not isinstance(model, BaseModel) or not hasattr(backbone, 'mask_parameters') or \
            getattr(model, 'sidt_sparsity', None) is not None:
        return
    masks = [n for n, p in backbone.mask_parameters().items() if p.requires_grad]
    if not masks:
        return
    kind = type(model).__name__
    prefix = 'mmdet.' if type(model).__module__.startswith('mmpretrain') else ''
    raise MissingSparsityError(
        f"SiDT search without its sparsity loss: model.backbone.mode='search' gives the "
        f'{kind} {len(masks)} trainable mask tensors (backbone.{masks[0]}, ...), but no '
        "sparsity loss is attached: the model is not wrapped by SIDTModel, or "
        "model.sparsity is not set, so the masks would move by the task gradient only. "
        f"Set model=dict(type='{prefix}SIDTModel', model_type='{kind}', "
        "sparsity=dict(lambda_attn=..., lambda_mlp=...), ...) (configs/sidt/search/ and "
        "configs/cifar100/sidt-search_* show it); for a search without the loss on purpose, "
        "sparsity=dict(lambda_attn=0, lambda_mlp=0, allow_zero=True).")


def check_masks_finite(backbone, where: str = '') -> None:
    """Raise :class:`NonFiniteMaskError` naming every mask with NaN/Inf entries.

    One device sync for all masks; the per-layer scan only runs on failure.
    """
    masks = backbone.mask_parameters()
    if not masks:
        return
    flags = torch.stack([torch.isfinite(m.detach()).all() for m in masks.values()])
    if bool(flags.all()):
        return
    bad = []
    for name, m in masks.items():
        m = m.detach()
        n_nan, n_inf = int(torch.isnan(m).sum()), int(torch.isinf(m).sum())
        if n_nan or n_inf:
            bad.append(f'backbone.{name} ({n_nan} NaN, {n_inf} Inf of {m.numel()})')
    raise NonFiniteMaskError(
        f'SiDT search{where}: the masks are no longer finite: {"; ".join(bad)}. The search '
        'diverged (lower the mask lr or the sparsity lambdas, clip gradients, check the loss '
        'scale of mixed precision); stopping before a checkpoint or an export is made of it.')


_ADVICE = ("the optimizer wrapper's constructor did not give the masks their own group. "
           "Use optim_wrapper=dict(constructor="
           "'SIDTLayerDecayOptimWrapperConstructor', paramwise_cfg=dict(mask_lr=...)) (or "
           "mask_lr_mult=... relative to the base lr), or with mmengine's "
           "DefaultOptimWrapperConstructor paramwise_cfg=dict(custom_keys={'_mask': "
           "dict(lr_mult=..., decay_mult=0.)})")


def mask_group_problem(optimizer: torch.optim.Optimizer, mask_ids: set[int]) -> str | None:
    """Why ``optimizer``'s groups do not suit the masks (ids of the mask parameters), or None."""
    for i, group in enumerate(optimizer.param_groups):
        params = group['params']
        n_masks = sum(id(p) in mask_ids for p in params)
        if not n_masks:
            continue
        lr, wd = group.get('lr'), group.get('weight_decay', 0)
        if n_masks < len(params):
            return (f'param group {i} holds {n_masks} search mask tensors together with '
                    f'{len(params) - n_masks} other tensors (lr={lr:g}, weight_decay={wd:g}), '
                    "so the masks get the weights' lr and weight decay")
        if wd:
            return (f'param group {i} of the search masks has weight_decay={wd:g}, which '
                    'pulls every mask towards zero besides the sparsity loss')
    return None


_WATCHED: dict[int, tuple[weakref.ref, set[int]]] = {}
_HANDLE = None


def watch_mask_groups(model: torch.nn.Module) -> None:
    """Check, at the first step of every optimizer, that ``model``'s masks have their own
    weight-decay-free group; raise :class:`MaskGroupError` otherwise.

    The model cannot see its optimizer (mmengine builds it from the config, and in
    distributed runs calls the model through its DDP wrapper), so the check is a torch
    optimizer step pre-hook: one dict lookup per step once an optimizer has passed.
    """
    global _HANDLE
    key = id(model)
    if key in _WATCHED and _WATCHED[key][0]() is model:
        return
    _WATCHED[key] = (weakref.ref(model, lambda _, k=key: _WATCHED.pop(k, None)), set())
    if _HANDLE is None:
        _HANDLE = register_optimizer_step_pre_hook(_check_step)


def _check_step(optimizer, args, kwargs):
    for ref, checked in list(_WATCHED.values()):
        model = ref()
        if model is None or id(optimizer) in checked:
            continue
        masks = {id(p) for p in model.backbone.mask_parameters().values()}
        problem = mask_group_problem(optimizer, masks)
        if problem is not None:
            raise MaskGroupError(f'SiDT search: {problem}: {_ADVICE}.')
        checked.add(id(optimizer))
    return None
