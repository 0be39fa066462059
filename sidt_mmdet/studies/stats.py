"""Paired statistics for the studies: how sure a difference between two models is.

Every evaluated model of a study keeps its per-image result (1 for a correct top-1, 0 for a
wrong one) in test-set order, one row per seed. Two methods are compared on the same test
images, so the comparison is paired: :func:`paired_bootstrap` draws the test images with
replacement (the same draw for both methods) and, independently for each method, its seeds
with replacement, and reads the interval of the difference of the mean scores from the
percentiles of the draws. With one seed per method it is the usual paired bootstrap over
images; with several, a seed's luck is part of the interval, not averaged away.

A table makes several comparisons, so :func:`holm` adjusts their p-values (Holm's step-down,
which controls the family-wise error at ``alpha``), and :func:`compare` states each
comparison's interval at the level of its Holm step (``1 - alpha / (m - k + 1)`` for the
k-th smallest p-value): a difference is called only when its adjusted p-value is under
``alpha``, which is when that corrected interval excludes 0. ``docs/evidence.md`` states the
rules in words.
"""
from __future__ import annotations

import math

import numpy as np

__all__ = ['paired_bootstrap', 'paired_normal_interval', 'holm', 'compare', 'verdict']


def _as_runs(scores, name: str) -> np.ndarray:
    a = np.asarray(scores, dtype=np.float64)
    if a.ndim not in (1, 2) or a.size == 0:
        raise ValueError(f'{name}: expected per-image scores, shape (images,) or '
                         f'(seeds, images), got shape {a.shape}')
    return a[None] if a.ndim == 1 else a


def _is_metric(x) -> bool:
    return isinstance(x, (list, tuple)) and len(x) > 0 and hasattr(x[0], 'score')


def _shape(a, b) -> tuple[int, int, int]:
    """``(images, seeds of a, seeds of b)`` of a paired comparison, checked."""
    if _is_metric(a) != _is_metric(b):
        raise ValueError('paired scores: both per-image arrays or both lists of metrics')
    if _is_metric(a):
        sizes = {len(m) for m in (*a, *b)}
        if len(sizes) != 1:
            raise ValueError(f'paired metrics must cover the same images: sizes {sorted(sizes)}')
        return sizes.pop(), len(a), len(b)
    a, b = _as_runs(a, 'a'), _as_runs(b, 'b')
    if a.shape[1] != b.shape[1]:
        raise ValueError(f'paired scores must cover the same images: {a.shape[1]} vs '
                         f'{b.shape[1]}')
    return a.shape[1], a.shape[0], b.shape[0]


def _point(x) -> float:
    """The mean over seeds of a row's figure on the whole test set."""
    if _is_metric(x):
        return float(np.mean([m.score() for m in x]))
    return float(_as_runs(x, 'scores').mean())


