"""Convert ViT checkpoints (timm, DeiT, MAE, SAM, ViTDet, mmdet) to SIDTViT's layout.

SIDTViT keeps timm's names, so conversion is mostly unwrapping, prefix stripping,
dropping heads/decoders, and resizing what depends on the input or patch size:
the absolute position embedding (bicubic, as timm), the patch-embedding kernel,
and the relative-position tables (linear, as ViTDet/SAM). Every change is
reported so the caller can log it.
"""
from __future__ import annotations

import math

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


def unwrap_state_dict(ckpt) -> dict[str, torch.Tensor]:
    """The tensor dict inside a checkpoint ({'model': ...}, {'state_dict': ...} or raw)."""
    state = ckpt
    for _ in range(3):
        if not isinstance(state, dict):
            break
        inner = next((state[k] for k in _WRAPPER_KEYS if isinstance(state.get(k), dict)), None)
        if inner is None:
            break
        state = inner
    if not isinstance(state, dict) or not any(isinstance(v, torch.Tensor)
                                              for v in state.values()):
        raise ValueError('checkpoint holds no state dict (looked under '
                         f'{", ".join(_WRAPPER_KEYS)} and at the top level)')
    state = strip_prefix(state)
    for scope in _SCOPES:
        if any(k.startswith(scope) for k in state):
            state = {k[len(scope):]: v for k, v in state.items() if k.startswith(scope)}
            break
    return state


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


def convert_vit_state_dict(ckpt, *, embed_dims: int, patch_size: int, grid: tuple[int, int],
                           num_prefix_tokens: int, rel_pos_lengths: dict[str, int] | None = None
                           ) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Return (state dict in SIDTViT's dense layout, notes on what was changed).

    Args:
        embed_dims: the dense width of the target model (for sanity checks).
        patch_size: the target patch size (the kernel is resampled if it differs).
        grid: the target pretrain token grid (h, w) of ``pos_embed``.
        num_prefix_tokens: 1 if the target has a class token, else 0.
        rel_pos_lengths: target length per rel-pos key (``blocks.N.attn.rel_pos_h``).
    """
    state = unwrap_state_dict(ckpt)
    notes = []
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
            if src_prefix:
                notes.append(f'dropped {src_prefix} prefix-token position(s) of pos_embed')
            pe = patch
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
