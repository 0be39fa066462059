"""What the studies share: the toy CIFAR-100 stages run in-process, and a cache of their runs.

Each stage is a real stage of the pipeline, through mmengine's Runner and the configs in
``configs/cifar100/`` (the hard-preset ones by default): dense training, SiDT search, export
(select a subnet for a MACs budget by the searched masks or by a baseline criterion, slice
the weights), evaluation, and the same fine-tune for every method. Schedules are set in
iterations here (``iteration_schedule``) so that a study states each stage's length as a
fraction of the dense run.

Every finished stage leaves ``<work_dir>/<run>/result.json``; running a study again reuses it
when the stage's settings are the same, so an interrupted study resumes, and the studies
share their dense model and searches when they use the same work dir.

With ``StageSettings.num_val`` the training set's last images are a validation split that
no training stage sees; :meth:`Stages.choose` makes a study's choices on it and evaluates
only the chosen model on the test split.
"""
from __future__ import annotations

import copy
import functools
import hashlib
import json
import os
import os.path as osp
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch

from ..apis.chain import data_root_options
from ..utils.fileio import atomic_file, write_json_atomic, write_text_atomic

__all__ = ['REPO', 'StageSettings', 'Stages', 'write_json_atomic', 'write_text_atomic', 'log',
           'jaccard', 'kept_units', 'mean_std', 'iteration_schedule', 'separation',
           'binomial_se', 'load_correct', 'check_equal_compute',
           'provenance', 'save_figure', 'finish_study', 'goal_lines']

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CFG_DIR = osp.join(REPO, 'configs', 'cifar100')


def log(msg: str) -> None:
    print(f'[studies] {msg}', flush=True)


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    if not values:
        return float('nan'), float('nan')
    t = torch.tensor(values, dtype=torch.float64)
    return float(t.mean()), float(t.std()) if len(values) > 1 else 0.0


def binomial_se(top1: float, num_test: int) -> float:
    """The binomial standard error (points) of one top-1 of ``top1`` % on ``num_test``
    images: the resolution of a comparison of two top-1 figures on that test split."""
    p = top1 / 100
    return 100 * (p * (1 - p) / max(num_test, 1)) ** 0.5


def load_correct(path: str):
    """The per-image result of one evaluation (1 right, 0 wrong, test-set order) from the
    ``predictions.npz`` :meth:`Stages.evaluate` wrote (predicted and true labels)."""
    import numpy as np
    with np.load(path) as f:
        return (f['pred'] == f['gt']).astype(np.float64)


