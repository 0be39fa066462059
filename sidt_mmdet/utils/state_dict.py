"""Reading state dicts out of checkpoints and loading them strictly, with one report of
what does not fit (missing keys, unexpected keys, shape mismatches)."""
from __future__ import annotations

import copy
import re
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

__all__ = ['StateDictMismatch', 'StateDictMismatchError', 'strip_prefix', 'state_dict_of',
           'compare_state_dicts', 'load_state_dict_strict', 'cpu_state_dict',
           'explain_backbone_keys']


class StateDictMismatchError(ValueError):
    """A state dict does not fit a model; the message lists what differs."""


def strip_prefix(state: Mapping[str, torch.Tensor], prefix: str = 'module.') -> dict:
    """``state`` with ``prefix`` (DataParallel/DDP's ``module.``) removed where present."""
    return {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in state.items()}


def state_dict_of(ckpt, where: str) -> dict[str, torch.Tensor]:
    """The tensors of an mmengine checkpoint (``{'state_dict': ...}``) or of a bare state
    dict, with ``module.`` prefixes stripped; a ValueError names ``where`` otherwise."""
    state = ckpt.get('state_dict', ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict) or not state or \
            not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f'{where}: holds no state dict of tensors (expected '
                         '{"state_dict": ...} as mmengine writes it)')
    return strip_prefix(state)


def _first(items: list[str], n: int = 8) -> str:
    return ', '.join(items[:n]) + (f' ... ({len(items)} in all)' if len(items) > n else '')


@dataclass
class StateDictMismatch:
    """What differs between a model's state dict and one to load into it."""

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    shapes: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.missing or self.unexpected or self.shapes)

    def describe(self) -> str:
        parts = [f'missing keys: {_first(self.missing)}' if self.missing else '',
                 f'unexpected keys: {_first(self.unexpected)}' if self.unexpected else '',
                 f'shape mismatches: {_first(self.shapes)}' if self.shapes else '']
        return '; '.join(p for p in parts if p)


def compare_state_dicts(own: Mapping[str, torch.Tensor],
                        state: Mapping[str, torch.Tensor]) -> StateDictMismatch:
    """Keys of ``own`` that ``state`` lacks, keys it has in excess, and shape mismatches
    (``key: checkpoint (..) vs model (..)``), each sorted."""
    return StateDictMismatch(
        missing=sorted(set(own) - set(state)), unexpected=sorted(set(state) - set(own)),
        shapes=[f'{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}'
                for k in sorted(set(own) & set(state)) if state[k].shape != own[k].shape])


def load_state_dict_strict(model: nn.Module, state: Mapping[str, torch.Tensor], where: str,
                           what: str) -> None:
    """Load ``state`` into ``model`` with no missing, unexpected or misshapen key.

    Raises:
        StateDictMismatchError: ``'{where} does not fit {what}; missing keys: ...'``.
    """
    mismatch = compare_state_dicts(model.state_dict(), state)
    if mismatch:
        raise StateDictMismatchError(f'{where} does not fit {what}; {mismatch.describe()}')
    model.load_state_dict(state, strict=True)


# Backbone keys that one config setting adds or removes: (test of the key without its
# prefix, the setting, what the tensors are). A key that is missing or in excess is then
# explained by that setting differing between the run that wrote the checkpoint and the
# config. The boolean settings build their tensors when True.
_KEY_SETTINGS = (
    (lambda k: k.endswith(('.rel_pos_h', '.rel_pos_w')), 'use_rel_pos',
     'relative-position tables'),
    (lambda k: k == 'cls_token', 'with_cls_token', 'a class token'),
    (lambda k: k == 'pos_embed', 'use_abs_pos', 'an absolute position embedding'),
    (lambda k: k.startswith('norm.'), 'final_norm', 'a final norm'),
    (lambda k: k.endswith('attn.qkv.bias'), 'qkv_bias', 'qkv biases'),
    (lambda k: k.endswith('_mask'), 'search_dims', 'search masks'),
    (lambda k: k.endswith(('.down.weight', '.up.weight', '.up.bias')), 'subnet',
     'factorized (low-rank) layers'),
)
_BLOCK = re.compile(r'blocks\.(\d+)\.')


def _setting_of(key: str, num_layers) -> tuple[str, str]:
    for test, setting, what in _KEY_SETTINGS:
        if test(key):
            return setting, what
    block = _BLOCK.match(key)
    if block and isinstance(num_layers, int) and int(block.group(1)) >= num_layers:
        return 'num_layers', 'blocks'
    return '', 'tensors'


def explain_backbone_keys(missing: list[str], unexpected: list[str],
                          settings: Mapping[str, object], prefix: str = '') -> str:
    """What backbone keys that a checkpoint lacks (``missing``) or has in excess
    (``unexpected``) mean, grouped by the config setting that adds or removes them, with the
    value ``settings`` (the backbone's) gives it; '' when both lists are empty. E.g.
    ``the checkpoint has relative-position tables (backbone.blocks.0.attn.rel_pos_h, ...)
    that the config does not build: it was trained with use_rel_pos=True, the config has
    model.backbone.use_rel_pos=False``. Keys are given without ``prefix``."""
    parts = []
    for keys, in_ckpt in ((unexpected, True), (missing, False)):
        groups: dict[tuple[str, str], list[str]] = {}
        for k in sorted(keys):
            groups.setdefault(_setting_of(k, settings.get('num_layers')), []).append(prefix + k)
        for (setting, what), names in groups.items():
            text = (f'the checkpoint has {what} ({_first(names, 4)}) that the config does not '
                    'build' if in_ckpt else
                    f'the checkpoint lacks {what} ({_first(names, 4)}) that the config builds')
            value = settings.get(setting)
            if setting == 'search_dims':
                text += (': set model.backbone.search_dims (and split_qkv) as in the run that '
                         f'wrote it (the config has search_dims={value!r}, split_qkv='
                         f'{settings.get("split_qkv")!r})')
            elif setting == 'num_layers':
                text += f': it is of another depth (the config has num_layers={value})'
            elif setting == 'subnet':
                text += (': a low-rank export loads with the subnet.json written beside it, '
                         'which records the ranks (the config has model.backbone.subnet='
                         f'{value!r})')
            elif setting:
                text += (f': it was trained with {setting}={in_ckpt}, the config has '
                         f'model.backbone.{setting}={value!r}')
            else:
                text += ': is it a checkpoint of another backbone?'
            parts.append(text)
    return '; '.join(parts)


def cpu_state_dict(module: nn.Module, subnet_file: str | None = None) -> OrderedDict:
    """``module.state_dict()`` on the CPU, keeping its per-module metadata.

    The metadata is where a pruned SIDTViT records the subnet it was built from (its
    digest and file), which a later load checks; ``subnet_file`` replaces the file name
    recorded there (an export builds the model from the subnet's dict, then writes the
    subnet to ``subnet_file``).
    """
    state = module.state_dict()
    out = OrderedDict((k, v.detach().to('cpu')) for k, v in state.items())
    out._metadata = copy.deepcopy(getattr(state, '_metadata', OrderedDict()))
    if subnet_file is not None:
        for entry in out._metadata.values():
            if isinstance(entry.get('sidt_subnet'), dict):
                entry['sidt_subnet']['file'] = subnet_file
    return out
