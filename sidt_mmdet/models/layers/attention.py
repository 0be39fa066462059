"""Multi-head attention whose per-head q/k and v widths are searchable and prunable.

One module serves the three modes of :class:`~sidt_mmdet.models.SIDTViT`:

- dense: every head has ``head_dim`` q/k and v dims (timm's ``Attention``);
- search: same shapes, plus learnable masks multiplied into q, k and v;
- pruned: each head keeps its own number of q/k dims and v dims.

Heads of unequal width still run as one batched ``scaled_dot_product_attention``:
q/k (and v) are zero-padded to the layer's widest head. Zero q/k dims add nothing
to ``q k^T`` and zero v dims produce zero outputs that the projection skips, so
padding is exact. The softmax scale stays ``head_dim ** -0.5`` of the dense model.

The decomposed relative-position term of ViTDet/SAM (``use_rel_pos``) is
``sum_c q_c R[c]`` over the head dims: in search mode the q/k mask acts on q before
it, and in pruned mode each head reads only its kept columns of the tables, so
pruning stays exact.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from timm.models.vision_transformer_sam import get_rel_pos
from torch import nn

__all__ = ['SIDTAttention']


class SIDTAttention(nn.Module):
    """Attention with per-head widths.

    Args:
        dim: input/output width (the kept embedding width in pruned mode).
        num_heads: number of heads of the dense layer.
        head_dim: width of a dense head; sets the softmax scale.
        qkv_bias: bias in the qkv projection.
        qk_dims / v_dims: kept q/k and v dims per (active) head; ``None`` means the
            dense layout (``num_heads`` heads of ``head_dim``).
        mask: ``None`` (no mask), ``'shared'`` (one ``(H, head_dim)`` mask for q, k
            and v, named ``dim_mask``) or ``'split'`` (``qk_mask`` and ``v_mask``).
        use_rel_pos: add ViTDet's decomposed relative positions to the logits.
        rel_pos_size: (h, w) the tables were made for (window or feature size).
        rel_pos_index: pruned mode: per active head, the columns of the (sliced)
            tables it uses; the tables then have ``max+1`` columns.
    """

    def __init__(self,
                 dim: int,
                 num_heads: int,
                 head_dim: int | None = None,
                 qkv_bias: bool = True,
                 attn_drop: float = 0.,
                 proj_drop: float = 0.,
                 qk_dims: Sequence[int] | None = None,
                 v_dims: Sequence[int] | None = None,
                 mask: str | None = None,
                 use_rel_pos: bool = False,
                 rel_pos_size: tuple[int, int] | None = None,
                 rel_pos_index: Sequence[Sequence[int]] | None = None,
                 rel_pos_zero_init: bool = True):
        super().__init__()
        head_dim = head_dim or dim // num_heads
        if qk_dims is None:
            qk_dims = [head_dim] * num_heads
        if v_dims is None:
            v_dims = list(qk_dims)
        if len(qk_dims) != len(v_dims):
            raise ValueError(f'qk_dims ({len(qk_dims)} heads) and v_dims ({len(v_dims)} heads) '
                             'must describe the same heads')
        if mask not in (None, 'shared', 'split'):
            raise ValueError(f"mask: expected None, 'shared' or 'split', got {mask!r}")
        self.dim = dim
        self.head_dim = head_dim
        self.scale = head_dim ** -0.5
        self.qk_dims = [int(d) for d in qk_dims]
        self.v_dims = [int(d) for d in v_dims]
        self.num_heads = len(self.qk_dims)
        self.sum_qk = sum(self.qk_dims)
        self.sum_v = sum(self.v_dims)

        self.qkv = nn.Linear(dim, 2 * self.sum_qk + self.sum_v, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(self.sum_v, dim)
        self.proj_drop = nn.Dropout(proj_drop)

        self.mask_kind = mask
        if mask is not None and (len(set(self.qk_dims + self.v_dims)) != 1
                                 or self.qk_dims[0] != head_dim):
            raise ValueError('masks are only defined on the dense layout (search mode)')
        if mask == 'shared':
            self.dim_mask = nn.Parameter(torch.ones(self.num_heads, head_dim))
        elif mask == 'split':
            self.qk_mask = nn.Parameter(torch.ones(self.num_heads, head_dim))
            self.v_mask = nn.Parameter(torch.ones(self.num_heads, head_dim))

        # Padded layout for unequal heads (see module docstring).
        self.qk_pad = max(max(self.qk_dims, default=0), 1)
        self.v_pad = max(max(self.v_dims, default=0), 1)
        self.uniform = (len(set(self.qk_dims)) <= 1 and len(set(self.v_dims)) <= 1
                        and min(self.qk_dims, default=1) > 0)
        if not self.uniform:
            self.register_buffer('qkv_index', self._qkv_index(), persistent=False)
            self.register_buffer('proj_index', self._proj_index(), persistent=False)

        self.use_rel_pos = use_rel_pos
        self.rel_pos_size = tuple(rel_pos_size) if rel_pos_size is not None else None
        if use_rel_pos:
            if rel_pos_size is None:
                raise ValueError('use_rel_pos=True needs rel_pos_size (window or feature size)')
            if rel_pos_index is None:
                table_dims = head_dim
                self.rel_pos_index = None
            else:
                if len(rel_pos_index) != self.num_heads:
                    raise ValueError('rel_pos_index: expected one column list per active head')
                table_dims = 1 + max((max(ix) for ix in rel_pos_index if ix), default=-1)
                pad = table_dims  # points at an appended zero column
                index = [list(ix) + [pad] * (self.qk_pad - len(ix)) for ix in rel_pos_index]
                self.register_buffer('rel_pos_index', torch.tensor(index, dtype=torch.long),
                                     persistent=False)
            h, w = self.rel_pos_size
            self.rel_pos_h = nn.Parameter(torch.zeros(2 * h - 1, table_dims))
            self.rel_pos_w = nn.Parameter(torch.zeros(2 * w - 1, table_dims))
            if not rel_pos_zero_init:  # ViTDet's alternative
                nn.init.trunc_normal_(self.rel_pos_h, std=0.02)
                nn.init.trunc_normal_(self.rel_pos_w, std=0.02)

    # ---------------------------------------------------------------- layout
    def _qkv_index(self) -> torch.Tensor:
        """Map the padded (q | k | v) layout onto the compact qkv output (+1 zero column)."""
        zero = 2 * self.sum_qk + self.sum_v
        index = []
        for part_start, dims, pad in ((0, self.qk_dims, self.qk_pad),
                                      (self.sum_qk, self.qk_dims, self.qk_pad),
                                      (2 * self.sum_qk, self.v_dims, self.v_pad)):
            offset = part_start
            for d in dims:
                index += list(range(offset, offset + d)) + [zero] * (pad - d)
                offset += d
        return torch.tensor(index, dtype=torch.long)

    def _proj_index(self) -> torch.Tensor:
        """Positions of the compact v dims inside the padded (heads x v_pad) output."""
        index = []
        for h, d in enumerate(self.v_dims):
            index += range(h * self.v_pad, h * self.v_pad + d)
        return torch.tensor(index, dtype=torch.long)

    def masks(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(q/k mask, v mask), each (H, head_dim) or None."""
        if self.mask_kind == 'shared':
            return self.dim_mask, self.dim_mask
        if self.mask_kind == 'split':
            return self.qk_mask, self.v_mask
        return None, None

    # --------------------------------------------------------------- forward
    def forward(self, x: torch.Tensor, hw: tuple[int, int] | None = None) -> torch.Tensor:
        """x: (B, N, dim); ``hw`` is the token grid, needed with relative positions."""
        B, N, _ = x.shape
        H = self.num_heads
        qkv = self.qkv(x)
        if self.uniform:
            q, k, v = qkv.split([self.sum_qk, self.sum_qk, self.sum_v], dim=-1)
            qk_w, v_w = self.qk_pad, self.v_pad
        else:
            qkv = F.pad(qkv, (0, 1)).index_select(-1, self.qkv_index)
            qk_w, v_w = self.qk_pad, self.v_pad
            q, k, v = qkv.split([H * qk_w, H * qk_w, H * v_w], dim=-1)
        q = q.view(B, N, H, qk_w).transpose(1, 2)
        k = k.view(B, N, H, qk_w).transpose(1, 2)
        v = v.view(B, N, H, v_w).transpose(1, 2)
        qk_mask, v_mask = self.masks()
        if qk_mask is not None:
            q = q * qk_mask[:, None, :]
            k = k * qk_mask[:, None, :]
            v = v * v_mask[:, None, :]

        bias = self._rel_pos_bias(q, hw) if self.use_rel_pos else None
        x = F.scaled_dot_product_attention(
            q, k, v, attn_mask=bias, dropout_p=self.attn_drop if self.training else 0.,
            scale=self.scale)
        x = x.transpose(1, 2).reshape(B, N, H * v_w)
        if not self.uniform:
            x = x.index_select(-1, self.proj_index)
        return self.proj_drop(self.proj(x))

    def _rel_pos_bias(self, q: torch.Tensor, hw: tuple[int, int] | None) -> torch.Tensor:
        """Decomposed relative positions (MViTv2/ViTDet), (B, H, N, N)."""
        if hw is None:
            raise ValueError('relative positions need the token grid (hw)')
        qh, qw = hw
        B, H, N, C = q.shape
        if N != qh * qw:
            raise ValueError(f'relative positions: {N} tokens do not form a {qh}x{qw} grid')
        if self.rel_pos_h.shape[-1] == 0:  # no head keeps a q/k dim: the bias q.R is zero
            return q.new_zeros(B, H, N, N)
        Rh = get_rel_pos(qh, qh, self.rel_pos_h)  # (qh, kh, table_dims)
        Rw = get_rel_pos(qw, qw, self.rel_pos_w)
        r_q = q.reshape(B, H, qh, qw, C)
        if self.rel_pos_index is None:
            rel_h = torch.einsum('bnhwc,hkc->bnhwk', r_q, Rh)
            rel_w = torch.einsum('bnhwc,wkc->bnhwk', r_q, Rw)
        else:
            # Each head reads its own kept columns; the appended zero column pads it.
            Rh = F.pad(Rh, (0, 1))[..., self.rel_pos_index]  # (qh, kh, H, C)
            Rw = F.pad(Rw, (0, 1))[..., self.rel_pos_index]
            rel_h = torch.einsum('bnhwc,hknc->bnhwk', r_q, Rh)
            rel_w = torch.einsum('bnhwc,wknc->bnhwk', r_q, Rw)
        bias = rel_h[..., :, None] + rel_w[..., None, :]
        return bias.reshape(B, H, N, N).to(q.dtype)

    def extra_repr(self) -> str:
        widths = ('uniform' if self.uniform else
                  f'qk_dims={self.qk_dims}, v_dims={self.v_dims}')
        return f'heads={self.num_heads}, head_dim={self.head_dim}, {widths}, mask={self.mask_kind}'
