"""Multi-head attention whose per-head q/k and v widths are searchable and prunable.

One module serves the three modes of :class:`~sidt_mmdet.models.SIDTViT`:

- dense: every head has ``head_dim`` q/k and v dims (timm's ``Attention``);
- search: same shapes, plus learnable masks on q, k and v;
- pruned: each head keeps its own number of q/k dims and v dims.

Pruned layout. The parameters stay compact (``qkv`` rows: kept q dims of each
head in head order, then k, then v; ``proj`` columns: kept v dims), so checkpoints
and state-dict keys are those of the sliced dense model. A forward runs heads in
groups (:func:`.head_layout.head_groups`): by default heads of
equal widths share one ``scaled_dot_product_attention`` call, with no padding. The
qkv rows and the projection's columns are packed into the groups' order on the
weight side (see :mod:`.linear_ops`: cached in eval, rebuilt per forward while
training), so no activation is gathered: one matmul, one attention call per
group, one matmul. The ``'padded'`` layout instead zero-pads every head to the
widest one (one attention call; zero q/k dims add nothing to ``q k^T``, zero v dims
give zero outputs that zero projection columns skip, so padding is exact). The
softmax scale stays ``head_dim ** -0.5`` of the dense model. A head keeping v
dims but no q/k dims (split masks) attends uniformly: its output is the mean of v.

Search masks scale the qkv rows they multiply (``(W x + b) * m == (m W) x + m b``),
so they cost O(weights), store no extra activations, and their gradients are those
of the activation form.

The decomposed relative-position term of ViTDet/SAM (``use_rel_pos``) is
``sum_c q_c R[c]`` over the head dims: the q/k mask acts on q before it, and in
pruned mode each head reads only its kept columns of the tables (gathered once per
table size and cached), so pruning stays exact.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from timm.models.vision_transformer_sam import get_rel_pos
from torch import nn

from .head_layout import LAYOUTS, head_groups
from .linear_ops import WeightCache, linear_stages, run_stages, scaled_linear

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
        layout: pruned mode: ``'grouped'`` (heads of equal widths per attention call,
            no padding) or ``'padded'`` (every head padded to the widest).
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
                 rel_pos_zero_init: bool = True,
                 layout: str = 'grouped'):
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

        if layout not in LAYOUTS:
            raise ValueError(f'layout: expected one of {LAYOUTS}, got {layout!r}')
        self.layout = layout
        self.groups = head_groups(self.qk_dims, self.v_dims, layout)
        # The dense layout needs no packing: one group, every head in order, no padding.
        self.packed = not (len(self.groups) == 1
                           and self.groups[0][0] == tuple(range(self.num_heads))
                           and set(self.qk_dims) == {self.groups[0][1]}
                           and set(self.v_dims) == {self.groups[0][2]})
        self._cache = WeightCache()
        if self.packed:
            rows, cols = self._packing()
            self.rows_padded = bool(rows.numel()) and int(rows.max()) == self.qkv.out_features
            self.cols_padded = bool(cols.numel()) and int(cols.max()) == self.proj.in_features
            self.register_buffer('qkv_rows', rows, persistent=False)
            self.register_buffer('proj_cols', cols, persistent=False)

        self.use_rel_pos = use_rel_pos
        self.rel_pos_size = tuple(rel_pos_size) if rel_pos_size is not None else None
        if use_rel_pos:
            if rel_pos_size is None:
                raise ValueError('use_rel_pos=True needs rel_pos_size (window or feature size)')
            self.rel_pos_grouped = rel_pos_index is not None
            if rel_pos_index is None:
                table_dims = head_dim
            else:
                if len(rel_pos_index) != self.num_heads:
                    raise ValueError('rel_pos_index: expected one column list per active head')
                table_dims = 1 + max((max(ix) for ix in rel_pos_index if ix), default=-1)
                # Per group: (heads, q/k width) columns; index table_dims is a zero column.
                for g, (heads, qk_w, _) in enumerate(self.groups):
                    index = [list(rel_pos_index[h]) + [table_dims] * (qk_w - len(rel_pos_index[h]))
                             for h in heads]
                    self.register_buffer(f'rel_pos_index_{g}',
                                         torch.tensor(index, dtype=torch.long).view(len(heads),
                                                                                    qk_w),
                                         persistent=False)
            h, w = self.rel_pos_size
            self.rel_pos_h = nn.Parameter(torch.zeros(2 * h - 1, table_dims))
            self.rel_pos_w = nn.Parameter(torch.zeros(2 * w - 1, table_dims))
            if not rel_pos_zero_init:  # ViTDet's alternative
                nn.init.trunc_normal_(self.rel_pos_h, std=0.02)
                nn.init.trunc_normal_(self.rel_pos_w, std=0.02)

    # ---------------------------------------------------------------- layout
    def _packing(self) -> tuple[torch.Tensor, torch.Tensor]:
        """qkv rows and proj columns in the groups' order; the index one past the compact
        width is a zero row (column) that pads a narrower head."""
        qk_off = [sum(self.qk_dims[:h]) for h in range(self.num_heads)]
        v_off = [sum(self.v_dims[:h]) for h in range(self.num_heads)]
        zero_row, zero_col = 2 * self.sum_qk + self.sum_v, self.sum_v
        rows, cols = [], []
        for heads, qk_w, v_w in self.groups:
            if qk_w:
                for start in (0, self.sum_qk):  # q rows, then k rows
                    for h in heads:
                        d = self.qk_dims[h]
                        rows += list(range(start + qk_off[h], start + qk_off[h] + d))
                        rows += [zero_row] * (qk_w - d)
            for h in heads:
                d = self.v_dims[h]
                rows += list(range(2 * self.sum_qk + v_off[h], 2 * self.sum_qk + v_off[h] + d))
                rows += [zero_row] * (v_w - d)
                cols += list(range(v_off[h], v_off[h] + d)) + [zero_col] * (v_w - d)
        return torch.tensor(rows, dtype=torch.long), torch.tensor(cols, dtype=torch.long)

    def _qkv(self, x: torch.Tensor) -> torch.Tensor:
        qk_mask, v_mask = self.masks()
        if qk_mask is not None:  # search: the masks scale the q, k and v rows
            scale = torch.cat([qk_mask.reshape(-1), qk_mask.reshape(-1), v_mask.reshape(-1)])
            return scaled_linear(self.qkv, x, row=scale)
        if not self.packed:  # the module itself, so module hooks (counters) see it
            return self.qkv(x)
        return run_stages(x, self._cache.get('qkv', list(self.qkv.parameters()), lambda:
                                             linear_stages(self.qkv, out_index=self.qkv_rows,
                                                           out_padded=self.rows_padded)),
                          self.qkv)

    def _proj(self, x: torch.Tensor, out_scale: torch.Tensor | None) -> torch.Tensor:
        if out_scale is not None:  # search (dense layout): the embedding mask scales rows
            return scaled_linear(self.proj, x, row=out_scale)
        if not self.packed:
            return self.proj(x)
        return run_stages(x, self._cache.get('proj', list(self.proj.parameters()), lambda:
                                             linear_stages(self.proj, in_index=self.proj_cols,
                                                           in_padded=self.cols_padded)),
                          self.proj)

    def train(self, mode: bool = True):
        """Also drops the packed-weight caches: writes through ``param.data`` (as
        mmengine's EMA hooks make before validation) leave no version trace, and every
        such swap is followed by ``model.eval()`` / ``model.train()``."""
        self._cache.clear()
        return super().train(mode)

    def masks(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(q/k mask, v mask), each (H, head_dim) or None."""
        if self.mask_kind == 'shared':
            return self.dim_mask, self.dim_mask
        if self.mask_kind == 'split':
            return self.qk_mask, self.v_mask
        return None, None

    # --------------------------------------------------------------- forward
    def forward(self, x: torch.Tensor, hw: tuple[int, int] | None = None,
                out_scale: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, N, dim); ``hw`` is the token grid, needed with relative positions;
        ``out_scale`` (dim,) multiplies the output channels (the embedding mask)."""
        B, N, _ = x.shape
        qkv = self._qkv(x)
        # No head keeping a q/k dim means a zero bias q.R: no table is read.
        tables = (self._rel_pos_tables(hw, N)
                  if self.use_rel_pos and any(g[1] for g in self.groups) else None)
        dropout = self.attn_drop if self.training else 0.
        outs, offset = [], 0
        for g, (heads, qk_w, v_w) in enumerate(self.groups):
            n = len(heads)
            if qk_w:
                q = qkv[..., offset:offset + n * qk_w].view(B, N, n, qk_w).transpose(1, 2)
                offset += n * qk_w
                k = qkv[..., offset:offset + n * qk_w].view(B, N, n, qk_w).transpose(1, 2)
                offset += n * qk_w
            v = qkv[..., offset:offset + n * v_w].view(B, N, n, v_w).transpose(1, 2)
            offset += n * v_w
            if not qk_w:  # all logits are zero: uniform attention
                o = v.mean(dim=2, keepdim=True).expand(B, n, N, v_w)
            else:
                bias = (self._rel_pos_bias(q, hw, *tables[g]) if tables is not None else None)
                o = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=dropout,
                                                   scale=self.scale)
            outs.append(o.transpose(1, 2).reshape(B, N, n * v_w))
        x = outs[0] if len(outs) == 1 else torch.cat(outs, dim=-1)
        return self.proj_drop(self._proj(x, out_scale))

    def _rel_pos_tables(self, hw: tuple[int, int] | None, N: int):
        """Per group, the (h, w) tables at this grid: (qh, kh, C) shared by the heads, or
        (qh, kh, heads, C) per head in pruned mode. Cached per grid size in eval."""
        if hw is None:
            raise ValueError('relative positions need the token grid (hw)')
        qh, qw = hw
        if N != qh * qw:
            raise ValueError(f'relative positions: {N} tokens do not form a {qh}x{qw} grid')

        def build():
            Rh = get_rel_pos(qh, qh, self.rel_pos_h)  # (qh, kh, table_dims)
            Rw = get_rel_pos(qw, qw, self.rel_pos_w)
            if not self.rel_pos_grouped:
                return [(Rh, Rw)] * len(self.groups)
            Rh, Rw = F.pad(Rh, (0, 1)), F.pad(Rw, (0, 1))  # the zero column pads
            return [(Rh[..., getattr(self, f'rel_pos_index_{g}')],
                     Rw[..., getattr(self, f'rel_pos_index_{g}')])
                    for g in range(len(self.groups))]

        return self._cache.get(('rel_pos', qh, qw), [self.rel_pos_h, self.rel_pos_w], build)

    def _rel_pos_bias(self, q: torch.Tensor, hw: tuple[int, int], Rh: torch.Tensor,
                      Rw: torch.Tensor) -> torch.Tensor:
        """Decomposed relative positions (MViTv2/ViTDet), (B, heads, N, N)."""
        qh, qw = hw
        B, H, N, C = q.shape
        r_q = q.reshape(B, H, qh, qw, C)
        if Rh.dim() == 3:
            rel_h = torch.einsum('bnhwc,hkc->bnhwk', r_q, Rh)
            rel_w = torch.einsum('bnhwc,wkc->bnhwk', r_q, Rw)
        else:  # each head reads its own kept columns
            rel_h = torch.einsum('bnhwc,hknc->bnhwk', r_q, Rh)
            rel_w = torch.einsum('bnhwc,wknc->bnhwk', r_q, Rw)
        bias = rel_h[..., :, None] + rel_w[..., None, :]
        return bias.reshape(B, H, N, N).to(q.dtype)

    def extra_repr(self) -> str:
        widths = (f'qk_dims={self.qk_dims}, v_dims={self.v_dims}, layout={self.layout}, '
                  f'calls={len(self.groups)}' if self.packed else 'uniform')
        return f'heads={self.num_heads}, head_dim={self.head_dim}, {widths}, mask={self.mask_kind}'
