"""A latency model of a SIDTViT on the machine it runs on, for latency budgets.

The table is measured, not derived from MACs: small layers cost more than their MACs (call
overhead, poor kernel shapes), and unequal head widths cost one attention call per width
group. Each *block kind* (a window size and its relative-position table size) is timed as a
whole pruned block (norms, window partition, attention, MLP, residuals) at the backbone's
input size and batch, on the given device, dtype and thread count:

- attention on a grid of per-head widths (every head at the same q/k and v width, MLP dense),
- the MLP on a grid of hidden widths (attention dense),
- the dense block, and the cost of one more width group (every head at its own width),

each at a few embedding widths, every point the fastest of a few calls. A block of q/k
widths ``qk``, v widths ``v`` and ``hidden`` MLP units at embedding width ``D`` is predicted
as ``B(D) + [A(D, qk, v) - A(D, dense)] + [M(D, hidden) - M(D, dense)] + (groups - 1) * G(D)``
(linear interpolation between grid points, clamped outside; ``qk``/``v`` as mean per-head
widths), and the backbone as the stem (patch embedding, position embedding, final norm)
plus its blocks. The grids are made monotone along each width axis (each point lowered to
the fastest wider one) so that growing a subnet never lowers its predicted latency, which
the budget's binary search relies on. The model and its accuracy are described in
``docs/latency.md``.

The table is cached as JSON keyed by everything that changes a timing: device, dtype,
torch version, threads, input size, batch and the backbone's architecture. A table is
refused, naming the key, where any of them differs from the run that uses it.
"""
from __future__ import annotations

import bisect
import hashlib
import json
import os
import os.path as osp
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from ..models.layers.head_layout import head_groups
from ..models.subnet import Subnet
from ..utils.fileio import write_json_atomic
from ..utils.timing import time_interleaved, torch_threads

__all__ = ['LatencyTable', 'LatencyTableError', 'build_latency_table', 'latency_key',
           'load_latency_table', 'measured_latency', 'check_latency_table']

FORMAT = 'sidt-latency-table'
VERSION = 2
DTYPES = {'float32': torch.float32, 'float16': torch.float16, 'bfloat16': torch.bfloat16}


class LatencyTableError(ValueError):
    """A latency table that is malformed or was built for another setting."""


def _arch(backbone) -> dict:
    return dict(embed_dims=backbone.embed_dims_dense, num_layers=backbone.num_layers,
                num_heads=backbone.num_heads, head_dim=backbone.head_dim,
                mlp_hidden=backbone.mlp_hidden, patch_size=backbone.patch_size,
                window_sizes=[blk.window_size for blk in backbone.blocks],
                use_rel_pos=bool(backbone.use_rel_pos),
                num_prefix_tokens=backbone.num_prefix_tokens)


def latency_key(backbone, input_size: Sequence[int], batch: int, device: str = 'cpu',
                dtype: str = 'float32', threads: int | None = None) -> dict:
    """What a table's timings depend on; two runs with equal keys can share a table."""
    if dtype not in DTYPES:
        raise LatencyTableError(f'dtype: expected one of {sorted(DTYPES)}, got {dtype!r}')
    dev = torch.device(device)
    name = torch.cuda.get_device_name(dev) if dev.type == 'cuda' else _cpu_name()
    return dict(device=f'{dev.type}: {name}', dtype=dtype, torch=torch.__version__,
                threads=int(threads or torch.get_num_threads()),
                input_size=[int(s) for s in input_size], batch=int(batch),
                arch=_arch(backbone))


def _cpu_name() -> str:
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    import platform
    return platform.processor() or platform.machine()


def _interp(xs: Sequence[float], ys: Sequence[float], x: float) -> float:
    """Piecewise-linear through (xs, ys), clamped to the end values outside."""
    if x <= xs[0]:
        return ys[0]
    if x >= xs[-1]:
        return ys[-1]
    j = bisect.bisect_right(xs, x) - 1
    t = (x - xs[j]) / (xs[j + 1] - xs[j])
    return ys[j] + t * (ys[j + 1] - ys[j])


