"""Interrupted runs: a search SIGKILLed at a random iteration and resumed with --resume
ends bit-exact where an uninterrupted run ends; tools/export_subnet.py killed at every
write of its output leaves the previous complete output or none, never a partial one."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import REPO, run_command
from tiny_search import SEARCH_CFG, select_from_checkpoint, write_config, write_search_checkpoint

from sidt_mmdet.utils import load_checkpoint_safe

pytestmark = pytest.mark.slow
MAX_ITERS = 6
HOOK_DIR = Path(__file__).resolve().parent
# the search config's imports and hooks, and the pause hook (inert unless its env is set)
PAUSE_HOOK = ("custom_imports = dict(imports=['sidt_mmdet', 'sidt_mmdet.datasets.toy_cifar100', "
              "'pause_hook'], allow_failed_imports=False)\n"
              "custom_hooks = [dict(type='mmdet.SIDTMaskCheckHook'), "
              "dict(type='PauseAfterCheckpointHook')]\n")


def _hook_env() -> dict:
    """PYTHONPATH with this directory first: the config imports pause_hook.py from it."""
    return dict(PYTHONPATH=os.pathsep.join(filter(None, [str(HOOK_DIR),
                                                         os.environ.get('PYTHONPATH')])))


def _train(cfg, work_dir, *extra, **kw):
    return run_command([sys.executable, 'tools/train.py', str(cfg), '--work-dir', str(work_dir),
                        *extra], env=_hook_env(), **kw)


def _assert_same(a, b, where=''):
    """Bit-exact equality of nested checkpoint content (tensors, numbers, containers)."""
    if torch.is_tensor(a):
        assert torch.is_tensor(b) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert set(a) == set(b), where
        for k in a:
            _assert_same(a[k], b[k], f'{where}.{k}')
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f'{where}[{i}]')
    else:
        assert a == b, where


def _kill_at_checkpoint(cfg, work_dir, k, timeout=300):
    """Run the search until PauseAfterCheckpointHook reports that iteration ``k``'s
    checkpoint is saved and the run is waiting (a state file), then SIGKILL it. Every wait
    has a deadline; the run's log is in the failure message."""
    state = work_dir.parent / f'{work_dir.name}.paused'
    log = work_dir.parent / f'{work_dir.name}.log'
    env = {**os.environ, **_hook_env(), 'OMP_NUM_THREADS': '1', 'CUDA_VISIBLE_DEVICES': '',
           'SIDT_PAUSE_AT_ITER': str(k), 'SIDT_PAUSE_FILE': str(state),
           'SIDT_PAUSE_TIMEOUT': str(timeout)}
    with open(log, 'w') as out:
        proc = subprocess.Popen([sys.executable, 'tools/train.py', str(cfg), '--work-dir',
                                 str(work_dir)], cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env)
    try:
        deadline = time.monotonic() + timeout
        while not state.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)  # no race: the run waits at iteration k until it is killed
        if not state.exists():
            pytest.fail(f'the search did not pause after iteration {k} (exit status '
                        f'{proc.poll()}):\n{log.read_text()[-4000:]}')
        assert (work_dir / f'iter_{k}.pth').is_file()
        assert (work_dir / 'last_checkpoint').read_text().strip().endswith(f'iter_{k}.pth')
        assert not (work_dir / f'iter_{k + 1}.pth').exists()
        proc.send_signal(signal.SIGKILL)
        return proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=60)


def test_search_killed_and_resumed_equals_an_uninterrupted_run(tmp_path, toy_cifar_dir,
                                                                figures):
    cfg = write_config(tmp_path / 'search.py', toy_cifar_dir, MAX_ITERS, batch_size=8,
                       extra=PAUSE_HOOK)
    ref_dir = tmp_path / 'uninterrupted'
    _train(cfg, ref_dir)
    ref_ckpt = ref_dir / f'iter_{MAX_ITERS}.pth'
    ref = load_checkpoint_safe(ref_ckpt)
    masks = [k for k in ref['state_dict'] if k.endswith('_mask')]
    assert masks and not all(bool((ref['state_dict'][k] == 1).all()) for k in masks), \
        'the masks must have moved, or equality would prove nothing'
    ref_subnet = select_from_checkpoint(ref_ckpt).to_dict()
    # one kill (two took 20 s more); the iteration is drawn from the seed, not picked
    for seed in (0,):
        k = random.Random(seed).randint(1, MAX_ITERS - 2)
        work = tmp_path / f'killed-{seed}'
        status = _kill_at_checkpoint(cfg, work, k)
        assert status == -signal.SIGKILL, f'the search finished before it could be killed at {k}'
        assert not (work / f'iter_{MAX_ITERS}.pth').exists()
        _train(cfg, work, '--resume')
        got = load_checkpoint_safe(work / f'iter_{MAX_ITERS}.pth')
        for key in masks:
            assert torch.equal(got['state_dict'][key], ref['state_dict'][key]), key
        _assert_same(got['state_dict'], ref['state_dict'], 'state_dict')
        _assert_same(got['optimizer'], ref['optimizer'], 'optimizer')
        assert got['meta']['iter'] == ref['meta']['iter'] == MAX_ITERS
        assert select_from_checkpoint(work / f'iter_{MAX_ITERS}.pth').to_dict() == ref_subnet
        figures.add('kills')
        figures.add('kills_survived')


def test_export_killed_at_every_write(tmp_path, figures):
    ckpt = write_search_checkpoint(tmp_path / 'search.pth')
    out = tmp_path / 'work' / 'export'
    out.parent.mkdir()
    args = dict(config=str(SEARCH_CFG), checkpoint=str(ckpt), out_dir=str(out),
                kills=5)
    result = run_command([sys.executable, 'tests/kill_driver.py', json.dumps(args)], timeout=900)
    report = json.loads(result.stdout.strip().splitlines()[-1])
    attempts = report['attempts']
    assert report['writes'] >= 8
    assert len(attempts) == len(report['kill_points']) + len(report['term_points'])
    assert report['previous'] != report['new']
    for a in attempts:
        visible = [e for e in a['listing'] if not e.startswith('.')]
        # what a reader sees right after the kill: the old output, the new one, or none
        assert a['state'] in ('previous', 'new', 'none'), a
        assert visible == ([] if a['state'] == 'none' else ['export']), a
        if a['signal'] == 'SIGTERM':  # the tool cleaned up itself
            assert visible == a['listing'], a
            # 143: our handler unwound the write; -15: killed before it was installed
            assert a['status'] in (0, 128 + signal.SIGTERM, -signal.SIGTERM), a
        # the next export's cleanup: no hidden leftovers, and a complete output is back
        assert a['listing_after_cleanup'] == ['export'], a
        assert a['state_after_cleanup'] in ('previous', 'new'), a
        figures.add('kills_survived')
        figures.add('kills')
    assert {a['state'] for a in attempts} >= {'previous', 'new'}
    lost = sum(a['state_after_cleanup'] not in ('previous', 'new') for a in attempts)
    figures.add('outputs_lost', lost)
