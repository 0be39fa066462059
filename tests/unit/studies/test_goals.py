"""The studies' goals, from hand-made results: what each is compared with, and the resolution
printed beside it."""
from __future__ import annotations

import pytest

from sidt_mmdet.studies.common import binomial_se
from sidt_mmdet.studies.lowrank import lowrank_goals
from sidt_mmdet.studies.selection import selection_goals


def test_binomial_se():
    assert binomial_se(50.0, 10000) == pytest.approx(0.5)
    assert binomial_se(90.0, 100) == pytest.approx(3.0)


def _selection(sidt, dense_ft=None):
    row = dict(method='sidt-l1/dim', ratio=0.6, top1_finetuned_mean=sidt, top1_finetuned_std=0.3)
    return dict(dense=dict(top1=55.0), summary=[row], seeds=[0, 1, 2], num_test=10000,
                dense_finetuned=None if dense_ft is None else dict(top1_mean=dense_ft))


def _within(goals):
    return next(g for g in goals if 'within 0.5 points' in g['goal'])


def test_pruned_top1_is_held_against_the_dense_model_given_the_same_fine_tune():
    # 3 points above the dense model as trained, 1 below it once it had the fine-tune too
    g = _within(selection_goals(_selection(58.0, dense_ft=59.0)))
    assert g['status'] == 'missed' and 'dense + the same fine-tune' in g['goal']
    assert '(-1.00)' in g['detail'] and 'vs dense as trained 55.00 (+3.00)' in g['detail']
    # a study without the reference falls back to the dense model, and says so
    g = _within(selection_goals(_selection(58.0)))
    assert g['status'] == 'met' and g['goal'].endswith('of dense top-1')


def _lowrank(white, svd, num_test=10000):
    return dict(methods=[dict(name='svd', top1_before_ft=svd, top1_after_ft=0.0),
                         dict(name='svd_whitened', top1_before_ft=white, top1_after_ft=0.0)],
                num_test=num_test)


def test_whitened_goal_prints_its_resolution():
    g = lowrank_goals(_lowrank(53.55, 53.40))[0]
    assert g['status'] == 'met' and '(+0.15; binomial s.e. of one top-1 0.50, within 2 s.e.)' \
        in g['detail']
    g = lowrank_goals(_lowrank(51.20, 53.40))[0]
    assert g['status'] == 'missed' and 'within' not in g['detail']
    # an older result without the test size: no resolution claimed
    g = lowrank_goals(dict(_lowrank(53.55, 53.40), num_test=None))[0]
    assert g['detail'] == '53.55 vs 53.40 (+0.15)'
