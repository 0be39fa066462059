"""Reading state dicts out of checkpoints and loading them strictly, with one report of
what does not fit (missing keys, unexpected keys, shape mismatches)."""
from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

__all__ = ['StateDictMismatch', 'StateDictMismatchError', 'strip_prefix', 'state_dict_of',
           'compare_state_dicts', 'load_state_dict_strict', 'cpu_state_dict']


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