def _monotone(values: list[float]) -> list[float]:
    """Non-decreasing by the minimum over each point and the wider ones: timing noise on a
    shared machine is upward (a preempted call), so an outlier is lowered to what a wider
    layer took rather than raising every wider point to it."""
    out, low = [], float('inf')
    for v in reversed(values):
        low = min(low, v)
        out.append(low)
    return out[::-1]


def _equal_heads_ms(k: dict, e: int, wq: float, wv: float, hidden: int) -> float:
    """A block of kind ``k`` at its ``e``-th embedding width with every head at q/k width
    ``wq`` and v width ``wv``, and ``hidden`` MLP units."""
    attn = k['attn'][e]
    rows = [_interp(k['width'], row, wv) for row in attn]
    a = _interp(k['width'], rows, wq) - attn[-1][-1]  # <= 0: saved by the attention
    m = _interp(k['hidden'], k['mlp'][e], hidden) - k['mlp'][e][-1]  # by the MLP
    # never below half the fastest block measured of the kind: on tiny blocks the noise of
    # three separate timings can make the two savings exceed the block
    floor = 0.5 * min(attn[0][0], k['mlp'][e][0])
    return max(k['base'][e] + a + m, floor)


@dataclass
class LatencyTable:
    """Measured milliseconds per block kind; see the module docstring for the model.

    ``kinds[name]`` holds ``embed`` (embedding widths), ``width`` (per-head widths of the
    attention grid), ``attn[e][q][v]``, ``hidden`` and ``mlp[e][h]``, ``base[e]`` (the dense
    block) and ``group[e]`` (one more width group); ``stem[e]``; ``blocks`` names the kind
    of each block.
    """

    key: dict
    embed: list[int]
    stem: list[float]
    kinds: dict[str, dict]
    blocks: list[str]
    build_seconds: float = 0.0
    measurements: int = 0
    path: str | None = field(default=None, compare=False)

    # ------------------------------------------------------------------ checks
    def check(self, key: dict, where: str | None = None) -> None:
        """Refuse a table built for another device, dtype, torch, threads, size, batch or
        architecture, naming each key that differs."""
        where = where or self.path or 'latency table'
        diff = [k for k in sorted(set(key) | set(self.key)) if key.get(k) != self.key.get(k)]
        if diff:
            said = '; '.join(f'{k}: table {self.key.get(k)!r}, this run {key.get(k)!r}'
                             for k in diff)
            raise LatencyTableError(f'{where} was built for another setting ({said}); build '
                                    'a table for this one (tools/analysis/latency_table.py)')

    def check_model(self, backbone, input_size: Sequence[int]) -> None:
        """Refuse a table of another architecture or input size than ``backbone`` at
        ``input_size`` (a selection; the device, dtype and threads are the target's)."""
        want = dict(arch=_arch(backbone), input_size=[int(s) for s in input_size])
        for k, value in want.items():
            if self.key.get(k) != value:
                raise LatencyTableError(f'{self.path or "latency table"} was built for {k} '
                                        f'{self.key.get(k)!r}, this selection has {value!r}')

    # ------------------------------------------------------------- prediction
    def block_ms(self, kind: str, embed: int, qk: Sequence[int], v: Sequence[int],
                 hidden: int) -> float:
        k = self.kinds[kind]
        H = self.key['arch']['num_heads']
        wq, wv = sum(qk) / H, sum(v) / H  # the grid's per-head width of equal heads
        groups = len(head_groups(list(qk), list(v), 'grouped'))
        # monotone in the embedding width too (each width's figure from separate timings)
        per_embed = _monotone([_equal_heads_ms(k, e, wq, wv, hidden)
                               for e in range(len(self.embed))])
        group = _interp(self.embed, k['group'], embed)
        return _interp(self.embed, per_embed, embed) + max(0, groups - 1) * group

    def predict(self, subnet: Subnet | None) -> float:
        """Predicted milliseconds of the backbone pruned to ``subnet`` (``None``: dense)."""
        arch = self.key['arch']
        if subnet is None:
            D, L = arch['embed_dims'], arch['num_layers']
            blocks = [([arch['head_dim']] * arch['num_heads'],) * 2 + (arch['mlp_hidden'],)
                      for _ in range(L)]
        else:
            D = len(subnet.kept_embed)
            blocks = []
            for i, b in enumerate(subnet.blocks):
                active = subnet.active_heads(i)
                blocks.append(([len(b['qk'][h]) for h in active],
                               [len(b['v'][h]) for h in active], len(b['mlp'])))
        total = _interp(self.embed, self.stem, D)
        for kind, (qk, v, hidden) in zip(self.blocks, blocks, strict=True):
            total += self.block_ms(kind, D, qk, v, hidden)
        return total

    # ---------------------------------------------------------------- storage
    def to_dict(self) -> dict:
        return dict(format=FORMAT, version=VERSION, key=self.key, embed=self.embed,
                    stem=self.stem, kinds=self.kinds, blocks=self.blocks,
                    build_seconds=self.build_seconds, measurements=self.measurements)

    def save(self, path: str) -> None:
        write_json_atomic(path, self.to_dict())
        self.path = path

    def digest(self) -> str:
        text = json.dumps(self.to_dict(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def load_latency_table(path: str, key: dict | None = None) -> LatencyTable:
    """Read a table (and check it against ``key`` when given); errors name the file."""
    try:
        with open(path) as f:
            data = json.load(f)
    except FileNotFoundError:
        raise LatencyTableError(f'latency table not found: {path}') from None
    except (OSError, ValueError) as e:
        raise LatencyTableError(f'{path}: not a latency table JSON ({e})') from None
    if not isinstance(data, dict) or data.get('format') != FORMAT:
        raise LatencyTableError(f'{path}: expected "format": "{FORMAT}"')
    if data.get('version') != VERSION:
        raise LatencyTableError(f'{path}: version {data.get("version")!r}, this code reads '
                                f'{VERSION}')
    try:
        table = LatencyTable(key=data['key'], embed=data['embed'], stem=data['stem'],
                             kinds=data['kinds'], blocks=data['blocks'],
                             build_seconds=data.get('build_seconds', 0.0),
                             measurements=data.get('measurements', 0), path=path)
    except KeyError as e:
        raise LatencyTableError(f'{path}: missing key {e}') from None
    missing = sorted(set(table.blocks) - set(table.kinds))
    if missing:
        raise LatencyTableError(f'{path}: blocks name kinds the table has no timing for: '
                                f'{missing}')
    if key is not None:
        table.check(key, where=path)
    return table


# ------------------------------------------------------------------ building
def _grid(upper: int, points: int, step: int = 1) -> list[int]:
    """``points`` widths from ``step`` to ``upper`` (multiples of ``step``), distinct."""
    raw = [upper * (j + 1) / points for j in range(points)]
    out = sorted({max(step, min(upper, round(r / step) * step)) for r in raw})
    return out


def _probe_subnet(backbone, embed: int, width_qk: int, width_v: int, hidden: int,
                  uneven: bool = False) -> Subnet:
    H, d = backbone.num_heads, backbone.head_dim
    if uneven:  # every head at its own width: H width groups per layer
        widths = [max(1, d - h * max(1, d // (2 * H))) for h in range(H)]
        qk = v = [list(range(w)) for w in widths]
    else:
        qk = [list(range(width_qk))] * H
        v = [list(range(width_v))] * H
    blocks = [dict(qk=[list(x) for x in qk], v=[list(x) for x in v],
                   mlp=list(range(hidden))) for _ in range(backbone.num_layers)]
    return Subnet(backbone.embed_dims_dense, backbone.num_layers, H, backbone.mlp_hidden,
                  blocks=blocks, embed=list(range(embed)))


def _probe(backbone, subnet: Subnet, device, dtype) -> nn.Module:
    return backbone.to_pruned(subnet).to(device=device, dtype=dtype).eval()


def build_latency_table(backbone, input_size: Sequence[int], batch: int = 1,
                        device: str = 'cpu', dtype: str = 'float32', threads: int | None = None,
                        widths: int = 4, hiddens: int = 5, embeds: int = 4, iters: int = 5,
                        warmup: int = 2, round_to: int = 1, cache: str | None = None,
                        log: Callable[[str], None] = print) -> LatencyTable:
    """Time ``backbone``'s block kinds on this machine (see the module docstring).

    ``widths``/``hiddens``/``embeds``: grid points per axis (per-head widths, MLP hidden
    widths, embedding widths from a quarter to full); ``iters`` timed calls per point (the fastest).
    ``cache``: a JSON path; a table there with this run's key is reused, one with another
    key is refused, and a new table is written there.
    """
    key = latency_key(backbone, input_size, batch, device, dtype, threads)
    if cache and osp.isfile(cache):
        table = load_latency_table(cache, key)
        log(f'latency table: reusing {cache} (built in {table.build_seconds:.0f} s)')
        return table
    with torch_threads(key['threads']):
        return _build(backbone, key, input_size, batch, device, dtype, widths, hiddens,
                      embeds, iters, warmup, round_to, cache, log)


def _build(backbone, key, input_size, batch, device, dtype, widths, hiddens, embeds, iters,
           warmup, round_to, cache, log) -> LatencyTable:
    t0 = time.perf_counter()
    dt = DTYPES[dtype]
    H, d = backbone.num_heads, backbone.head_dim
    D, hidden = backbone.embed_dims_dense, backbone.mlp_hidden
    step = max(1, int(round_to))
    width_grid = _grid(d, widths, step)
    hidden_grid = _grid(hidden, hiddens, step)
    # embedding widths from a quarter to full, multiples of the head count
    embed_grid = sorted({max(H, round(D * (0.25 + 0.75 * j / max(1, embeds - 1)) / H) * H)
                         for j in range(embeds)}) if embeds > 1 else [D]
    # one representative block per kind: (window size, relative-position table rows)
    kinds: dict[str, int] = {}
    names = []
    for i, blk in enumerate(backbone.blocks):
        rows = (tuple(blk.attn.rel_pos_h.shape[:1]) if getattr(blk.attn, 'use_rel_pos', False)
                else ())
        name = (f'window{blk.window_size}' if blk.window_size else 'global') + (
            f'-relpos{rows[0]}' if rows else '')
        kinds.setdefault(name, i)
        names.append(name)
    image = torch.zeros(batch, backbone.patch_embed.proj.in_channels, *input_size,
                        device=device, dtype=dt)
    count = 0

    def timed(subnet: Subnet) -> tuple[dict[str, float], float | None]:
        """Ms of each kind's block in a probe pruned to ``subnet``, and of its stem: the
        fastest of ``iters`` calls (upward noise, preempted calls, does not enter)."""
        nonlocal count
        probe = _probe(backbone, subnet, device, dt)
        with torch.no_grad():
            x, hw = probe.patch_embed(image)
            if probe.cls_token is not None:
                x = torch.cat([probe.cls_token.expand(batch, -1, -1), x], dim=1)
            fns = {name: (lambda b=probe.blocks[i], x=x, hw=hw: b(x, hw))
                   for name, i in kinds.items()}
            blocks = probe.blocks
            probe.blocks = nn.ModuleList()  # the stem: everything but the blocks
            fns['stem'] = lambda: probe(image)
            times = time_interleaved(fns, iters, warmup, device=device)
            probe.blocks = blocks
        count += len(fns)
        fastest = {n: 1e3 * min(t) for n, t in times.items()}
        return {n: fastest[n] for n in kinds}, fastest['stem']

    table_kinds = {n: dict(width=width_grid, hidden=hidden_grid, attn=[], mlp=[], base=[],
                           group=[]) for n in kinds}
    stem = []
    for e_i, e in enumerate(embed_grid):
        log(f'latency table: embedding width {e} ({e_i + 1}/{len(embed_grid)}): '
            f'{len(width_grid) ** 2} attention, {len(hidden_grid)} MLP points')
        base, s = timed(_probe_subnet(backbone, e, d, d, hidden))
        stem.append(s)
        attn = {n: [[0.0] * len(width_grid) for _ in width_grid] for n in kinds}
        for a, wq in enumerate(width_grid):
            for b, wv in enumerate(width_grid):
                got, _ = timed(_probe_subnet(backbone, e, wq, wv, hidden))
                for n in kinds:
                    attn[n][a][b] = got[n]
        mlp = {n: [] for n in kinds}
        for h in hidden_grid:
            got, _ = timed(_probe_subnet(backbone, e, d, d, h))
            for n in kinds:
                mlp[n].append(got[n])
        uneven_sub = _probe_subnet(backbone, e, d, d, hidden, uneven=True)
        uneven, _ = timed(uneven_sub)
        b0 = uneven_sub.blocks[0]
        for n, k in table_kinds.items():
            # monotone in every width axis: noise must not make a wider layer cheaper
            grid = [_monotone(row) for row in attn[n]]
            cols = [_monotone([grid[a][b] for a in range(len(width_grid))])
                    for b in range(len(width_grid))]
            k['attn'].append([[cols[b][a] for b in range(len(width_grid))]
                              for a in range(len(width_grid))])
            k['mlp'].append(_monotone(mlp[n]))
            # the dense block was timed three times (alone, as the attention grid's widest
            # point and as the MLP grid's): the median of the three is its time
            k['base'].append(sorted([base[n], attn[n][-1][-1], mlp[n][-1]])[1])
            qk = [len(x) for x in b0['qk']]
            groups = len(head_groups(qk, qk, 'grouped'))
            w = sum(qk) / H  # the equal-heads block of the same total width
            even = _equal_heads_ms(k, e_i, w, w, hidden)
            k['group'].append(max(0.0, (uneven[n] - even) / max(1, groups - 1)))
    table = LatencyTable(key=key, embed=embed_grid, stem=_monotone(stem), kinds=table_kinds,
                         blocks=names, build_seconds=round(time.perf_counter() - t0, 1),
                         measurements=count)
    log(f'latency table: {count} timings in {table.build_seconds:.0f} s')
    if cache:
        os.makedirs(osp.dirname(osp.abspath(cache)), exist_ok=True)
        table.save(cache)
    return table


def measured_latency(backbone, subnets, input_size: Sequence[int], batch: int,
                     device: str = 'cpu', dtype: str = 'float32', iters: int = 5,
                     warmup: int = 2):
    """Measured milliseconds of the backbone pruned to ``subnets`` (one Subnet or ``None``
    for dense, or a dict name -> Subnet/None, timed interleaved): the fastest of ``iters``
    calls each, the statistic the table is built from."""
    dt = DTYPES[dtype]
    one = not isinstance(subnets, dict)
    named = {'m': subnets} if one else dict(subnets)
    d = backbone.head_dim
    models = {n: _probe(backbone, sub if sub is not None else _probe_subnet(
        backbone, backbone.embed_dims_dense, d, d, backbone.mlp_hidden), device, dt)
        for n, sub in named.items()}
    image = torch.zeros(batch, backbone.patch_embed.proj.in_channels, *input_size,
                        device=device, dtype=dt)
    with torch.no_grad():
        times = time_interleaved({n: (lambda m=m: m(image)) for n, m in models.items()},
                                 iters, warmup, device=device)
    got = {n: 1e3 * min(t) for n, t in times.items()}
    return got['m'] if one else got


def check_latency_table(backbone, table: LatencyTable, subnets: Sequence[Subnet],
                        iters: int = 5, warmup: int = 2,
                        log: Callable[[str], None] = print) -> dict:
    """Predicted against measured latency of ``subnets`` (held out: not the grid's probes),
    on the machine and setting of ``table``; returns the per-subnet figures and the
    distribution of the relative error."""
    key = table.key
    rows = []
    for i, sub in enumerate(subnets):
        got = measured_latency(backbone, sub, key['input_size'], key['batch'],
                               device=key['device'].split(':')[0], dtype=key['dtype'],
                               iters=iters, warmup=warmup)
        pred = table.predict(sub)
        rows.append(dict(predicted_ms=round(pred, 4), measured_ms=round(got, 4),
                         rel_error=round(pred / got - 1, 4)))
        log(f'held-out subnet {i + 1}/{len(subnets)}: predicted {pred:.2f} ms, measured '
            f'{got:.2f} ms ({pred / got - 1:+.1%})')
    errors = sorted(abs(r['rel_error']) for r in rows)
    return dict(subnets=rows, median_abs_error=errors[len(errors) // 2] if errors else None,
                max_abs_error=errors[-1] if errors else None)
