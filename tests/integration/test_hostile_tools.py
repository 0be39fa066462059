"""Hostile checkpoints given to the tools a user runs: ``tools/train.py --resume``,
``tools/test.py``, ``tools/export_subnet.py``, ``tools/lowrank.py`` (each tool's ``main``,
in this process). Every one refuses, names the unsafe global, and the payload's marker
file never appears. (``init_cfg`` Pretrained and ``load_from``:
tests/unit/utils/test_hostile_checkpoints.py.)"""
from __future__ import annotations

import sys

import pytest
from helpers import run_command
from hostile import payloads, write_payload
from tiny_search import SEARCH_CFG, write_config

from sidt_mmdet.apis import export as export_api
from sidt_mmdet.apis import lowrank as lowrank_api
from sidt_mmdet.utils import UnsafeCheckpointError

NAMES = list(payloads('m'))
RUNNER_PAYLOADS = ['os.system', 'getattr builtins.exec', 'HistoryBuffer with an extra attribute']


def _tool(name):
    """What tools/<name>.py runs: the library module whose ``main`` the tool calls."""
    return {'export_subnet': export_api, 'lowrank': lowrank_api}[name]


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


@pytest.mark.slow
@pytest.mark.parametrize('tool', ['train --resume', 'test'])
@pytest.mark.parametrize('name', RUNNER_PAYLOADS)
def test_runner_tools_refuse(tmp_path, toy_cifar_dir, tool, name, figures):
    path, expect, marker = _hostile(tmp_path, name)
    cfg = write_config(tmp_path / 'cfg.py', toy_cifar_dir, 2, 4)
    work = ['--work-dir', str(tmp_path / 'work')]
    argv = ([sys.executable, 'tools/test.py', str(cfg), path, *work] if tool == 'test' else
            [sys.executable, 'tools/train.py', str(cfg), '--resume', path, *work])
    result = run_command(argv, check=False)
    assert result.returncode != 0
    # the tool's traceback ends with the refusal, naming the file and the unsafe global
    assert UnsafeCheckpointError.__name__ in result.stderr
    assert path in result.stderr and expect in result.stderr, result.stderr[-2000:]
    assert not marker.exists()
    assert not list((tmp_path / 'work').rglob('*.pth'))
    figures.add('hostile_refused')
