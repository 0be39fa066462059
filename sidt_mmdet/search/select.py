"""Pick a sub-network of a searched SIDTViT for a budget.

Units are ranked by mask magnitude |m| within each kind (attention dims pooled
over all blocks, MLP units pooled over all blocks, embedding channels), so the
kept width differs per layer and per head: the "intrinsic dimensions". Any other
per-unit score of the same shapes (:class:`UnitScores`, e.g. the baseline criteria
of :mod:`sidt_mmdet.search.criteria`) goes through the same selection, so every
method meets a budget, the minimums and the rounding in exactly the same way.

A budget is a keep ratio (the same fraction of each kind's units), or a params or
MACs target. For a target, units are added one at a time in keep-ratio order
(kind k gains its (j+1)-th unit when the ratio reaches (j+1)/n_k); the chain is
monotone in cost, so a binary search finds the largest subnet within the budget,
which is then at most one unit's cost below it. Minimum widths per layer and
rounding of widths up to a multiple are applied to every point of the chain (they
only ever add a layer's next-best dims), so they keep it monotone.

A MACs budget counts either the kept MACs (the analytic cost) or the executed MACs
of the pruned layout (``macs='executed'``: zero padding of unequal heads counted,
see :func:`~sidt_mmdet.models.complexity.head_groups`); the subnet file records
both. ``equal_heads`` gives every head of a layer the widest head's width (its
next-best dims, never padding), so a layer runs as one attention call.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..models.complexity import (
    LAYOUTS,
    BlockWidths,
    backbone_complexity,
    backbone_structure,
    count_complexity,
)
from ..models.subnet import Subnet
from .checks import check_masks_finite

__all__ = ['select_subnet', 'GRANULARITIES', 'MACS_COUNTS', 'UnitScores']

GRANULARITIES = ('dim', 'head_uniform', 'head')
MACS_COUNTS = ('kept', 'executed')


@dataclass
class UnitScores:
    """A score per searchable unit, in the layout of the search masks.

    ``qk``/``v``: per block an ``(H, head_dim)`` tensor (the same tensor twice when q/k
    and v share their dims); ``mlp``: per block a ``(mlp_hidden,)`` tensor; ``embed``:
    ``(embed_dims,)`` or ``None`` (embedding not selected). Larger means keep first.
    """

    qk: list[torch.Tensor]
    v: list[torch.Tensor]
    mlp: list[torch.Tensor]
    embed: torch.Tensor | None = None
    name: str = 'mask'

    @classmethod
    def from_masks(cls, backbone) -> UnitScores:
        """|m| of a search-mode backbone's masks (what SiDT selects by)."""
        qk, v, mlp = [], [], []
        for blk in backbone.blocks:
            qk_m, v_m = blk.attn.masks()
            if qk_m is not None:
                qk.append(qk_m.detach().abs().float().cpu())
                v.append(v_m.detach().abs().float().cpu())
            if blk.mlp.hidden_mask is not None:
                mlp.append(blk.mlp.hidden_mask.detach().abs().float().cpu())
        embed = backbone.embed_mask
        embed = embed.detach().abs().float().cpu() if embed is not None else None
        if not (qk or mlp or embed is not None):
            raise ValueError('backbone has no search masks: build it with mode="search" and '
                             'load the searched checkpoint (mask parameters *_mask), or pass '
                             'scores= (sidt_mmdet.search.criteria)')
        return cls(qk=qk, v=v, mlp=mlp, embed=embed)

    def check(self, backbone) -> None:
        """Raise ``ValueError`` naming the field whose shape does not fit ``backbone``."""
        L, H, d = backbone.num_layers, backbone.num_heads, backbone.head_dim
        for name, tensors, shape in (('qk', self.qk, (H, d)), ('v', self.v, (H, d)),
                                     ('mlp', self.mlp, (backbone.mlp_hidden,))):
            if tensors and len(tensors) != L:
                raise ValueError(f'scores.{name}: expected {L} blocks, got {len(tensors)}')
            for i, t in enumerate(tensors):
                if tuple(t.shape) != shape:
                    raise ValueError(f'scores.{name}[{i}]: expected shape {shape}, got '
                                     f'{tuple(t.shape)}')
        if len(self.qk) != len(self.v):
            raise ValueError('scores: qk and v must both be given or both be empty')
        if self.embed is not None and tuple(self.embed.shape) != (backbone.embed_dims_dense,):
            raise ValueError(f'scores.embed: expected shape ({backbone.embed_dims_dense},), '
                             f'got {tuple(self.embed.shape)}')


