"""The fine-tune-length sweep's table, from hand-made selection results: one column per
length, the ranking in each, every length run with the settings it names."""
from __future__ import annotations

import json

import pytest

from sidt_mmdet.studies import finetune_sweep


def _selection(top1: dict, iters: int):
    rows = [dict(name=k, ratio=0.6, top1_finetuned_mean=v, top1_finetuned_std=0.0,
                 post_dense_iters=iters + 376) for k, v in top1.items()]
    comp = dict(name='sidt-l1/dim vs magnitude at MACs x0.6', ratio=0.6, diff=1.0, low=0.2,
                high=1.8, p_holm=0.01)
    return dict(summary=rows, search_iters=376, comparisons=[comp], goals=[],
                dense=dict(top1=55.0), provenance={}, output=f'selection_short_ft{iters}',
                dense_finetuned=dict(top1_mean=60.0, top1_std=0.0, post_dense_iters=iters + 376))


def test_each_length_runs_the_selection_study_and_the_ranking_is_tabled(tmp_path, monkeypatch):
    calls = []
    # the ranking flips between the two lengths
    by_iters = {188: {'sidt-l1/dim': 58.0, 'magnitude (longer fine-tune)': 57.0},
                1878: {'sidt-l1/dim': 60.0, 'magnitude (longer fine-tune)': 61.0}}

    def fake(preset, work_dir, data_root, **kw):
        calls.append(dict(kw, preset=preset))
        return _selection(by_iters[kw['finetune_iters']], kw['finetune_iters'])

    monkeypatch.setattr(finetune_sweep, 'run_selection_study', fake)
    res = finetune_sweep.run_finetune_sweep('short', str(tmp_path), fractions=(0.05, 0.5))
    assert [c['finetune_iters'] for c in calls] == [188, 1878]  # of 3756 dense iterations
    assert all(c['preset'] == 'short' and c['ratios'] == (0.6,) and not c['narrow_check']
               for c in calls)
    assert [c['output'] for c in calls] == ['selection_short_ft188', 'selection_short_ft1878']
    md = (tmp_path / 'hard' / 'finetune_sweep_short.md').read_text()
    assert '| sidt-l1/dim | 58.00 (1) | 60.00 (2) |' in md
    assert '| magnitude (longer fine-tune) | 57.00 (2) | 61.00 (1) |' in md
    assert '| dense + the same training | 60.00 | 60.00 |' in md
    assert '+1.00 [+0.20, +1.80] ahead' in md
    stored = json.loads((tmp_path / 'hard' / 'finetune_sweep_short.json').read_text())
    assert stored['columns'] == res['columns']
    assert (tmp_path / 'hard' / 'finetune_sweep_short.png').stat().st_size > 1000


def test_bad_fractions_are_refused(tmp_path):
    with pytest.raises(ValueError, match=r'fractions: expected values in \(0, 1\]'):
        finetune_sweep.run_finetune_sweep('short', str(tmp_path), fractions=(0.5, 1.5))
