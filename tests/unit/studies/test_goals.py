"""The studies' goals, from hand-made results: what each is compared with, the training each
row had, and the interval or resolution printed beside it."""
from __future__ import annotations

import re

import numpy as np
import pytest

from sidt_mmdet.studies.common import binomial_se, check_equal_compute
from sidt_mmdet.studies.selection import selection_comparisons, selection_goals


def test_binomial_se():
    assert binomial_se(50.0, 10000) == pytest.approx(0.5)
    assert binomial_se(90.0, 100) == pytest.approx(3.0)


def _npz(path, correct):
    """A stored evaluation whose per-image result is ``correct`` (1 right, 0 wrong)."""
    correct = np.asarray(correct, dtype=bool)
    gt = np.arange(correct.size, dtype=np.int16) % 7
    np.savez(path, pred=np.where(correct, gt, gt + 1).astype(np.int16), gt=gt)
    return str(path)


def _row(tmp_path, name, correct, iters=935, mean=None):
    c = np.asarray(correct, dtype=float)
    return dict(name=name, method=name, ratio=0.6, post_dense_iters=iters,
                top1_finetuned_mean=100 * c.mean() if mean is None else mean,
                predictions=[_npz(tmp_path / (re.sub(r'\W', '_', name) + '.npz'), correct)])


def _study(tmp_path, iters=None):
    """SiDT right on 70% of 1000 images, magnitude's two controls on 60% and 50% of them
    (SiDT right wherever they are), the dense reference on 74%, the dense model on 71%."""
    n = 1000
    at = lambda k: np.arange(n) < k  # noqa: E731  right on the first k images
    iters = iters or {}
    summary = [_row(tmp_path, 'sidt-l1/dim', at(700)),
               _row(tmp_path, 'magnitude (longer fine-tune)', at(600),
                    iters.get('longer', 935)),
               _row(tmp_path, 'magnitude (trained on, then scored)', at(500))]
    return dict(ratios=[0.6], summary=summary,
                controls=['longer_finetune', 'trained_on'],
                dense=dict(top1=71.0, predictions=_npz(tmp_path / 'dense.npz', at(710))),
                dense_finetuned=dict(post_dense_iters=935, runs=[
                    dict(predictions=_npz(tmp_path / 'ref.npz', at(740)))]),
                narrow=dict(predictions=_npz(tmp_path / 'narrow.npz', at(690))))


def test_rows_with_different_training_after_the_dense_model_are_refused(tmp_path):
    """Fails if a baseline fine-tuned without the search's iterations (SiDT's search as free
    extra training) enters a comparison."""
    with pytest.raises(ValueError, match=r"MACs x0\.6: the rows had different training .*"
                       r"magnitude \(longer fine-tune\): 748"):
        selection_comparisons(_study(tmp_path, iters=dict(longer=748)))
    with pytest.raises(ValueError, match='do not record post_dense_iters'):
        check_equal_compute([dict(name='a', post_dense_iters=1), dict(name='b')], 'x')


def test_comparisons_take_the_stronger_control_and_correct_together(tmp_path):
    res = _study(tmp_path)
    res.update(selection_comparisons(res))
    by = {c['name']: c for c in res['comparisons']}
    base = by['sidt-l1/dim vs magnitude at MACs x0.6']
    # the stronger of the two controls (60% against 50%)
    assert base['b'] == 'magnitude (longer fine-tune)'
    assert base['diff'] == pytest.approx(10.0) and base['family'] == 2
    # SiDT right wherever magnitude is: 100 images apart, every draw positive
    assert base['low'] > 0 and base['p_holm'] < 0.05
    ref = by['sidt-l1/dim vs dense + the same training at MACs x0.6']
    assert ref['diff'] == pytest.approx(-4.0)
    assert res['task']['lift']['diff'] == pytest.approx(3.0)
    assert res['task']['narrow_gap']['diff'] == pytest.approx(2.0)
    goals = {g['goal']: g for g in selection_goals(dict(res, dense=dict(top1=71.0)))}
    ahead = next(g for k, g in goals.items() if k.startswith('sidt-l1/dim ahead of magnitude'))
    assert ahead['status'] == 'met'
    # 4 points below the reference, every image-level difference one way: the corrected
    # interval lies below -1, so the 1-point goal is missed, not "within noise"
    near = next(g for k, g in goals.items() if 'not below' in k)
    assert near['status'] == 'missed'
    # 3 points gained by the reference, 2 lost by the narrow model: both intervals above 0
    lift = next(g for k, g in goals.items() if 'near convergence' in k)
    assert lift['status'] == 'missed'  # the dense model gains more than 0.5 points
    narrow = next(g for k, g in goals.items() if 'narrower' in k)
    assert narrow['status'] == 'met'


def _goal_of(c):
    base = dict(kind='baseline', a='sidt-l1/dim', b='magnitude (longer fine-tune)',
                baseline='magnitude', ratio=0.6, level=0.975, family=2, p_holm=0.5)
    return selection_goals(dict(dense=dict(top1=60.0), comparisons=[dict(base, **c)]))[1]


def test_a_goal_is_met_only_when_the_corrected_interval_says_so():
    assert _goal_of(dict(diff=0.6, low=0.1, high=1.1, p_holm=0.01))['status'] == 'met'
    # the same lead with an interval across 0 decides nothing
    assert _goal_of(dict(diff=0.6, low=-0.2, high=1.4, p_holm=0.2))['status'] == 'not shown'
    assert _goal_of(dict(diff=-0.6, low=-1.1, high=-0.1, p_holm=0.01))['status'] == 'missed'
    ref = dict(kind='reference', b='dense + the same training', p_holm=0.3)
    assert _goal_of(dict(ref, diff=-0.4, low=-0.9, high=0.1))['status'] == 'met'
    assert _goal_of(dict(ref, diff=-0.4, low=-1.2, high=0.4))['status'] == 'not shown'
