"""Ctrl-C (SIGINT) during ``tools/export_subnet.py``: one ``interrupted`` line, exit 130, no
traceback, and nothing left behind (a previous export untouched). The SIGINT is sent by the
tool's process to itself right after it wrote ``pruned.pth`` into its hidden directory, so
it always falls while the output is being written."""
from __future__ import annotations

import hashlib
import signal
import sys
from pathlib import Path

import pytest
import torch
from helpers import REPO, perturb_, run_command
from mmengine.config import Config
from mmengine.registry import MODELS, init_default_scope

from sidt_mmdet.utils import save_checkpoint_atomic

SEARCH_CFG = (REPO / 'configs/toy'
              / 'sidt-search_mask-rcnn_sidtvit-toy-kr0.6_simplefpn_100it_toy-coco.py')

# tools/export_subnet.py's one call (the tool is argparse plus it), its checkpoint write
# followed by a Ctrl-C
INTERRUPTED_TOOL = '''
import os, signal, sys
import sidt_mmdet.apis.export as export
from sidt_mmdet.cli.export_subnet import main
real = export.save_checkpoint_atomic
def save_then_ctrl_c(*args, **kwargs):
    real(*args, **kwargs)
    os.kill(os.getpid(), signal.SIGINT)
export.save_checkpoint_atomic = save_then_ctrl_c
sys.exit(main(sys.argv[1:], prog='export_subnet.py'))
'''


@pytest.fixture(scope='module')
def search_ckpt(tmp_path_factory) -> Path:
    init_default_scope('mmdet')
    torch.manual_seed(0)
    model = perturb_(MODELS.build(Config.fromfile(str(SEARCH_CFG)).model))
    with torch.no_grad():
        for m in model.backbone.mask_parameters().values():
            m.copy_(torch.rand(m.shape) * 1.5)
    path = tmp_path_factory.mktemp('ckpt') / 'search.pth'
    save_checkpoint_atomic({'state_dict': model.state_dict(), 'meta': {}}, path)
    return path


def _files(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in directory.iterdir()}


def _interrupted_export(search_ckpt, out: Path, *flags: str):
    result = run_command([sys.executable, '-c', INTERRUPTED_TOOL, str(SEARCH_CFG),
                          str(search_ckpt), '--keep-ratio', '0.5', '-o', str(out), *flags],
                         check=False)
    assert result.returncode == 128 + signal.SIGINT, result.stderr[-3000:]
    assert 'Traceback' not in result.stderr, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if 'interrupted' in line]
    assert lines == [f'export_subnet.py: interrupted: Ctrl-C (SIGINT), nothing was written '
                     f'to {out}'], result.stderr[-3000:]
    return result


@pytest.mark.slow
def test_ctrl_c_while_exporting_leaves_nothing(search_ckpt, tmp_path):
    out = tmp_path / 'export'
    _interrupted_export(search_ckpt, out)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_ctrl_c_while_overwriting_keeps_the_previous_export(search_ckpt, tmp_path):
    out = tmp_path / 'export'
    # the previous export, in this process (the interrupted one is the tool's own process)
    from sidt_mmdet.cli import export_subnet as export_tool

    assert export_tool.main([str(SEARCH_CFG), str(search_ckpt), '--keep-ratio', '0.6',
                             '-o', str(out)]) == 0
    before = _files(out)
    _interrupted_export(search_ckpt, out, '--overwrite')
    assert _files(out) == before
    assert [p.name for p in tmp_path.iterdir()] == ['export']
