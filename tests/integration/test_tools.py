"""The stock mmdet tools and ours run on Runner checkpoints, on CPU, single and distributed."""
from __future__ import annotations

import json
import pickle
import re
import sys
from pathlib import Path

import mmdet
import pytest
from helpers import (
    TOY_COCO_SIZES,
    TOY_DETECTOR_CFG,
    TRAIN_ITERS,
    cpu_dist_env,
    run_command,
    toy_coco_cfg_options,
)
from mmengine.config import Config

from sidt_mmdet.cli.runner_tools import build_test_parser, build_train_parser
from sidt_mmdet.utils.launch import DIST_BACKEND_ENV, select_dist_backend

MMDET_TOOLS = Path(mmdet.__file__).parent / '.mim' / 'tools'
COCO_BBOX_MAP = re.compile(r'coco/bbox_mAP: -?\d+\.\d+')


def _flags(script: Path) -> set[str]:
    return set(re.findall(r"add_argument\(\s*'(--[\w-]+)'", script.read_text()))


@pytest.mark.parametrize('tool', ['train.py', 'test.py'])
def test_our_tools_accept_every_mmdet_flag(tool):
    parser = {'train.py': build_train_parser, 'test.py': build_test_parser}[tool]()
    ours = set(parser._option_string_actions)  # what tools/<tool> parses
    missing = _flags(MMDET_TOOLS / tool) - ours
    assert not missing


@pytest.mark.slow
def test_stock_mmdet_test_py_evaluates_runner_checkpoint(runner_checkpoint, toy_coco_dir,
                                                         tmp_path):
    """mmdet's own tools/test.py: only custom_imports brings sidt_mmdet in."""
    result = run_command([sys.executable, str(MMDET_TOOLS / 'test.py'), str(TOY_DETECTOR_CFG),
                          str(runner_checkpoint), '--work-dir', str(tmp_path),
                          *toy_coco_cfg_options(toy_coco_dir)])
    output = result.stdout + result.stderr
    assert 'Load checkpoint from' in output
    assert COCO_BBOX_MAP.search(output), output[-3000:]


@pytest.mark.slow
def test_train_resume_continues_from_checkpoint(toy_train_run, toy_coco_dir, tmp_path):
    work_dir = tmp_path / 'resumed'
    work_dir.mkdir()
    ckpt = toy_train_run / f'iter_{TRAIN_ITERS}.pth'
    result = run_command([sys.executable, 'tools/train.py', str(TOY_DETECTOR_CFG),
                          '--work-dir', str(work_dir), '--resume', str(ckpt),
                          *toy_coco_cfg_options(toy_coco_dir, max_iters=2 * TRAIN_ITERS)])
    output = result.stdout + result.stderr
    assert f'resumed epoch: 0, iter: {TRAIN_ITERS}' in output
    assert f'Iter(train) [{2 * TRAIN_ITERS}/{2 * TRAIN_ITERS}]' in output
    assert (work_dir / f'iter_{2 * TRAIN_ITERS}.pth').is_file()


@pytest.mark.slow
def test_dist_train_ran_two_gloo_processes_on_cpu(toy_train_run):
    """The shared training fixture is ``tools/dist_train.sh CFG 2``: check how it ran."""
    log = next(toy_train_run.glob('*/*.log')).read_text()
    assert "dist_cfg: {'backend': 'gloo'}" in log
    assert 'Distributed training: True' in log and 'GPU number: 2' in log  # world size
    assert f'Iter(train) [{TRAIN_ITERS}/{TRAIN_ITERS}]' in log
    assert COCO_BBOX_MAP.search(log)


@pytest.mark.slow
def test_dist_test_on_cpu_dumps_and_evaluates(runner_checkpoint, toy_coco_dir, tmp_path):
    """tools/dist_test.sh CFG CKPT 2 (our test.py under torchrun, gloo) with --out."""
    predictions = tmp_path / 'predictions.pkl'
    result = run_command(['bash', 'tools/dist_test.sh', str(TOY_DETECTOR_CFG),
                          str(runner_checkpoint), '2', '--work-dir', str(tmp_path / 'work'),
                          '--out', str(predictions), *toy_coco_cfg_options(toy_coco_dir)],
                         env=cpu_dist_env())
    assert COCO_BBOX_MAP.search(result.stdout + result.stderr)
    with open(predictions, 'rb') as f:
        dumped = pickle.load(f)
    assert len(dumped) == TOY_COCO_SIZES['num_val']  # gathered from both ranks
    assert {'img_id', 'pred_instances'} <= set(dumped[0])


def test_dist_backend_selection(monkeypatch):
    cfg = Config(dict(launcher='pytorch', env_cfg=dict(dist_cfg=dict(backend='nccl'))))
    monkeypatch.setenv(DIST_BACKEND_ENV, 'gloo')
    assert select_dist_backend(cfg) == 'gloo' and cfg.env_cfg.dist_cfg.backend == 'gloo'

    monkeypatch.delenv(DIST_BACKEND_ENV)
    cfg = Config(dict(launcher='pytorch', env_cfg=dict(dist_cfg=dict(backend='gloo'))))
    assert select_dist_backend(cfg) == 'gloo'

    cfg = Config(dict(launcher='pytorch', env_cfg=dict(dist_cfg=dict(backend='nccl'))))
    monkeypatch.setattr('torch.cuda.is_available', lambda: False)
    assert select_dist_backend(cfg) == 'gloo'  # nccl cannot run without a GPU
    monkeypatch.setattr('torch.cuda.is_available', lambda: True)
    cfg = Config(dict(launcher='pytorch', env_cfg=dict(dist_cfg=dict(backend='nccl'))))
    assert select_dist_backend(cfg) == 'nccl'


@pytest.mark.slow
def test_import_sidt_mmdet_does_not_import_mmpretrain():
    """In a fresh interpreter, ``import sidt_mmdet`` registers our components and installs the
    loader without importing any mmpretrain module; the CIFAR-100 dataset module, the one
    mmpretrain dependency, does import it (so the probe sees mmpretrain when it is there).
    Catches an mmpretrain import creeping into ``import sidt_mmdet`` (every mmdet-only user
    would then need mmpretrain installed)."""
    code = ('import json, sys\n'
            'def loaded():\n'
            '    return sorted(m for m in sys.modules if m.split(".")[0] == "mmpretrain")\n'
            'import sidt_mmdet\n'
            'from mmdet.registry import MODELS\n'
            'first = dict(mmpretrain=loaded(), registered=MODELS.get("SIDTViT") is not None)\n'
            'import sidt_mmdet.datasets.toy_cifar100\n'
            'print(json.dumps(dict(first, after_cifar=len(loaded()))))\n')
    result = run_command([sys.executable, '-c', code])
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report['registered'] is True
    assert report['mmpretrain'] == []
    assert report['after_cifar'] > 0
