"""The one stage runner: dense -> search -> export -> retrain -> test, for detection and
classification.

Every stage runs the command a user runs (``tools/train.py``, ``tools/export_subnet.py``,
``tools/test.py`` of this checkout; relative config paths are read from it too) as a
subprocess, so a chain doubles as a walk-through and a stage's full log stays in
``WORK/logs/``; the console shows the stage banners and the lines worth
seeing (epoch/iteration lines, export messages, errors). A stage that finished writes
``WORK/.stages/<stage>.json`` with its outputs; running the chain again reuses it, so an
interrupted chain resumes where it stopped (a stage whose command changed runs again;
``fresh=True`` starts over).

Stage lengths: :func:`schedule_options` is the one rule that shortens (or stretches) a
schedule, for iteration- and epoch-based configs alike.
"""
from __future__ import annotations

import glob
import json
import os
import os.path as osp
import re
import shutil
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

from ..utils.cli import ToolError
from ..utils.fileio import write_json_atomic

__all__ = ['TASKS', 'STAGES', 'METRIC_NAMES', 'StageError', 'ChainSpec', 'ChainResult',
           'schedule_options', 'data_options', 'read_metrics', 'ensure_data', 'run_chain']

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TASKS = ('detection', 'classification')
STAGES = ('dense', 'dense_test', 'search', 'export', 'pruned_test', 'retrain', 'retrain_test')
_METRIC_PREFIX = {'detection': 'coco/', 'classification': 'accuracy/'}
# ChainResult.metrics keys of the test stages
METRIC_NAMES = {'dense_test': 'dense', 'pruned_test': 'pruned_before_retrain',
                'retrain_test': 'pruned'}
# Console lines worth showing from a stage (its full output goes to its log file).
_SHOW = re.compile(r'(Epoch|Iter)\((train|val|test)\)|\[export\]|Error|error:|Traceback')
_MMENGINE_PREFIX = re.compile(r'^\S+ \S+ - mmengine - \w+ - ')


class StageError(ToolError):
    """A stage's command failed; the message holds the command and its output tail."""


@dataclass
class ChainSpec:
    """What a chain runs.

    ``export`` are flags of ``tools/export_subnet.py`` that replace the search config's
    own selection (its ``sidt_export`` section; empty, the default: that selection);
    ``lengths`` overrides the ``dense``/``search``/``retrain`` schedule lengths
    (iterations or epochs, whatever the config counts); ``extra_options`` are added to
    every train/test ``--cfg-options``; ``skip`` leaves test stages out (``pruned_test``
    evaluates the exported model before retraining); ``stop_after`` ends the chain early
    (e.g. ``'search'``).
    """

    task: str
    dense_cfg: str
    search_cfg: str
    retrain_cfg: str
    data_root: str
    export: list[str] = field(default_factory=list)
    lengths: dict[str, int] = field(default_factory=dict)
    extra_options: list[str] = field(default_factory=list)
    skip: tuple[str, ...] = ()
    stop_after: str | None = None
    python: str = sys.executable

    def __post_init__(self):
        if self.task not in TASKS:
            raise ToolError(f'task must be one of {", ".join(TASKS)}, got {self.task!r}')
        bad = sorted(set(self.lengths) - {'dense', 'search', 'retrain'})
        if bad or any(not isinstance(n, int) or n < 1 for n in self.lengths.values()):
            raise ToolError(f'lengths: expected positive integers for dense/search/retrain, '
                            f'got {self.lengths}')
        tests = ('dense_test', 'pruned_test', 'retrain_test')
        if any(s not in tests for s in self.skip):
            raise ToolError(f'skip: only test stages ({", ".join(tests)}) may be left out, '
                            f'got {self.skip}')
        if self.stop_after is not None and self.stop_after not in STAGES:
            raise ToolError(f'stop_after must be one of {", ".join(STAGES)}, got '
                            f'{self.stop_after!r}')


