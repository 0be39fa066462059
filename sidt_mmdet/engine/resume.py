"""On ``--resume`` the config's optimizer settings win over the checkpoint's.

mmengine's resume loads the optimizer's state dict whole: its parameter groups come back with
the lr, weight decay and ``initial_lr`` of the run that saved them, so a resumed search whose
config changed ``mask_lr`` logs the new value and trains at the old one. The optimizer
wrapper our constructor builds therefore keeps, on ``load_state_dict``, the moment state of
the checkpoint (Adam's averages, the step counts) and the config's hyperparameters:

- an unscheduled one (weight decay, betas, ...) takes the config's value;
- a scheduled one (the lr: mmengine's schedulers record ``initial_lr``) takes the config's
  ``initial_lr``, and its current value is scaled by config / checkpoint ``initial_lr``, which
  is what the schedule gives for the new base value at the same step whenever the schedule is
  proportional to its base (warm-up, step, exponential, cosine to ``eta_min=0`` or
  ``eta_min_ratio``). The schedulers compute every later value from the current one.

One line in the log lists what changed. A checkpoint whose parameter groups have other sizes
(the mask layout changed: ``search_dims``, ``split_qkv``; other frozen parameters) is refused
before anything is loaded, naming the checkpoint, the groups that differ and, when they can
be read, the search dims of both sides: PyTorch would say only that a group "doesn't match
the size of optimizer's group".
"""
from __future__ import annotations

import torch
from mmengine.logging import print_log

from ..utils.safe_load import CheckpointMismatchError, checkpoint_source, load_checkpoint_safe

__all__ = ['config_wins_on_resume', 'mask_layout']

_CLASSES: dict[type, type] = {}


def mask_layout(keys) -> tuple[tuple[str, ...], bool]:
    """``(search_dims, split_qkv)`` of a search model from the names of its mask tensors."""
    keys = [k for k in keys if k.endswith('_mask')]
    dims = tuple(d for d, hit in (
        ('attn', any(k.endswith(('attn.dim_mask', 'attn.qk_mask', 'attn.v_mask')) for k in keys)),
        ('mlp', any(k.endswith('mlp.hidden_mask') for k in keys)),
        ('embed', any(k.endswith('embed_mask') for k in keys))) if hit)
    return dims, any(k.endswith('attn.qk_mask') for k in keys)