def check_equal_compute(rows: list[dict], what: str) -> int:
    """The post-dense training iterations every row of one comparison shares; refuses
    (naming the rows) a comparison whose rows had different training after the dense model."""
    iters = {r['name']: r.get('post_dense_iters') for r in rows}
    missing = sorted(k for k, v in iters.items() if v is None)
    if missing:
        raise ValueError(f'{what}: rows {missing} do not record post_dense_iters')
    if len(set(iters.values())) > 1:
        detail = ', '.join(f'{k}: {v}' for k, v in iters.items())
        raise ValueError(f'{what}: the rows had different training after the dense model '
                         f'({detail}); every row of one comparison needs the same')
    return next(iter(iters.values()))


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(['git', *args], cwd=REPO, capture_output=True, text=True,
                             timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def provenance(stages: Stages) -> dict:
    """What a study's figures came from: the commit when the stages started (and whether the
    tree had changes then), a hash of every config the stages used (resolved, with the
    study's options), torch's version and thread count."""
    return dict(**stages.record_git(),
                configs={osp.relpath(c, REPO) if c.startswith(REPO + os.sep) else c:
                         stages.config_hash(c) for c in sorted(stages.configs_used)},
                torch=torch.__version__, torch_threads=torch.get_num_threads())


def kept_units(subnet) -> set[tuple]:
    """The searchable units a subnet keeps: (block, 'attn', head, dim) and (block, 'mlp', u)."""
    units = set()
    for i, blk in enumerate(subnet.blocks):
        units.update((i, 'attn', h, j) for h, dims in enumerate(blk['v']) for j in dims)
        units.update((i, 'mlp', u) for u in blk['mlp'])
    return units


def jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if a | b else 1.0



def load_config(path: str):
    """A fresh copy of the mmengine config at ``path`` (read once per process, see
    :func:`_config_file`); the caller may change it."""
    return copy.deepcopy(_config_file(osp.abspath(path), osp.getmtime(path)))


@functools.lru_cache(maxsize=32)
def _config_file(path: str, mtime: float):
    """The config file at ``path`` as the tools read it (:func:`read_config`: formatted once
    per content, where a Runner formats it for its log, dump and every checkpoint), once per
    process and version of the file: a study reads each config for every stage, and
    resolving its ``mmdet::``/``mmpretrain::`` bases parses the packages' model indexes each
    time. Both took half of a tiny study's time."""
    from ..utils.launch import read_config
    return read_config(path)


@dataclass
class StageSettings:
    """Configs, data and schedule lengths (iterations of one process' batch) of a study.

    ``num_val``: the last ``num_val`` images of the training set (by index) held out as the
    validation split every choice of a study is made on (:meth:`Stages.choose`); no
    training stage sees them. 0: no validation split.
    """

    data_root: str
    data_preset: str = 'hard'
    num_train: int | None = None
    num_test: int | None = None
    num_val: int = 0
    dense_config: str = osp.join(
        CFG_DIR, 'sidt-dense_cls_vit-toy-p4_linear_12e_toy-cifar100-hard.py')
    search_config: str = osp.join(
        CFG_DIR, 'sidt-search_cls_vit-toy-p4-kr0.6_linear_374it_toy-cifar100-hard.py')
    retrain_config: str = osp.join(
        CFG_DIR, 'sidt-retrain_cls_vit-toy-p4-kr0.6_linear_748it_toy-cifar100-hard.py')
    dense_iters: int = 3756
    dense_warmup: int = 313
    # The dense (and narrow) model's learning rate; None: the dense config's. The fine-tunes
    # keep the retrain config's.
    dense_lr: float | None = None
    finetune_iters: int = 748
    finetune_warmup: int = 75
    batch_size: int = 64
    taylor_batches: int = 8
    threads: int = 1
    extra_options: dict = field(default_factory=dict)

    def __post_init__(self):
        if not isinstance(self.num_val, int) or self.num_val < 0:
            raise ValueError(f'num_val: expected an int >= 0, got {self.num_val!r}')
        if self.dense_lr is not None and not self.dense_lr > 0:
            raise ValueError(f'dense_lr: expected a learning rate > 0 or None, got '
                             f'{self.dense_lr!r}')

    def to_dict(self) -> dict:
        return asdict(self)



def iteration_schedule(cfg, iters: int, warmup: int = 0) -> None:
    """Train ``cfg`` for ``iters`` iterations: linear warmup, cosine to the end, one final
    checkpoint, no validation during training (the studies evaluate each stage themselves)."""
    warmup = min(warmup, iters - 1) if iters > 1 else 0
    cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=iters, val_interval=iters + 1)
    schedulers = []
    if warmup > 0:
        schedulers.append(dict(type='LinearLR', start_factor=1e-2, by_epoch=False, begin=0,
                               end=warmup))
    schedulers.append(dict(type='CosineAnnealingLR', by_epoch=False, begin=warmup, end=iters,
                           eta_min=1e-5))
    cfg.param_scheduler = schedulers
    cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
    cfg.test_cfg = cfg.test_dataloader = cfg.test_evaluator = None
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', by_epoch=False, interval=iters,
                                        max_keep_ckpts=1, save_last=True)
    cfg.default_hooks.logger = dict(type='LoggerHook', interval=max(1, min(100, iters)))
    cfg.log_processor = dict(by_epoch=False)


