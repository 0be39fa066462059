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
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..models.backbones.vit_spec import SEARCH_DIMS
from ..models.complexity import (
    LAYOUTS,
    BlockWidths,
    backbone_complexity,
    backbone_structure,
    count_complexity,
)
from ..models.subnet import Subnet
from ..utils.deprecation import warn_once
from .checks import check_masks_finite

__all__ = ['select_subnet', 'GRANULARITIES', 'HEAD_WIDTHS', 'KINDS', 'MACS_COUNTS', 'SubnetCost',
           'UnitScores', 'UNIT_ORDERS', 'resolve_head_widths', 'subnet_cost', 'unit_costs_ms']

GRANULARITIES = ('dim', 'head_uniform', 'head')  # 'head_uniform': head_widths='uniform'
HEAD_WIDTHS = ('free', 'uniform', 'equal', 'padded')
MACS_COUNTS = ('kept', 'executed')
UNIT_ORDERS = ('score', 'score_per_ms')  # how units of one kind queue for the budget
KINDS = SEARCH_DIMS  # the kinds a search masks: 'attn', 'mlp', 'embed'


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

    def only(self, kinds: Sequence[str]) -> UnitScores:
        """These scores for ``kinds`` (of ``'attn'``, ``'mlp'``, ``'embed'``) alone: the
        other kinds' units are then not selected, so their layers stay whole."""
        unknown = sorted(set(kinds) - set(KINDS))
        if unknown:
            raise ValueError(f'kinds: unknown {unknown}; expected a subset of {KINDS}')
        attn = 'attn' in kinds
        return UnitScores(qk=self.qk if attn else [], v=self.v if attn else [],
                          mlp=self.mlp if 'mlp' in kinds else [],
                          embed=self.embed if 'embed' in kinds else None, name=self.name)

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


def _sorted(units: list[_Unit], costs: Sequence[float] | None = None) -> list[_Unit]:
    """Best first: by score, or with ``costs`` (what one dim of the kind costs in each
    block) by score per cost, a unit costing its dims' sum. Stable: ties keep the lower
    block/head/dim first, so selection is reproducible."""
    if costs is None:
        return sorted(units, key=lambda u: -u.score)
    return sorted(units, key=lambda u: -u.score / (costs[u.block] * len(u.dims)))