@dataclass
class ChainResult:
    """Paths and metrics of a finished chain; ``metrics`` has ``dense``,
    ``pruned_before_retrain`` and ``pruned`` (retrained), for the test stages that ran."""

    work_dir: str
    dirs: dict[str, str]
    dense_ckpt: str | None = None
    search_ckpt: str | None = None
    subnet: str | None = None
    pruned_ckpt: str | None = None
    retrain_ckpt: str | None = None
    metrics: dict[str, dict] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def _log(msg: str) -> None:
    print(f'[chain {time.strftime("%H:%M:%S")}] {msg}', flush=True)


# --------------------------------------------------------------------------- schedules
def schedule_options(config: str, length: int) -> list[str]:
    """``--cfg-options`` that train ``config`` for ``length`` iterations or epochs.

    The rule: the loop ends at ``length`` (``max_iters`` for an iteration-based loop,
    ``max_epochs`` otherwise) and validates and checkpoints there; every parameter
    scheduler that ended with the old schedule and begins before ``length`` (the decay to
    the end) now ends at ``length``; shorter ones (a warm-up) are left as they are.
    """
    from mmengine.config import Config

    cfg = Config.fromfile(osp.join(REPO, config))  # relative paths: from the checkout
    train_cfg = cfg.get('train_cfg') or {}
    by_iter = 'max_iters' in train_cfg
    key = 'max_iters' if by_iter else 'max_epochs'
    if key not in train_cfg:
        raise ToolError(f'{config}: train_cfg has neither max_iters nor max_epochs')
    old = train_cfg[key]
    schedulers = cfg.get('param_scheduler') or []
    if isinstance(schedulers, dict):
        schedulers = [schedulers]
    options = [f'train_cfg.{key}={length}', f'train_cfg.val_interval={length}',
               f'default_hooks.checkpoint.interval={length}']
    for i, s in enumerate(schedulers):
        if s.get('end', old) >= old and s.get('begin', 0) < length:
            options.append(f'param_scheduler.{i}.end={length}')
    return options