class Stages:
    """The stages of a study on the toy CIFAR-100 classifier, cached under ``work_dir``.

    ``metrics``: the figures :meth:`evaluate` returns (the first is the one the studies
    compare); :meth:`finetune` returns each as ``<metric>_pruned`` and ``<metric>_finetuned``.
    """

    metrics: tuple[str, ...] = ('top1',)
    metric_label = 'top-1'

    def __init__(self, work_dir: str, settings: StageSettings):
        self.work_dir = osp.abspath(work_dir)
        self.s = settings
        os.makedirs(self.work_dir, exist_ok=True)
        torch.set_num_threads(settings.threads)
        self._test_loader = None
        self._val_loader = None
        self._num_train_images: int | None = None
        self._hashes: dict[str, str] = {}
        self.configs_used: set[str] = set()
        self.git: dict | None = None

    def record_git(self) -> dict:
        """The commit (and whether the tree has changes) now; a study calls it when it
        starts, so its provenance names the code its stages ran with."""
        if self.git is None:
            status = _git('status', '--porcelain', '--untracked-files=no')
            self.git = dict(git_commit=_git('rev-parse', 'HEAD'),
                            git_dirty=None if status is None else bool(status))
        return self.git

    def config_hash(self, path: str) -> str:
        """sha256 of the config at ``path`` as the stages build it (``_base_`` resolved, the
        study's data root, batch and options merged), the first 16 hex digits."""
        if path not in self._hashes:
            cfg = self.config(path)
            text = json.dumps(cfg.to_dict(), sort_keys=True, default=repr)
            self._hashes[path] = hashlib.sha256(text.encode()).hexdigest()[:16]
        self.configs_used.add(path)
        return self._hashes[path]

    # ------------------------------------------------------------------ cache
    def cached(self, name: str, spec: dict, run: Callable[[str], dict]) -> dict:
        """``run(run_dir)``'s result, or the stored one when ``spec`` is unchanged."""
        run_dir = osp.join(self.work_dir, name)
        path = osp.join(run_dir, 'result.json')
        if spec.get('config'):
            # a changed config (or option) never reuses a stage run with the old one
            spec = dict(spec, config_hash=self.config_hash(spec['config']))
        spec = json.loads(json.dumps(spec))
        if osp.isfile(path):
            with open(path, encoding='utf-8') as f:
                stored = json.load(f)
            if stored.get('spec') == spec:
                return stored['result']
        os.makedirs(run_dir, exist_ok=True)
        start = time.perf_counter()
        result = run(run_dir)
        result = dict(result, seconds=round(time.perf_counter() - start, 1))
        write_json_atomic(path, dict(spec=spec, result=result))
        return result

    # ------------------------------------------------------------------- data
    def ensure_data(self) -> str:
        from ..datasets.generation import make_toy_cifar100
        root = osp.abspath(self.s.data_root)
        if not osp.isfile(osp.join(root, 'cifar-100-python', 'meta')):
            log(f'generating the {self.s.data_preset} toy CIFAR-100 set in {root}')
            make_toy_cifar100(root, self.s.num_train, self.s.num_test,
                              preset=self.s.data_preset, progress=lambda _: None)
        return root

    # ---------------------------------------------------------------- configs
    def data_options(self, root: str) -> dict:
        """The config options that point every reader of the data at ``root``."""
        return data_root_options('classification', root)

    def config(self, path: str, options: dict | None = None):
        cfg = load_config(path)
        cfg.merge_from_dict({**self.data_options(self.ensure_data()),
                             'train_dataloader.batch_size': self.s.batch_size,
                             **self.s.extra_options, **(options or {})})
        if self.s.num_val:
            # mmengine's BaseDataset keeps the first N entries of its list for indices=N,
            # after the dataset's own filter and before it serializes the list
            cfg.train_dataloader.dataset.indices = self.num_train_images() - self.s.num_val
        cfg.log_level = 'WARNING'
        return cfg

    def train_dataset(self):
        """The whole training set as the training stages read it (the dataset's own filter
        applied, e.g. COCO's images without a box), the validation split included."""
        from mmengine.registry import DATASETS, init_default_scope
        cfg = load_config(self.s.dense_config)
        cfg.merge_from_dict({**self.data_options(self.ensure_data()), **self.s.extra_options})
        init_default_scope(cfg.get('default_scope', 'mmpretrain'))
        dataset = copy.deepcopy(cfg.train_dataloader.dataset)
        dataset.pop('indices', None)
        return DATASETS.build(dataset)

    def num_train_images(self) -> int:
        """The size of :meth:`train_dataset`; refuses a ``num_val`` that leaves nothing."""
        if self._num_train_images is None:
            n = len(self.train_dataset())
            if self.s.num_val >= n:
                raise ValueError(f'num_val: {self.s.num_val} held out of {n} training images '
                                 'leaves none to train on')
            self._num_train_images = n
        return self._num_train_images

    def _train(self, cfg, run_dir: str, iters: int, warmup: int, seed: int,
               load_from: str | None):
        from mmengine.runner import Runner
        iteration_schedule(cfg, iters, warmup)
        cfg.work_dir = run_dir
        cfg.load_from = load_from
        cfg.resume = False
        cfg.randomness = dict(seed=seed, deterministic=False)
        cfg.experiment_name = f'{osp.basename(run_dir)}_{time.time_ns()}'
        runner = Runner.from_cfg(cfg)
        model = runner.train()
        return model, osp.join(run_dir, f'iter_{iters}.pth')

    # ----------------------------------------------------------------- stages
    def dense(self, seed: int = 0) -> dict:
        """Train the dense classifier; its checkpoint and test top-1."""
        spec = dict(stage='dense', config=self.s.dense_config, iters=self.s.dense_iters,
                    warmup=self.s.dense_warmup, seed=seed, batch=self.s.batch_size,
                    data=self.data_spec())
        options = {}
        if self.s.dense_lr is not None:  # absent by default, so earlier runs' keys still hold
            spec['lr'] = options['optim_wrapper.optimizer.lr'] = self.s.dense_lr

        def run(run_dir):
            log(f'dense training: {self.s.dense_iters} iterations')
            model, ckpt = self._train(self.config(self.s.dense_config, options), run_dir,
                                      self.s.dense_iters, self.s.dense_warmup, seed, None)
            return dict(checkpoint=ckpt, **self.evaluate(model, run_dir))
        return self.cached(f'dense-it{self.s.dense_iters}-s{seed}', spec, run)

    def search(self, dense_ckpt: str, iters: int, seed: int, macs_weighted: bool = False,
               processes: int = 1) -> dict:
        """SiDT search from the dense checkpoint for ``iters`` iterations of the total batch.

        With ``processes=2`` two gloo processes (torchrun) each take half the batch, so the
        total batch and the number of steps are those of the 1-process search.
        """
        if self.s.batch_size % processes:
            raise ValueError(f'batch size {self.s.batch_size} does not split over {processes} '
                             'processes')
        kind = 'macs' if macs_weighted else 'plain'
        options = {'model.sparsity.macs_weighted': macs_weighted}
        spec = dict(stage='search', config=self.s.search_config, dense=dense_ckpt, iters=iters,
                    seed=seed, macs_weighted=macs_weighted, processes=processes,
                    batch=self.s.batch_size, data=self.data_spec())

        def run(run_dir):
            log(f'search ({kind}, seed {seed}, {processes} process(es)): {iters} iterations')
            cfg = self.config(self.s.search_config, options)
            if processes == 1:
                _, ckpt = self._train(cfg, run_dir, iters, 0, seed, dense_ckpt)
            else:
                ckpt = self._train_distributed(cfg, run_dir, iters, seed, dense_ckpt, processes)
            return dict(checkpoint=ckpt)
        return self.cached(f'search-{kind}-it{iters}-s{seed}-p{processes}', spec, run)

    def _train_distributed(self, cfg, run_dir, iters, seed, load_from, processes) -> str:
        iteration_schedule(cfg, iters, 0)
        cfg.train_dataloader.batch_size = self.s.batch_size // processes
        cfg.work_dir = run_dir
        cfg.load_from = load_from
        cfg.randomness = dict(seed=seed, deterministic=False)
        cfg.env_cfg = dict(cfg.get('env_cfg', {}), dist_cfg=dict(backend='gloo'))
        config_path = osp.join(run_dir, 'search_config.py')
        cfg.dump(config_path)
        env = dict(os.environ, OMP_NUM_THREADS=str(self.s.threads), PYTHONUNBUFFERED='1')
        cmd = [sys.executable, '-m', 'torch.distributed.run', f'--nproc_per_node={processes}',
               '--master_port', str(29500 + os.getpid() % 1000),
               osp.join(REPO, 'tools', 'train.py'), config_path, '--launcher', 'pytorch']
        with open(osp.join(run_dir, 'torchrun.log'), 'w', encoding='utf-8') as out:
            code = subprocess.call(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
        if code != 0:
            raise RuntimeError(f'{processes}-process search failed (exit {code}); see '
                               f'{osp.join(run_dir, "torchrun.log")}')
        return osp.join(run_dir, f'iter_{iters}.pth')

    def train_on(self, dense_ckpt: str, iters: int, seed: int) -> dict:
        """The dense model trained on for ``iters`` iterations with the search's schedule and
        weight learning rate but no masks: the control that gives a baseline criterion the
        search's training before it scores the units."""
        lr = self.config(self.s.search_config).optim_wrapper.optimizer.lr
        spec = dict(stage='train_on', config=self.s.dense_config, dense=dense_ckpt,
                    iters=iters, lr=lr, seed=seed, batch=self.s.batch_size,
                    data=self.data_spec())

        def run(run_dir):
            log(f'dense model trained on (no masks, seed {seed}): {iters} iterations')
            cfg = self.config(self.s.dense_config, {'optim_wrapper.optimizer.lr': lr})
            _, ckpt = self._train(cfg, run_dir, iters, 0, seed, dense_ckpt)
            return dict(checkpoint=ckpt, iters=iters)
        return self.cached(f'train-on-it{iters}-s{seed}', spec, run)

    def data_spec(self) -> dict:
        spec = dict(root=osp.abspath(self.s.data_root), preset=self.s.data_preset,
                    num_train=self.s.num_train, num_test=self.s.num_test)
        if self.s.num_val:  # absent without a split, so the keys of earlier runs still hold
            spec['num_val'] = self.s.num_val
        return spec

    # ----------------------------------------------------------------- export
    def _model(self, config: str, checkpoint: str | None, options: dict | None = None):
        from ..apis.runtime import build_model
        return build_model(self.config(config, options), checkpoint,
                           scope='mmpretrain').train()

    def export(self, name: str, spec: dict, source: str, checkpoint: str,
               scores_fn: Callable, ratio: float, granularity: str, budget: str = 'macs',
               latency_table: str | None = None, loop_rounds: int = 0) -> dict:
        """Select a subnet at ``ratio`` of the dense backbone's MACs (``budget='macs'``) or
        of its predicted latency by ``latency_table`` (``'latency'``, units queued by score
        per predicted millisecond) from the scores ``scores_fn(model)`` returns, and slice
        ``checkpoint``; subnet + pruned checkpoint. ``loop_rounds`` > 0 (latency only): at
        ``ratio`` of the *measured* dense latency, by the closed loop of at most that many
        measured rounds on the table's setting (the table must have been built here)."""
        from ..models.complexity import backbone_complexity
        from ..search.latency_loop import select_subnet_measured
        from ..search.select import select_subnet
        if budget not in ('macs', 'latency') or (budget == 'latency') != bool(latency_table):
            raise ValueError(f'budget: expected macs, or latency with a latency table; got '
                             f'{budget!r} with table {latency_table!r}')
        if loop_rounds and budget != 'latency':
            raise ValueError(f'loop_rounds: the closed loop needs a latency budget, got '
                             f'{budget!r}')
        spec = dict(spec, granularity=granularity, **(
            dict(macs_ratio=ratio) if budget == 'macs' else
            dict(latency_ratio=ratio, latency_table=_digest(latency_table))),
            **(dict(loop_rounds=loop_rounds) if loop_rounds else {}))

        def choose(model):
            bb = model.backbone
            scores = scores_fn(model)
            kw = dict(scores=scores, granularity=granularity,
                      source=dict(config=model_config, checkpoint=checkpoint))
            if loop_rounds:
                return select_subnet_measured(bb, latency=ratio, latency_table=latency_table,
                                              rounds=loop_rounds, unit_order='score_per_ms',
                                              log=log, **kw), scores
            if budget == 'latency':
                amount = dict(latency=ratio, latency_table=latency_table,
                              unit_order='score_per_ms')
            else:
                amount = dict(macs=int(ratio * backbone_complexity(bb, bb.img_size).macs))
            return select_subnet(bb, **kw, **amount), scores
        model_config = self.s.search_config if source == 'search' else self.s.dense_config
        return self.export_with(name, spec, source, checkpoint, choose)

    def export_with(self, name: str, spec: dict, source: str, checkpoint: str,
                    choose: Callable) -> dict:
        """Slice ``checkpoint`` to the subnet ``choose(model)`` returns (with the scores it
        ranked by, or None), the model built from the search (``source='search'``) or the
        dense config; subnet + pruned checkpoint and their MACs and params ratios."""
        from ..export import prune_model_state_dict
        from ..utils import save_checkpoint_atomic
        config = self.s.search_config if source == 'search' else self.s.dense_config
        spec = dict(spec, stage='export', config=config, checkpoint=checkpoint)

        def run(run_dir):
            model = self._model(config, checkpoint)
            subnet, scores = choose(model)
            subnet_path = osp.join(run_dir, 'subnet.json')
            subnet.save(subnet_path)
            state = prune_model_state_dict(model.state_dict(), subnet)
            pruned = osp.join(run_dir, 'pruned.pth')
            save_checkpoint_atomic(dict(state_dict={k: v.detach().cpu() for k, v in
                                                    state.items()}, meta={}), pruned)
            return dict(subnet=subnet_path, checkpoint=pruned,
                        macs_ratio=subnet.stats['macs_after'] / subnet.stats['macs_before'],
                        params_ratio=(subnet.stats['params_after']
                                      / subnet.stats['params_before']),
                        separation=separation(scores, subnet) if scores is not None else {})
        return self.cached(name, spec, run)

    def taylor_batches(self, seed: int):
        """A few training batches (the training pipeline, seeded) for the Taylor criterion."""
        from mmengine.registry import init_default_scope
        from mmengine.runner import Runner
        cfg = self.config(self.s.dense_config)
        init_default_scope(cfg.get('default_scope', 'mmpretrain'))
        loader_cfg = copy.deepcopy(cfg.train_dataloader)
        torch.manual_seed(seed)
        return Runner.build_dataloader(loader_cfg, seed=seed)

    def narrow(self, keep: float = 0.6, seed: int = 0) -> dict:
        """A model ``1 - keep`` narrower in every searched dim (head dims and MLP units,
        equal in every layer, no rounding), trained from scratch exactly as the dense one:
        the dense model's learning rate, schedule, batch and seed."""
        from ..search.criteria import uniform_scores
        from ..search.select import select_subnet
        lr = self.s.dense_lr or self.config(self.s.dense_config).optim_wrapper.optimizer.lr
        spec = dict(stage='narrow', config=self.s.retrain_config, keep=keep,
                    iters=self.s.dense_iters, warmup=self.s.dense_warmup, seed=seed, lr=lr,
                    batch=self.s.batch_size, data=self.data_spec())

        def run(run_dir):
            bb = self._model(self.s.dense_config, None).backbone
            subnet = select_subnet(bb, keep_ratio=keep, scores=uniform_scores(bb), round_to=1,
                                   min_mlp=1)
            path = osp.join(run_dir, 'subnet.json')
            subnet.save(path)
            log(f'narrow model ({keep:g} of the widths) from scratch: {self.s.dense_iters} '
                'iterations')
            model, _ = self._train(self.config(self.s.retrain_config,
                                               {'model.backbone.subnet': path,
                                                'optim_wrapper.optimizer.lr': lr}),
                                   run_dir, self.s.dense_iters, self.s.dense_warmup, seed, None)
            return dict(subnet=path, **self.evaluate(model, run_dir), lr=lr,
                        macs_ratio=subnet.stats['macs_after'] / subnet.stats['macs_before'])
        return self.cached(f'narrow-k{keep:g}-it{self.s.dense_iters}-s{seed}', spec, run)

    def dense_finetuned(self, dense_ckpt: str, seeds, extra_iters: int = 0,
                        split: str = 'test') -> dict:
        """The dense model given the fine-tune every pruned model gets (same config,
        schedule and seeds), lengthened by ``extra_iters`` (a study's search length, so that
        it has the same training after the dense run as a searched model): the reference a
        pruned-and-fine-tuned top-1 is fair against.

        The dense widths go through the same export (a subnet that keeps every unit) and the
        retrain config, so the only difference from a pruned run is what was kept. ``split``:
        where the figures are measured (:meth:`finetune`).
        """
        from ..search.criteria import uniform_scores
        exp = self.export('export-dense-full', dict(method='dense'), 'criterion', dense_ckpt,
                          lambda model: uniform_scores(model.backbone), 1.0, 'dim')
        if abs(exp['macs_ratio'] - 1.0) > 1e-9:
            raise RuntimeError(f'the dense subnet keeps MACs x{exp["macs_ratio"]:.4f}, not all')
        iters = self.s.finetune_iters + extra_iters
        runs = [dict(seed=seed, **self.finetune(f'finetune-dense-s{seed}', exp['subnet'],
                                                 exp['checkpoint'], seed, iters, split=split))
                for seed in seeds]
        out = dict(subnet=exp['subnet'], seeds=list(seeds), runs=runs, iters=iters,
                   post_dense_iters=iters)
        for m in self.metrics:
            out[f'{m}_mean'], out[f'{m}_std'] = mean_std([r[f'{m}_finetuned'] for r in runs])
        return out

    # ------------------------------------------------------------- retraining
    def test_loader(self):
        if self._test_loader is None:
            from mmengine.registry import init_default_scope
            from mmengine.runner import Runner
            cfg = self.config(self.s.dense_config)
            init_default_scope(cfg.get('default_scope', 'mmpretrain'))
            self._test_loader = Runner.build_dataloader(cfg.test_dataloader)
        return self._test_loader

    def val_loader(self):
        """The validation split: the last ``num_val`` images of the training set, read with
        the test pipeline."""
        if not self.s.num_val:
            raise ValueError('val_loader: no validation split; set StageSettings.num_val > 0')
        if self._val_loader is None:
            from mmengine.registry import init_default_scope
            from mmengine.runner import Runner
            cfg = self.config(self.s.dense_config)
            init_default_scope(cfg.get('default_scope', 'mmpretrain'))
            self._val_loader = Runner.build_dataloader(self.val_dataloader_cfg(cfg))
        return self._val_loader

    def val_dataloader_cfg(self, cfg):
        """``cfg``'s test loader on the training set's last ``num_val`` images (a negative
        ``indices`` keeps the last entries of the dataset's list; the classification set
        filters nothing, so that list is the one the training stages cut)."""
        loader = copy.deepcopy(cfg.test_dataloader)
        loader.dataset.split = 'train'
        loader.dataset.indices = -self.s.num_val
        return loader

    def loader(self, split: str):
        """The loader of ``split``: ``'test'`` or ``'val'``."""
        if split == 'test':
            return self.test_loader()
        if split == 'val':
            return self.val_loader()
        raise ValueError(f"split: expected 'test' or 'val', got {split!r}")

    def num_test(self) -> int:
        return len(self.test_loader().dataset)

    def predict(self, model, split: str = 'test'):
        """``(top-1 %, predicted labels, true labels)`` of ``model`` on ``split`` (``'test'``
        or ``'val'``), in the split's order."""
        import numpy as np
        model.eval()
        pred, gt = [], []
        with torch.no_grad():
            for data in self.loader(split):
                for sample in model.val_step(data):
                    pred.append(int(sample.pred_label.item()))
                    gt.append(int(sample.gt_label.item()))
        pred, gt = np.asarray(pred, dtype=np.int16), np.asarray(gt, dtype=np.int16)
        return 100.0 * float((pred == gt).mean()), pred, gt

    def evaluate(self, model, run_dir: str, name: str = 'predictions',
                 split: str = 'test') -> dict:
        """Top-1 of ``model`` on ``split`` (``'test'`` or ``'val'``) and its per-image
        predictions, written (atomically) to ``run_dir/<name>.npz`` for the paired
        statistics (:func:`load_correct`)."""
        import numpy as np
        top1, pred, gt = self.predict(model, split)
        path = osp.join(run_dir, f'{name}.npz')
        with atomic_file(path) as tmp, open(tmp, 'wb') as f:
            np.savez(f, pred=pred, gt=gt)
        return {'top1': top1, name: path}

    def finetune(self, name: str, subnet: str, checkpoint: str, seed: int,
                 iters: int | None = None, *, config: str | None = None,
                 options: dict | None = None, warmup: int | None = None,
                 key: dict | None = None, split: str = 'test') -> dict:
        """Top-1 of the pruned model right after export and after the same fine-tune.

        ``config`` (default: the retrain config), ``options`` (merged into it, e.g. a
        learning rate) and ``warmup`` (default: the settings') change the fine-tune;
        ``key`` adds what else identifies the run to its cache key (e.g. a digest of a
        checkpoint rewritten at the same path). ``split``: where both figures are measured,
        ``'val'`` for a candidate of a choice (:meth:`choose`); ``final`` in the result is
        the fine-tuned model (config, checkpoint, options) with its figures there."""
        if split not in ('test', 'val'):
            raise ValueError(f"split: expected 'test' or 'val', got {split!r}")
        iters = self.s.finetune_iters if iters is None else iters
        config = config or self.s.retrain_config
        warmup = self.s.finetune_warmup if warmup is None else warmup
        spec = dict(stage='finetune', config=config, subnet=subnet,
                    checkpoint=checkpoint, iters=iters, warmup=warmup,
                    seed=seed, batch=self.s.batch_size, data=self.data_spec())
        if options:
            spec['options'] = dict(options)
        if key:
            spec['key'] = dict(key)
        if split != 'test':
            spec['split'] = split

        def run(run_dir):
            opts = {**(options or {}), 'model.backbone.subnet': subnet}
            pruned = self.evaluate(self._model(config, checkpoint, opts),
                                   run_dir, 'predictions_pruned', split)
            model, ckpt = self._train(self.config(config, opts), run_dir, iters, warmup, seed,
                                      checkpoint)
            after = self.evaluate(model, run_dir, split=split)
            m = self.metrics[0]
            log(f'  {name}: {self.metric_label} {pruned[m]:.2f} after pruning -> '
                f'{after[m]:.2f} after fine-tune')
            return dict(**{f'{k}_pruned': pruned[k] for k in self.metrics},
                        **{f'{k}_finetuned': after[k] for k in self.metrics},
                        predictions_pruned=pruned['predictions_pruned'],
                        predictions=after['predictions'], finetune_iters=iters,
                        backbone_params=sum(p.numel() for p in model.backbone.parameters()),
                        final=dict(config=config, checkpoint=ckpt, options=opts, split=split,
                                   **{k: after[k] for k in self.metrics}))
        return self.cached(f'{name}-it{iters}', spec, run)

    # ---------------------------------------------------------------- choices
    def evaluate_final(self, name: str, final: dict, split: str = 'test') -> dict:
        """A fine-tune's ``final`` model evaluated on ``split``, cached as ``<name>`` (keyed
        by a digest of its checkpoint, which a changed fine-tune rewrites at the same path)."""
        spec = dict(stage='evaluate', split=split, config=final['config'],
                    checkpoint=final['checkpoint'], options=final.get('options') or {},
                    checkpoint_sha256=_digest(final['checkpoint']), data=self.data_spec())

        def run(run_dir):
            model = self._model(final['config'], final['checkpoint'], final.get('options'))
            return self.evaluate(model, run_dir, split=split)
        return self.cached(name, spec, run)

    def choose(self, name: str, candidates: dict[str, Callable[[], dict | list[dict]]],
               metric: str | None = None) -> dict:
        """Choose among ``candidates`` on the validation split; evaluate the chosen on the
        test split, once.

        Each candidate is a callable returning its final model: a fine-tune's ``final``
        measured on the validation split (:meth:`finetune` with ``split='val'``), or a list
        of them (its seeds). The highest mean ``metric`` (default: the task's first) wins,
        the first listed on a tie; each final model of the chosen one is evaluated on the
        test split (:meth:`evaluate_final`, ``<name>-test<i>``). Returns (and writes to
        ``<work_dir>/<name>/choice.json``) the metric, the chosen label, every candidate's
        validation figure and the chosen one's test figures (the mean, each run's, and
        the final models tested).
        """
        if not self.s.num_val:
            raise ValueError(f'{name}: no validation split to choose on; set '
                             'StageSettings.num_val > 0 (training images held out)')
        if not candidates:
            raise ValueError(f'{name}: no candidates to choose from')
        metric = metric or self.metrics[0]
        finals, val = {}, {}
        for label, get in candidates.items():
            runs = get()
            runs = [runs] if isinstance(runs, dict) else list(runs)
            splits = sorted({str(r.get('split')) for r in runs})
            if not runs or splits != ['val']:
                raise ValueError(f'{name}: candidate {label!r} was measured on {splits}, not '
                                 'on the validation split only')
            finals[label] = runs
            val[label] = mean_std([r[metric] for r in runs])[0]
        chosen = max(val, key=val.get)  # max keeps the first of equal figures
        runs = [self.evaluate_final(f'{name}-test{i}', final)
                for i, final in enumerate(finals[chosen])]
        test = {m: mean_std([r[m] for r in runs])[0] for m in self.metrics}
        record = dict(metric=metric, chosen=chosen, val=val,
                      test=dict(test, runs=runs, models=finals[chosen], split='test'))
        write_json_atomic(osp.join(self.work_dir, name, 'choice.json'), record)
        first = self.metrics[0]
        log(f'{name}: {chosen} chosen on the validation split ({metric} {val[chosen]:.2f}); '
            f'test {first} {test[first]:.2f}')
        return record


def save_figure(fig, path: str) -> None:
    """Write a matplotlib figure as PNG at ``path`` atomically and close it."""
    import matplotlib.pyplot as plt
    with atomic_file(path) as tmp:
        fig.savefig(tmp, dpi=120, format='png')
    plt.close(fig)


def goal_lines(goals: list[dict]) -> list[str]:
    """A study's goals as Markdown list items: status, goal and the figure it was judged on."""
    return [f'- **{g["status"]}**: {g["goal"]} ({g["detail"]})' for g in goals]


def finish_study(work_dir: str, stem: str, result: dict, markdown: Callable[[dict], str],
                 plot: Callable[[dict, str], None] | None = None) -> dict:
    """Write a finished study as ``stem``.json, .md (``markdown(result)``) and, with
    ``plot``, .png in ``work_dir``, each atomically, log its goals and return ``result``."""
    write_json_atomic(osp.join(work_dir, f'{stem}.json'), result)
    write_text_atomic(osp.join(work_dir, f'{stem}.md'), markdown(result))
    if plot is not None:
        plot(result, osp.join(work_dir, f'{stem}.png'))
    for g in result.get('goals', []):
        log(f'goal {g["status"].upper()}: {g["goal"]} ({g["detail"]})')
    return result


def _digest(path: str) -> str:
    """sha256 of a file's bytes, the first 16 hex digits (a cache key for a table)."""
    with open(path, 'rb') as f:
        return hashlib.sha256(f.read()).hexdigest()[:16]


def separation(scores, subnet) -> dict:
    """How far apart the kept and the dropped units' scores are, per kind.

    ``gap``: mean score of the kept units minus that of the dropped ones, in units of the
    kind's mean score; ``margin``: lowest kept minus highest dropped (negative when the
    per-layer minimums or rounding keep a unit scoring below a dropped one).
    """
    out = {}
    kinds = dict(attn=(scores.qk, lambda i: [(h, j) for h, dims in enumerate(
        subnet.blocks[i]['v']) for j in dims]), mlp=(scores.mlp, lambda i: subnet.blocks[i]['mlp']))
    for kind, (tensors, kept_of) in kinds.items():
        if not tensors:
            continue
        kept, dropped = [], []
        for i, t in enumerate(tensors):
            t = t.abs().float()
            mask = torch.zeros_like(t, dtype=torch.bool)
            for idx in kept_of(i):
                mask[idx] = True
            kept.append(t[mask])
            dropped.append(t[~mask])
        k, d = torch.cat(kept), torch.cat(dropped)
        scale = float(torch.cat([k, d]).mean()) or 1.0
        out[kind] = dict(
            kept_mean=float(k.mean()) if k.numel() else float('nan'),
            dropped_mean=float(d.mean()) if d.numel() else float('nan'),
            gap=(float(k.mean()) - float(d.mean())) / scale if k.numel() and d.numel()
            else float('nan'),
            margin=(float(k.min()) - float(d.max())) / scale if k.numel() and d.numel()
            else float('nan'))
    return out
