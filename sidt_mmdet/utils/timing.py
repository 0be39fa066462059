"""Wall-clock timing that compares models fairly on a shared machine.

Models are timed *interleaved*: one call of each per round, the order rotated every round,
so drift and load from other jobs fall on every model alike, and a comparison reads the
ratio of medians. :func:`spread` summarises repeated timings (median, quartiles, extremes)
and :func:`ratio_trust` says when a ratio of two medians cannot be trusted: the machine
was busier than its cores during the timing, or the timings scatter more than the two
medians differ. Used by the latency study, the demos and the whole-detector benchmark.
"""
from __future__ import annotations

import contextlib
import os
import statistics
import time
from collections.abc import Callable, Iterator, Sequence

import torch

__all__ = ['sync', 'torch_threads', 'time_interleaved', 'median_latency', 'spread',
           'load_average', 'ratio_trust']


def sync(device: str | torch.device) -> None:
    """Wait for the device's queued kernels (CUDA launches return before they finish)."""
    if str(device).startswith('cuda'):
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """torch's intra-op thread count set to ``threads`` inside, restored after."""
    previous = torch.get_num_threads()
    torch.set_num_threads(int(threads))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def time_interleaved(fns: dict[str, Callable[[], object]], iters: int, warmup: int = 1,
                     device: str = 'cpu', progress: Callable[[str], None] | None = None
                     ) -> dict[str, list[float]]:
    """Seconds per call of each function, timed round-robin (order rotated each round).

    On CUDA every call is bracketed by ``torch.cuda.synchronize`` so the time is the
    kernels', not the launch's.
    """
    if iters < 1 or warmup < 0:
        raise ValueError(f'iters must be >= 1 and warmup >= 0, got iters={iters}, '
                         f'warmup={warmup}')
    names = list(fns)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(warmup + iters):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            sync(device)
            t0 = time.perf_counter()
            fns[name]()
            sync(device)
            if r >= warmup:
                times[name].append(time.perf_counter() - t0)
        if progress is not None:
            progress(f'round {r + 1}/{warmup + iters}')
    return times


def median_latency(models: dict[str, torch.nn.Module], x: torch.Tensor, iters: int,
                   warmup: int = 1) -> dict[str, float]:
    """Median seconds per forward of each model on ``x``, timed interleaved in
    ``inference_mode`` (what the demos report)."""
    def call(model):
        def fn():
            with torch.inference_mode():
                model(x)
        return fn
    times = time_interleaved({n: call(m) for n, m in models.items()}, iters=iters,
                             warmup=warmup, device=x.device.type)
    return {n: statistics.median(t) for n, t in times.items()}


def spread(times: Sequence[float]) -> dict:
    """Median, quartiles (inclusive method; both equal the median for one timing), IQR,
    min and max of repeated timings, in their unit."""
    t = sorted(float(v) for v in times)
    if not t:
        raise ValueError('spread: no timings')
    q1, _, q3 = statistics.quantiles(t, n=4, method='inclusive') if len(t) > 1 else t * 3
    return dict(median=statistics.median(t), q1=q1, q3=q3, iqr=q3 - q1, min=t[0], max=t[-1],
                n=len(t))


def load_average() -> float | None:
    """The 1-minute load average (runnable processes), or None where the OS has none."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def ratio_trust(a: Sequence[float], b: Sequence[float], load: Sequence[float | None] = (),
                cores: int | None = None, unit: str = '') -> list[str]:
    """Why the ratio of the medians of timings ``a`` and ``b`` cannot be trusted; empty when
    it can.

    ``load``: load averages read around the timing (None entries are skipped); above the
    core count (``os.cpu_count()`` by default), runnable jobs outnumbered the cores and every
    timing carries their share. A spread (IQR) of either side larger than the difference of
    the medians means the difference is within the noise. ``unit`` follows the figures
    in the reasons (e.g. ``' ms'``).
    """
    cores = cores or os.cpu_count() or 1
    reasons = []
    loads = [v for v in load if v is not None]
    if loads and max(loads) > cores:
        reasons.append(f'load average {max(loads):.2f} above the {cores} cores')
    sa, sb = spread(a), spread(b)
    diff = abs(sa['median'] - sb['median'])
    noise = max(sa['iqr'], sb['iqr'])
    if noise > diff:
        reasons.append(f'spread (IQR {noise:.3g}{unit}) larger than the difference of the '
                       f'medians ({diff:.3g}{unit})')
    return reasons