def unit_costs_ms(table, backbone) -> dict[str, list[float]]:
    """Milliseconds one dim of each kind (``qk``, ``v``, shared ``attn``, ``mlp``) costs in
    each block, by the latency table: the block's predicted saving from halving that kind's
    widths, per dim removed (never below 1e-12 ms, so a dim the table prices at nothing ranks
    first rather than dividing by zero)."""
    H, d, hidden = backbone.num_heads, backbone.head_dim, backbone.mlp_hidden
    D = backbone.embed_dims_dense
    full, half = [d] * H, [max(1, d // 2)] * H
    per_dim, per_unit = H * (d - half[0]) or 1, (hidden - hidden // 2) or 1
    costs: dict[str, list[float]] = {'qk': [], 'v': [], 'attn': [], 'mlp': []}
    for kind in table.blocks:
        dense = table.block_ms(kind, D, full, full, hidden)
        for name, qk, v, h, n in (('qk', half, full, hidden, per_dim),
                                  ('v', full, half, hidden, per_dim),
                                  ('attn', half, half, hidden, per_dim),
                                  ('mlp', full, full, hidden // 2, per_unit)):
            costs[name].append(max(1e-12, (dense - table.block_ms(kind, D, qk, v, h)) / n))
    return costs


class _Selector:
    """Turns "keep the first k units of each kind" into a Subnet."""

    def __init__(self, backbone, scores, granularity, round_to, min_heads, min_mlp, min_embed,
                 equal_heads, unit_costs: dict[str, list[float]] | None = None):
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
        unit_costs = unit_costs or {}
        self.kinds = {k: _sorted(v, unit_costs.get(k)) for k, v in self.kinds.items()}

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


@dataclass(frozen=True)
class SubnetCost:
    """What a subnet costs: backbone parameters, kept MACs (the analytic cost), the MACs its
    layout executes (padding of unequal heads included) and, with a latency table, its
    predicted milliseconds."""

    params: int
    macs: int
    macs_executed: int
    latency_ms: float | None = None

    def of(self, kind: str, macs_count: str = 'kept') -> float:
        """The figure a ``kind`` budget is met in (``macs_count``: for a MACs budget)."""
        if kind == 'params':
            return self.params
        if kind == 'macs':
            return self.macs_executed if macs_count == 'executed' else self.macs
        if kind == 'latency_ms':
            return self.latency_ms
        raise ValueError(f'no cost for a {kind!r} budget')


def subnet_cost(backbone, subnet: Subnet, input_size, layout: str,
                table=None) -> SubnetCost:
    """:class:`SubnetCost` of ``subnet`` of ``backbone`` at ``input_size`` in ``layout``."""
    structure = backbone_structure(backbone)
    blocks = []
    for i, b in enumerate(subnet.blocks):
        active = subnet.active_heads(i)
        blocks.append(BlockWidths(qk=[len(b['qk'][h]) for h in active],
                                  v=[len(b['v'][h]) for h in active], mlp=len(b['mlp']),
                                  rel_cols=len(subnet.qk_union(i)), layout=layout))
    rep = count_complexity(embed=len(subnet.kept_embed), blocks=blocks,
                           input_size=tuple(input_size), **structure)
    return SubnetCost(rep.params, rep.macs, rep.macs_executed,
                      table.predict(subnet) if table is not None else None)


def _renamed(old: str, new: str, why: str = '') -> None:
    warn_once(f'select_subnet: {old} is deprecated, use {new}{why}', stacklevel=5)


def resolve_head_widths(head_widths: str | None = None, granularity: str = 'dim',
                        equal_heads: bool = False, layout: str = 'grouped'
                        ) -> tuple[str, str]:
    """``(head_widths, granularity)`` from the policy or its older spellings.

    ``granularity='head_uniform'`` is ``head_widths='uniform'``, ``equal_heads=True``
    ``'equal'`` and ``layout='padded'`` ``'padded'``; given with a policy, they must agree.
    The granularity left is ``'dim'`` or ``'head'`` (whole heads, whose widths are equal).
    """
    if granularity not in GRANULARITIES:
        raise ValueError(f'granularity: expected one of {GRANULARITIES}, got {granularity!r}')
    if layout not in LAYOUTS:
        raise ValueError(f'layout: expected one of {LAYOUTS}, got {layout!r}')
    old = [p for p, on in (('uniform', granularity == 'head_uniform'),
                           ('equal', bool(equal_heads)), ('padded', layout == 'padded')) if on]
    if head_widths is not None and head_widths not in HEAD_WIDTHS:
        raise ValueError(f'head_widths: expected one of {HEAD_WIDTHS}, got {head_widths!r}')
    if head_widths is not None and any(p != head_widths for p in old):
        raise ValueError(f'head_widths={head_widths!r} conflicts with the older spelling of '
                         f'{old} (granularity / equal_heads / layout): give one')
    policy = head_widths or (old[0] if old else 'free')
    return policy, ('dim' if granularity == 'head_uniform' else granularity)


def _budget(keep_ratio, params, macs, flops, latency, latency_ms, macs_count):
    """The one budget given, as ``(kind, value, macs_count)``, the older names translated."""
    if isinstance(macs, str):  # the older meaning of macs=: what a flops budget counts
        _renamed(f'macs={macs!r} (what a MACs budget counts)', 'macs_count',
                 "; macs= is now the MACs budget itself, and with head_widths='padded' it "
                 'counts the executed MACs by default')
        macs_count, macs = macs, None
    if flops is not None:
        _renamed('flops=', 'macs=', ' (the budget was always in MACs)')
        if macs is not None:
            raise ValueError('give macs or its older name flops, not both')
        macs = flops
    given = {k: v for k, v in (('keep_ratio', keep_ratio), ('params', params),
                               ('macs', macs), ('latency', latency),
                               ('latency_ms', latency_ms)) if v is not None}
    if len(given) != 1:
        raise ValueError('give exactly one budget: keep_ratio, params, macs, latency or '
                         f'latency_ms (got {sorted(given) or "none"})')
    kind, value = next(iter(given.items()))
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f'{kind}: expected a finite number, got {value!r}')
    if macs_count is not None and macs_count not in MACS_COUNTS:
        raise ValueError(f'macs_count: expected one of {MACS_COUNTS}, got {macs_count!r}')
    return kind, value, macs_count


def _largest_within(sel, sizes: dict, measure, kind: str, value: float):
    """The largest point of the selection chain whose cost is within ``value``: the t-th
    event gives one more unit to the kind whose kept ratio is lowest; the chain is monotone
    in cost, so a binary search finds it. Returns ``(subnet, cost)``."""
    events = sorted(((j + 1) / n, k) for k, n in sizes.items() for j in range(n))

    def at(t):
        counts = dict.fromkeys(sizes, 0)
        for _, k in events[:t]:
            counts[k] += 1
        return counts

    best = sel.build(at(0))
    best_cost, lowest = measure(best)
    if lowest > value:
        raise ValueError(f'{kind}={value:,} is below the smallest subnet the per-layer '
                         f'minimums allow ({lowest:,})')
    lo, hi = 0, len(events)
    while lo < hi:  # largest t with cost(t) <= value
        mid = (lo + hi + 1) // 2
        s = sel.build(at(mid))
        c, v = measure(s)
        if v <= value:
            lo, best, best_cost = mid, s, c
        else:
            hi = mid - 1
    return best, best_cost


def _latency_table(latency_table, kind: str, backbone, input_size):
    if (latency_table is not None) != (kind in ('latency', 'latency_ms')):
        raise ValueError('latency_table goes with a latency or latency_ms budget, and they '
                         'need one' + ('' if latency_table is None else
                                       f" (got ['{kind}'] with a table)"))
    if latency_table is None:
        return None
    from .latency import LatencyTable, load_latency_table
    table = (latency_table if isinstance(latency_table, LatencyTable)
             else load_latency_table(str(latency_table)))
    table.check_model(backbone, input_size)
    return table


def select_subnet(backbone, keep_ratio: float | None = None, params: int | None = None,
                  macs: int | None = None, *, input_size: tuple[int, int] | None = None,
                  granularity: str = 'dim', head_widths: str | None = None, round_to: int = 8,
                  min_heads: int = 1, min_mlp: int = 8, min_embed: int | None = None,
                  macs_count: str | None = None, scores: UnitScores | None = None,
                  source: dict | None = None, latency: float | None = None,
                  latency_ms: float | None = None, latency_table=None,
                  kinds: Sequence[str] | None = None, flops: int | None = None,
                  layout: str = 'grouped', equal_heads: bool = False,
                  unit_order: str | None = None) -> Subnet:
    """Choose the widths to keep for exactly one budget.

    Args:
        backbone: a SIDTViT in ``mode='search'`` with its searched masks loaded, or any
            SIDTViT when ``scores`` is given.
        keep_ratio: fraction of each searched kind's units to keep, in (0, 1].
        params: target backbone parameter count (at most the dense count).
        macs: target backbone MACs per image at ``input_size`` (``flops``: its older name).
        input_size: (H, W) for MACs; defaults to the backbone's pretraining size.
        granularity: ``'dim'`` (single head dims) or ``'head'`` (whole heads).
        head_widths: how the widths of one layer's heads relate, and so how they run:
            ``'free'`` (each head its own width; heads of one width share an attention
            call), ``'uniform'`` (unit j keeps the j-th best dim of every head: one width
            per layer), ``'equal'`` (selected as ``'free'``, then every head widened to the
            layer's widest with its next-best dims) or ``'padded'`` (free widths run as one
            call zero-padded to the widest). Older spellings: ``granularity='head_uniform'``,
            ``equal_heads=True``, ``layout='padded'``. The subnet file records the policy and
            its layout, which the pruned backbone runs.
        round_to: round kept widths (per head, per MLP, embedding) *up* to a
            multiple of this, for hardware speed; 1 turns rounding off.
        min_heads / min_mlp / min_embed: never empty a layer.
        macs_count: what a ``macs`` budget counts: ``'kept'`` MACs or the MACs
            ``'executed'`` by the layout; by default what runs (they differ only with
            ``head_widths='padded'``).
        scores: rank units by these instead of the masks' |m| (baseline criteria).
        kinds: select only these of ``'attn'``, ``'mlp'``, ``'embed'`` (default: every kind
            scored); the others are kept whole, e.g. ``kinds=('mlp',)`` prunes the MLPs alone
            whatever was searched.
        latency / latency_ms: a budget in predicted backbone latency, as a fraction of the
            dense backbone's or in milliseconds, by ``latency_table`` (a
            :class:`~sidt_mmdet.search.latency.LatencyTable` or its JSON path, built for this
            architecture at ``input_size``).
        unit_order: how the units of one kind queue: ``'score'`` (best |m| first, the
            order of every budget but latency) or ``'score_per_ms'`` (best score per
            predicted millisecond first, the default of a latency budget: a dim of a block
            that the table says is slow must score higher to stay, as HALP ranks). The kinds
            still interleave by kept ratio; rounding and the minimums are the same.
    """
    kind, value, macs_count = _budget(keep_ratio, params, macs, flops, latency, latency_ms,
                                      macs_count)
    policy, granularity = resolve_head_widths(head_widths, granularity, equal_heads, layout)
    layout = 'padded' if policy == 'padded' else 'grouped'
    macs_count = macs_count or ('executed' if layout == 'padded' else 'kept')
    if not isinstance(round_to, int) or round_to < 1:
        raise ValueError(f'round_to: expected an integer >= 1, got {round_to!r}')
    if min_heads < 1 or min_mlp < 1:
        raise ValueError('min_heads and min_mlp must be >= 1: a layer is never emptied')
    input_size = tuple(input_size or backbone.img_size)
    table = _latency_table(latency_table, kind, backbone, input_size)
    unit_order = unit_order or ('score_per_ms' if table is not None else 'score')
    if unit_order not in UNIT_ORDERS:
        raise ValueError(f'unit_order: expected one of {UNIT_ORDERS}, got {unit_order!r}')
    if unit_order == 'score_per_ms' and table is None:
        raise ValueError("unit_order='score_per_ms' ranks by predicted milliseconds: it "
                         'needs a latency budget and its latency_table')
    check_masks_finite(backbone, where=' checkpoint')
    scores = scores if scores is not None else UnitScores.from_masks(backbone)
    if kinds is not None:
        scores = scores.only(kinds)
    sel = _Selector(backbone, scores, 'head_uniform' if policy == 'uniform' else granularity,
                    round_to, min_heads, min_mlp,
                    min_embed if min_embed is not None else max(round_to, backbone.num_heads),
                    equal_heads=policy == 'equal',
                    unit_costs=unit_costs_ms(table, backbone) if unit_order == 'score_per_ms'
                    else None)
    dense = backbone_complexity(backbone, input_size)
    sizes = {k: len(u) for k, u in sel.kinds.items()}
    ratio = value if kind == 'latency' else None
    if kind == 'latency':
        if not 0 < value <= 1:
            raise ValueError(f'latency: expected a fraction of the dense latency in (0, 1], '
                             f'got {value}')
        kind, value = 'latency_ms', value * table.predict(None)
    if kind == 'keep_ratio':
        if not 0 < value <= 1:
            raise ValueError(f'keep_ratio: expected a value in (0, 1], got {value}')
        subnet = sel.build({k: round(value * n) for k, n in sizes.items()})
        cost = subnet_cost(backbone, subnet, input_size, layout, table)
    else:
        dense_value = {'params': dense.params, 'macs': dense.macs,
                       'latency_ms': table.predict(None) if table else None}[kind]
        if not value > 0:
            raise ValueError(f'{kind}: expected a positive target, got {value}')
        if value > dense_value:
            raise ValueError(f'{kind}={value:,} is above the dense model ({dense_value:,}); '
                             'nothing would be pruned')

        def measure(s):
            c = subnet_cost(backbone, s, input_size, layout, table)
            return c, c.of(kind, macs_count)
        subnet, cost = _largest_within(sel, sizes, measure, kind, value)
    _record(subnet, kind, value, ratio, policy, granularity, layout, macs_count, round_to,
            min_heads, min_mlp, input_size, scores.name, dense, cost, table)
    if table is not None:
        subnet.budget['unit_order'] = unit_order
    subnet.source = dict(source or {})
    return subnet


def _record(subnet, kind, value, ratio, policy, granularity, layout, macs_count, round_to,
            min_heads, min_mlp, input_size, criterion, dense, cost, table) -> None:
    """What the subnet file says about its selection (``budget``) and its cost (``stats``).

    ``granularity``, ``equal_heads`` and ``layout`` are recorded beside ``head_widths`` in
    their older spelling, which the readers of earlier subnet files use.
    """
    subnet.budget = dict(kind=kind, value=value,
                         granularity='head_uniform' if policy == 'uniform' else granularity,
                         head_widths=policy, round_to=round_to, min_heads=min_heads,
                         min_mlp=min_mlp, input_size=list(input_size), macs=macs_count,
                         layout=layout, equal_heads=policy == 'equal', criterion=criterion)
    subnet.stats = dict(params_before=dense.params, params_after=cost.params,
                        macs_before=dense.macs, macs_after=cost.macs,
                        macs_executed_before=dense.macs_executed,
                        macs_executed_after=cost.macs_executed,
                        layout=layout, input_size=list(input_size))
    if table is not None:
        subnet.stats.update(latency_ms_before=round(table.predict(None), 4),
                            latency_ms_after=round(cost.latency_ms, 4))
        subnet.budget.update(latency_table=dict(path=table.path, digest=table.digest(),
                                                key=table.key))
        if ratio is not None:
            subnet.budget.update(kind='latency', value=ratio, latency_ms=value)