@dataclass
class _Unit:
    block: int
    head: int | None
    dims: list[int]  # head dims, MLP units or embedding channels this unit keeps
    score: float


def _attn_units(mask: torch.Tensor, block: int, granularity: str) -> list[_Unit]:
    m = mask.detach().abs().float().cpu()
    H, d = m.shape
    if granularity == 'dim':
        return [_Unit(block, h, [j], float(m[h, j])) for h in range(H) for j in range(d)]
    if granularity == 'head':
        return [_Unit(block, h, list(range(d)), float(m[h].mean())) for h in range(H)]
    # head_uniform: unit j keeps the j-th best dim of every head of the block.
    order = torch.argsort(-m, dim=1, stable=True)
    ranked = torch.gather(m, 1, order)
    return [_Unit(block, None, order[:, j].tolist(), float(ranked[:, j].mean()))
            for j in range(d)]


def _vector_units(mask: torch.Tensor, block: int | None) -> list[_Unit]:
    m = mask.detach().abs().float().cpu()
    return [_Unit(block, None, [j], float(m[j])) for j in range(m.numel())]


def _sorted(units: list[_Unit]) -> list[_Unit]:
    # Stable: ties keep the lower block/head/dim first, so selection is reproducible.
    return sorted(units, key=lambda u: -u.score)