def _draws(a, b, draws: int, seed: int, cache: dict | None = None) -> np.ndarray:
    n, na, nb = _shape(a, b)
    rng = np.random.default_rng(seed)
    if _is_metric(a):
        # A metric that is not a mean over images (COCO mAP) is recomputed on each draw's
        # image counts, for every seed of both rows. The images are drawn first, so every
        # comparison with this seed sees the same draws and ``cache`` (one per call of
        # compare) keeps each metric's figures across them.
        idx = rng.integers(0, n, size=(draws, n))
        weights = None

        def values(m):
            nonlocal weights
            key = (id(m), draws, seed, n)
            if cache is None or key not in cache:
                if weights is None:
                    weights = np.stack([np.bincount(r, minlength=n) for r in idx]).astype(float)
                v = np.array([m.score(w) for w in weights])
                if cache is None:
                    return v
                cache[key] = v
            return cache[key]
        va = np.stack([values(m) for m in a], axis=1)
        vb = np.stack([values(m) for m in b], axis=1)
        sa = rng.integers(0, na, size=(draws, na))
        sb = rng.integers(0, nb, size=(draws, nb))
        return (np.take_along_axis(va, sa, axis=1).mean(axis=1)
                - np.take_along_axis(vb, sb, axis=1).mean(axis=1))
    out = np.empty(draws)
    a, b = _as_runs(a, 'a'), _as_runs(b, 'b')
    chunk = max(1, 2_000_000 // max(n * (na + nb), 1))
    for start in range(0, draws, chunk):
        k = min(chunk, draws - start)
        idx = rng.integers(0, n, size=(k, n))
        sa = rng.integers(0, na, size=(k, na))
        sb = rng.integers(0, nb, size=(k, nb))
        # mean over the drawn seeds of the mean over the drawn images
        ma = np.take_along_axis(a[:, idx].mean(axis=2).T, sa, axis=1).mean(axis=1)
        mb = np.take_along_axis(b[:, idx].mean(axis=2).T, sb, axis=1).mean(axis=1)
        out[start:start + k] = ma - mb
    return out


def _interval(out: np.ndarray, level: float) -> tuple[float, float]:
    if not 0 < level < 1:
        raise ValueError(f'level: expected a number in (0, 1), got {level}')
    tail = (1 - level) / 2
    low, high = np.quantile(out, [tail, 1 - tail])
    return float(low), float(high)


def paired_bootstrap(a, b, *, level: float = 0.95, draws: int = 4000,
                     seed: int = 0) -> dict:
    """The difference of the mean scores of ``a`` and ``b`` (per-image scores, shape
    ``(images,)`` or ``(seeds, images)``, the same images in the same order) and its paired
    bootstrap interval at ``level``. ``a`` and ``b`` may instead be lists (one per seed) of
    metrics over the test images, objects with ``len()`` (images) and ``score(weights)``
    (the figure with image ``i`` counted ``weights[i]`` times, e.g.
    :class:`~sidt_mmdet.studies.coco_matches.CocoMatches`): each draw recomputes them.

    Returns ``diff`` (mean of ``a`` minus mean of ``b``, in the scores' unit: multiply 0/1
    scores by 100 for points), ``low``/``high`` (percentile interval), ``p`` (two-sided:
    twice the smaller share of draws on either side of 0, at most 1) and the draws' ``se``.
    The draws are seeded, so the same inputs give the same interval.
    """
    return _summarise(a, b, _draws(a, b, draws, seed), level)


def _summarise(a, b, out: np.ndarray, level: float) -> dict:
    n, na, nb = _shape(a, b)
    low, high = _interval(out, level)
    p = min(1.0, 2 * min(float((out <= 0).mean()), float((out >= 0).mean())))
    return dict(diff=_point(a) - _point(b), low=low, high=high, p=p,
                se=float(out.std(ddof=1)) if out.size > 1 else 0.0, level=level,
                images=n, seeds=[na, nb], draws=int(out.size))


def paired_normal_interval(a, b, level: float = 0.95) -> tuple[float, float, float]:
    """``(diff, low, high)``: the normal-approximation interval of the mean per-image
    difference (one seed each): ``mean(d) +- z * sd(d) / sqrt(n)``, ``d = a - b``. For 0/1
    scores it is the Wald interval of McNemar's paired difference; the bootstrap's interval
    approaches it on large test sets."""
    from statistics import NormalDist
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    if d.ndim != 1 or d.size < 2:
        raise ValueError(f'expected two equal 1-d score vectors of 2+ images, got {d.shape}')
    z = NormalDist().inv_cdf(1 - (1 - level) / 2)
    half = z * d.std(ddof=1) / math.sqrt(d.size)
    return float(d.mean()), float(d.mean() - half), float(d.mean() + half)


def holm(pvalues) -> list[float]:
    """Holm's step-down adjusted p-values, in the order given: the k-th smallest is
    multiplied by ``m - k + 1``, then made non-decreasing in that order, at most 1."""
    p = [float(x) for x in pvalues]
    order = sorted(range(len(p)), key=lambda i: p[i])
    adjusted = [0.0] * len(p)
    running = 0.0
    for k, i in enumerate(order):
        running = max(running, min(1.0, (len(p) - k) * p[i]))
        adjusted[i] = running
    return adjusted


def compare(pairs: dict, *, alpha: float = 0.05, draws: int = 4000, seed: int = 0,
            scale: float = 100.0) -> dict:
    """Paired comparisons of one table, corrected together.

    ``pairs``: ``{name: (scores_a, scores_b)}``. Returns ``{name: result}`` where result is
    :func:`paired_bootstrap`'s (``diff``/``low``/``high``/``se`` times ``scale``: points
    for 0/1 scores) plus ``p_holm``, the Holm step's ``level`` and the interval
    ``low``/``high`` at that level, and the 95% interval as ``low95``/``high95``.
    """
    names = list(pairs)
    cache: dict = {}
    samples = {k: _draws(*pairs[k], draws, seed, cache) for k in names}
    raw = {k: _summarise(*pairs[k], samples[k], 1 - alpha) for k in names}
    adjusted = holm([raw[k]['p'] for k in names])
    order = sorted(names, key=lambda k: raw[k]['p'])
    out = {}
    for k, name in enumerate(order):
        level = 1 - alpha / (len(names) - k)
        r = raw[name]
        low, high = _interval(samples[name], level)
        out[name] = dict(diff=scale * r['diff'], low=scale * low, high=scale * high,
                         level=level,
                         low95=scale * r['low'], high95=scale * r['high'], p=r['p'],
                         p_holm=adjusted[names.index(name)], se=scale * r['se'],
                         images=r['images'], seeds=r['seeds'], family=len(names))
    return {k: out[k] for k in names}


def verdict(result: dict, *, alpha: float = 0.05) -> str:
    """``'ahead'`` / ``'behind'`` when the Holm-adjusted p-value is under ``alpha`` (the
    corrected interval excludes 0), else ``'not shown'``."""
    if result['p_holm'] < alpha:
        return 'ahead' if result['diff'] > 0 else 'behind'
    return 'not shown'
