"""The stage runner's rules: one way to shorten a schedule, metrics from the test logs, and
resuming finished stages (a changed command, or a rerun before it, runs a stage again)."""
from __future__ import annotations

import json
import sys

import pytest
from helpers import REPO

from sidt_mmdet.apis.chain import (
    ChainSpec,
    StageError,
    _Stages,
    data_options,
    ensure_data,
    read_metrics,
    schedule_options,
)
from sidt_mmdet.utils.cli import ToolError

TOY_DET = 'configs/toy/sidt-dense_mask-rcnn_sidtvit-toy_simplefpn_100it_toy-coco.py'
TOY_CLS = 'configs/cifar100/sidt-dense_cls_vit-toy-p4_linear_6e_toy-cifar100.py'


def test_schedule_rule_iterations():
    # warm-up LinearLR 0-10 stays; the cosine 10-100 ends with the new length
    assert schedule_options(TOY_DET, 150) == [
        'train_cfg.max_iters=150', 'train_cfg.val_interval=150',
        'default_hooks.checkpoint.interval=150', 'param_scheduler.1.end=150']
    # shorter than the warm-up: the cosine never begins, so it is left alone
    assert not any(o.startswith('param_scheduler')
                   for o in schedule_options(str(REPO / TOY_DET), 5))


def test_schedule_rule_epochs():
    # warm-up 0-1 epoch, cosine 1-6: the cosine ends at the new length unless it never begins
    assert schedule_options(TOY_CLS, 3) == [
        'train_cfg.max_epochs=3', 'train_cfg.val_interval=3',
        'default_hooks.checkpoint.interval=3', 'param_scheduler.1.end=3']
    assert not any(o.startswith('param_scheduler') for o in schedule_options(TOY_CLS, 1))


def test_data_options_per_task():
    det = data_options('detection', '/d/coco')
    assert 'test_dataloader.dataset.data_root=/d/coco/' in det
    assert 'val_evaluator.ann_file=/d/coco/annotations/instances_val2017.json' in det
    assert data_options('classification', '/d/c/') == [
        f'{k}_dataloader.dataset.data_root=/d/c/' for k in ('train', 'val', 'test')]


def _num_images(root, split):
    with open(root / 'annotations' / f'instances_{split}.json') as f:
        return len(json.load(f)['images'])


def test_ensure_data_regenerates_only_a_generated_set_of_other_size(tmp_path):
    """A toy set left by an earlier demo with other sizes is made again; a set this project
    did not generate (real data under the same root) is never touched."""
    root = tmp_path / 'toy_coco'
    sizes = dict(num_train=3, num_val=2, img_size=64)
    ensure_data('detection', str(root), **sizes)
    assert (_num_images(root, 'train2017'), _num_images(root, 'val2017')) == (3, 2)
    ensure_data('detection', str(root), **{**sizes, 'num_train': 4})
    assert (_num_images(root, 'train2017'), _num_images(root, 'val2017')) == (4, 2)

    user = tmp_path / 'user_coco'
    (user / 'annotations').mkdir(parents=True)
    for split in ('train2017', 'val2017'):
        (user / 'annotations' / f'instances_{split}.json').write_text(json.dumps(
            dict(info=dict(description='my own set'), images=[], annotations=[],
                 categories=[])))
    before = sorted(p.stat().st_mtime_ns for p in user.rglob('*.json'))
    ensure_data('detection', str(user), **sizes)
    assert sorted(p.stat().st_mtime_ns for p in user.rglob('*.json')) == before
    assert sorted(p.name for p in user.iterdir()) == ['annotations']


def test_read_metrics_takes_the_newest_run(tmp_path):
    for stamp, top1 in (('20260101_000000', 10.0), ('20260102_000000', 20.0)):
        (tmp_path / stamp).mkdir()
        rows = [dict(step=1, lr=0.1), {'accuracy/top1': top1, 'accuracy/top5': 50.0, 'step': 1}]
        (tmp_path / stamp / f'{stamp}.json').write_text('\n'.join(map(json.dumps, rows)))
    assert read_metrics(str(tmp_path), 'classification') == {'accuracy/top1': 20.0,
                                                             'accuracy/top5': 50.0}
    with pytest.raises(StageError, match=r'no coco/\* metrics under'):
        read_metrics(str(tmp_path), 'detection')


def test_bad_specs_are_refused():
    kw = dict(dense_cfg='a', search_cfg='b', retrain_cfg='c', data_root='d')
    with pytest.raises(ToolError, match='task must be one of detection, classification'):
        ChainSpec(task='segmentation', **kw)
    with pytest.raises(ToolError, match='lengths: expected positive integers'):
        ChainSpec(task='detection', lengths=dict(dense=0), **kw)
    with pytest.raises(ToolError, match='only test stages'):
        ChainSpec(task='detection', skip=('search',), **kw)


@pytest.mark.slow
def test_finished_stages_are_reused(tmp_path):
    logs = []
    stages = _Stages(['a', 'b'], str(tmp_path), logs.append)
    out = tmp_path / 'out.txt'
    cmd = [sys.executable, '-c', f'open({str(out)!r}, "a").write("x")']
    assert stages('a', 'first', cmd, lambda: dict(n=1))['n'] == 1
    again = _Stages(['a', 'b'], str(tmp_path), logs.append)
    assert again('a', 'first', cmd, lambda: dict(n=2))['n'] == 1  # reused, not run
    assert out.read_text() == 'x'
    assert 'finished before' in logs[-1]
    changed = _Stages(['a', 'b'], str(tmp_path), logs.append)
    assert changed('a', 'first', cmd + ['--other'], lambda: dict(n=3))['n'] == 3
    assert out.read_text() == 'xx'
    # a stage after one that ran again runs too, even with the same command
    changed('b', 'second', cmd, lambda: dict(n=4))
    rerun = _Stages(['a', 'b'], str(tmp_path), logs.append)
    rerun('a', 'first', cmd + ['--other'], lambda: dict(n=5))  # reused
    assert rerun('b', 'second', cmd, lambda: dict(n=6))['n'] == 4
    assert out.read_text() == 'xxx'
    failing = _Stages(['c'], str(tmp_path), logs.append)
    with pytest.raises(StageError, match='exited 3; full output in'):
        failing('c', 'broken', [sys.executable, '-c', 'import sys; sys.exit(3)'], dict)