class _ConfigWinsOnResume:
    """Mixed into the class of the optimizer wrapper; see the module doc."""

    sidt_group_names: list[list[str]]
    sidt_model = None

    def load_state_dict(self, state_dict: dict) -> None:
        self._sidt_check_layout(state_dict)
        config = [{k: v for k, v in g.items() if k != 'params'}
                  for g in self.optimizer.param_groups]
        super().load_state_dict(state_dict)
        changes = []
        for i, (group, want) in enumerate(zip(self.optimizer.param_groups, config)):
            said = _apply_config(group, want)
            if said:
                changes.append(f'group {i} ({self._sidt_group_label(i)}): {", ".join(said)}')
        if changes:
            print_log("resume: the config's optimizer settings replace the checkpoint's: "
                      + '; '.join(changes), logger='current')

    def _sidt_group_label(self, i: int) -> str:
        names = self.sidt_group_names[i] if i < len(self.sidt_group_names) else []
        if not names:
            return f'{len(self.optimizer.param_groups[i]["params"])} tensors'
        kind = 'the search masks, ' if all(n.endswith('_mask') for n in names) else ''
        return f'{kind}{len(names)} tensors, first {names[0]}'

    def _sidt_check_layout(self, state_dict: dict) -> None:
        saved = state_dict.get('param_groups') if isinstance(state_dict, dict) else None
        if not isinstance(saved, list):
            return  # not an optimizer state dict; PyTorch's own error is clear enough
        groups = self.optimizer.param_groups
        sizes = [len(g.get('params', ())) for g in saved]
        differ = []
        if len(saved) != len(groups):
            differ.append(f'the checkpoint has {len(saved)} parameter groups, the config '
                          f'{len(groups)}')
        differ += [f'group {i} ({self._sidt_group_label(i)}) has {len(g["params"])} tensors '
                   f'in the config, {n} in the checkpoint'
                   for i, (g, n) in enumerate(zip(groups, sizes)) if len(g['params']) != n]
        if not differ:  # same sizes: PyTorch pairs the tensors by position, check their shapes
            differ = self._sidt_shape_mismatches(saved, state_dict.get('state') or {})
        if not differ:
            return
        source = _source_of(state_dict)
        raise CheckpointMismatchError(
            f'{source or "the checkpoint"}: its optimizer state does not fit the optimizer '
            f'of the config: {"; ".join(differ)}{self._sidt_layouts(source)}. --resume needs '
            'the parameter layout of the run that wrote it; to start from its weights with '
            'a new optimizer, give it as load_from without --resume')

    def _sidt_shape_mismatches(self, saved: list, state: dict) -> list[str]:
        bad = []
        for i, (group, theirs) in enumerate(zip(self.optimizer.param_groups, saved)):
            names = self.sidt_group_names[i] if i < len(self.sidt_group_names) else []
            for j, (p, index) in enumerate(zip(group['params'], theirs.get('params', ()))):
                moments = state.get(index) or {}
                shapes = {tuple(v.shape) for v in moments.values()
                          if torch.is_tensor(v) and v.ndim}
                if shapes and shapes != {tuple(p.shape)}:
                    name = names[j] if j < len(names) else f'tensor {j}'
                    bad.append(f'group {i}: {name} {tuple(p.shape)} would get the optimizer '
                               f'state of a tensor of shape {sorted(shapes)[0]}')
        return bad[:3]

    def _sidt_layouts(self, source: str | None) -> str:
        """The search dims of the config's and the checkpoint's model, when they differ."""
        backbone = getattr(self.sidt_model, 'backbone', None)
        if source is None or not hasattr(backbone, 'mask_parameters'):
            return ''
        try:  # only on this error path: the file is read again for its mask names
            ckpt = load_checkpoint_safe(source, map_location='cpu')
        except (OSError, ValueError):
            return ''
        state = ckpt.get('state_dict', {}) if isinstance(ckpt, dict) else {}
        theirs = mask_layout(state)
        ours = mask_layout(backbone.mask_parameters())
        if theirs == ours:
            return ' (the same search masks on both sides: other frozen or trainable tensors?)'
        return (f' (the checkpoint searched search_dims={theirs[0]}, split_qkv={theirs[1]}; the '
                f'config has model.backbone.search_dims={ours[0]}, split_qkv={ours[1]})')


def _source_of(state_dict: dict) -> str | None:
    for per_param in (state_dict.get('state') or {}).values():
        for value in (per_param.values() if isinstance(per_param, dict) else ()):
            if torch.is_tensor(value):
                source = checkpoint_source(value)
                if source is not None:
                    return source
    return None


def _g(value) -> str:
    return format(value, '.4g') if isinstance(value, (int, float)) else repr(value)


def _apply_config(group: dict, want: dict) -> list[str]:
    """Put the config's hyperparameters ``want`` into the loaded ``group``; what changed."""
    said = []
    scheduled = {k[len('initial_'):] for k in want if k.startswith('initial_')}
    if 'momentum' in scheduled:  # mmengine's momentum schedulers drive Adam's betas[0]
        scheduled.add('betas')
    for key, value in want.items():
        if key.startswith('initial_') or key in scheduled:
            continue
        if group.get(key) != value:
            said.append(f'{key} {group.get(key)!r} -> {value!r}')
            group[key] = value
    for key in sorted(scheduled):
        base, old_base = want.get(f'initial_{key}'), group.get(f'initial_{key}')
        value = group.get(key)
        if old_base == base or not isinstance(base, (int, float)) or \
                not isinstance(value, (int, float)):
            continue
        group[key] = value * base / old_base if isinstance(old_base, (int, float)) and \
            old_base else base
        group[f'initial_{key}'] = base
        said.append(f'{key} {value:.4g} -> {group[key]:.4g} (initial_{key} {_g(old_base)} -> '
                    f'{base:.4g}, the schedule rescaled)')
    return said


def config_wins_on_resume(wrapper, group_names: list[list[str]], model=None):
    """``wrapper`` with :class:`_ConfigWinsOnResume` mixed into its class (any mmengine
    optimizer wrapper type); ``group_names`` names the tensors of each parameter group."""
    base = type(wrapper)
    if base not in _CLASSES:
        _CLASSES[base] = type(f'SIDT{base.__name__}', (_ConfigWinsOnResume, base),
                              {'__module__': __name__})
    wrapper.__class__ = _CLASSES[base]
    wrapper.sidt_group_names = group_names
    wrapper.sidt_model = model
    return wrapper
