"""Exact parameters and multiply-accumulates (MACs) of SIDTViT backbones.

Module-hook counters (mmengine's ``get_model_complexity_info``, mmdet's
``get_flops.py``, ptflops) do not see ``scaled_dot_product_attention``: they miss
``q k^T`` and ``attn @ v``. This counter follows docs/complexity.md and adds them:

    qkv projections   T * D * (2*S_qk + S_v)       (T: tokens the block computes on)
    q k^T             sum over attention groups n^2 * S_qk  (window: n = w^2 per window)
    attn @ v          same with S_v
    rel. positions    T * (k_h + k_w) * S_qk       (decomposed tables, ViTDet)
    output proj       T * S_v * D
    MLP               2 * N * D * h

Window blocks pad the token grid to a multiple of the window before the qkv
projection (ViTDet, SAM), so their T counts the padded tokens. Two MAC figures:
``macs`` uses the kept widths (the analytic cost), ``macs_executed`` the widths
that really run in the pruned attention's layout (:func:`head_groups`): the
default ``'grouped'`` layout runs each width's heads as one attention call and
executes exactly the kept MACs; ``'padded'`` zero-pads every head of a block to
the widest one (q/k/v rows, the projection's columns and the attention matmuls).
Softmax, norms and activations are elementwise and reported as ``elementwise``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from .kinds import KINDS, token_geometry
from .layers.head_layout import LAYOUTS, head_groups
from .layers.lowrank import lowrank_ranks

__all__ = ['BlockWidths', 'ComplexityReport', 'LAYOUTS', 'head_groups', 'backbone_widths',
           'count_complexity', 'backbone_structure', 'backbone_complexity', 'mask_costs']


@dataclass
class BlockWidths:
    """Kept widths of one block: q/k and v dims per active head, MLP units,
    and the number of rel-pos table columns (union of kept q/k dims)."""

    qk: list[int]
    v: list[int]
    mlp: int
    rel_cols: int = 0
    layout: str = 'grouped'

    @property
    def s_qk(self) -> int:
        return sum(self.qk)

    @property
    def s_v(self) -> int:
        return sum(self.v)


@dataclass
class ComplexityReport:
    input_size: tuple[int, int]
    params: int
    macs: int
    macs_executed: int
    elementwise: int
    blocks: list[dict] = field(default_factory=list)
    stem: dict = field(default_factory=dict)


def backbone_widths(backbone, threshold: float | None = None) -> tuple[int, list[BlockWidths]]:
    """(embedding width, per-block widths) of a SIDTViT as it would be pruned.

    Dense and pruned backbones report their real widths. A search-mode backbone
    reports its dense widths, or with ``threshold`` the widths that keeping mask
    entries with ``|m| > threshold`` would give.
    """
    embed = backbone.embed_dims
    if threshold is not None and backbone.embed_mask is not None:
        embed = int((backbone.embed_mask.detach().abs() > threshold).sum())
    out = []
    for blk in backbone.blocks:
        attn = blk.attn
        qk_m, v_m = attn.masks()
        hid_m = blk.mlp.hidden_mask
        if threshold is not None and qk_m is not None:
            qk_keep = qk_m.detach().abs() > threshold
            v_keep = v_m.detach().abs() > threshold
            active = v_keep.any(dim=1)
            qk_keep = qk_keep & active[:, None]
            qk = [int(qk_keep[h].sum()) for h in range(qk_keep.shape[0]) if active[h]]
            v = [int(v_keep[h].sum()) for h in range(v_keep.shape[0]) if active[h]]
            rel_cols = int(qk_keep.any(dim=0).sum())
        else:
            qk, v = list(attn.qk_dims), list(attn.v_dims)
            rel_cols = attn.rel_pos_h.shape[1] if attn.use_rel_pos else 0
        layout = attn.layout
        mlp = blk.mlp.hidden_features
        if threshold is not None and hid_m is not None:
            mlp = int((hid_m.detach().abs() > threshold).sum())
        out.append(BlockWidths(qk=qk, v=v, mlp=mlp, rel_cols=rel_cols, layout=layout))
    return embed, out


def _linear(n_in: int, n_out: int, tokens: int, bias: bool, rank: int | None):
    """(params, MACs) of a Linear, or of its rank-r factorization."""
    if rank is None:
        return n_in * n_out + n_out * bias, tokens * n_in * n_out
    return rank * (n_in + n_out) + n_out * bias, tokens * rank * (n_in + n_out)


def count_complexity(*, embed: int, blocks: list[BlockWidths], input_size: tuple[int, int],
                     patch_size: int, in_channels: int = 3, num_prefix_tokens: int = 0,
                     pretrain_grid: tuple[int, int] = (14, 14), use_abs_pos: bool = True,
                     window_sizes: list[int] | None = None, use_rel_pos: bool = False,
                     rel_pos_rows: list[tuple[int, int]] | None = None,
                     qkv_bias: bool = True, final_norm: bool = False,
                     lowrank: dict[str, int] | None = None) -> ComplexityReport:
    """Params and MACs of a backbone described by widths (no model needed).

    ``rel_pos_rows``: per block, the number of rows of the (h, w) tables.
    ``lowrank``: ranks by module name (``blocks.N.attn.qkv``) for factorized layers.
    """
    D = embed
    lowrank = lowrank or {}
    h = math.ceil(input_size[0] / patch_size)
    w = math.ceil(input_size[1] / patch_size)
    N = h * w + num_prefix_tokens
    stem_params = D * in_channels * patch_size ** 2 + D + num_prefix_tokens * D
    if use_abs_pos:
        stem_params += (num_prefix_tokens + pretrain_grid[0] * pretrain_grid[1]) * D
    stem_macs = h * w * D * in_channels * patch_size ** 2
    params, macs, executed, elementwise = stem_params, stem_macs, stem_macs, 0
    rows = []
    window_sizes = window_sizes or [0] * len(blocks)
    for i, (b, ws) in enumerate(zip(blocks, window_sizes)):
        heads = len(b.qk)
        run = head_groups(b.qk, b.v, b.layout)
        e_sqk = sum(len(hs) * a for hs, a, _ in run)  # q/k and v widths that run
        e_sv = sum(len(hs) * c for hs, _, c in run)
        if ws > 0:
            groups = math.ceil(h / ws) * math.ceil(w / ws)
            n = ws * ws
            kh = kw = ws
        else:
            groups, n, kh, kw = 1, N, h, w
        T = groups * n  # tokens through the attention branch (padded windows)
        name = f'blocks.{i}.'
        r_qkv, r_proj = lowrank.get(name + 'attn.qkv'), lowrank.get(name + 'attn.proj')
        p_qkv, m_qkv = _linear(D, 2 * b.s_qk + b.s_v, T, qkv_bias, r_qkv)
        p_proj, m_proj = _linear(b.s_v, D, T, True, r_proj)
        p_fc1, m_fc1 = _linear(D, b.mlp, N, True, lowrank.get(name + 'mlp.fc1'))
        p_fc2, m_fc2 = _linear(b.mlp, D, N, True, lowrank.get(name + 'mlp.fc2'))
        m_qk = groups * n * n * b.s_qk
        m_av = groups * n * n * b.s_v
        m_rel = T * (kh + kw) * b.s_qk if use_rel_pos else 0
        p_rel = 0
        if use_rel_pos:
            rh, rw = (rel_pos_rows or [(2 * kh - 1, 2 * kw - 1)] * len(blocks))[i]
            p_rel = (rh + rw) * b.rel_cols
        p_block = p_qkv + p_proj + p_fc1 + p_fc2 + p_rel + 4 * D
        m_block = m_qkv + m_proj + m_fc1 + m_fc2 + m_qk + m_av + m_rel
        m_exec = (_linear(D, 2 * e_sqk + e_sv, T, qkv_bias, r_qkv)[1]
                  + _linear(e_sv, D, T, True, r_proj)[1] + m_fc1 + m_fc2
                  + groups * n * n * (e_sqk + e_sv)
                  + (T * (kh + kw) * e_sqk if use_rel_pos else 0))
        elem = groups * heads * n * n + 2 * N * D + N * b.mlp  # softmax, 2 LN, GELU
        rows.append(dict(block=i, window=ws, heads=heads, qk=list(b.qk), v=list(b.v),
                         s_qk=b.s_qk, s_v=b.s_v, mlp=b.mlp, params=p_block, macs=m_block,
                         macs_executed=m_exec, calls=len(run),
                         macs_parts=dict(qkv=m_qkv, qk=m_qk, av=m_av, rel_pos=m_rel,
                                         proj=m_proj, mlp=m_fc1 + m_fc2)))
        params += p_block
        macs += m_block
        executed += m_exec
        elementwise += elem
    if final_norm:
        params += 2 * D
    return ComplexityReport(input_size=tuple(input_size), params=params, macs=macs,
                            macs_executed=executed, elementwise=elementwise, blocks=rows,
                            stem=dict(params=stem_params, macs=stem_macs))


def backbone_structure(backbone) -> dict:
    """Everything but the widths that :func:`count_complexity` needs, read from a SIDTViT:
    the keyword arguments that, with :func:`backbone_widths`, describe its cost."""
    return dict(patch_size=backbone.patch_size,
                in_channels=backbone.patch_embed.proj.in_channels,
                num_prefix_tokens=backbone.num_prefix_tokens,
                pretrain_grid=backbone.pretrain_grid, use_abs_pos=backbone.use_abs_pos,
                window_sizes=[blk.window_size for blk in backbone.blocks],
                use_rel_pos=backbone.use_rel_pos,
                rel_pos_rows=[(blk.attn.rel_pos_h.shape[0], blk.attn.rel_pos_w.shape[0])
                              if blk.attn.use_rel_pos else (0, 0) for blk in backbone.blocks],
                qkv_bias=backbone.blocks[0].attn.qkv.bias is not None,
                final_norm=backbone.norm is not None, lowrank=lowrank_ranks(backbone))


def backbone_complexity(backbone, input_size: tuple[int, int],
                        threshold: float | None = None) -> ComplexityReport:
    """Params and MACs of a SIDTViT (dense, pruned, or search at a mask threshold).

    Search masks are not counted as parameters: they vanish at export.
    """
    embed, blocks = backbone_widths(backbone, threshold)
    return count_complexity(embed=embed, blocks=blocks, input_size=tuple(input_size),
                            **backbone_structure(backbone))


def mask_costs(backbone, input_size: tuple[int, int]) -> dict[str, torch.Tensor]:
    """MACs that one entry of each search mask costs, shaped like the mask.

    Used to weight the sparsity loss by resource (FLOPs-aware search); each searchable
    kind (:mod:`.kinds`) gives its own: removing a shared q/k/v dim saves its q, k and v
    projections, its share of q k^T, attn @ v and the output projection; an MLP unit
    saves 2*N*D; an embedding channel saves everything that is linear in D.
    """
    geometry = token_geometry(backbone, tuple(input_size))
    costs = {}
    for kind in KINDS.values():
        costs.update(kind.mask_costs(backbone, geometry))
    return costs