def data_root_options(task: str, data_root: str) -> dict[str, str]:
    """The config options pointing a toy config's loaders (and, for detection, its COCO
    evaluators) at ``data_root``: what the chain, the studies and the demos all merge."""
    root = data_root.rstrip('/') + '/'
    opts = {f'{loader}.dataset.data_root': root
            for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader')}
    if task == 'detection':
        ann = f'{root}annotations/instances_val2017.json'
        opts.update({'val_evaluator.ann_file': ann, 'test_evaluator.ann_file': ann})
    return opts


def data_options(task: str, data_root: str) -> list[str]:
    """:func:`data_root_options` as ``--cfg-options`` arguments."""
    return [f'{k}={v}' for k, v in data_root_options(task, data_root).items()]


def _generated_coco_sizes(data_root: str) -> dict[str, int] | None:
    """``num_train``/``num_val`` of a toy COCO set this project generated in ``data_root``;
    None for any other data (a real or user-made set is never regenerated)."""
    sizes = {}
    for key, split in (('num_train', 'train2017'), ('num_val', 'val2017')):
        path = osp.join(data_root, 'annotations', f'instances_{split}.json')
        try:
            with open(path, encoding='utf-8') as f:
                coco = json.load(f)
        except (OSError, ValueError):
            return None
        info = coco.get('info') if isinstance(coco, dict) else None
        if not (isinstance(info, dict)
                and str(info.get('description', '')).startswith('sidt-mmdet toy COCO')):
            return None
        sizes[key] = len(coco.get('images', []))
    return sizes


def ensure_data(task: str, data_root: str, **sizes) -> None:
    """Generate the toy set of ``task`` in ``data_root`` unless it is there.

    A toy COCO set generated earlier with other ``num_train``/``num_val`` than asked for is
    generated again (atomically); data that this project did not generate is used as it is.
    """
    if task == 'detection':
        there = osp.isfile(osp.join(data_root, 'annotations', 'instances_val2017.json'))
        if there:
            found = _generated_coco_sizes(data_root)
            wanted = {k: v for k, v in sizes.items() if k in ('num_train', 'num_val')}
            if found is None or all(found[k] == v for k, v in wanted.items()):
                return
            _log(f'the toy COCO set in {data_root} has {found}, {wanted} were asked for: '
                 'generating it again')
        else:
            _log(f'generating the toy COCO set in {data_root}')
        from ..datasets.generation import make_toy_coco
        make_toy_coco(data_root, overwrite=there, **sizes)
    else:
        if osp.isfile(osp.join(data_root, 'cifar-100-python', 'meta')):
            return
        from ..datasets.generation import make_toy_cifar100
        _log(f'generating the toy CIFAR-100 set in {data_root}')
        make_toy_cifar100(data_root, **sizes)


def read_metrics(test_work_dir: str, task: str) -> dict[str, float]:
    """The task's metrics from the newest run tools/test.py logged under ``test_work_dir``
    (mmengine's ``<work_dir>/<timestamp>/<timestamp>.json``)."""
    prefix = _METRIC_PREFIX[task]
    for path in sorted(glob.glob(osp.join(test_work_dir, '*', '*.json')), reverse=True):
        with open(path, encoding='utf-8') as f:
            rows = [json.loads(line) for line in f if line.strip()]
        for row in reversed(rows):
            found = {k: float(v) for k, v in row.items() if k.startswith(prefix)}
            if found:
                return found
    raise StageError(f'no {prefix}* metrics under {test_work_dir}/<timestamp>/*.json')


def _last_checkpoint(work_dir: str) -> str:
    path = osp.join(work_dir, 'last_checkpoint')
    if not osp.isfile(path):
        raise StageError(f'{path} missing: the training stage wrote no checkpoint')
    with open(path, encoding='utf-8') as f:
        return f.read().strip()


# ------------------------------------------------------------------------------ stages
def _run(title: str, args: list[str], log_path: str) -> None:
    """Run one tool, show its progress lines, keep its full output in ``log_path``."""
    os.makedirs(osp.dirname(log_path), exist_ok=True)
    env = dict(os.environ)
    env.setdefault('OMP_NUM_THREADS', '1')
    env['PYTHONUNBUFFERED'] = '1'
    tail: deque[str] = deque(maxlen=40)
    _log('$ ' + ' '.join(args))
    with open(log_path, 'w', encoding='utf-8') as out, subprocess.Popen(
            args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, text=True, bufsize=1) as proc:
        for line in proc.stdout:
            out.write(line)
            tail.append(line)
            if _SHOW.search(line):
                print('    ' + _MMENGINE_PREFIX.sub('', line.rstrip())[:260], flush=True)
        code = proc.wait()
    if code != 0:
        raise StageError(f'{title}: `{" ".join(args)}` exited {code}; full output in '
                         f'{log_path}; last lines:\n' + ''.join(tail))


class _Stages:
    """Runs the stages of one chain in order, reusing those that finished before."""

    def __init__(self, names: Sequence[str], work_dir: str, log: Callable[[str], None]):
        self.names, self.work_dir, self.log = list(names), work_dir, log
        self.ran = False  # once a stage runs, the later ones depend on new outputs

    def marker(self, name: str) -> str:
        return osp.join(self.work_dir, '.stages', f'{name}.json')

    def __call__(self, name: str, title: str, args: list[str],
                 outputs: Callable[[], dict]) -> dict:
        step = f'{self.names.index(name) + 1}/{len(self.names)}'
        marker = self.marker(name)
        if osp.isfile(marker) and not self.ran:
            with open(marker, encoding='utf-8') as f:
                done = json.load(f)
            if done.get('command') == args:  # same command: its outputs still stand
                self.log(f'stage {step} {title}: finished before, reusing its outputs')
                return done
        self.log(f'stage {step} {title}')
        self.ran = True
        start = time.perf_counter()
        _run(title, args, osp.join(self.work_dir, 'logs', f'{step.split("/")[0]}_{name}.log'))
        done = dict(outputs(), command=args)
        write_json_atomic(marker, done)
        self.log(f'  done in {time.perf_counter() - start:.0f} s')
        return done


def run_chain(spec: ChainSpec, work_dir: str, *, fresh: bool = False,
              log: Callable[[str], None] = _log) -> ChainResult:
    """Run ``spec``'s stages in ``work_dir``; return the paths and the test metrics.

    Raises:
        StageError: a stage failed (its command, exit code and last output lines).
    """
    start = time.perf_counter()
    work_dir = osp.abspath(work_dir)
    if fresh and osp.isdir(work_dir):
        shutil.rmtree(work_dir)
    os.makedirs(work_dir, exist_ok=True)
    names = [s for s in STAGES if s not in spec.skip]
    if spec.stop_after in names:
        names = names[:names.index(spec.stop_after) + 1]
    run = _Stages(names, work_dir, log)
    dirs = {name: osp.join(work_dir, name) for name in names}
    data = data_options(spec.task, osp.abspath(spec.data_root)) + list(spec.extra_options)
    py = spec.python
    result = ChainResult(work_dir=work_dir, dirs=dirs)

    def length(stage: str, config: str) -> list[str]:
        n = spec.lengths.get(stage)
        return [] if n is None else schedule_options(config, n)

    def train(stage: str, config: str, extra: list[str]) -> str:
        done = run(stage, f'{stage}: train {osp.relpath(config, REPO)}',
                   [py, 'tools/train.py', config, '--work-dir', dirs[stage], '--cfg-options',
                    *data, *extra, *length(stage, config)],
                   lambda: dict(checkpoint=_last_checkpoint(dirs[stage])))
        return done['checkpoint']

    def test(stage: str, config: str, ckpt: str, extra: list[str]) -> None:
        done = run(stage, f'{stage}: test {osp.relpath(ckpt, work_dir)}',
                   [py, 'tools/test.py', config, ckpt, '--work-dir', dirs[stage],
                    '--cfg-options', *data, *extra],
                   lambda: dict(metrics=read_metrics(dirs[stage], spec.task)))
        result.metrics[METRIC_NAMES[stage]] = done['metrics']

    result.dense_ckpt = train('dense', spec.dense_cfg, [])
    if 'dense_test' in names:
        test('dense_test', spec.dense_cfg, result.dense_ckpt, [])
    if 'search' in names:
        result.search_ckpt = train('search', spec.search_cfg, [f'load_from={result.dense_ckpt}'])
    if 'export' in names:
        export = dirs['export']
        how = ' '.join(spec.export) or "the search config's sidt_export"
        run('export', f'export: select ({how}), slice, fold masks',
            [py, 'tools/export_subnet.py', spec.search_cfg, result.search_ckpt, *spec.export,
             '-o', export, '--overwrite'], lambda: dict(export_dir=export))
        result.subnet = osp.join(export, 'subnet.json')
        result.pruned_ckpt = osp.join(export, 'pruned.pth')
    subnet_opt = [f'model.backbone.subnet={result.subnet}']
    if 'pruned_test' in names:
        test('pruned_test', spec.retrain_cfg, result.pruned_ckpt, subnet_opt)
    if 'retrain' in names:
        result.retrain_ckpt = train('retrain', spec.retrain_cfg,
                                    subnet_opt + [f'load_from={result.pruned_ckpt}'])
    if 'retrain_test' in names:
        test('retrain_test', spec.retrain_cfg, result.retrain_ckpt, subnet_opt)
    result.seconds = time.perf_counter() - start
    log(f'chain done in {result.seconds / 60:.1f} min: {work_dir}')
    return result
