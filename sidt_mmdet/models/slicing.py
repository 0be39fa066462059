"""Physically slice a dense (or search-mode) SIDTViT state dict to a subnet.

Surviving mask values are folded into the weights they multiply, so the pruned
model needs no masks:

- q/k mask (H, d): rows of W_q, W_k and their biases;
- v mask: rows of W_v and its bias (v = W_v x + b_v is linear);
- MLP mask: columns of fc2 (it multiplies GELU's output, which fc1 cannot absorb);
- embedding mask: every write into the residual stream (patch embedding, class
  token, position embedding, attn.proj rows, fc2 rows) and every normalised read
  (norm1/norm2/norm weight and bias).

The q/k/v row layout is timm's: row ``s * D + h * d + j`` for s in (q, k, v).
"""
from __future__ import annotations

import torch

from .subnet import Subnet

__all__ = ['slice_vit_state_dict', 'MASK_SUFFIXES', 'is_mask_key']

MASK_SUFFIXES = ('dim_mask', 'qk_mask', 'v_mask', 'hidden_mask', 'embed_mask')


def is_mask_key(key: str) -> bool:
    return key.rsplit('.', 1)[-1] in MASK_SUFFIXES


def _head_scale(mask: torch.Tensor | None, groups: list[list[int]]) -> torch.Tensor | None:
    if mask is None:
        return None
    return torch.cat([mask[h, dims] for h, dims in enumerate(groups)])


def _rows(t: torch.Tensor, rows, scale=None) -> torch.Tensor:
    rows = torch.as_tensor(rows, dtype=torch.long, device=t.device)
    out = t.index_select(0, rows)
    if scale is not None:
        out = out * scale.to(out).view(-1, *([1] * (out.dim() - 1)))
    return out


def _cols(t: torch.Tensor, cols, scale=None) -> torch.Tensor:
    cols = torch.as_tensor(cols, dtype=torch.long, device=t.device)
    out = t.index_select(1, cols)
    if scale is not None:
        out = out * scale.to(out).view(1, -1, *([1] * (out.dim() - 2)))
    return out


def slice_vit_state_dict(state: dict[str, torch.Tensor], subnet: Subnet,
                         fold_masks: bool = True) -> dict[str, torch.Tensor]:
    """Return a new state dict for ``SIDTViT(mode='pruned', subnet=subnet)``.

    ``state`` uses the backbone's own key names (no ``backbone.`` prefix) and dense
    shapes; mask keys, when present, are folded (``fold_masks``) and dropped.
    Keys the subnet does not touch are passed through unchanged.
    """
    D, d = subnet.embed_dims, subnet.head_dim
    E = subnet.kept_embed
    Et = torch.as_tensor(E, dtype=torch.long)

    def mask(key):
        return state.get(key) if fold_masks else None

    m_e = mask('embed_mask')
    m_e = m_e[Et] if m_e is not None else None
    out: dict[str, torch.Tensor] = {}
    handled = set()

    def put(key, value):
        out[key] = value.detach().clone().contiguous()
        handled.add(key)

    for key in ('patch_embed.proj.weight', 'patch_embed.proj.bias', 'norm.weight', 'norm.bias'):
        if key in state:
            put(key, _rows(state[key], E, m_e))
    for key in ('cls_token', 'pos_embed'):
        if key in state:
            t = state[key].index_select(-1, Et.to(state[key].device))
            put(key, t * m_e.to(t) if m_e is not None else t)

    for i, blk in enumerate(subnet.blocks):
        p = f'blocks.{i}.'
        qk, v = blk['qk'], blk['v']
        active = subnet.active_heads(i)
        qk_a = [qk[h] for h in active]
        v_a = [v[h] for h in active]
        if fold_masks and p + 'attn.dim_mask' in state:
            m_qk = m_v = state[p + 'attn.dim_mask'][active]
        else:
            m_qk = mask(p + 'attn.qk_mask')
            m_v = mask(p + 'attn.v_mask')
            m_qk = m_qk[active] if m_qk is not None else None
            m_v = m_v[active] if m_v is not None else None
        # Re-index heads onto the dense layout for row selection.
        rows_q = [(h * d + j) for h in active for j in qk[h]]
        rows_k = [D + r for r in rows_q]
        rows_v = [2 * D + h * d + j for h in active for j in v[h]]
        s_qk = _head_scale(m_qk, qk_a)
        s_v = _head_scale(m_v, v_a)
        scale = None
        if s_qk is not None or s_v is not None:
            ones_qk = torch.ones(len(rows_q))
            ones_v = torch.ones(len(rows_v))
            scale = torch.cat([s_qk if s_qk is not None else ones_qk,
                               s_qk if s_qk is not None else ones_qk,
                               s_v if s_v is not None else ones_v])
        rows = rows_q + rows_k + rows_v
        for norm in ('norm1', 'norm2'):
            for kind in ('weight', 'bias'):
                key = f'{p}{norm}.{kind}'
                if key in state:
                    put(key, _rows(state[key], E, m_e))
        key = p + 'attn.qkv.weight'
        if key in state:
            put(key, _cols(_rows(state[key], rows, scale), E))
        key = p + 'attn.qkv.bias'
        if key in state:
            put(key, _rows(state[key], rows, scale))
        v_cols = [h * d + j for h in active for j in v[h]]
        key = p + 'attn.proj.weight'
        if key in state:
            put(key, _cols(_rows(state[key], E, m_e), v_cols))
        key = p + 'attn.proj.bias'
        if key in state:
            put(key, _rows(state[key], E, m_e))
        union = subnet.qk_union(i)
        for kind in ('rel_pos_h', 'rel_pos_w'):
            key = f'{p}attn.{kind}'
            if key in state:
                put(key, _cols(state[key], union))
        hid = blk['mlp']
        m_h = mask(p + 'mlp.hidden_mask')
        m_h = m_h[torch.as_tensor(hid)] if m_h is not None else None
        key = p + 'mlp.fc1.weight'
        if key in state:
            put(key, _cols(_rows(state[key], hid), E))
        key = p + 'mlp.fc1.bias'
        if key in state:
            put(key, _rows(state[key], hid))
        key = p + 'mlp.fc2.weight'
        if key in state:
            put(key, _cols(_rows(state[key], E, m_e), hid, m_h))
        key = p + 'mlp.fc2.bias'
        if key in state:
            put(key, _rows(state[key], E, m_e))

    for key, value in state.items():
        if key not in handled and not is_mask_key(key):
            out[key] = value
    return out


def rel_pos_columns(subnet: Subnet, block: int) -> list[list[int]]:
    """Per active head, the columns of the sliced rel-pos tables (union layout) it uses."""
    where = {j: i for i, j in enumerate(subnet.qk_union(block))}
    qk = subnet.blocks[block]['qk']
    return [[where[j] for j in qk[h]] for h in subnet.active_heads(block)]
