"""Helpers shared by the tests: the repository root, the toy data sizes, running a command
with the test's interpreter; perturbed weights, random masks and hard-masked subnets for the
backbone tests. (Fixtures are in conftest.py.)"""
from __future__ import annotations

import fcntl
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

from sidt_mmdet.models import SIDTViT, Subnet
from sidt_mmdet.models.slicing import slice_vit_state_dict

REPO = Path(__file__).resolve().parent.parent
TOY_DETECTOR_CFG = REPO / 'configs/toy/sidt-dense_retinanet_r18-tiny_fpn_300it_toy-coco.py'
TOY_COCO_SIZES = dict(num_train=12, num_val=6, img_size=128)
TOY_CIFAR_SIZES = dict(num_train=1000, num_test=300)
TRAIN_ITERS = 2


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
    """Run a command with the test's python first on PATH and no GPU; fail with its output if
    it fails."""
    full_env = {**os.environ, 'PATH': f'{Path(sys.executable).parent}:{os.environ["PATH"]}',
                'PYTHON': sys.executable, 'OMP_NUM_THREADS': '1', 'CUDA_VISIBLE_DEVICES': '',
                **(env or {})}
    result = subprocess.run(args, cwd=cwd, env=full_env, capture_output=True, text=True,
                            timeout=timeout, stdin=subprocess.DEVNULL)
    if check and result.returncode != 0:
        pytest.fail(f'{" ".join(map(str, args))} exited {result.returncode}\n'
                    f'--- stdout (tail) ---\n{result.stdout[-4000:]}\n'
                    f'--- stderr (tail) ---\n{result.stderr[-4000:]}')
    return result


# Ports for torchrun's rendezvous: below Linux's ephemeral range (32768-60999), so that no
# connection of another process (gloo opens many) is given one by the OS, and each held by a
# file lock for the life of the process that took it, so that two xdist workers, or two test
# sessions on one machine, never pick the same one.
PORT_RANGE = range(20000, 32000)
_PORT_LOCK_DIR = Path(tempfile.gettempdir()) / 'sidt-mmdet-ports'
_held_ports: list = []  # the open lock files: closing one would release its port


def free_port() -> int:
    """A TCP port nobody else uses: not locked by another test process, and bindable now.
    Every call gives a new port (none is reused while its TIME_WAIT may last)."""
    _PORT_LOCK_DIR.mkdir(exist_ok=True)
    worker = os.environ.get('PYTEST_XDIST_WORKER', 'gw0')
    start = (os.getpid() * 7 + int(worker.lstrip('gw') or 0) * 997) % len(PORT_RANGE)
    for i in range(len(PORT_RANGE)):
        port = PORT_RANGE[(start + i) % len(PORT_RANGE)]
        lock = open(_PORT_LOCK_DIR / f'{port}.lock', 'a')  # held open while the port is ours
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            lock.close()
            continue
        with socket.socket() as s:
            try:
                s.bind(('127.0.0.1', port))
            except OSError:
                lock.close()
                continue
        _held_ports.append(lock)
        return port
    raise RuntimeError(f'no free port in {PORT_RANGE}')


def cpu_dist_env() -> dict[str, str]:
    """Environment for a 2-process torchrun on CPU: a free port, and no GPU even where one
    exists (two ranks on one GPU is not what these tests check)."""
    return {'PORT': str(free_port()), 'CUDA_VISIBLE_DEVICES': ''}


def perturb_(module, seed=0, std=0.05):
    """Move every parameter off its init (LN 1/0, zero biases, zero rel-pos) so a
    dropped bias or a wrong table index cannot hide."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g) * std)
    return module


def random_masks_(backbone, seed=0, zero_frac=0.3):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, m in backbone.mask_parameters().items():
            m.copy_(torch.rand(m.shape, generator=g) + 0.5)
            m.mul_((torch.rand(m.shape, generator=g) > zero_frac).float())
    return backbone


def subnet_from_masks(backbone):
    """Keep exactly the nonzero mask entries (the hard-masked supernet)."""
    sub = Subnet.dense(backbone.embed_dims_dense, backbone.num_layers, backbone.num_heads,
                       backbone.mlp_hidden)
    blocks = []
    for blk in backbone.blocks:
        qk_m, v_m = blk.attn.masks()
        mlp_m = blk.mlp.hidden_mask
        qk = [torch.nonzero(qk_m[h]).flatten().tolist() for h in range(qk_m.shape[0])]
        v = [torch.nonzero(v_m[h]).flatten().tolist() for h in range(v_m.shape[0])]
        if not any(v):
            v[0] = [0]
        mlp = torch.nonzero(mlp_m).flatten().tolist() or [0]
        blocks.append(dict(qk=qk, v=v, mlp=mlp))
    embed = None
    if backbone.embed_mask is not None:
        embed = torch.nonzero(backbone.embed_mask).flatten().tolist()
    return Subnet(sub.embed_dims, sub.num_layers, sub.num_heads, sub.mlp_hidden,
                  blocks=blocks, embed=embed)


def hard_mask_(backbone, subnet):
    """Zero every mask entry the subnet drops, so supernet == pruned model."""
    with torch.no_grad():
        for blk, b in zip(backbone.blocks, subnet.blocks):
            qk_m, v_m = blk.attn.masks()
            keep_qk = torch.zeros_like(qk_m)
            keep_v = torch.zeros_like(v_m)
            for h in range(qk_m.shape[0]):
                keep_qk[h, b['qk'][h]] = 1
                keep_v[h, b['v'][h]] = 1
            if qk_m is v_m:
                qk_m.mul_(keep_qk * keep_v)
            else:
                qk_m.mul_(keep_qk)
                v_m.mul_(keep_v)
            keep = torch.zeros_like(blk.mlp.hidden_mask)
            keep[b['mlp']] = 1
            blk.mlp.hidden_mask.mul_(keep)


def build_pruned(search, subnet, **kw):
    pruned = SIDTViT(mode='pruned', subnet=subnet, **kw)
    missing, unexpected = pruned.load_state_dict(
        slice_vit_state_dict(search.state_dict(), subnet), strict=True)
    assert not missing and not unexpected
    return pruned
