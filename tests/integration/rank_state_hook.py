"""A test-only mmengine hook: every rank writes its whole training state to a file.

Used by test_distributed_sync.py through ``custom_imports`` (this directory is put on the
subprocesses' PYTHONPATH). Each file holds the model's state dict, the optimizer's state
dict with the parameter name behind every index, the schedulers' states, the iteration and
the image ids this rank trained on.
"""
from __future__ import annotations

import os

import torch
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS

__all__ = ['RankStateDumpHook']


@HOOKS.register_module()
class RankStateDumpHook(Hook):
    """Write ``{tag}_rank{rank}.pth`` to ``out_dir``: ``start`` before the first iteration
    (after ``--resume`` has restored the state) and ``iter{N}`` after iteration N."""

    priority = 'LOWEST'  # after the scheduler step and the checkpoint of that iteration

    def __init__(self, out_dir: str, iters=(), at_start: bool = False):
        self.out_dir = out_dir
        self.iters = set(iters)
        self.at_start = at_start
        self.seen: list[int] = []

    def before_train(self, runner) -> None:
        if self.at_start:
            self._dump(runner, 'start')

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        self.seen.extend(int(s.metainfo['img_id']) for s in data_batch['data_samples'])
        if runner.iter + 1 in self.iters:
            self._dump(runner, f'iter{runner.iter + 1}')

    def _dump(self, runner, tag: str) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        optimizer = runner.optim_wrapper.optimizer
        names = {id(p): n for n, p in model.named_parameters()}
        state = dict(
            model=model.state_dict(),
            optimizer=optimizer.state_dict(),
            param_names=[[names[id(p)] for p in g['params']] for g in optimizer.param_groups],
            schedulers=[s.state_dict() for s in runner.param_schedulers],
            iter=runner.iter, seen=list(self.seen))
        os.makedirs(self.out_dir, exist_ok=True)
        path = os.path.join(self.out_dir, f'{tag}_rank{runner.rank}.pth')
        torch.save(state, path + '.tmp')
        os.replace(path + '.tmp', path)
