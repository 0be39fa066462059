"""A 2-process gloo search keeps the ranks in sync, and ``--resume`` restores the whole state.

Both runs go through ``tools/dist_train.sh`` on CPU with a config that inherits the toy
search config and adds ``RankStateDumpHook`` (rank_state_hook.py, next to this file): every
rank writes its model, optimizer and scheduler state, so the test compares what each
process really held, not what rank 0 chose to save.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from helpers import REPO, cpu_dist_env, run_command

HOOK_DIR = Path(__file__).resolve().parent
SEARCH_CFG = (REPO / 'configs/toy'
              / 'sidt-search_mask-rcnn_sidtvit-toy-kr0.6_simplefpn_100it_toy-coco.py')
ITERS, RESUME_FROM = 3, 2
NO_VAL = ['val_cfg=None', 'val_dataloader=None', 'val_evaluator=None']

pytestmark = pytest.mark.slow


def _config(tmp_path: Path, out_dir: Path, at_start: bool) -> Path:
    cfg = tmp_path / f'search_dump_{"resume" if at_start else "run"}.py'
    cfg.write_text(
        f'_base_ = [{str(SEARCH_CFG)!r}]\n'
        "custom_imports = dict(imports=['sidt_mmdet', 'rank_state_hook'], "
        'allow_failed_imports=False)\n'
        f"custom_hooks = [dict(type='RankStateDumpHook', out_dir={str(out_dir)!r}, "
        f'iters={[RESUME_FROM, ITERS]}, at_start={at_start})]\n')
    return cfg


def _train(cfg: Path, work_dir: Path, toy_coco_dir: Path, *extra: str) -> None:
    env = cpu_dist_env()
    env.update(SIDT_TOY_COCO=str(toy_coco_dir),
               PYTHONPATH=os.pathsep.join(filter(None, [str(HOOK_DIR),
                                                        os.environ.get('PYTHONPATH')])))
    run_command(['bash', 'tools/dist_train.sh', str(cfg), '2', '--work-dir', str(work_dir),
                 *extra, '--cfg-options', f'train_cfg.max_iters={ITERS}',
                 f'default_hooks.checkpoint.interval={RESUME_FROM}', *NO_VAL], env=env)


def _load(path: Path) -> dict:
    assert path.is_file(), sorted(p.name for p in path.parent.iterdir())
    return torch.load(path, map_location='cpu', weights_only=True)


def assert_identical(a, b, where: str = '') -> None:
    """Exact equality of nested dicts/lists/tensors (bit for bit, dtype and shape too)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape, where
        assert torch.equal(a, b), f'{where}: max diff {(a.double() - b.double()).abs().max()}'
    elif isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), \
            f'{where}: keys differ: {sorted(set(a) ^ set(b), key=str)}'
        for k in a:
            assert_identical(a[k], b[k], f'{where}.{k}')
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_identical(x, y, f'{where}[{i}]')
    else:
        assert a == b, f'{where}: {a!r} != {b!r}'


@pytest.fixture(scope='module')
def uninterrupted(tmp_path_factory, toy_coco_dir) -> tuple[Path, Path]:
    """(work dir, dump dir) of ITERS search iterations on 2 processes."""
    tmp = tmp_path_factory.mktemp('sync')
    dumps = tmp / 'dumps'
    _train(_config(tmp, dumps, at_start=False), tmp / 'work', toy_coco_dir)
    return tmp / 'work', dumps


def test_every_parameter_mask_buffer_and_moment_equal_on_both_ranks(uninterrupted):
    """Catches a parameter outside DDP's gradient all-reduce (e.g. a mask updated only from
    the local sparsity term), buffers that drift apart, and an optimizer that steps on
    local gradients: each would leave the ranks with different weights after training on
    different images."""
    _, dumps = uninterrupted
    r0, r1 = _load(dumps / f'iter{ITERS}_rank0.pth'), _load(dumps / f'iter{ITERS}_rank1.pth')
    # not vacuous: the ranks trained on different images, and training moved the masks
    assert set(r0['seen'][:2]).isdisjoint(r1['seen'][:2])
    masks = {k: v for k, v in r0['model'].items() if k.endswith('_mask')}
    assert len(masks) == 2 * 4  # 4 blocks: one attention and one MLP mask each
    assert all((m != 1).any() for m in masks.values())
    assert_identical(r0['model'], r1['model'], 'model')
    assert_identical(r0['optimizer'], r1['optimizer'], 'optimizer')
    assert_identical(r0['param_names'], r1['param_names'], 'param_names')


def test_resume_restores_the_whole_training_state(uninterrupted, toy_coco_dir, tmp_path):
    """``--resume iter_RESUME_FROM.pth`` on 2 processes must hold, before its first
    iteration, exactly the state the uninterrupted run held after that iteration: every
    parameter and buffer, both AdamW moments and the step of every parameter of every
    group, each group's hyper-parameters (lr after the scheduler step, weight decay),
    which parameter sits at which optimizer index, and every scheduler's state. Catches
    moments restored for the masks only, a fresh scheduler (the warm-up would restart),
    and parameter groups built in another order on resume (moments would land on the
    wrong tensors)."""
    work, dumps = uninterrupted
    resumed = tmp_path / 'dumps'
    _train(_config(tmp_path, resumed, at_start=True), tmp_path / 'work', toy_coco_dir,
           '--resume', str(work / f'iter_{RESUME_FROM}.pth'))
    for rank in (0, 1):
        want = _load(dumps / f'iter{RESUME_FROM}_rank{rank}.pth')
        got = _load(resumed / f'start_rank{rank}.pth')
        assert want['iter'] == RESUME_FROM - 1 and got['iter'] == RESUME_FROM
        assert_identical(got['param_names'], want['param_names'], 'param_names')
        assert_identical(got['model'], want['model'], 'model')
        assert_identical(got['optimizer'], want['optimizer'], 'optimizer')
        assert_identical(got['schedulers'], want['schedulers'], 'schedulers')
        optim = want['optimizer']
        assert len(optim['param_groups']) >= 3  # layer-decayed groups and the mask group
        for g in optim['param_groups']:
            states = [optim['state'][i] for i in g['params'] if i in optim['state']]
            assert states, f'group with lr {g["lr"]} has no optimizer state'
            for s in states:
                assert float(s['step']) == RESUME_FROM
            assert any(s['exp_avg'].abs().sum() > 0 and s['exp_avg_sq'].abs().sum() > 0
                       for s in states)
        # the warm-up stepped once per iteration (a fresh one would be at 0); the cosine
        # decay begins at iteration 10 and has not stepped yet
        assert [s['last_step'] for s in want['schedulers']] == [RESUME_FROM, -1]
