"""The studies' paired statistics against values worked out by hand."""
from __future__ import annotations

import numpy as np
import pytest

from sidt_mmdet.studies.stats import (
    compare,
    holm,
    paired_bootstrap,
    paired_normal_interval,
    verdict,
)


def test_holm_by_hand():
    # sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04 -> raised to 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert holm([0.02]) == pytest.approx([0.02])  # one comparison: unchanged


def test_bootstrap_of_two_images_is_its_exact_distribution():
    # a right on one of 2 images, b on none: a drawn pair of images holds that image 0, 1 or
    # 2 times with chances 1/4, 1/2, 1/4, so the difference of means is 0, 0.5 or 1; the 95%
    # percentile interval is [0, 1] and the two-sided p-value 2 * P(diff <= 0) = 0.5
    r = paired_bootstrap([1, 0], [0, 0], draws=20000, seed=3)
    assert r['diff'] == 0.5
    assert (r['low'], r['high']) == (0.0, 1.0)
    assert r['p'] == pytest.approx(0.5, abs=0.02)
    # the same seed, the same draws
    assert paired_bootstrap([1, 0], [0, 0], draws=20000, seed=3) == r


def test_normal_interval_by_hand():
    # d = [1, 0, 0, 1]: mean 0.5, sd sqrt(1/3), half-width 1.959964 * sqrt(1/3) / 2
    diff, low, high = paired_normal_interval([1, 1, 0, 1], [0, 1, 0, 0])
    half = 1.959964 * (1 / 3) ** 0.5 / 2
    assert (diff, low, high) == pytest.approx((0.5, 0.5 - half, 0.5 + half), abs=1e-6)


def test_bootstrap_approaches_the_normal_interval_on_a_large_test_set():
    rng = np.random.default_rng(0)
    a = (rng.random(4000) < 0.6).astype(float)
    b = np.where(rng.random(4000) < 0.8, a, 1 - a)  # b agrees with a on 80% of the images
    diff, low, high = paired_normal_interval(a, b)
    r = paired_bootstrap(a, b, draws=4000, seed=0)
    assert r['diff'] == pytest.approx(diff)
    half = (high - low) / 2
    assert abs(r['low'] - low) < 0.1 * half and abs(r['high'] - high) < 0.1 * half


def test_disagreeing_seeds_widen_the_interval():
    rng = np.random.default_rng(1)
    base = (rng.random(2000) < 0.5).astype(float)
    # three seeds of a: the base result with 10%, 0% and 20% of the images flipped to right
    runs = np.stack([np.maximum(base, rng.random(2000) < q) for q in (0.1, 0.0, 0.2)])
    b = base
    averaged = paired_bootstrap(runs.mean(axis=0), b, seed=0)
    seeded = paired_bootstrap(runs, b, seed=0)
    assert seeded['diff'] == pytest.approx(averaged['diff'])
    assert seeded['high'] - seeded['low'] > 2 * (averaged['high'] - averaged['low'])


def test_mismatched_images_are_refused():
    with pytest.raises(ValueError, match='same images: 3 vs 2'):
        paired_bootstrap([1, 0, 1], [1, 0])
    with pytest.raises(ValueError, match=r'shape \(0,\)'):
        paired_bootstrap([], [])


def test_compare_corrects_the_table_together():
    rng = np.random.default_rng(2)
    ref = (rng.random(3000) < 0.5).astype(float)
    better = np.maximum(ref, rng.random(3000) < 0.1)  # about +5 points
    same = ref.copy()
    same[:2] = 1 - same[:2]  # one image each way: a difference of 0
    out = compare({'better': (better, ref), 'same': (same, ref)}, draws=2000)
    # 'better' has the smaller p-value: first Holm step, level 1 - 0.05 / 2
    assert out['better']['level'] == pytest.approx(0.975)
    assert out['same']['level'] == pytest.approx(0.95)
    assert out['better']['p_holm'] == pytest.approx(min(1, 2 * out['better']['p']))
    assert out['better']['diff'] == pytest.approx(100 * (better.mean() - ref.mean()))
    # the corrected interval is wider than the 95% one and excludes 0
    assert out['better']['low'] < out['better']['low95'] and out['better']['low'] > 0
    assert verdict(out['better']) == 'ahead' and verdict(out['same']) == 'not shown'
    assert verdict(dict(out['better'], diff=-1.0)) == 'behind'
    assert out['same']['p_holm'] >= out['better']['p_holm']
