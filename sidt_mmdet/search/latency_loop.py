"""A latency budget met in measured, not predicted, milliseconds: select, measure, correct.

The table's predictions are biased where it interpolates far from what it timed (small
widths, many unequal heads), so a subnet selected at a predicted fraction of the dense
latency can run at another fraction. On the machine that built the table,
:func:`select_subnet_measured` measures the dense backbone once and, per round, the
selected one, then selects again at a corrected predicted budget:

- round 1 asks for the target itself (the open-loop selection);
- round 2 scales the budget by ``target / measured ratio``;
- later rounds take a secant step through the last two ``(budget, measured ratio)`` pairs
  (the scaling again where the two ratios are equal or fall as the budget grows; a step
  is kept within half to twice the last budget),

until a measured ratio is within ``tolerance`` of the target (relative), ``rounds`` are
spent, a corrected budget selects a subnet already measured, or it falls below the
smallest subnet the per-layer minimums allow (the loop stops and says so: a layer is never
emptied). It returns the measured subnet closest to the target, preferring one not above
``target * (1 + tolerance)``, and records every round in ``budget['closed_loop']``. The
cost is one dense measurement plus one per round. See ``docs/latency.md``.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ..models.subnet import Subnet
from ..utils.timing import torch_threads
from .latency import LatencyTable, LatencyTableError, latency_key, measured_latency
from .select import select_subnet

__all__ = ['select_subnet_measured', 'check_table_is_here', 'table_measure']


def check_table_is_here(backbone, table: LatencyTable) -> None:
    """Refuse, naming each key that differs, a table built for another machine, dtype,
    torch or architecture than this process and ``backbone``: measurements here could not
    correct its predictions."""
    key = table.key
    device = str(key.get('device', '')).split(':')[0]
    if device == 'cuda' and not torch.cuda.is_available():
        raise LatencyTableError(f'{table.path or "latency table"} was built for device '
                                f'{key.get("device")!r}; this machine has no CUDA device to '
                                'measure on')
    try:
        here = latency_key(backbone, key['input_size'], key['batch'], device=device,
                           dtype=key['dtype'], threads=key['threads'])
    except (KeyError, RuntimeError) as e:
        raise LatencyTableError(f'{table.path or "latency table"}: its key cannot be '
                                f'measured here ({e})') from None
    table.check(here)


def table_measure(backbone, table: LatencyTable, iters: int = 5, warmup: int = 2
                  ) -> Callable[[Subnet | None], float]:
    """``measure(subnet or None) -> ms`` on the table's setting (device, dtype, input size,
    batch, threads): :func:`~sidt_mmdet.search.latency.measured_latency`, the statistic
    the table is built from."""
    key = table.key
    device = key['device'].split(':')[0]

    def measure(subnet):
        with torch_threads(key['threads']):
            return measured_latency(backbone, subnet, key['input_size'], key['batch'],
                                    device=device, dtype=key['dtype'], iters=iters,
                                    warmup=warmup)
    return measure


def _next_budget(history: list[tuple[float, float]], target: float) -> float:
    """The predicted budget to ask next from the ``(budget, measured ratio)`` pairs."""
    b1, r1 = history[-1]
    if len(history) >= 2:
        b0, r0 = history[-2]
        if r1 != r0 and (b1 - b0) / (r1 - r0) > 0:  # a secant step on a rising curve
            step = b1 + (target - r1) * (b1 - b0) / (r1 - r0)
            return min(2 * b1, max(0.5 * b1, step))  # never a wild jump on noisy pairs
    return b1 * target / r1


def _pick(rounds: list[dict], target: float, tolerance: float) -> int:
    """Index of the measured round closest to the target, preferring one not above
    ``target * (1 + tolerance)``."""
    measured = [i for i, r in enumerate(rounds) if 'measured_ratio' in r]
    within = [i for i in measured if rounds[i]['measured_ratio'] <= target * (1 + tolerance)]
    return min(within or measured, key=lambda i: abs(rounds[i]['measured_ratio'] - target))


def select_subnet_measured(backbone, latency: float | None = None,
                           latency_ms: float | None = None, *, latency_table,
                           measure: Callable[[Subnet | None], float] | None = None,
                           tolerance: float = 0.03, rounds: int = 4, iters: int = 5,
                           warmup: int = 2, log: Callable[[str], None] = print,
                           **select_kw) -> Subnet:
    """Select for a *measured* latency budget by correcting the predicted one (module doc).

    Args:
        backbone: as for :func:`~sidt_mmdet.search.select.select_subnet`.
        latency / latency_ms: the target, a fraction of the measured dense latency or
            measured milliseconds (exactly one).
        latency_table: the :class:`~sidt_mmdet.search.latency.LatencyTable` (or its path)
            the selection predicts with.
        measure: ``measure(subnet or None) -> ms`` (``None``: the dense backbone). By
            default :func:`table_measure` on the table's setting, which needs the table's
            key to match this machine (refused otherwise, naming the key).
        tolerance: stop when ``|measured ratio / target - 1| <= tolerance``.
        rounds: selections (and measurements) at most, the first at the target itself.
        iters, warmup: of the default ``measure``.
        select_kw: the other settings of ``select_subnet`` (``round_to``, ``unit_order``,
            ``min_mlp``, ``input_size``...); the budget and table are this function's.

    Returns the chosen subnet; its ``budget`` is that of its own selection (``value``: the
    predicted budget it was selected at) plus ``closed_loop``: the target, tolerance,
    round limit, measured dense milliseconds, every round (budget asked, predicted and
    measured milliseconds, measured ratio, or why it stopped), the chosen round, whether
    it converged and why the loop stopped.

    Raises:
        ValueError: a bad target, or a first selection below the smallest subnet.
        LatencyTableError: the default ``measure`` with a table of another machine.
    """
    _check_settings(latency, latency_ms, rounds, tolerance, select_kw)
    table = latency_table
    if not isinstance(table, LatencyTable):
        from .latency import load_latency_table
        table = load_latency_table(str(table))
    if measure is None:
        check_table_is_here(backbone, table)
        measure = table_measure(backbone, table, iters, warmup)
    dense_ms = float(measure(None))
    target = latency if latency is not None else latency_ms / dense_ms
    if not 0 < target <= 1:
        what = (f'latency={latency}' if latency is not None else
                f'latency_ms={latency_ms} is x{target:.3f} of the measured dense {dense_ms:.3f} '
                'ms and')
        raise ValueError(f'{what}: expected a fraction of the dense latency in (0, 1]')
    log(f'closed loop: dense measured {dense_ms:.3f} ms; target x{target:.3f} of dense '
        f'(within {tolerance:.0%}, at most {rounds} rounds)')
    records: list[dict] = []
    subnets: list[Subnet | None] = []
    history: list[tuple[float, float]] = []
    seen: dict[str, int] = {}
    budget, stopped = target, None
    for k in range(rounds):
        record, sub, stopped = _round(backbone, table, budget, k, measure, dense_ms, target,
                                      seen, select_kw)
        records.append(record)
        subnets.append(sub)
        if stopped is not None:
            log(f'closed loop round {k + 1}: stopped, {stopped}')
            break
        log(f'closed loop round {k + 1}: budget x{budget:.4f} predicted '
            f'{record["predicted_ms"]:.3f} ms, measured {record["measured_ms"]:.3f} ms = '
            f'x{record["measured_ratio"]:.4f} of dense ({record["error"]:+.1%} of the target)')
        if abs(record['error']) <= tolerance:
            stopped = 'converged'
            break
        history.append((budget, record['measured_ratio']))
        budget = _next_budget(history, target)
        if budget > 1:
            if history[-1][0] >= 1:
                stopped = 'the budget is already the dense latency and still measures short'
                break
            budget = 1.0
    else:
        stopped = f'round limit ({rounds}) reached'
    best = _pick(records, target, tolerance)
    chosen = subnets[best]
    chosen.budget['closed_loop'] = dict(
        target=round(target, 6), target_ms=latency_ms, tolerance=tolerance, rounds=rounds,
        dense_ms=round(dense_ms, 4), history=records, chosen_round=best + 1,
        measured_ratio=records[best]['measured_ratio'],
        converged=abs(records[best]['error']) <= tolerance, stopped=stopped)
    log(f'closed loop: round {best + 1} chosen, x{records[best]["measured_ratio"]:.4f} of '
        f'dense measured for target x{target:.3f} ({stopped})')
    return chosen


def _check_settings(latency, latency_ms, rounds, tolerance, select_kw) -> None:
    if (latency is None) == (latency_ms is None):
        raise ValueError('give exactly one target: latency (a fraction of the measured dense '
                         'latency) or latency_ms')
    if not (isinstance(rounds, int) and rounds >= 1):
        raise ValueError(f'rounds: expected an integer >= 1, got {rounds!r}')
    if not (tolerance >= 0 and math.isfinite(tolerance)):
        raise ValueError(f'tolerance: expected a finite value >= 0, got {tolerance!r}')
    for name in ('latency', 'latency_ms', 'latency_table', 'keep_ratio', 'params', 'macs'):
        if name in select_kw:
            raise ValueError(f'select_subnet_measured sets {name} itself')


def _round(backbone, table, budget, k, measure, dense_ms, target, seen, select_kw):
    """Round ``k``: select at ``budget`` and measure. Returns ``(record, subnet, stopped)``:
    ``stopped`` says why the loop ends here (below the minimum widths, or a subnet already
    measured; ``subnet`` then ``None``), else ``None``."""
    record = dict(round=k + 1, budget=round(budget, 6))
    try:
        sub = select_subnet(backbone, latency=budget, latency_table=table, **select_kw)
    except ValueError as e:
        if k == 0:  # the target itself: nothing measured to fall back on
            raise
        return dict(record, infeasible=str(e)), None, (
            f'infeasible: the corrected budget x{budget:.4f} is below the smallest subnet '
            f'the per-layer minimums allow ({e})')
    digest = sub.digest()
    if digest in seen:
        return dict(record, same_as_round=seen[digest] + 1), None, (
            f'the corrected budget x{budget:.4f} selects the subnet of round '
            f'{seen[digest] + 1} again (the budget moved by less than one unit)')
    seen[digest] = k
    got = float(measure(sub))
    ratio = got / dense_ms
    record.update(predicted_ms=sub.stats['latency_ms_after'],
                  predicted_ratio=round(sub.stats['latency_ms_after']
                                        / sub.stats['latency_ms_before'], 6),
                  measured_ms=round(got, 4), measured_ratio=round(ratio, 6),
                  error=round(ratio / target - 1, 6))
    return record, sub, None
