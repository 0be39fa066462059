"""The low-rank study's report from hand-made runs: the paired goals, the reference row,
the mean ± std over fine-tune seeds, and the results table reading both JSON shapes."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from sidt_mmdet.studies.lowrank import (
    REFERENCE,
    aggregate_runs,
    lowrank_comparisons,
    lowrank_goals,
    markdown,
)
from sidt_mmdet.studies.results import find_results, results_rows

N = 200
ALL, HALF, NONE = np.ones(N, bool), np.arange(N) < N // 2, np.zeros(N, bool)
PUBLISHED = Path(__file__).parents[3] / 'docs/studies/hard/lowrank_full.json'


def _npz(path, correct):
    """A stored evaluation whose per-image result is ``correct`` (1 right, 0 wrong)."""
    gt = np.arange(N, dtype=np.int16) % 7
    np.savez(path, pred=np.where(correct, gt, gt + 1).astype(np.int16), gt=gt)
    return str(path)


def _row(tmp_path, name, before, after, seeds=(0, 1), params=100, **extra):
    """A row right on ``before`` right after compression and on ``after`` after the
    fine-tune, for every seed."""
    runs = []
    for s in seeds:
        stem = tmp_path / f'{name.split()[0]}-s{s}'
        runs.append(dict(seed=s, backbone_params=params,
                         top1_before_ft=100 * before.mean(), top1_after_ft=100 * after.mean(),
                         predictions_pruned=_npz(f'{stem}-pruned.npz', before),
                         predictions=_npz(f'{stem}.npz', after)))
    return dict(aggregate_runs(runs), name=name, **extra)


def _result(tmp_path, white_before=ALL):
    rows = [_row(tmp_path, REFERENCE, ALL, ALL, params=200, reference=True),
            _row(tmp_path, 'svd', HALF, ALL), _row(tmp_path, 'svd_whitened', white_before, ALL),
            _row(tmp_path, 'qr', HALF, HALF), _row(tmp_path, 'lu', HALF, NONE)]
    for r in rows:
        r.update(mean_rel_error=0.1, max_rel_error=0.2, layers=4)
    budget = [dict(r, attn_kept=1.0, mlp_kept=1.0, lowrank_layers=0) for r in rows[:2]]
    settings = dict(finetune_iters=5, ratio=0.5, seed=0, seeds=[0, 1], finetune_lr=5e-4,
                    threads=1, dense_epochs=1, search_epochs=1, source_note='hand-made')
    return dict(settings=settings, reference=rows[0], methods=rows, budget=budget,
                seconds=1.0, study='lowrank', preset='full', retrain_config='configs/x.py')


def _goals(res):
    res['comparisons'] = lowrank_comparisons(res, draws=400)
    return {g['goal']: g for g in lowrank_goals(res)}


def test_paired_goals_ahead_behind_and_not_shown(tmp_path):
    goals = _goals(_result(tmp_path))
    # svd_whitened right on every image right after factorization, SVD on half: ahead
    white = goals['svd_whitened ahead of plain SVD right after factorization at equal params']
    assert white['status'] == 'met' and 'svd_whitened - svd +50.00 [' in white['detail']
    # after fine-tune SVD 100% > qr 50% > LU 0%: every comparison ahead
    assert goals['after fine-tune: SVD ahead of every QR variant, each QR variant ahead of '
                 'LU']['status'] == 'met'
    ref = {k.split()[0]: g for k, g in goals.items() if REFERENCE in k}
    assert set(ref) == {'svd', 'svd_whitened', 'qr', 'lu'}
    assert ref['svd']['status'] == 'not shown'  # equal to the reference on every image
    assert ref['qr']['status'] == 'missed' and ref['lu']['status'] == 'missed'
    # equal right after factorization: not shown
    assert _goals(_result(tmp_path, white_before=HALF))[
        'svd_whitened ahead of plain SVD right after factorization at equal params'
    ]['status'] == 'not shown'


def test_a_goal_is_missed_when_any_comparison_is_behind(tmp_path):
    res = _result(tmp_path)
    res['methods'][3] = dict(_row(tmp_path, 'qr', HALF, NONE), mean_rel_error=0.1,
                             max_rel_error=0.2, layers=4)  # qr equal to LU, behind SVD
    res['methods'][4] = dict(_row(tmp_path, 'lu', HALF, ALL), mean_rel_error=0.1,
                             max_rel_error=0.2, layers=4)  # LU ahead of qr
    order = _goals(res)['after fine-tune: SVD ahead of every QR variant, each QR variant '
                        'ahead of LU']
    assert order['status'] == 'missed' and 'qr - lu -100.00' in order['detail']


def test_comparisons_pair_every_seed_and_are_corrected_together(tmp_path):
    res = _result(tmp_path)
    cs = lowrank_comparisons(res, draws=400)
    # whitened, SVD vs qr, qr vs LU, and each of the four methods vs the reference
    assert len(cs) == 7 and {c['family'] for c in cs} == {7}
    assert all(c['seeds'] == [2, 2] and c['images'] == N for c in cs)
    text = markdown(dict(res, comparisons=cs))
    assert '## Paired comparisons' in text
    assert '| svd_whitened vs svd after factorization | +50.00 |' in text


def test_rows_aggregate_their_seeds():
    runs = [dict(seed=s, backbone_params=10, top1_before_ft=40.0, top1_after_ft=a,
                 finetune_seconds=1.5, predictions='p', predictions_pruned='q')
            for s, a in zip((0, 1, 2), (50.0, 52.0, 54.0))]
    row = aggregate_runs(runs)
    assert row['seeds'] == [0, 1, 2] and row['runs'][2]['predictions'] == 'p'
    assert row['top1_after_ft'] == pytest.approx(52.0)
    assert row['top1_after_ft_std'] == pytest.approx(2.0)
    assert row['top1_before_ft_std'] == 0.0 and row['finetune_seconds'] == 4.5
    with pytest.raises(ValueError, match='backbone params'):
        aggregate_runs([runs[0], dict(runs[1], backbone_params=11)])


def test_markdown_has_the_reference_row_in_both_tables_and_mean_std(tmp_path):
    res = _result(tmp_path)
    res['methods'][1]['runs'][1]['top1_after_ft'] = 90.0
    res['methods'][1] = dict(res['methods'][1], **{
        k: v for k, v in aggregate_runs(res['methods'][1]['runs']).items() if k != 'runs'})
    text = markdown(res)
    assert sum(line.startswith(f'| {REFERENCE} |') for line in text.splitlines()) == 2
    assert '| svd | 100 (50%) | 0.100 | 0.200 | 50.0 ± 0.0 (-50.0) | 95.0 ± 7.1 (-5.0) |' \
        in text
    assert 'mean ± std over the fine-tune seeds [0, 1]' in text


def test_results_table_reads_the_published_and_the_seeded_json(tmp_path):
    (tmp_path / 'published').mkdir()
    shutil.copy(PUBLISHED, tmp_path / 'published' / 'lowrank_full.json')
    published = json.loads(PUBLISHED.read_text())
    rows = results_rows(find_results(str(tmp_path / 'published')), latency=False)
    names = [r['method'] for r in rows]
    assert names.count(REFERENCE) == 1 and names[0] == REFERENCE
    assert len(rows) == len(published['methods']) + len(published['budget']) - 1
    assert {tuple(r['seeds']) for r in rows} == {tuple(published['settings']['seeds'])}
    assert rows[0]['top1_after'] == published['methods'][0]['top1_after_ft']

    # the shape before fine-tune seeds: one seed, the reference apart, no row marked
    def one_seed(r):
        return {k: v for k, v in r.items() if k not in ('seeds', 'reference')}
    old = dict(published, settings=dict(published['settings'], seed=0, seeds=None),
               **{g: [one_seed(r) for r in published[g] if not r.get('reference')]
                  for g in ('methods', 'budget')})
    (tmp_path / 'old').mkdir()
    (tmp_path / 'old' / 'lowrank_full.json').write_text(json.dumps(old))
    rows = results_rows(find_results(str(tmp_path / 'old')), latency=False)
    assert [r['method'] for r in rows] == [r['name'] for r in old['methods'] + old['budget']]
    assert {tuple(r['seeds']) for r in rows} == {(0,)}
    assert rows[0]['top1_after'] == old['methods'][0]['top1_after_ft']

    (tmp_path / 'new').mkdir()
    res = _result(tmp_path)
    (tmp_path / 'new' / 'lowrank_full.json').write_text(json.dumps(res))
    rows = results_rows(find_results(str(tmp_path / 'new')), latency=False)
    names = [r['method'] for r in rows]
    assert names.count(REFERENCE) == 1 and names[0] == REFERENCE
    assert len(rows) == len(res['methods']) + len(res['budget']) - 1
    assert {tuple(r['seeds']) for r in rows} == {(0, 1)}
    svd = next(r for r in rows if r['method'] == 'svd')
    assert svd['params_ratio'] == 0.5 and svd['top1_after'] == 100.0
