"""The GPU check away from a GPU: the real tool refuses ``--preset gpu`` in one line, and the
offline installer of tools/deploy/ works on a stand-in for a lent GPU machine.

The stand-in is a fresh venv that sees only torch, torchvision, timm, numpy and what they
require (linked from this venv's site-packages; no setuptools, as on Python 3.12), so no
mmengine, mmdet, mmcv or OpenCV; the installer puts the wheel folder's wheels in with
``--no-index`` and runs the ``gpu-tiny`` preset, the gpu preset's code path on a CPU."""
from __future__ import annotations

import importlib.metadata as md
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO, run_command
from packaging.requirements import Requirement

WHEELS = REPO / 'wheels' / 'gpu'
TOOL = 'tools/analysis/benchmark_latency.py'
GPU_MACHINE = ('torch', 'torchvision', 'timm', 'numpy')


def _refusal(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 1, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr  # no traceback, no log
    assert lines[0].startswith('benchmark_latency.py: error: --preset gpu times CUDA only and '
                               'torch sees no CUDA device here (torch ')
    assert result.stdout == ''


@pytest.mark.slow
def test_gpu_preset_refuses_without_cuda_in_one_line(tmp_path):
    result = run_command([sys.executable, TOOL, '--preset', 'gpu', '--out-dir',
                          str(tmp_path / 'out')], check=False)
    _refusal(result)
    assert not (tmp_path / 'out').exists()


def _requirement_closure(roots) -> list[md.Distribution]:
    seen: dict[str, md.Distribution] = {}
    todo = list(roots)
    while todo:
        name = re.sub(r'[-_.]+', '-', todo.pop()).lower()
        if name in seen or name == 'setuptools':  # not in a Python 3.12 venv
            continue
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:  # an optional one this venv does not have
            continue
        seen[name] = dist
        for line in dist.requires or []:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate({'extra': ''}):
                todo.append(req.name)
    return list(seen.values())


def _gpu_machine_venv(root: Path) -> Path:
    """A fresh venv whose only packages beside pip are links to the GPU machine's set."""
    base = root / 'base'
    base.mkdir()
    for dist in _requirement_closure(GPU_MACHINE):
        for top in {f.parts[0] for f in dist.files or [] if f.parts[0] not in ('..', 'bin')}:
            src = Path(dist.locate_file(top))
            if src.exists() and not (base / top).exists():
                (base / top).symlink_to(src)
    venv = root / 'venv'
    subprocess.run([sys._base_executable, '-m', 'venv', str(venv)], check=True,
                   capture_output=True)
    site = Path(subprocess.run([str(venv / 'bin' / 'python'), '-c',
                                'import sysconfig; print(sysconfig.get_path("purelib"))'],
                               check=True, capture_output=True, text=True).stdout.strip())
    for p in site.iterdir():
        if p.name.startswith(('setuptools', 'pkg_resources', '_distutils_hack', 'distutils-')):
            subprocess.run(['rm', '-rf', str(p)], check=True)
    (site / 'gpu_machine.pth').write_text(f'{base}\n')
    return venv / 'bin' / 'python'


@pytest.mark.slow
@pytest.mark.skipif(not any(WHEELS.glob('mmengine-*.whl')),
                    reason='the wheel folder is not built: bash tools/deploy/build_gpu_wheels.sh')
def test_installer_on_a_stand_in_gpu_machine(tmp_path):
    wheels = sorted(p.name for p in WHEELS.glob('*.whl'))
    assert all(w.endswith(('-py3-none-any.whl', '-py2.py3-none-any.whl')) for w in wheels)
    python = _gpu_machine_venv(tmp_path)
    absent = ('mmengine', 'mmdet', 'mmcv', 'cv2', 'matplotlib', 'pkg_resources')
    probe = ('import importlib.util as u, json, sys; print(json.dumps([n for n in sys.argv[1:] '
             'if u.find_spec(n)]))')
    env = {'PYTHON': str(python), 'SITE': str(tmp_path / 'site'), 'PYTHONPATH': ''}
    found = run_command([str(python), '-c', probe, 'torch', 'timm', *absent], env=env)
    assert json.loads(found.stdout) == ['torch', 'timm']  # the stand-in is what we mean
    out = tmp_path / 'out'
    run_command(['bash', 'tools/deploy/install_gpu_wheels.sh', str(WHEELS), '--', '--preset',
                 'gpu-tiny', '--threads', '1', '--out-dir', str(out)], env=env, timeout=240)
    study = json.loads((out / 'latency.json').read_text())
    assert study['meta']['preset'] == 'gpu-tiny' and len(study['groups']) == 3
    assert [r['target'] for r in study['budget_check']['rows']] == [0.95, 0.8, 0.6]
    assert not (out / 'latency.png').exists()
    installed = {p.name.split('-')[0] for p in (tmp_path / 'site').glob('*.dist-info')}
    assert {'mmengine', 'rich', 'yapf'} <= installed and not {'mmdet', 'mmcv'} & installed
    # what the stand-in imports: the backbone path, and a clear error for the rest
    run_env = {**env, 'PYTHONPATH': f'{tmp_path / "site"}{os.pathsep}{REPO}'}
    check = ('import sys, sidt_mmdet, sidt_mmdet.models as m; from sidt_mmdet.utils import stack\n'
             'assert not stack.DETECTION_STACK and "mmdet" not in sys.modules\n'
             'try:\n    m.SIDTSimpleFPN\nexcept ImportError as e:\n    print(e)')
    shown = run_command([str(python), '-c', check], env=run_env)
    assert 'sidt_mmdet.models.SIDTSimpleFPN needs mmdet' in shown.stdout
    _refusal(run_command([str(python), TOOL, '--preset', 'gpu'], env=run_env, check=False))
