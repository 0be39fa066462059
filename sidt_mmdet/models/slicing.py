"""Physically slice a dense (or search-mode) SIDTViT state dict to a subnet.

Each searchable kind (:mod:`.kinds`) says which tensors it cuts and along which axis,
with its surviving mask values folded into the weights they multiply, so the pruned model
needs no masks; this module applies every kind's cuts in turn.
"""
from __future__ import annotations

import torch

from .kinds import KINDS, is_mask_key, mask_suffixes
from .subnet import Subnet

__all__ = ['slice_vit_state_dict', 'MASK_SUFFIXES', 'is_mask_key']

MASK_SUFFIXES = mask_suffixes()


def slice_vit_state_dict(state: dict[str, torch.Tensor], subnet: Subnet,
                         fold_masks: bool = True) -> dict[str, torch.Tensor]:
    """Return a new state dict for ``SIDTViT(mode='pruned', subnet=subnet)``.

    ``state`` uses the backbone's own key names (no ``backbone.`` prefix) and dense
    shapes; mask keys, when present, are folded (``fold_masks``) and dropped.
    Keys the subnet does not touch are passed through unchanged.
    """
    cuts: dict[str, list] = {}
    for kind in KINDS.values():
        for key, cut in kind.cuts(state, subnet, fold_masks):
            if key in state:
                cuts.setdefault(key, []).append(cut)
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key in cuts:
            for cut in cuts[key]:
                value = cut.apply(value)
            out[key] = value.detach().clone().contiguous()
        elif not is_mask_key(key):
            out[key] = value
    return out


def rel_pos_columns(subnet: Subnet, block: int) -> list[list[int]]:
    """Per active head, the columns of the sliced rel-pos tables (union layout) it uses."""
    where = {j: i for i, j in enumerate(subnet.qk_union(block))}
    qk = subnet.blocks[block]['qk']
    return [[where[j] for j in qk[h]] for h in subnet.active_heads(block)]