class _Selector:
    """Turns "keep the first k units of each kind" into a Subnet."""

    def __init__(self, backbone, scores, granularity, round_to, min_heads, min_mlp, min_embed,
                 equal_heads):
        self.equal_heads = equal_heads
        self.H, self.d = backbone.num_heads, backbone.head_dim
        self.L, self.hidden = backbone.num_layers, backbone.mlp_hidden
        self.D = backbone.embed_dims_dense
        self.granularity = granularity
        self.round_to = round_to  # an int >= 1, checked by select_subnet
        self.min_heads, self.min_mlp, self.min_embed = min_heads, min_mlp, min_embed
        self.kinds: dict[str, list[_Unit]] = {}
        self.scores: dict[str, list[torch.Tensor]] = {'qk': [], 'v': [], 'mlp': []}
        self.split = backbone.split_qkv
        split = self.split
        scores.check(backbone)
        for i, (qk_m, v_m) in enumerate(zip(scores.qk, scores.v, strict=True)):
            qk_m, v_m = qk_m.abs().float().cpu(), v_m.abs().float().cpu()
            self.scores['qk'].append(qk_m)
            self.scores['v'].append(v_m)
            if split and granularity != 'head':
                self.kinds.setdefault('qk', []).extend(_attn_units(qk_m, i, granularity))
                self.kinds.setdefault('v', []).extend(_attn_units(v_m, i, granularity))
            else:
                m = (qk_m + v_m) / 2 if split else qk_m
                self.kinds.setdefault('attn', []).extend(_attn_units(m, i, granularity))
        for i, m in enumerate(scores.mlp):
            m = m.abs().float().cpu()
            self.scores['mlp'].append(m)
            self.kinds.setdefault('mlp', []).extend(_vector_units(m, i))
        self.embed_scores = None
        if scores.embed is not None:
            self.embed_scores = scores.embed.abs().float().cpu()
            self.kinds['embed'] = _vector_units(self.embed_scores, None)
        if not self.kinds:
            raise ValueError('scores: no unit to select (no attention, MLP or embedding scores)')
        self.kinds = {k: _sorted(v) for k, v in self.kinds.items()}

    # ------------------------------------------------------------ building
    def _best_dims(self, scores: torch.Tensor, count: int) -> list[int]:
        return torch.argsort(-scores, stable=True)[:count].tolist()

    def _top(self, scores: torch.Tensor, chosen: set, count: int) -> list[int]:
        """The ``count`` best indices; ``chosen`` (the best ``len(chosen)``, by the same
        stable ranking) is always a prefix of them, so growing a layer never drops a dim."""
        return sorted(chosen) if count == len(chosen) else sorted(self._best_dims(scores, count))

    def _round(self, count: int, upper: int) -> int:
        if count <= 0:
            return 0
        return min(upper, math.ceil(count / self.round_to) * self.round_to)

    def build(self, counts: dict[str, int]) -> Subnet:
        L, H, d = self.L, self.H, self.d
        qk = [[set() for _ in range(H)] for _ in range(L)]
        v = [[set() for _ in range(H)] for _ in range(L)]
        mlp = [set() for _ in range(L)]
        embed = set()
        for kind, units in self.kinds.items():
            for u in units[:counts[kind]]:
                if kind == 'mlp':
                    mlp[u.block].update(u.dims)
                elif kind == 'embed':
                    embed.update(u.dims)
                else:
                    heads = [u.head] if u.head is not None else range(H)
                    for n, h in enumerate(heads):
                        # head_uniform units carry one dim per head, in head order
                        dims = u.dims if u.head is not None else [u.dims[n]]
                        # shared ('attn') units are v dims: the q/k dims follow them
                        (qk if kind == 'qk' else v)[u.block][h].update(dims)
        has_attn = bool(self.scores['qk'])
        blocks = []
        for i in range(L):
            if has_attn:
                sq, sv = self.scores['qk'][i], self.scores['v'][i]
                qk_i, v_i = self._attn_block(qk[i], v[i], sq, sv)
            else:
                qk_i = [list(range(d))] * H
                v_i = [list(range(d))] * H
            if self.scores['mlp']:
                n = max(len(mlp[i]), min(self.min_mlp, self.hidden))
                mlp_i = self._top(self.scores['mlp'][i], mlp[i], self._round(n, self.hidden))
            else:
                mlp_i = list(range(self.hidden))
            blocks.append(dict(qk=qk_i, v=v_i, mlp=sorted(mlp_i)))
        kept_embed = None
        if self.embed_scores is not None:
            n = max(len(embed), min(self.min_embed, self.D))
            kept_embed = self._top(self.embed_scores, embed, self._round(n, self.D))
        return Subnet(self.D, L, H, self.hidden, blocks=blocks, embed=kept_embed)

    def _attn_block(self, qk_sets, v_sets, sq, sv):
        H, d = self.H, self.d
        shared = not self.split
        # Minimum heads: give the best-scoring empty heads their best v dim (their q/k
        # widths follow: shared dims take the v width, whole heads keep every dim).
        live = sum(1 for h in range(H) if v_sets[h])
        head_scores = sv.mean(dim=1) + sq.mean(dim=1)
        for h in torch.argsort(-head_scores, stable=True).tolist():
            if live >= min(self.min_heads, H):
                break
            if not v_sets[h]:
                v_sets[h].update(self._best_dims(sv[h], 1))
                live += 1
        n_qk = [self._round(len(qk_sets[h]), d) for h in range(H)]
        n_v = [self._round(len(v_sets[h]), d) for h in range(H)]
        if shared:  # the q/k dims are the v dims (shared units fill v_sets only)
            n_qk = n_v
        if self.equal_heads:  # every active head at the layer's widest width
            live = [h for h in range(H) if v_sets[h]]
            w_qk, w_v = max(n_qk[h] for h in live), max(n_v[h] for h in live)
            n_qk = [w_qk if v_sets[h] else 0 for h in range(H)]
            n_v = [w_v if v_sets[h] else 0 for h in range(H)]
        qk_out, v_out = [], []
        for h in range(H):
            if self.granularity == 'head':
                keep = list(range(d)) if v_sets[h] else []
                qk_out.append(keep)
                v_out.append(list(keep))
                continue
            if shared:
                keep = self._top(sq[h], v_sets[h], n_v[h])
                qk_out.append(keep)
                v_out.append(list(keep))
            else:
                qk_out.append(self._top(sq[h], qk_sets[h], n_qk[h]))
                v_out.append(self._top(sv[h], v_sets[h], n_v[h]))
        return qk_out, v_out


