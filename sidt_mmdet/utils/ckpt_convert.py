"""Convert ViT checkpoints (timm, DeiT, MAE, SAM, ViTDet, mmdet) to SIDTViT's layout.

SIDTViT keeps timm's names, so conversion is mostly unwrapping, prefix stripping,
dropping heads/decoders, and resizing what depends on the input or patch size:
the absolute position embedding (bicubic, as timm), the patch-embedding kernel,
and the relative-position tables (linear, as ViTDet/SAM). Every change is
reported so the caller can log it.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from timm.layers import resample_abs_pos_embed, resample_patch_embed

from .state_dict import strip_prefix

__all__ = ['unwrap_state_dict', 'convert_vit_state_dict']

# Wrappers seen in the wild, outermost first.
_WRAPPER_KEYS = ('state_dict', 'model', 'module')
# Where a ViT lives inside a bigger model: mmdet detectors, detectron2 ViTDet, SAM.
_SCOPES = ('backbone.net.', 'backbone.', 'image_encoder.', 'encoder.')
# Keys of parts SIDTViT does not have.
_DROP_PREFIXES = ('head.', 'fc_norm.', 'decoder', 'mask_token', 'neck.', 'dist_token',
                  'head_dist.', 'pre_logits.', 'attn_pool.')
# Original SAM checkpoints name the MLP lin1/lin2 (timm and SIDTViT: fc1/fc2).
_RENAMES = (('mlp.lin1.', 'mlp.fc1.'), ('mlp.lin2.', 'mlp.fc2.'))


def unwrap_state_dict(ckpt) -> dict[str, torch.Tensor]:
    """The tensor dict inside a checkpoint ({'model': ...}, {'state_dict': ...} or raw)."""
    return _unwrap(ckpt)[0]


def _unwrap(ckpt) -> tuple[dict[str, torch.Tensor], list[str]]:
    notes = []
    state, path = ckpt, []
    for _ in range(3):
        if not isinstance(state, dict):
            break
        key = next((k for k in _WRAPPER_KEYS if isinstance(state.get(k), dict)), None)
        if key is None:
            break
        path.append(key)
        state = state[key]
    if isinstance(state, dict):  # detectron2's model-zoo pickles hold numpy arrays
        arrays = [k for k, v in state.items() if isinstance(v, np.ndarray)]
        if arrays:
            state = {k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v
                     for k, v in state.items()}
            notes.append(f'converted {len(arrays)} numpy arrays to tensors')
    if not isinstance(state, dict) or not any(isinstance(v, torch.Tensor)
                                              for v in state.values()):
        raise ValueError('checkpoint holds no state dict (looked under '
                         f'{", ".join(_WRAPPER_KEYS)} and at the top level)')
    if path:
        notes.append(f'read the weights under {"/".join(repr(k) for k in path)}')
    wrapped = [k for k in state if k.startswith('module.')]
    if wrapped:
        state = strip_prefix(state)
        notes.append(f"stripped 'module.' from {len(wrapped)} keys")
    for scope in _SCOPES:
        inside = [k for k in state if k.startswith(scope)]
        if inside:
            outside = sorted(k for k in state if not k.startswith(scope))
            state = {k[len(scope):]: state[k] for k in inside}
            note = f"kept the {len(inside)} keys under '{scope}' (prefix stripped)"
            if outside:
                note += (f'; dropped {len(outside)} keys outside it '
                         f'(e.g. {", ".join(outside[:3])})')
            notes.append(note)
            break
    renamed = [k for k in state if any(old in k for old, _ in _RENAMES)]
    if renamed:
        for old, new in _RENAMES:
            state = {k.replace(old, new): v for k, v in state.items()}
        notes.append(f'renamed {len(renamed)} SAM MLP keys (mlp.lin1/lin2 -> mlp.fc1/fc2)')
    return state, notes


def _num_prefix_tokens(length: int) -> tuple[int, tuple[int, int]]:
    for prefix in (0, 1, 2):
        side = math.isqrt(length - prefix)
        if side * side == length - prefix:
            return prefix, (side, side)
    raise ValueError(f'pos_embed: {length} positions form no square grid with 0-2 prefix tokens')


def _resize_rel_pos(table: torch.Tensor, length: int) -> torch.Tensor:
    # Same interpolation as ViTDet/SAM's get_rel_pos.
    t = F.interpolate(table.float().t()[None], size=length, mode='linear')
    return t[0].t().to(table.dtype)


def convert_vit_state_dict(ckpt, *, patch_size: int, grid: tuple[int, int],
                           num_prefix_tokens: int, rel_pos_lengths: dict[str, int] | None = None
                           ) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Return (state dict in SIDTViT's dense layout, notes on what was changed).

    Shapes are not checked here (a pruned checkpoint is narrower than the dense
    model); the loader compares them with the model's and lists every mismatch.

    Args:
        patch_size: the target patch size (the kernel is resampled if it differs).
        grid: the target pretrain token grid (h, w) of ``pos_embed``.
        num_prefix_tokens: 1 if the target has a class token, else 0.
        rel_pos_lengths: target length per rel-pos key (``blocks.N.attn.rel_pos_h``).
    """
    state, notes = _unwrap(ckpt)
    dropped = sorted(k for k in state if k.startswith(_DROP_PREFIXES))
    if dropped:
        notes.append(f'dropped {len(dropped)} keys of parts SIDTViT has no use for '
                     f'(e.g. {", ".join(dropped[:3])})')
    state = {k: v for k, v in state.items() if not k.startswith(_DROP_PREFIXES)}

    if 'pos_embed' in state:
        pe = state['pos_embed']
        if pe.dim() == 4:  # SAM / ViTDet-SAM: (1, H, W, C)
            src_prefix, src_grid = 0, (pe.shape[1], pe.shape[2])
            pe = pe.reshape(1, -1, pe.shape[-1])
        else:
            src_prefix, src_grid = _num_prefix_tokens(pe.shape[1])
        prefix, patch = pe[:, :src_prefix], pe[:, src_prefix:]
        if tuple(src_grid) != tuple(grid):
            patch = resample_abs_pos_embed(patch, list(grid), old_size=list(src_grid),
                                           num_prefix_tokens=0)
            notes.append(f'resized pos_embed grid {tuple(src_grid)} -> {tuple(grid)} (bicubic)')
        if num_prefix_tokens == 1 and src_prefix >= 1:
            pe = torch.cat([prefix[:, :1], patch], dim=1)
        elif num_prefix_tokens == 1:
            pe = torch.cat([patch.new_zeros(1, 1, patch.shape[-1]), patch], dim=1)
            notes.append('pos_embed had no class-token position: initialised it to zero')
        else:
            pe = patch
        if src_prefix > num_prefix_tokens:  # no class token here, or DeiT's distillation one
            notes.append(f'dropped {src_prefix - num_prefix_tokens} prefix-token position(s) '
                         f'of pos_embed ({src_prefix} in the checkpoint, {num_prefix_tokens} '
                         'in the model)')
        state['pos_embed'] = pe

    key = 'patch_embed.proj.weight'
    if key in state and tuple(state[key].shape[-2:]) != (patch_size, patch_size):
        old = tuple(state[key].shape[-2:])
        state[key] = resample_patch_embed(state[key], [patch_size, patch_size])
        notes.append(f'resampled patch_embed kernel {old} -> {(patch_size, patch_size)}')

    for key, length in (rel_pos_lengths or {}).items():
        if key in state and state[key].shape[0] != length:
            old = state[key].shape[0]
            state[key] = _resize_rel_pos(state[key], length)
            notes.append(f'resized {key} {old} -> {length} (linear)')
    return state, notes
