"""What tools/train.py and tools/test.py share: mmdet's flags, config set-up, the runner.

Distributed runs on CPU: mmengine takes the backend from ``env_cfg.dist_cfg.backend``
(mmdet's default runtime says ``nccl``); ``SIDT_DIST_BACKEND`` overrides it, and without a
GPU ``nccl`` falls back to ``gloo`` with a warning. mmengine's own initialisation calls
``torch.cuda.set_device`` and wraps the model with ``device_ids=[LOCAL_RANK]``, both of which
fail without a GPU, so on CPU the process group is created here first and the model wrapper
gets ``device_ids=None``.
"""
from __future__ import annotations

import argparse
import datetime
import os
import os.path as osp

import torch
import torch.distributed as torch_dist
from mmengine.config import Config, DictAction
from mmengine.logging import print_log
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

__all__ = ['DIST_BACKEND_ENV', 'FormattedOnceConfig', 'add_runner_args', 'build_runner',
           'close_process_group', 'load_tool_config', 'read_config', 'select_dist_backend']

DIST_BACKEND_ENV = 'SIDT_DIST_BACKEND'


class FormattedOnceConfig(Config):
    """mmengine's ``Config`` with its ``pretty_text`` (formatted by yapf) computed once per
    content. A Runner formats its config for the log, the copy in its work dir, the message
    hub and the meta of every checkpoint, about half a second of yapf each for a detector
    config on one CPU core; the text is ``Config``'s own, so what is written is unchanged.
    Subclass instances survive the Runner's deep copy (``Config.__deepcopy__`` keeps the
    class)."""

    _last: tuple[str, str] | None = None  # (content, its formatted text), of any instance

    @property
    def pretty_text(self) -> str:
        content = repr(self.to_dict())
        last = FormattedOnceConfig._last
        if last is None or last[0] != content:
            last = FormattedOnceConfig._last = (content, super().pretty_text)
        return last[1]


def read_config(path: str) -> FormattedOnceConfig:
    """``Config.fromfile(path)`` as a :class:`FormattedOnceConfig`."""
    cfg = Config.fromfile(path)
    return FormattedOnceConfig(cfg._cfg_dict, cfg_text=cfg.text, filename=cfg.filename,
                               env_variables=cfg.env_variables)


def add_runner_args(parser: argparse.ArgumentParser) -> None:
    """The flags mmdet's train.py and test.py share, spelled as mmdet spells them."""
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override some settings in the used config, the key-value pair in xxx=yyy '
        'format will be merged into config file. If the value to be overwritten is a list, '
        'it should be like key="[a,b]" or key=a,b It also allows nested list/tuple values, '
        'e.g. key="[(a,b),(c,d)]" Note that the quotation marks are necessary and that no '
        'white space is allowed.')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher')
    # torch.distributed.launch passes --local-rank (torch >= 2.0) or --local_rank.
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)


def select_dist_backend(cfg: Config) -> str:
    """Set and return ``cfg.env_cfg.dist_cfg.backend``: env var > config > CPU fallback."""
    env_cfg = cfg.setdefault('env_cfg', {})
    dist_cfg = env_cfg.setdefault('dist_cfg', {})
    backend = os.environ.get(DIST_BACKEND_ENV) or dist_cfg.get('backend', 'nccl')
    if (backend == 'nccl' and cfg.get('launcher', 'none') != 'none'
            and not torch.cuda.is_available() and not os.environ.get(DIST_BACKEND_ENV)):
        print_log('no GPU: distributed backend nccl -> gloo (set SIDT_DIST_BACKEND to choose)',
                  logger='current')
        backend = 'gloo'
    dist_cfg['backend'] = backend
    return backend


def load_tool_config(args: argparse.Namespace) -> Config:
    """Config from ``args.config`` with mmdet's CLI precedence (flags > file > defaults)."""
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    cfg = read_config(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])
    select_dist_backend(cfg)
    return cfg


def _prepare_cpu_distributed(cfg: Config) -> None:
    if cfg.launcher != 'pytorch' or torch.cuda.is_available() or torch_dist.is_initialized():
        return
    # mmengine would call torch.cuda.set_device(LOCAL_RANK) here; torchrun set the env://
    # variables, so creating the group ourselves makes mmengine skip its own init.
    dist_cfg = dict(cfg.env_cfg.dist_cfg)
    if isinstance(dist_cfg.get('timeout'), int | float):  # seconds, as mmengine takes it
        dist_cfg['timeout'] = datetime.timedelta(seconds=dist_cfg['timeout'])
    torch_dist.init_process_group(**dist_cfg)
    # mmengine's default wrapper, but without device_ids=[LOCAL_RANK]: DDP refuses device
    # ids for a CPU module.
    wrapper = cfg.get('model_wrapper_cfg') or dict(
        type='MMDistributedDataParallel', broadcast_buffers=False,
        find_unused_parameters=cfg.get('find_unused_parameters', False))
    wrapper.setdefault('device_ids', None)
    cfg.model_wrapper_cfg = wrapper


def build_runner(cfg: Config) -> Runner:
    """``Runner.from_cfg`` (or the config's ``runner_type``), ready for CPU or GPU."""
    _prepare_cpu_distributed(cfg)
    if 'runner_type' in cfg:
        return RUNNERS.build(cfg)
    return Runner.from_cfg(cfg)


def close_process_group() -> None:
    """Destroy the default process group, if any, before the interpreter exits.

    mmengine leaves it to interpreter shutdown, where gloo's background threads can still be
    joinable when the group is destructed: the process then aborts (``terminate called
    without an active exception``, SIGABRT) after a run that finished, and torchrun reports
    the whole job as failed.
    """
    if torch_dist.is_available() and torch_dist.is_initialized():
        torch_dist.destroy_process_group()