def _cost(backbone, subnet: Subnet, input_size, layout: str) -> tuple[int, int, int]:
    """(params, kept MACs, executed MACs) of ``subnet`` in ``layout``."""
    structure = backbone_structure(backbone)
    blocks = []
    for i, b in enumerate(subnet.blocks):
        active = subnet.active_heads(i)
        blocks.append(BlockWidths(qk=[len(b['qk'][h]) for h in active],
                                  v=[len(b['v'][h]) for h in active], mlp=len(b['mlp']),
                                  rel_cols=len(subnet.qk_union(i)), layout=layout))
    rep = count_complexity(embed=len(subnet.kept_embed), blocks=blocks,
                           input_size=tuple(input_size), **structure)
    return rep.params, rep.macs, rep.macs_executed


def select_subnet(backbone, keep_ratio: float | None = None, params: int | None = None,
                  flops: int | None = None, *, input_size: tuple[int, int] | None = None,
                  granularity: str = 'dim', round_to: int = 8, min_heads: int = 1,
                  min_mlp: int = 8, min_embed: int | None = None,
                  macs: str = 'kept', layout: str = 'grouped', equal_heads: bool = False,
                  scores: UnitScores | None = None,
                  source: dict | None = None, latency: float | None = None,
                  latency_ms: float | None = None, latency_table=None) -> Subnet:
    """Choose the widths to keep for exactly one budget.

    Args:
        backbone: a SIDTViT in ``mode='search'`` with its searched masks loaded, or any
            SIDTViT when ``scores`` is given.
        keep_ratio: fraction of each searched kind's units to keep, in (0, 1].
        params: target backbone parameter count (at most the dense count).
        flops: target backbone MACs per image at ``input_size``.
        input_size: (H, W) for MACs; defaults to the backbone's pretraining size.
        granularity: ``'dim'`` (single head dims), ``'head_uniform'`` (same width
            for every head of a block) or ``'head'`` (whole heads).
        round_to: round kept widths (per head, per MLP, embedding) *up* to a
            multiple of this, for hardware speed; 1 turns rounding off.
        min_heads / min_mlp / min_embed: never empty a layer.
        macs: what a ``flops`` target counts: ``'kept'`` MACs or the MACs ``'executed'``
            by the pruned attention in ``layout`` (padding of unequal heads included).
        layout: the pruned layout the executed MACs assume (``'grouped'`` pads nothing,
            so there both counts agree; ``'padded'``).
        equal_heads: give every head of a layer the width of its widest head.
        scores: rank units by these instead of the masks' |m| (baseline criteria).
        latency / latency_ms: a budget in predicted backbone latency, as a fraction of the
            dense backbone's or in milliseconds, by ``latency_table`` (a
            :class:`~sidt_mmdet.search.latency.LatencyTable` or its JSON path, built for this
            architecture at ``input_size``). Units are added in the same order as for a
            params or MACs target; only the cost that stops the chain differs.
    """
    given = {k: v for k, v in (('keep_ratio', keep_ratio), ('params', params),
                               ('flops', flops), ('latency', latency),
                               ('latency_ms', latency_ms)) if v is not None}
    if len(given) != 1:
        raise ValueError('give exactly one budget: keep_ratio, params, flops, latency or '
                         f'latency_ms (got {sorted(given) or "none"})')
    if (latency_table is not None) != bool(set(given) & {'latency', 'latency_ms'}):
        raise ValueError('latency_table goes with a latency or latency_ms budget, and they '
                         'need one' + ('' if latency_table is None else
                                       f' (got {sorted(given)} with a table)'))
    if granularity not in GRANULARITIES:
        raise ValueError(f'granularity: expected one of {GRANULARITIES}, got {granularity!r}')
    if not isinstance(round_to, int) or round_to < 1:
        raise ValueError(f'round_to: expected an integer >= 1, got {round_to!r}')
    if macs not in MACS_COUNTS:
        raise ValueError(f'macs: expected one of {MACS_COUNTS}, got {macs!r}')
    if layout not in LAYOUTS:
        raise ValueError(f'layout: expected one of {LAYOUTS}, got {layout!r}')
    if min_heads < 1 or min_mlp < 1:
        raise ValueError('min_heads and min_mlp must be >= 1: a layer is never emptied')
    input_size = tuple(input_size or backbone.img_size)
    kind, value = next(iter(given.items()))
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f'{kind}: expected a finite number, got {value!r}')
    check_masks_finite(backbone, where=' checkpoint')
    scores = scores if scores is not None else UnitScores.from_masks(backbone)
    sel = _Selector(backbone, scores, granularity, round_to, min_heads, min_mlp,
                    min_embed if min_embed is not None else max(round_to, backbone.num_heads),
                    equal_heads=equal_heads)
    dense = backbone_complexity(backbone, input_size)
    sizes = {k: len(u) for k, u in sel.kinds.items()}

    table = None
    if latency_table is not None:
        from .latency import LatencyTable, load_latency_table
        table = (latency_table if isinstance(latency_table, LatencyTable)
                 else load_latency_table(str(latency_table)))
        table.check_model(backbone, input_size)
    if kind == 'latency':
        if not 0 < value <= 1:
            raise ValueError(f'latency: expected a fraction of the dense latency in (0, 1], '
                             f'got {value}')
        kind, value = 'latency_ms', value * table.predict(None)
    if kind == 'keep_ratio':
        if not 0 < value <= 1:
            raise ValueError(f'keep_ratio: expected a value in (0, 1], got {value}')
        subnet = sel.build({k: round(value * n) for k, n in sizes.items()})
        cost = _cost(backbone, subnet, input_size, layout)
    else:
        def measure(subnet):
            c = _cost(backbone, subnet, input_size, layout)
            if kind == 'latency_ms':
                return c, table.predict(subnet)
            return c, c[0 if kind == 'params' else (2 if macs == 'executed' else 1)]

        dense_value = {'params': dense.params, 'flops': dense.macs,
                       'latency_ms': table.predict(None) if table else None}[kind]
        if not value > 0:
            raise ValueError(f'{kind}: expected a positive target, got {value}')
        if value > dense_value:
            raise ValueError(f'{kind}={value:,} is above the dense model ({dense_value:,}); '
                             'nothing would be pruned')
        # The chain: the t-th event gives one more unit to the kind whose ratio is lowest.
        events = sorted(((j + 1) / n, k) for k, n in sizes.items() for j in range(n))

        def at(t):
            counts = dict.fromkeys(sizes, 0)
            for _, k in events[:t]:
                counts[k] += 1
            return counts

        lo_subnet = sel.build(at(0))
        lo_cost, lo_value = measure(lo_subnet)
        if lo_value > value:
            raise ValueError(f'{kind}={value:,} is below the smallest subnet the per-layer '
                             f'minimums allow ({lo_value:,})')
        lo, hi = 0, len(events)
        best = (lo_subnet, lo_cost, lo_value)
        while lo < hi:  # largest t with cost(t) <= value
            mid = (lo + hi + 1) // 2
            s = sel.build(at(mid))
            c, v = measure(s)
            if v <= value:
                lo, best = mid, (s, c, v)
            else:
                hi = mid - 1
        subnet, cost, _ = best
    subnet.budget = dict(kind=kind, value=value, granularity=granularity, round_to=round_to,
                         min_heads=min_heads, min_mlp=min_mlp, input_size=list(input_size),
                         macs=macs, layout=layout, equal_heads=equal_heads,
                         criterion=scores.name)
    subnet.stats = dict(params_before=dense.params, params_after=cost[0],
                        macs_before=dense.macs, macs_after=cost[1],
                        macs_executed_before=dense.macs_executed, macs_executed_after=cost[2],
                        layout=layout, input_size=list(input_size))
    if table is not None:
        subnet.stats.update(latency_ms_before=round(table.predict(None), 4),
                            latency_ms_after=round(table.predict(subnet), 4))
        subnet.budget.update(latency_table=dict(path=table.path, digest=table.digest(),
                                                key=table.key))
        if given.get('latency') is not None:
            subnet.budget['value'], subnet.budget['kind'] = given['latency'], 'latency'
            subnet.budget['latency_ms'] = value
    subnet.source = dict(source or {})
    return subnet

