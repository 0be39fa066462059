"""The detection demo's report: the spread of its timings, the load average, a latency ratio
it cannot trust marked as such, and the whole-detector figures; from hand-made figures, and
(slow) through the demo's own measuring code on the toy detectors at a tiny size."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from sidt_mmdet.apis import demo
from sidt_mmdet.models import Subnet


def _spread(median, iqr, lo, hi):
    return dict(median=median, q1=median - iqr / 2, q3=median + iqr / 2, iqr=iqr, min=lo,
                max=hi, n=10)


def _ctx(timing, detector=None):
    return dict(timing=timing, detector=detector,
                dense_metrics={'coco/bbox_mAP': 0.5}, pruned_metrics={'coco/bbox_mAP': 0.45},
                n_dense=800, n_search=200, n_retrain=400, batch_size=4, num_train=512,
                num_val=64, keep_ratio=0.6, round_to=8, minutes=12.0, widths_md='(widths)',
                commands=['python tools/train.py ...'])


def _row(size, ms_d, ms_p, untrusted, load):
    return dict(size=size, batch=2, ms_dense=ms_d, ms_pruned=ms_p,
                spread_dense=_spread(ms_d, 1.0, ms_d - 1, ms_d + 2),
                spread_pruned=_spread(ms_p, 0.5, ms_p - 1, ms_p + 1), load_average=load,
                cores=2, threads=1, untrusted=untrusted, params_dense=1000, params_pruned=600,
                macs_dense=10 ** 6, macs_pruned=5 * 10 ** 5, macs_executed_pruned=5 * 10 ** 5)


def test_report_shows_spread_load_and_untrusted_ratios():
    trusted = _row(160, 20.0, 12.0, [], [0.8, 1.1])
    noisy = _row(512, 100.0, 99.0, ['load average 3.50 above the 2 cores'], [3.5, 2.0])
    detector = dict(models=dict(dense={}, pruned={}), batch=1, device='cpu', threads=1,
                    cpu_count=2, source='synthetic', iters=10, warmup=2,
                    load_average=dict(before=1.0, after=1.2),
                    rows={'detector': dict(dense=dict(ms_per_img=80.0, iqr=4.0),
                                           pruned=dict(ms_per_img=70.0, iqr=3.0))},
                    ratios={'detector': dict(ratio=0.875, untrusted=[])})
    text = demo.detection_report(_ctx([trusted, noisy], detector))
    lines = text.splitlines()
    assert '| backbone latency @160px, batch 2 (ms) | 20.0 | 12.0 | 0.600 |' in lines
    assert '| latency ratio / MACs ratio @160px |  |  | 1.200 |' in lines
    # the loaded row keeps its figures, marked, with the reason below the tables
    assert '| backbone latency @512px, batch 2 (ms) | 100.0 | 99.0 | 0.990 (untrusted) |' in lines
    assert '| latency ratio / MACs ratio @512px |  |  | 1.980 (untrusted) |' in lines
    assert ('- latency @512px, batch 2: ratio untrusted: load average 3.50 above the 2 cores.'
            in lines)
    assert '| 160px, 2 | 20.0 (IQR 1.0, 19.0-22.0) | 12.0 (IQR 0.5, 11.0-13.0) | 0.80 / 1.10 ' \
           '| 1 / 2 |' in lines
    assert '## Whole detector' in lines
    assert '| detector | 80.0 (4.0) | 70.0 (3.0) | 0.875 |  |' in lines
    assert 'load average 1.00 before, 1.20 after.' in text


def test_report_without_the_new_figures_still_renders():
    """A report.json of an older demo (medians only, no detector benchmark)."""
    old = {k: v for k, v in _row(160, 20.0, 12.0, [], [None, None]).items()
           if k in ('size', 'batch', 'ms_dense', 'ms_pruned', 'params_dense', 'params_pruned',
                    'macs_dense', 'macs_pruned')}
    text = demo.detection_report(_ctx([old]))
    assert '| backbone latency @160px, batch 2 (ms) | 20.0 | 12.0 | 0.600 |' in text
    assert '## Whole detector' not in text


@pytest.mark.slow
def test_demo_measures_and_reports_on_the_toy_detectors(tmp_path):
    """The demo's measuring code on untrained toy detectors (no checkpoints) at 32 px."""
    blocks = [dict(qk=[list(range(16)), list(range(8)), [], []],
                   v=[list(range(16)), list(range(8)), [], []], mlp=list(range(0, 256, 2)))
              for _ in range(4)]
    Subnet(64, 4, 4, 256, blocks=blocks).save(tmp_path / 'subnet.json')
    chain = SimpleNamespace(dense_ckpt=None, retrain_ckpt=None,
                            subnet=str(tmp_path / 'subnet.json'))
    timing = demo._measure_detectors(chain, [(32, 1)], 2, lambda m: None)
    (row,) = timing
    assert row['macs_pruned'] < row['macs_dense'] and len(row['load_average']) == 2
    for side in ('spread_dense', 'spread_pruned'):
        s = row[side]
        assert s['n'] == 2 and s['min'] <= s['median'] <= s['max']
    assert isinstance(row['untrusted'], list)
    detector = demo._benchmark_detectors(chain, 1, lambda m: None)
    assert list(detector['models']) == ['dense', 'pruned']
    assert set(detector['ratios']) == {'backbone', 'backbone+neck', 'detector'}
    text = demo.detection_report(_ctx(timing, detector))
    assert '## Timing' in text and '| 32px, 1 |' in text and '| detector |' in text


def test_report_states_the_pruned_models_extra_training():
    text = demo.detection_report(_ctx([_row(160, 20.0, 12.0, [], [0.8, 1.1])]))
    assert 'it has trained 600 iterations more than the dense model (800)' in text
