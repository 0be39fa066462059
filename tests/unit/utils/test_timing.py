"""Spread of repeated timings and when a ratio of two medians cannot be trusted; the study
keeps importing the interleaved timer from its old place."""
import statistics

import numpy as np
import pytest

from sidt_mmdet.utils.timing import ratio_trust, spread, time_interleaved


def test_spread_matches_numpy_quartiles():
    t = [0.9, 0.1, 0.5, 0.3, 0.7, 0.2, 0.4]
    s = spread(t)
    q1, med, q3 = np.percentile(t, [25, 50, 75])  # numpy's linear method == 'inclusive'
    assert s['median'] == pytest.approx(med) == statistics.median(t)
    assert (s['q1'], s['q3']) == (pytest.approx(q1), pytest.approx(q3))
    assert s['iqr'] == pytest.approx(q3 - q1)
    assert (s['min'], s['max'], s['n']) == (0.1, 0.9, 7)
    one = spread([2.0])
    assert one['q1'] == one['q3'] == one['median'] == 2.0 and one['iqr'] == 0
    with pytest.raises(ValueError, match='no timings'):
        spread([])


def test_ratio_trust_names_load_and_noise():
    fast, slow = [1.0, 1.1, 1.05], [2.0, 2.1, 2.05]
    assert ratio_trust(fast, slow, load=[0.5, 1.9], cores=2) == []
    assert ratio_trust(fast, slow, load=[None], cores=2) == []
    (reason,) = ratio_trust(fast, slow, load=[0.5, 2.5], cores=2)
    assert reason == 'load average 2.50 above the 2 cores'
    # medians 1.05 vs 1.10, but one side scatters over 0.5 s
    (reason,) = ratio_trust([1.0, 1.05, 1.6, 0.9, 1.1], [1.1, 1.1, 1.1], cores=2)
    assert reason.startswith('spread (IQR') and 'difference of the medians (0.05)' in reason


def test_study_keeps_the_timer():
    from sidt_mmdet.studies import latency
    assert latency.time_interleaved is time_interleaved
