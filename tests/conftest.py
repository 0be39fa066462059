"""Shared fixtures: generated data sets and one real (tiny) Runner training on CPU."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from helpers import REPO

from sidt_mmdet.datasets.generation import make_toy_cifar100, make_toy_coco

TOY_DETECTOR_CFG = REPO / 'configs/toy/retinanet_r18-tiny_fpn_300it_toy-coco.py'
TOY_COCO_SIZES = dict(num_train=12, num_val=6, img_size=128)
TOY_CIFAR_SIZES = dict(num_train=1000, num_test=300)
TRAIN_ITERS = 2


class Figures:
    """Counts of the reliability tests (bad-input cases, fuzz examples, kills survived),
    written as JSON to ``$SIDT_RELIABILITY_FIGURES`` when the session ends."""

    def __init__(self):
        self.counts: Counter[str] = Counter()

    def add(self, name: str, n: int = 1) -> None:
        self.counts[name] += n


_FIGURES = Figures()


@pytest.fixture(scope='session')
def figures() -> Figures:
    return _FIGURES


def pytest_sessionfinish(session, exitstatus):
    out = os.environ.get('SIDT_RELIABILITY_FIGURES')
    if out and _FIGURES.counts:
        with open(out, 'w', encoding='utf-8') as f:
            json.dump(dict(sorted(_FIGURES.counts.items()), pytest_exit_status=int(exitstatus),
                           failed=session.testsfailed), f, indent=1)
            f.write('\n')


@pytest.fixture
def one_torch_thread():
    """Tiny matmuls and decompositions stall on extra OpenMP threads on a busy 2-core machine;
    use with ``pytestmark = pytest.mark.usefixtures('one_torch_thread')``."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _quiet(_: str) -> None:
    pass


@pytest.fixture(scope='session')
def repo() -> Path:
    return REPO


@pytest.fixture(scope='session')
def toy_coco_dir(tmp_path_factory) -> Path:
    return Path(make_toy_coco(str(tmp_path_factory.mktemp('data') / 'toy_coco'),
                              **TOY_COCO_SIZES, progress=_quiet))


@pytest.fixture(scope='session')
def toy_cifar_dir(tmp_path_factory) -> Path:
    return Path(make_toy_cifar100(str(tmp_path_factory.mktemp('data') / 'toy_cifar100'),
                                  **TOY_CIFAR_SIZES, progress=_quiet))


def toy_coco_cfg_options(data_root: Path, max_iters: int = TRAIN_ITERS) -> list[str]:
    """``--cfg-options`` pointing the toy detector config at ``data_root``, short schedule."""
    ann = f'{data_root}/annotations/instances_val2017.json'
    return [
        '--cfg-options',
        f'train_dataloader.dataset.data_root={data_root}/',
        f'val_dataloader.dataset.data_root={data_root}/',
        f'test_dataloader.dataset.data_root={data_root}/',
        f'val_evaluator.ann_file={ann}',
        f'test_evaluator.ann_file={ann}',
        f'train_cfg.max_iters={max_iters}',
        f'train_cfg.val_interval={max_iters}',
        'train_dataloader.batch_size=2',
        f'default_hooks.checkpoint.interval={TRAIN_ITERS}',
        'default_hooks.logger.interval=1',
        # after a few iterations no score passes 0.05 yet; keep every box so that
        # CocoMetric has detections to score and prints its metrics
        'model.test_cfg.score_thr=0.0',
    ]


def run_command(args: list[str], cwd: Path = REPO, timeout: float = 300,
                env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    """Run a command with the test's python first on PATH; fail with its output if it fails."""
    full_env = {**os.environ, 'PATH': f'{Path(sys.executable).parent}:{os.environ["PATH"]}',
                'PYTHON': sys.executable, 'OMP_NUM_THREADS': '1', **(env or {})}
    result = subprocess.run(args, cwd=cwd, env=full_env, capture_output=True, text=True,
                            timeout=timeout, stdin=subprocess.DEVNULL)
    if check and result.returncode != 0:
        pytest.fail(f'{" ".join(map(str, args))} exited {result.returncode}\n'
                    f'--- stdout (tail) ---\n{result.stdout[-4000:]}\n'
                    f'--- stderr (tail) ---\n{result.stderr[-4000:]}')
    return result


def cpu_dist_env() -> dict[str, str]:
    """Environment for a 2-process torchrun on CPU: a free port, and no GPU even where one
    exists (two ranks on one GPU is not what these tests check)."""
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = str(s.getsockname()[1])
    return {'PORT': port, 'CUDA_VISIBLE_DEVICES': ''}


@pytest.fixture(scope='session')
def toy_train_run(tmp_path_factory, toy_coco_dir) -> Path:
    """Work dir of a real training: ``tools/dist_train.sh CFG 2`` on CPU (gloo), TRAIN_ITERS
    iterations and a validation at the end. One run serves every checkpoint test."""
    work_dir = tmp_path_factory.mktemp('toy_train')
    run_command(['bash', 'tools/dist_train.sh', str(TOY_DETECTOR_CFG), '2', '--work-dir',
                 str(work_dir), *toy_coco_cfg_options(toy_coco_dir)],
                env=cpu_dist_env())
    return work_dir


@pytest.fixture(scope='session')
def runner_checkpoint(toy_train_run) -> Path:
    ckpt = toy_train_run / f'iter_{TRAIN_ITERS}.pth'
    assert ckpt.is_file(), sorted(p.name for p in toy_train_run.iterdir())
    return ckpt
