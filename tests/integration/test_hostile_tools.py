"""Hostile checkpoints given to the tools a user runs: ``tools/train.py --resume``,
``tools/test.py``, ``tools/export_subnet.py``, ``tools/lowrank.py`` (export and low-rank:
each tool's ``main``, in this process; the Runner tools: one payload each as its own
subprocess, the others in one tests/tool_driver.py subprocess). Every one refuses, names
the unsafe global, and the payload's marker file never appears. (``init_cfg`` Pretrained
and ``load_from``: tests/unit/utils/test_hostile_checkpoints.py.)"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from helpers import run_command
from hostile import payloads, write_payload
from tiny_search import SEARCH_CFG, write_config

from sidt_mmdet.cli import export_subnet as export_cli
from sidt_mmdet.cli import lowrank as lowrank_cli
from sidt_mmdet.utils import UnsafeCheckpointError

NAMES = list(payloads('m'))
RUNNER_PAYLOADS = ['os.system', 'getattr builtins.exec', 'HistoryBuffer with an extra attribute']


def _tool(name):
    """What tools/<name>.py runs: the command-line module whose ``main`` the tool calls."""
    return {'export_subnet': export_cli, 'lowrank': lowrank_cli}[name]


def _hostile(tmp_path, name):
    marker = tmp_path / 'marker'
    obj, expect = payloads(str(marker))[name]
    return write_payload(tmp_path / 'hostile.pth', obj), expect, marker


@pytest.mark.parametrize('tool, name', [('export_subnet', n) for n in NAMES]
                         + [('lowrank', n) for n in RUNNER_PAYLOADS])
def test_export_and_lowrank_refuse(tmp_path, capsys, tool, name, figures):
    path, expect, marker = _hostile(tmp_path, name)
    out = tmp_path / 'out'
    argv = [str(SEARCH_CFG), path, '-o', str(out)]
    argv += ['--keep-ratio', '0.6'] if tool == 'export_subnet' else ['--method', 'svd',
                                                                       '--energy', '0.9']
    assert _tool(tool).main(argv) == 1
    err = capsys.readouterr().err
    assert path in err and expect in err, err
    assert not marker.exists() and not out.exists()
    figures.add('hostile_refused')


def _runner_argv(tmp_path, toy_cifar_dir, tool, name):
    """(tool script, its arguments, unsafe global the refusal names, marker file)."""
    path, expect, marker = _hostile(tmp_path, name)
    cfg = write_config(tmp_path / 'cfg.py', toy_cifar_dir, 2, 4)
    work = ['--work-dir', str(tmp_path / 'work')]
    argv = (['tools/test.py', str(cfg), path, *work] if tool == 'test' else
            ['tools/train.py', str(cfg), '--resume', path, *work])
    return argv, path, expect, marker


RUNNER_TOOLS = ['train --resume', 'test']
# Each tool refuses this payload as its own ``python tools/<tool>.py`` process (exit status,
# the traceback ending the process's stderr); the other payloads run in one
# tests/tool_driver.py process (each tool's library calls, the traceback it would print).
REAL_SUBPROCESS_PAYLOAD = 'os.system'


@pytest.fixture(scope='module')
def runner_refusals_in_one_process(tmp_path_factory, toy_cifar_dir):
    """(tool, payload) -> (exit status, stderr, checkpoint path, expected name, marker, work
    dir) for every runner case but REAL_SUBPROCESS_PAYLOAD's, in one driver process."""
    plans = {}
    for tool in RUNNER_TOOLS:
        for name in RUNNER_PAYLOADS:
            if name != REAL_SUBPROCESS_PAYLOAD:
                tmp = tmp_path_factory.mktemp('hostile')
                plans[tool, name] = (tmp, *_runner_argv(tmp, toy_cifar_dir, tool, name))
    todo = [[Path(argv[0]).stem, argv[1:]] for _, argv, *_ in plans.values()]
    out = tmp_path_factory.mktemp('tool_driver') / 'results.json'
    run_command([sys.executable, 'tests/tool_driver.py', json.dumps(todo), str(out)],
                timeout=900)
    results = json.loads(out.read_text())
    assert len(results) == len(plans)
    return {key: (r['returncode'], r['stderr'], path, expect, marker, tmp / 'work')
            for (key, (tmp, _, path, expect, marker)), r in zip(plans.items(), results)}


@pytest.mark.slow
@pytest.mark.parametrize('tool', RUNNER_TOOLS)
@pytest.mark.parametrize('name', RUNNER_PAYLOADS)
def test_runner_tools_refuse(tmp_path, toy_cifar_dir, tool, name, figures, request):
    if name == REAL_SUBPROCESS_PAYLOAD:
        argv, path, expect, marker = _runner_argv(tmp_path, toy_cifar_dir, tool, name)
        result = run_command([sys.executable, *argv], check=False)
        code, stderr, work = result.returncode, result.stderr, tmp_path / 'work'
    else:
        code, stderr, path, expect, marker, work = request.getfixturevalue(
            'runner_refusals_in_one_process')[tool, name]
    assert code != 0
    # the tool's traceback ends with the refusal, naming the file and the unsafe global
    assert UnsafeCheckpointError.__name__ in stderr
    assert path in stderr and expect in stderr, stderr[-2000:]
    assert not marker.exists()
    assert not list(work.rglob('*.pth'))
    figures.add('hostile_refused')
