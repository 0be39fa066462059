"""The selection study on the detection task at tiny size: the plumbing, no accuracy asserted.
A module of its own so that pytest-xdist runs it beside the other studies' module."""
from __future__ import annotations

import pytest

from sidt_mmdet.models import Subnet
from sidt_mmdet.studies.selection import run_selection_study

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures('one_torch_thread')]


def test_detection_selection_study_at_tiny_size(tmp_path):
    """The selection study on the detection task (hard toy COCO, toy Mask R-CNN): every row
    through search or criterion, export, fine-tune and CocoMetric; box and mask mAP with
    their per-image matches; the comparisons on box mAP. No accuracy is asserted."""
    from sidt_mmdet.studies.coco_matches import load_matches
    res = run_selection_study('detection-tiny', str(tmp_path))
    assert res['task_type'] == 'detection' and res['metrics'] == ['bbox_mAP', 'segm_mAP']
    assert {r['name'] for r in res['runs']} == {'sidt-l1/dim', 'magnitude (longer fine-tune)'}
    search, ft = res['search_iters'], res['settings']['finetune_iters']
    assert {r['post_dense_iters'] for r in res['runs']} == {search + ft}
    for r in res['runs']:
        for kind in ('bbox', 'segm'):
            m = load_matches(r['predictions'], kind)
            assert len(m) == res['num_test'] == 8
            assert 100 * m.score() == pytest.approx(r[f'{kind}_mAP_finetuned'])
        assert Subnet.load(r['subnet']).stats['macs_after'] <= \
            0.6 * Subnet.load(r['subnet']).stats['macs_before']
    # the full-width export through the retrain config is the dense detector
    ref = res['dense_finetuned']
    assert all(r['bbox_mAP_pruned'] == pytest.approx(res['dense']['bbox_mAP'])
               and r['segm_mAP_pruned'] == pytest.approx(res['dense']['segm_mAP'])
               for r in ref['runs'])
    assert {c['name'] for c in res['comparisons']} == {
        'sidt-l1/dim vs magnitude at MACs x0.6',
        'sidt-l1/dim vs dense + the same training at MACs x0.6'}
    assert res['goals'][0]['goal'] == 'dense box mAP in 30-60'
    assert {'lift', 'narrow_gap'} <= set(res['task'])
    md = (tmp_path / 'detection-tiny' / 'selection_detection-tiny.md').read_text()
    assert '| box mAP after pruning | box mAP after fine-tune | mask mAP after pruning |' in md
    assert 'Difference of box mAP' in md


def test_detection_pareto_study_at_tiny_size(tmp_path):
    """The accuracy-latency study on the detection task: the latency table of the toy
    detector's backbone (window and global blocks) and latency-budget rows through export,
    fine-tune and CocoMetric, selected by the closed loop. No accuracy is asserted."""
    from sidt_mmdet.studies.pareto import PRESETS, run_pareto_study
    res = run_pareto_study('detection-tiny', str(tmp_path))
    assert res['task_type'] == 'detection' and res['metric'] == 'bbox_mAP'
    assert res['loop_rounds'] == PRESETS['detection-tiny'].loop_rounds > 0
    key = res['latency_table']['key']
    assert key['batch'] == 2 and len(set(key['arch']['window_sizes'])) == 2
    assert len(res['runs']) == 2 and not res['infeasible']
    for r in res['runs']:
        budget = Subnet.load(r['subnet']).budget
        assert budget['kind'] == 'latency'
        loop = budget['closed_loop']  # measured rounds, the first at the target itself
        assert loop['target'] == 0.95 and 1 <= len(loop['history']) <= res['loop_rounds']
        assert r['latency_ms'] > 0 and 'bbox_mAP_finetuned' in r
