"""The studies at tiny size: every method through export and retrain, JSON + Markdown + PNG,
goals printed, the README table generated from the JSON. No accuracy is asserted."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from sidt_mmdet.models import Subnet
from sidt_mmdet.studies import results
from sidt_mmdet.studies.common import load_correct
from sidt_mmdet.studies.lowrank import REFERENCE, run_lowrank_study
from sidt_mmdet.studies.results import BEGIN, END, update_readme
from sidt_mmdet.studies.search_cost import run_search_cost_study
from sidt_mmdet.studies.selection import CONTROLS, METHODS, row_name, run_selection_study

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures('one_torch_thread')]
STATUSES = {'met', 'missed', 'not assessable', 'not shown'}


# Every method but the MACs-weighted search's: that one is the same stages after a second
# search with another weighting of the sparsity loss (unit-tested in search/), and its search
# would add a fifth of this module's time.
TESTED = tuple(m for m in METHODS if not m.startswith('sidt-l1-macs/'))


@pytest.fixture(scope='module')
def studies(tmp_path_factory):
    work = tmp_path_factory.mktemp('studies')
    selection = run_selection_study('tiny', str(work), ratios=(0.6,), methods=TESTED)
    cost = run_search_cost_study('tiny', str(work), fractions=(0.5, 1.0))
    return work, selection, cost


def test_every_method_is_exported_retrained_and_reported(studies):
    work, res, _ = studies
    assert {r['method'] for r in res['runs']} == set(TESTED)
    # every baseline under both controls, SiDT once
    names = {r['name'] for r in res['runs']}
    assert names == {row_name(m, None if m.startswith('sidt') else c) for m in TESTED
                     for c in CONTROLS}
    # the same training after the dense model for every row and the reference
    search, ft = res['search_iters'], res['settings']['finetune_iters']
    assert {r['post_dense_iters'] for r in res['runs']} == {search + ft}
    assert res['dense_finetuned']['post_dense_iters'] == search + ft
    longer = [r for r in res['runs'] if r['control'] == 'longer_finetune']
    assert longer and all(r['finetune_iters'] == ft + search for r in longer)
    # per-image predictions of every evaluated model, in test order, and the comparisons
    # the goals read
    for r in res['runs']:
        assert len(load_correct(r['predictions'])) == res['num_test']
    assert {c['name'] for c in res['comparisons']} >= {
        f'sidt-l1/dim vs {b} at MACs x0.6' for b in ('magnitude', 'taylor', 'random', 'uniform')}
    prov = res['provenance']
    assert len(prov['git_commit']) == 40 and prov['torch_threads'] == 1
    assert len(prov['configs']) == 3 and all(len(h) == 16 for h in prov['configs'].values())
    for r in res['runs']:
        sub = Subnet.load(r['subnet'])
        assert sub.stats['macs_after'] <= 0.6 * sub.stats['macs_before']
        assert 0.4 < r['macs_ratio'] <= 0.6
        assert 0 <= r['top1_pruned'] <= 100 and 0 <= r['top1_finetuned'] <= 100
        assert {'attn', 'mlp'} <= set(r['separation'])
    stored = json.loads((work / 'tiny' / 'selection_tiny.json').read_text())
    assert stored['summary'] == res['summary']
    md = (work / 'tiny' / 'selection_tiny.md').read_text()
    assert all(f'| {m} |' in md for m in TESTED)
    assert (work / 'tiny' / 'selection_tiny.png').stat().st_size > 1000
    assert res['goals'] and {g['status'] for g in res['goals']} <= STATUSES
    assert res['narrow']['macs_ratio'] < 0.75
    # the dense reference goes through the same export and fine-tune: its full-width export
    # scores the dense model's top-1 before the fine-tune
    ref = res['dense_finetuned']
    assert [r['seed'] for r in ref['runs']] == res['seeds']
    assert all(r['top1_pruned'] == res['dense']['top1'] for r in ref['runs'])
    assert Subnet.load(ref['subnet']).stats['macs_after'] == \
        Subnet.load(ref['subnet']).stats['macs_before']
    assert '| dense + the same training |' in md and '## Paired comparisons' in md
    assert any('not below dense + the same training' in g['goal'] for g in res['goals'])


def test_a_second_run_reuses_every_stage(studies, capsys):
    work, res, _ = studies
    again = run_selection_study('tiny', str(work), ratios=(0.6,), methods=TESTED)
    assert again['runs'] == res['runs']
    assert 'dense training' not in capsys.readouterr().out


def test_search_cost_shares_the_work_dir_and_reports_each_length(studies):
    work, sel, cost = studies
    assert [r['fraction'] for r in cost['summary']] == [0.5, 1.0]
    assert cost['dense'] == sel['dense']
    # each length's reference had its fine-tune plus that search: the 50% one is the
    # selection study's (one cached run)
    assert [r['reference_iters'] for r in cost['summary']] == \
        [r['post_dense_iters'] for r in cost['summary']]
    same_ref = next(r for r in cost['summary'] if r['fraction'] == 0.5)
    assert same_ref['reference_top1'] == sel['dense_finetuned']['top1_mean']
    half = next(r for r in cost['runs'] if r['fraction'] == 0.5)
    # the 50% search at MACs x0.6 is the selection study's sidt-l1/dim run
    same = next(r for r in sel['runs'] if r['method'] == 'sidt-l1/dim')
    assert (half['subnet'], half['top1_finetuned']) == (same['subnet'], same['top1_finetuned'])
    assert (work / 'tiny' / 'search_cost_tiny.md').is_file()
    assert cost['goals'][0]['status'] == 'not assessable'  # no length <= 10% in this run


def test_search_cost_chooses_the_length_on_validation_and_tests_it_once(tmp_path):
    from sidt_mmdet.studies.common import Stages, StageSettings
    from sidt_mmdet.studies.search_cost import PRESETS
    cost = run_search_cost_study('tiny-val', str(tmp_path))
    choice, summary = cost['choice'], cost['summary']
    # every length and its reference measured on the 50 validation images
    assert {r['split'] for r in summary + cost['runs']} == {'val'}
    assert choice['val_top1'] == {f'{r["fraction"]:g}': r['top1_finetuned_mean']
                                  for r in summary}
    best = max(summary, key=lambda r: r['top1_finetuned_mean'])  # the first of equal ones
    assert choice['fraction'] == best['fraction']
    work = tmp_path / 'tiny-val'
    finetunes = [d for d in work.iterdir() if d.name.startswith('finetune-')]
    assert finetunes and all(len(load_correct(d / 'predictions.npz')) == 50 for d in finetunes)
    # the test split: the chosen length's model and its reference's, once each
    tested = sorted(d.name for d in work.iterdir() if d.name.startswith('choice-'))
    assert tested == ['choice-search-length', 'choice-search-length-reference-test0',
                      'choice-search-length-test0']
    assert len(load_correct(choice['test']['runs'][0]['predictions'])) == 100
    # the tested model is the fine-tuned one: rebuilt from its checkpoint it scores its
    # validation figure again
    settings = dict(PRESETS['tiny-val'].settings, data_root=str(work / 'data'))
    stages = Stages(str(work), StageSettings(**settings))
    final = choice['test']['models'][0]
    again = stages.evaluate_final('rebuilt', final, split='val')
    assert again['top1'] == final['top1'] == best['top1_finetuned_mean']
    md = (work / 'search_cost_tiny-val.md').read_text()
    assert md.count('| validation |') == len(summary) and md.count('| test |') == 1
    assert '50 training images held out' in md
    assert '| reference | vs reference | split |' in md
    assert cost['goals'][0]['status'] == 'not assessable'  # both lengths are > 10%


def test_readme_table_is_generated_from_the_json(studies, tmp_path, monkeypatch):
    work, sel, _ = studies
    readme = tmp_path / 'README.md'
    readme.write_text(f'# x\n\n{BEGIN}\nold\n{END}\n\nafter\n')
    # the latency column's timing, at a batch of 4 and 3 runs instead of 64 and 30 (its
    # figures are not asserted; that each pruned row is timed, in one run, is)
    timed = []
    full = results.latency_ratios

    def latency_ratios(dense_config, retrain_config, subnets):
        timed.append(list(subnets))
        return full(dense_config, retrain_config, subnets, batch=4, iters=3)

    monkeypatch.setattr(results, 'latency_ratios', latency_ratios)
    block = update_readme(str(work), str(readme), latency=True)
    # one interleaved run: the narrow model and every method
    assert len(timed) == 1 and len(timed[0]) == 1 + len(sel['summary'])
    text = readme.read_text()
    assert 'old' not in text and text.endswith(f'{END}\n\nafter\n')
    rows = [line for line in block.splitlines() if line.startswith('| selection')]
    # dense, dense + the same training, the 40%-narrower model, every method
    assert len(rows) == 3 + len(sel['summary'])
    assert sum('| dense + the same training |' in line for line in rows) == 1
    assert sum('narrower, trained from scratch' in line for line in rows) == 1
    assert f'{sel["summary"][0]["top1_finetuned_mean"]:.2f}' in block
    assert 'search cost (tiny)' in block and 'Goals' in block


def test_lowrank_study_on_the_shared_search(studies):
    work, sel, _ = studies
    res = run_lowrank_study('tiny', str(work), methods=('svd', 'svd_whitened', 'qr', 'lu'))
    assert res['settings']['search_checkpoint'].endswith('.pth')
    names = [r['name'] for r in res['methods']]
    assert names == [REFERENCE, 'svd', 'svd_whitened', 'qr', 'lu']
    assert res['budget'][0]['name'] == REFERENCE and res['budget'][0]['reference']
    params = {r['backbone_params'] for r in res['methods'][1:]}
    assert len(params) == 1  # equal params for every method
    assert res['methods'][0]['backbone_params'] > params.pop()
    for r in res['methods'] + res['budget']:
        assert r['seeds'] == [0] and Path(r['runs'][0]['predictions']).is_file()
        assert Path(r['runs'][0]['predictions_pruned']).is_file()
    # whitened, SVD vs qr, qr vs LU, and the four methods against the reference
    assert len(res['comparisons']) == 7 and {c['family'] for c in res['comparisons']} == {7}
    assert {g['status'] for g in res['goals']} <= STATUSES and len(res['goals']) == 6
    assert (work / 'tiny' / 'lowrank_tiny.json').is_file()
    text = (work / 'tiny' / 'lowrank_tiny.md').read_text()
    assert '## Goals' in text and '## Paired comparisons' in text



def test_lowrank_study_chooses_the_hybrid_keep_ratio_on_validation(tmp_path):
    # svd_whitened: calibrated on training batches, the split's indices passed on to them
    res = run_lowrank_study('tiny-val', str(tmp_path), methods=('svd', 'svd_whitened'))
    choice, rows = res['choice'], res['budget']
    hybrids = [r for r in rows if r.get('split') == 'val']
    assert [r['name'] for r in hybrids] == [f'hybrid (MLP keep {k:g} + SVD attention)'
                                            for k in (0.5, 0.6)]
    assert choice['val'] == {r['name']: r['top1_after_ft'] for r in hybrids}
    best = max(hybrids, key=lambda r: r['top1_after_ft'])
    assert choice['chosen'] == best['name']
    # the chosen one on the test split, once; every other row on test as before
    chosen = [r for r in rows if r['name'].endswith('chosen on validation')]
    assert len(chosen) == 1 and chosen[0]['top1_after_ft'] == choice['test']['top1']
    assert chosen[0]['mlp_kept'] == best['mlp_kept']
    assert {r.get('split', 'test') for r in rows} == {'val', 'test'}
    work = tmp_path / 'tiny-val'
    assert sorted(d.name for d in work.iterdir() if d.name.startswith('choice-')) == [
        'choice-hybrid-mlp-keep', 'choice-hybrid-mlp-keep-compressed-test',
        'choice-hybrid-mlp-keep-reference-top1_after_ft',
        'choice-hybrid-mlp-keep-reference-top1_before_ft', 'choice-hybrid-mlp-keep-test0']
    md = (work / 'lowrank_tiny-val.md').read_text()
    assert md.count('| validation |') == 2 and md.count('| test |') == len(rows) - 2
    assert '50 training images held out' in md
    # the README table lists test figures only
    assert all(not r['method'].startswith('hybrid (') or 'chosen' in r['method']
               for r in results.results_rows({'lowrank': res}, latency=False))


def test_pareto_study_on_the_shared_work_dir(studies, capsys):
    """The accuracy-latency study at tiny size shares the selection study's dense model and
    MACs-budget exports; its latency-budget rows read the table it built, Torch-Pruning's
    row is its pruner's selection, every row is timed and has the same training."""
    from sidt_mmdet.studies.pareto import row_label, run_pareto_study
    work, sel, _ = studies
    pytest.importorskip('torch_pruning', reason='the bench group is not installed')
    res = run_pareto_study('tiny', str(work))
    assert 'dense training' not in capsys.readouterr().out
    names = {r['name'] for r in res['runs']} | {i['name'] for i in res['infeasible']}
    assert names == {row_label(m, b) for m in ('sidt-l1/dim', 'magnitude')
                     for b in ('macs', 'latency')} | {row_label('torch-pruning', 'macs')}
    search, ft = res['search_iters'], res['settings']['finetune_iters']
    assert {r['post_dense_iters'] for r in res['runs']} == {search + ft}
    for r in res['runs']:
        sub = Subnet.load(r['subnet'])
        assert r['latency_ms'] > 0 and 0 < r['latency_ratio']
        if 'latency budget' in r['name']:
            assert sub.budget['kind'] == 'latency' and sub.budget['value'] == 0.8
            assert sub.budget['unit_order'] == 'score_per_ms'
            assert sub.budget['latency_table']['key'] == res['latency_table']['key']
        elif r['method'] == 'torch-pruning':
            import importlib.metadata
            assert sub.budget['tool'] == \
                f"torch-pruning {importlib.metadata.version('torch-pruning')}"
            assert sub.stats['macs_after'] <= 0.8 * sub.stats['macs_before']
        else:
            assert sub.stats['macs_after'] <= 0.8 * sub.stats['macs_before']
    macs_rows = {r['subnet'] for r in res['runs'] if r['name'].endswith('(macs budget)')
                 and r['method'] != 'torch-pruning'}
    assert all('-r0.8' in path for path in macs_rows)
    assert res['goals'] and {g['status'] for g in res['goals']} <= STATUSES
    ws = work / 'tiny'
    for ext in ('json', 'md', 'png'):
        assert (ws / f'pareto_tiny.{ext}').stat().st_size > 0
