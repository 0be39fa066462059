"""Selection study: SiDT's searched widths against the usual pruning criteria at equal MACs
and equal training.

On the hard toy CIFAR-100 preset (``configs/cifar100/*_toy-cifar100-hard.py``), from one
trained dense toy ViT:

- SiDT: a search (L1 masks, ``plain`` or ``macs_weighted``) per seed, then selection at
  granularity ``dim`` or ``head_uniform``, then the fine-tune;
- baselines on the same units (:mod:`sidt_mmdet.search.criteria`): weight ``magnitude``,
  first-order ``taylor`` (gradients of a few training batches), ``random`` and ``uniform``
  width, each under two controls that give it the training SiDT's search had:
  ``longer_finetune`` (scored on the dense checkpoint, fine-tuned for the fine-tune plus the
  search length) and ``trained_on`` (the dense model trained on for the search length with
  the search's schedule and no masks, then scored and given the usual fine-tune);
- the dense model given the fine-tune plus the search length: the reference.

Every row of one comparison so has the same post-dense iterations (each run records them,
and the study refuses a comparison whose rows differ). Each model is selected for the same
backbone MACs budget, sliced through the same export, evaluated right after pruning and after
the fine-tune; its per-image predictions are kept, and differences are paired bootstrap
intervals over test images and seeds, Holm-corrected over the comparisons of the goals
(:mod:`sidt_mmdet.studies.stats`). The goals compare SiDT with the stronger control of each
baseline. Before any method, two goals ask whether the task needs the width: the dense model
gains at most 0.5 points from the reference's extra training, and a 40%-narrower model
trained exactly as the dense one scores lower by more than its 95% interval.

Stability: the Jaccard overlap of the kept units across search seeds and between a 1- and a
2-process search (same seed, same total batch), and how far apart the kept and the dropped
units' scores are at selection.

Writes ``selection_<preset>.json``, ``.md`` and ``.png`` in the work dir, and prints
the goals (met / missed / not shown).

On a plain ViT every unit of a kind costs the same MACs (equal blocks, one shared mask per
head dim), so ``macs_weighted`` scales the L1 term by a constant 1 and its search is the
plain one, to the bit; the two differ where blocks differ in cost (ViTDet's window and
global blocks).
"""
from __future__ import annotations

import itertools
import os.path as osp
import time
from dataclasses import dataclass, field, replace

from .coco_matches import load_matches
from .common import (
    Stages,
    StageSettings,
    check_equal_compute,
    finish_study,
    goal_lines,
    jaccard,
    kept_units,
    load_correct,
    log,
    mean_std,
    provenance,
    save_figure,
)
from .detection import DETECTION_SETTINGS, DetectionStages, hard_configs
from .stats import compare, paired_bootstrap, verdict

__all__ = ['PRESETS', 'SelectionPreset', 'METHODS', 'CONTROLS', 'run_selection_study',
           'selection_goals', 'selection_comparisons']

# method name -> (source, variant, granularity)
METHODS = {
    'sidt-l1/dim': ('search', 'plain', 'dim'),
    'sidt-l1/head_uniform': ('search', 'plain', 'head_uniform'),
    'sidt-l1-macs/dim': ('search', 'macs', 'dim'),
    'sidt-l1-macs/head_uniform': ('search', 'macs', 'head_uniform'),
    'magnitude': ('criterion', 'magnitude', 'dim'),
    'taylor': ('criterion', 'taylor', 'dim'),
    'random': ('criterion', 'random', 'dim'),
    'uniform': ('criterion', 'uniform', 'dim'),
}
# The SiDT variant the goals are stated for (the default recipe).
SIDT_DEFAULT = 'sidt-l1/dim'
BASELINES = ('magnitude', 'taylor', 'random', 'uniform')
# How a baseline criterion gets the training SiDT's search had (see the module docstring).
CONTROLS = {'longer_finetune': 'longer fine-tune', 'trained_on': 'trained on, then scored'}
REFERENCE = 'dense + the same training'
ALPHA = 0.05
# task -> its stages, the figure the goals compare, and the range a dense model's figure
# should fall in for the comparison to mean something
# draws: the paired bootstrap's (a detection draw recomputes COCO mAP, a top-1 one sums)
TASKS = {'cifar': dict(stages=Stages, metric='top1', label='top-1', dense_range=(50, 85),
                       draws=4000),
         'detection': dict(stages=DetectionStages, metric='bbox_mAP', label='box mAP',
                           dense_range=(30, 60), draws=1000)}


@dataclass(frozen=True)
class SelectionPreset:
    """A study size. ``search_fraction`` of the dense iterations is the search length."""

    settings: dict
    seeds: tuple[int, ...] = (0, 1, 2)
    ratios: tuple[float, ...] = (0.6, 0.4)
    search_fraction: float = 0.10
    methods: tuple[str, ...] = tuple(METHODS)
    two_process: bool = True
    controls: tuple[str, ...] = tuple(CONTROLS)
    # Train a 40%-narrower model from scratch as the dense one: does the set need the width?
    narrow_check: bool = True
    # Give the dense model the same fine-tune as every pruned one (the fair reference: the
    # fine-tune adds iterations the dense run never had).
    dense_finetune: bool = True
    # Sub-directory of the work dir: presets on the same data share their dense model,
    # searches and exports there.
    workspace: str = 'hard'
    # 'cifar' (the toy ViT on the hard toy CIFAR-100, top-1) or 'detection' (the toy Mask
    # R-CNN on the hard toy COCO, box and mask mAP; the comparisons on box mAP)
    task: str = 'cifar'
    # bootstrap draws per comparison; None: the task's (TASKS)
    draws: int | None = None
    expected_minutes: float = 0.0
    notes: str = ''
    extra: dict = field(default_factory=dict)


# The long detection schedule: 8,000 iterations at batch 2 (about 4 epochs of 4,096 images),
# 10% search and 10% fine-tune, 512 test images.
DETECTION_LONG = dict(DETECTION_SETTINGS, num_train=4096, num_test=512, dense_iters=8000,
                      dense_warmup=400, finetune_iters=800, finetune_warmup=80, batch_size=2,
                      taylor_batches=8)

# The same schedule and set with the half-width backbone (32 wide, 2 heads a block): at 64
# wide the backbone feeds a 32-channel pyramid, and a 40%-narrower one scored the same.
DETECTION_SMALL = dict(DETECTION_LONG, **hard_configs('toy-s'))
# The harder set (twelve classes, smaller and more objects, more clutter) with that backbone:
# the half-width one did not show a need for its width on the hard set either.
DETECTION_HARDER = dict(DETECTION_SMALL, data_preset='harder', **hard_configs('toy-s', 'harder'))
# On the harder set the dense model at 8,000 iterations and lr 1e-3 was far from convergence
# (the same training lifted it by 3.5 points): the dense (and narrow) training at twice the
# learning rate and 1.5 times the iterations, with the search and fine-tune kept at 10% each.
DETECTION_HARDER_LONG = dict(DETECTION_HARDER, dense_iters=12000, dense_warmup=600,
                             dense_lr=2e-3, finetune_iters=1200, finetune_warmup=120)
# At 12,000 iterations the same training still lifted the dense model by 1.0 point, and on
# 512 test images a paired interval is about +-0.45 wide, too wide for the 0.5-point rule:
# 15,000 iterations (1.25 times) on 2,048 test images (the first 512 are the same images;
# intervals about half as wide), search and fine-tune again 10% each.
DETECTION_HARDER_XLONG = dict(DETECTION_HARDER_LONG, num_test=2048, dense_iters=15000,
                              dense_warmup=750, finetune_iters=1500, finetune_warmup=150)

# Back on the hard set, which both wider backbones had converged on at 8,000 iterations with
# no need for their width shown (64 wide: -0.07, 32 wide: +0.51 [-0.35, +1.35]): the
# quarter-width backbone (16 wide, 2 heads of 8, MLP 64) on the same schedule, and on 2,048
# test images so a paired interval is about half as wide as on 512.
DETECTION_XS = dict(DETECTION_LONG, num_test=2048, **hard_configs('toy-xs'))
# At 8,000 iterations and lr 1e-3 the quarter-width dense model was still learning (the same
# training lifted it by 2.5 points, its loss still falling): twice the iterations and twice
# the learning rate, as on the harder set, with the search and fine-tune kept at 10% each.
DETECTION_XS_LONG = dict(DETECTION_XS, dense_iters=16000, dense_warmup=800, dense_lr=2e-3,
                         finetune_iters=1600, finetune_warmup=160)


def _task_then_comparison(name: str, settings: dict, workspace: str, what: str,
                          task_minutes: float, by_ratio: bool = False,
                          full_minutes: tuple[float, float] = (65, 50)) -> dict:
    """Presets ``<name>-task`` (the task check only: dense, dense + the same training, the
    narrow model) and ``<name>-full``, the comparison that shares its stages, sized to 90
    idle minutes on 2 cores beyond them (about 5 min a row): one seed, MACs x0.6 and x0.4,
    SiDT's plain and MACs-weighted searches (the toy backbone's window and global blocks
    differ in cost) against magnitude, Taylor and uniform width under both controls. Random
    width and head_uniform are left out to fit; three seeds would take about four times as
    long. ``by_ratio``: a schedule whose two budgets do not fit one study: ``<name>-full`` at
    x0.6 and ``<name>-full-r0.4`` at x0.4, which reuses its searches, expected to take
    ``full_minutes`` idle."""
    of = f', {what}' if what else ''
    methods = ('sidt-l1/dim', 'sidt-l1-macs/dim', 'magnitude', 'taylor', 'uniform')
    # suffix: (budgets, idle minutes beyond the task check's stages)
    budgets = ({'': ((0.6,), full_minutes[0]), '-r0.4': ((0.4,), full_minutes[1])}
               if by_ratio else {'': ((0.6, 0.4), 90)})
    out = {f'{name}-task': SelectionPreset(
        settings=settings, seeds=(0,), ratios=(0.6,), two_process=False, methods=(),
        workspace=workspace, task='detection', expected_minutes=task_minutes,
        notes=f'task check only{of}: dense, dense + the same training and the narrow model')}
    for suffix, (ratios, minutes) in budgets.items():
        at = ' and '.join(f'x{r:g}' for r in ratios)
        out[f'{name}-full{suffix}'] = SelectionPreset(
            settings=settings, seeds=(0,), ratios=ratios, two_process=False, methods=methods,
            workspace=workspace, task='detection', expected_minutes=minutes,
            notes=f'one seed{of}, MACs {at}, 10% search and 10% fine-tune: intervals over '
                  'test images only')
    return out


PRESETS = {
    # The suite's size: easy set, a few iterations per stage; checks the plumbing only.
    'tiny': SelectionPreset(
        settings=dict(data_preset='easy', num_train=200, num_test=100, dense_iters=4,
                      dense_warmup=1, finetune_iters=2, finetune_warmup=0, batch_size=16,
                      taylor_batches=2),
        seeds=(0,), search_fraction=0.5, two_process=False, workspace='tiny',
        expected_minutes=1.5,
        notes='plumbing only: easy set, a few iterations, no figure means anything'),
    # One seed, half the fine-tune: every method at both budgets, no std.
    'quick': SelectionPreset(
        settings=dict(finetune_iters=374, finetune_warmup=37),
        seeds=(0,), two_process=False, expected_minutes=40,
        notes='one seed: intervals over test images only'),
    # The shortest real run: one seed, a 5% fine-tune, the plain search at both
    # granularities (the MACs-weighted one is the plain one on a plain ViT), every baseline
    # under both controls, the narrow-model check.
    'short': SelectionPreset(
        settings=dict(finetune_iters=187, finetune_warmup=19),
        seeds=(0,), two_process=False, expected_minutes=30,
        methods=('sidt-l1/dim', 'sidt-l1/head_uniform', 'magnitude', 'taylor', 'random',
                 'uniform'),
        notes='one seed, 5% fine-tune: intervals over test images only'),
    # The study as the goals state it: 3 seeds, 20% fine-tune, 1- vs 2-process search.
    'full': SelectionPreset(settings=dict(), expected_minutes=95),
    # The detection task at the suite's size: plumbing only.
    'detection-tiny': SelectionPreset(
        settings=dict(DETECTION_SETTINGS, num_train=16, num_test=8, dense_iters=4,
                      dense_warmup=1, finetune_iters=2, finetune_warmup=0, batch_size=2,
                      taylor_batches=1),
        seeds=(0,), ratios=(0.6,), search_fraction=0.5, two_process=False,
        methods=('sidt-l1/dim', 'magnitude'), controls=('longer_finetune',),
        workspace='detection-tiny', task='detection', draws=200, expected_minutes=1.5,
        notes='plumbing only: 16 images, a few iterations, no figure means anything'),
    # The detection task, one seed at MACs x0.6: SiDT's default recipe against magnitude,
    # Taylor and uniform width under both controls, the task-width checks first.
    'detection-short': SelectionPreset(
        settings=dict(DETECTION_SETTINGS, num_train=2048, num_test=128, dense_iters=2000,
                      dense_warmup=100, finetune_iters=200, finetune_warmup=20, batch_size=2,
                      taylor_batches=8),
        seeds=(0,), ratios=(0.6,), two_process=False,
        methods=('sidt-l1/dim', 'magnitude', 'taylor', 'uniform'),
        workspace='detection', task='detection', expected_minutes=45,
        notes='one seed, MACs x0.6, 10% fine-tune: intervals over test images only'),
    # Does the hard toy COCO task need its width? The dense model at 4 times the short
    # preset's schedule on twice the images, the dense reference's lift and a 40%-narrower
    # model trained as the dense one, on 512 test images; no method is compared (the set and
    # schedule are judged on dense against narrow alone, before any method runs). Then the
    # comparison on that task ('-full').
    **_task_then_comparison('detection', DETECTION_LONG, 'detection-long', '', 75),
    # The same with the half-width backbone (the 64-wide one did not need its width on this
    # set), and with it on the harder set.
    **_task_then_comparison('detection-small', DETECTION_SMALL, 'detection-small',
                            'half-width backbone', 60),
    **_task_then_comparison('detection-harder', DETECTION_HARDER, 'detection-harder',
                            'harder set, half-width backbone', 55),
    **_task_then_comparison('detection-harder-long', DETECTION_HARDER_LONG,
                            'detection-harder-long',
                            'harder set, half-width backbone, 12,000 dense iterations at lr 2e-3',
                            65, by_ratio=True),
    **_task_then_comparison('detection-harder-xlong', DETECTION_HARDER_XLONG,
                            'detection-harder-xlong',
                            'harder set, half-width backbone, 15,000 dense iterations at lr 2e-3, '
                            '2,048 test images', 79, by_ratio=True, full_minutes=(90, 80)),
    **_task_then_comparison('detection-xs', DETECTION_XS, 'detection-xs',
                            'quarter-width backbone, 2,048 test images', 50, by_ratio=True,
                            full_minutes=(55, 45)),
    **_task_then_comparison('detection-xs-long', DETECTION_XS_LONG, 'detection-xs-long',
                            'quarter-width backbone, 16,000 dense iterations at lr 2e-3, '
                            '2,048 test images', 76, by_ratio=True, full_minutes=(70, 60)),
}


def _sidt_scores(model):
    from ..search.select import UnitScores
    return UnitScores.from_masks(model.backbone)


def _criterion_scores_fn(stages: Stages, name: str, seed: int):
    from ..search.criteria import accumulate_task_gradients, criterion_scores

    def fn(model):
        if name == 'taylor':
            accumulate_task_gradients(model, stages.taylor_batches(seed),
                                      stages.s.taylor_batches)
        return criterion_scores(name, model.backbone, seed=seed)
    return fn


def _budget_tag(ratio: float, budget: str) -> str:
    """A run name's budget part: ``r0.6`` (MACs, the names the studies always had) or
    ``lat0.6`` (predicted latency)."""
    return f'r{ratio:g}' if budget == 'macs' else f'lat{ratio:g}'


def _export_method(stages: Stages, method: str, ratio: float, seed: int, dense_ckpt: str,
                   search_iters: int, processes: int = 1, control: str | None = None,
                   budget: str = 'macs', latency_table: str | None = None,
                   loop_rounds: int = 0) -> dict:
    """The export of ``method`` at ``ratio`` of the dense MACs (or predicted latency, with
    ``budget='latency'`` and its table; measured latency by the closed loop with
    ``loop_rounds`` > 0): from its search (SiDT), from the dense checkpoint (a criterion, no
    control or ``longer_finetune``), or from the dense model trained on for the search
    length (a criterion under ``trained_on``)."""
    source, variant, granularity = METHODS[method]
    cost = dict(budget=budget, latency_table=latency_table, loop_rounds=loop_rounds)
    at = _budget_tag(ratio, budget) + (f'-loop{loop_rounds}' if loop_rounds else '')
    if source == 'search':
        search = stages.search(dense_ckpt, search_iters, seed, macs_weighted=variant == 'macs',
                               processes=processes)
        tag = f'sidt-{variant}-it{search_iters}-s{seed}-p{processes}-{granularity}-{at}'
        return stages.export(f'export-{tag}', dict(method=method, seed=seed), 'search',
                             search['checkpoint'], _sidt_scores, ratio, granularity,
                             **cost) | dict(tag=tag)
    if control == 'trained_on':
        on = stages.train_on(dense_ckpt, search_iters, seed)
        tag = f'{variant}-on{search_iters}-s{seed}-{granularity}-{at}'
        return stages.export(f'export-{tag}', dict(method=method, seed=seed, control=control),
                             'criterion', on['checkpoint'],
                             _criterion_scores_fn(stages, variant, seed), ratio,
                             granularity, **cost) | dict(tag=tag)
    tag = f'{variant}-s{seed}-{granularity}-{at}'
    # Magnitude and uniform do not depend on the seed: their exports are shared.
    key_seed = seed if variant in ('random', 'taylor') else 0
    tag_export = f'{variant}-s{key_seed}-{granularity}-{at}'
    out = stages.export(f'export-{tag_export}', dict(method=method, seed=key_seed), 'criterion',
                        dense_ckpt, _criterion_scores_fn(stages, variant, key_seed), ratio,
                        granularity, **cost)
    return out | dict(tag=tag)


def row_name(method: str, control: str | None) -> str:
    """A table row's name: the method, and the control a baseline ran under."""
    return method if control is None else f'{method} ({CONTROLS[control]})'


def _rows_of(p: SelectionPreset) -> list[tuple[str, str | None]]:
    """``(method, control)`` of every row: SiDT once, each baseline under each control."""
    return [(m, None) if METHODS[m][0] == 'search' else (m, c)
            for m in p.methods for c in (p.controls if METHODS[m][0] != 'search' else (None,))]


def _run_method(stages: Stages, method: str, control: str | None, ratio: float, seed: int,
                dense_ckpt: str, search_iters: int, budget: str = 'macs',
                latency_table: str | None = None) -> dict:
    exp = _export_method(stages, method, ratio, seed, dense_ckpt, search_iters,
                         control=control, budget=budget, latency_table=latency_table)
    return finetuned_row(stages, exp, row_name(method, control), method, control, ratio, seed,
                         search_iters)


def finetuned_row(stages: Stages, exp: dict, name: str, method: str, control: str | None,
                  ratio: float, seed: int, search_iters: int) -> dict:
    """The fine-tune of the export ``exp`` and its table row: a searched model (no control)
    gets the usual fine-tune after its search, a criterion under a control the fine-tune
    lengthened by the search (``longer_finetune``) or the usual one after its trained-on
    stage, so every row has the same post-dense iterations."""
    base = stages.s.finetune_iters
    iters = base + search_iters if control == 'longer_finetune' else base
    ft = stages.finetune(f'finetune-{exp["tag"]}', exp['subnet'], exp['checkpoint'], seed,
                         iters)
    # SiDT's search, the trained-on control's extra training, or the longer fine-tune
    post_dense = base + search_iters if control is not None or METHODS[method][0] == 'search' \
        else base
    return dict(name=name, method=method, control=control, ratio=ratio,
                seed=seed, subnet=exp['subnet'], macs_ratio=exp['macs_ratio'],
                params_ratio=exp['params_ratio'], separation=exp['separation'],
                **{k: ft[k] for m in stages.metrics for k in (f'{m}_pruned', f'{m}_finetuned')},
                predictions=ft['predictions'], finetune_iters=iters,
                post_dense_iters=post_dense)


def run_selection_study(preset: str = 'quick', work_dir: str = 'work_dirs/studies',
                        data_root: str | None = None, output: str | None = None,
                        **overrides) -> dict:
    """Run (or resume) the study; return its JSON-ready result. See the module docstring.

    ``overrides`` replace fields of the preset (``seeds``, ``ratios``, ``methods``,
    ``controls``, ``two_process``, ``search_fraction``) or of its stage settings (any
    :class:`~sidt_mmdet.studies.common.StageSettings` field). ``output``: the stem of the
    files written in the workspace (default ``selection_<preset>``).
    """
    if preset not in PRESETS:
        raise ValueError(f'preset: expected one of {sorted(PRESETS)}, got {preset!r}')
    p = PRESETS[preset]
    own = SelectionPreset.__dataclass_fields__
    fields = {k: overrides.pop(k) for k in list(overrides) if k in own}
    p = replace(p, **fields)
    unknown = [m for m in p.methods if m not in METHODS]
    if unknown:
        raise ValueError(f'methods: unknown {unknown}; expected some of {list(METHODS)}')
    bad = [c for c in p.controls if c not in CONTROLS]
    if bad or not p.controls:
        raise ValueError(f'controls: expected some of {list(CONTROLS)}, got {list(p.controls)}')
    settings = dict(p.settings, **overrides)
    work_dir = osp.abspath(osp.join(work_dir, p.workspace))
    default_root = osp.join(work_dir, 'data')
    task = TASKS[p.task]
    stages = task['stages'](work_dir, StageSettings(data_root=data_root or default_root,
                                                    **settings))
    metric, label = task['metric'], task['label']
    start = time.perf_counter()
    stages.record_git()
    dense = stages.dense()
    log(f'dense {label} {dense[metric]:.2f}')
    search_iters = max(1, round(p.search_fraction * stages.s.dense_iters))
    dense_ft = None
    if p.dense_finetune:
        dense_ft = stages.dense_finetuned(dense['checkpoint'], p.seeds, extra_iters=search_iters)
        log(f'{REFERENCE} ({dense_ft["iters"]} iterations): {label} '
            f'{dense_ft[f"{metric}_mean"]:.2f}')

    runs = []
    subnets = {}
    for ratio, (method, control), seed in itertools.product(p.ratios, _rows_of(p), p.seeds):
        log(f'{row_name(method, control)} at MACs x{ratio:g}, seed {seed}')
        run = _run_method(stages, method, control, ratio, seed, dense['checkpoint'],
                          search_iters)
        runs.append(run)
        subnets[(run['name'], ratio, seed)] = run['subnet']

    narrow = stages.narrow(0.6) if p.narrow_check else None
    stability = _stability(stages, p, subnets, dense['checkpoint'], search_iters)
    summary = _summary(runs, p, stages.metrics)
    result = dict(
        study='selection', preset=preset, notes=p.notes, task_type=p.task,
        bootstrap_draws=p.draws or TASKS[p.task]['draws'],
        metrics=list(stages.metrics), seeds=list(p.seeds),
        ratios=list(p.ratios), search_iters=search_iters, controls=list(p.controls),
        settings=stages.s.to_dict(), dense=dict(**{m: dense[m] for m in stages.metrics},
                                                checkpoint=dense['checkpoint'],
                                                predictions=dense['predictions'],
                                                config=stages.s.dense_config),
        dense_finetuned=dense_ft, retrain_config=stages.s.retrain_config,
        narrow=narrow, num_test=stages.num_test(),
        runs=runs, summary=summary, stability=stability)
    result.update(selection_comparisons(result))
    result['provenance'] = provenance(stages)
    result['seconds'] = round(time.perf_counter() - start, 1)
    result['goals'] = selection_goals(result)
    result['output'] = output = output or f'selection_{preset}'
    return finish_study(work_dir, output, result, selection_markdown, _plot)


def _summary(runs: list[dict], p: SelectionPreset, metrics=('top1',)) -> list[dict]:
    rows = []
    for ratio, (method, control) in itertools.product(p.ratios, _rows_of(p)):
        name = row_name(method, control)
        rs = [r for r in runs if r['name'] == name and r['ratio'] == ratio]
        if not rs:
            continue
        figures = {}
        for m, when in itertools.product(metrics, ('pruned', 'finetuned')):
            figures[f'{m}_{when}_mean'], figures[f'{m}_{when}_std'] = mean_std(
                [r[f'{m}_{when}'] for r in rs])
        rows.append(dict(name=name, method=name, criterion=method, control=control,
                         ratio=ratio, seeds=[r['seed'] for r in rs],
                         macs_ratio=mean_std([r['macs_ratio'] for r in rs])[0],
                         params_ratio=mean_std([r['params_ratio'] for r in rs])[0],
                         **figures,
                         post_dense_iters=rs[0]['post_dense_iters'],
                         predictions=[r['predictions'] for r in rs],
                         subnet=rs[0]['subnet']))
    return rows


def _stability(stages: Stages, p: SelectionPreset, subnets: dict, dense_ckpt: str,
               search_iters: int) -> dict:
    from ..models import Subnet
    out = dict(across_seeds=[], processes=[])

    def units(path):
        return kept_units(Subnet.load(path))

    names = list(dict.fromkeys(name for name, _, _ in subnets))
    for name, ratio in itertools.product(names, p.ratios):
        paths = [subnets[(name, ratio, s)] for s in p.seeds if (name, ratio, s) in subnets]
        if len(set(paths)) > 1:  # a seed-independent selection shares one export
            pairs = [jaccard(units(a), units(b)) for a, b in itertools.combinations(paths, 2)]
            out['across_seeds'].append(dict(method=name, ratio=ratio,
                                            jaccard_mean=mean_std(pairs)[0],
                                            jaccard_min=min(pairs)))
    if p.two_process and 'sidt-l1/dim' in p.methods:
        seed = p.seeds[0]
        for ratio in p.ratios:
            two = _export_method(stages, 'sidt-l1/dim', ratio, seed, dense_ckpt, search_iters,
                                 processes=2)
            one = subnets[('sidt-l1/dim', ratio, seed)]
            out['processes'].append(dict(method='sidt-l1/dim', ratio=ratio, seed=seed,
                                         jaccard=jaccard(units(one), units(two['subnet']))))
    return out


def _find(summary, name, ratio):
    return next((r for r in summary if r['name'] == name and r['ratio'] == ratio), None)


def _task(result: dict) -> dict:
    return TASKS[result.get('task_type', 'cifar')]


def _scores(paths: list[str], result: dict | None = None):
    """The per-seed scores the paired bootstrap draws from: per-image 0/1 (top-1) or, for
    detection, the box matches whose mAP each draw recomputes."""
    import numpy as np
    if result is not None and result.get('task_type') == 'detection':
        return [load_matches(path, 'bbox') for path in paths]
    return np.stack([load_correct(path) for path in paths])


def selection_comparisons(result: dict) -> dict:
    """The paired comparisons behind the goals, from the runs' stored predictions.

    ``task``: the dense reference's lift over the dense model and the dense model's lead over
    the 40%-narrower one (95% paired intervals). ``comparisons``: at each budget, SiDT's
    default recipe against the stronger control of every baseline, and at MACs x0.6 against
    the dense reference, Holm-corrected together. Each comparison's rows must share their
    post-dense iterations (:func:`check_equal_compute`).
    """
    summary, dense_ft = result['summary'], result.get('dense_finetuned')
    metric = _task(result)['metric']
    draws = result.get('bootstrap_draws') or _task(result)['draws']

    def scores(paths):
        return _scores(paths, result)
    task = {}
    dense = scores([result['dense']['predictions']])
    if dense_ft:
        task['lift'] = _points(paired_bootstrap(
            scores([r['predictions'] for r in dense_ft['runs']]), dense, draws=draws))
    if result.get('narrow'):
        task['narrow_gap'] = _points(paired_bootstrap(
            dense, scores([result['narrow']['predictions']]), draws=draws))
    pairs, meta = {}, {}
    for ratio in result['ratios']:
        s = _find(summary, SIDT_DEFAULT, ratio)
        if s is None:
            continue
        rows = [s]
        for base in BASELINES:
            controls = [r for r in (_find(summary, row_name(base, c), ratio)
                                    for c in result.get('controls', CONTROLS)) if r]
            if not controls:
                continue
            strongest = max(controls, key=lambda r: r[f'{metric}_finetuned_mean'])
            rows += controls
            key = f'{SIDT_DEFAULT} vs {base} at MACs x{ratio:g}'
            pairs[key] = (scores(s['predictions']), scores(strongest['predictions']))
            meta[key] = dict(kind='baseline', ratio=ratio, a=s['name'], b=strongest['name'],
                             baseline=base)
        if dense_ft and ratio == 0.6:
            rows.append(dict(name=REFERENCE, post_dense_iters=dense_ft['post_dense_iters']))
            key = f'{SIDT_DEFAULT} vs {REFERENCE} at MACs x{ratio:g}'
            pairs[key] = (scores(s['predictions']),
                          scores([r['predictions'] for r in dense_ft['runs']]))
            meta[key] = dict(kind='reference', ratio=ratio, a=s['name'], b=REFERENCE)
        check_equal_compute(rows, f'the comparison at MACs x{ratio:g}')
    out = compare(pairs, alpha=ALPHA, draws=draws) if pairs else {}
    return dict(task=task, comparisons=[dict(name=k, **meta[k], **out[k]) for k in pairs])


def _points(r: dict) -> dict:
    return dict(r, diff=100 * r['diff'], low=100 * r['low'], high=100 * r['high'],
                se=100 * r['se'])


def _interval(r: dict, low: str = 'low', high: str = 'high') -> str:
    return f'{r["diff"]:+.2f} [{r[low]:+.2f}, {r[high]:+.2f}]'


def selection_goals(result: dict) -> list[dict]:
    """The goals of the study, each ``met``, ``missed`` or ``not shown`` (the interval
    includes both outcomes), from :func:`selection_comparisons`' intervals."""
    goals = []
    kind = _task(result)
    dense = result['dense'][kind['metric']]
    lo, hi = kind['dense_range']
    goals.append(dict(goal=f'dense {kind["label"]} in {lo}-{hi}',
                      status='met' if lo <= dense <= hi else 'missed', detail=f'{dense:.2f}'))
    task = result.get('task', {})
    if 'lift' in task:
        t = task['lift']
        status = 'met' if t['high'] <= 0.5 else 'missed' if t['low'] > 0.5 else 'not shown'
        goals.append(dict(goal=f'the task needs its width: the dense model is near convergence '
                               f'({REFERENCE} gains at most 0.5 points, 95% interval)',
                          status=status, detail=f'gain {_interval(t)}'))
    if 'narrow_gap' in task:
        t = task['narrow_gap']
        status = 'met' if t['low'] > 0 else 'missed' if t['high'] < 0 else 'not shown'
        goals.append(dict(goal='the task needs its width: a 40%-narrower model trained as the '
                               'dense one scores lower (95% interval of the paired difference '
                               'above 0)',
                          status=status, detail=f'dense minus narrow {_interval(t)}'))
    for c in result.get('comparisons', []):
        level = f'{100 * c["level"]:.1f}% Holm-corrected interval over {c["family"]}'
        if c['kind'] == 'reference':
            status = 'met' if c['low'] > -1 else 'missed' if c['high'] < -1 else 'not shown'
            goals.append(dict(goal=f'{c["a"]} at MACs x{c["ratio"]:g} not below {c["b"]} by '
                                   'more than 1 point (lower bound of the corrected interval)',
                              status=status, detail=f'{_interval(c)}, {level}'))
            continue
        v = verdict(c, alpha=ALPHA)
        status = dict(ahead='met', behind='missed').get(v, 'not shown')
        goals.append(dict(goal=f'{c["a"]} ahead of {c["baseline"]} at MACs x{c["ratio"]:g} '
                               f'(its stronger control: {c["b"]})',
                          status=status,
                          detail=f'{_interval(c)}, {level}; Holm p {c["p_holm"]:.3f}'))
    return goals


def _pm(mean, std, seeds):
    return f'{mean:.2f}' if len(seeds) < 2 else f'{mean:.2f} ± {std:.2f}'


_LABELS = dict(top1='top-1', bbox_mAP='box mAP', segm_mAP='mask mAP')


def selection_markdown(result: dict) -> str:
    kind = _task(result)
    metrics = result.get('metrics', ['top1'])
    first, label = kind['metric'], kind['label']
    unit = '%' if first == 'top1' else ''
    dense = result['dense'][first]
    if result.get('task_type') == 'detection':
        data = result['settings'].get('data_preset', 'hard')
        model = (f'Dense toy Mask R-CNN ({data} toy COCO, {result["num_test"]} test images) '
                 f'box mAP **{dense:.2f}**, mask mAP {result["dense"]["segm_mAP"]:.2f}')
        figures = 'COCO mAP@[.50:.95] x100'
    else:
        model = f'Dense toy ViT top-1 **{dense:.2f}%**'
        figures = 'top-1 in %'
    lines = [
        '# Selection study: SiDT against pruning criteria at equal MACs and equal training',
        '',
        f'Preset `{result["preset"]}`{": " + result["notes"] if result["notes"] else ""}. '
        f'{model} ({result["settings"]["dense_iters"]} '
        f'iterations); search {result["search_iters"]} iterations; fine-tune '
        f'{result["settings"]["finetune_iters"]} iterations with '
        f'`{osp.basename(result["retrain_config"])}`, lengthened by the search length for '
        'the longer-fine-tune control and the dense reference, so that every row of one '
        'budget has the same training after the dense model (the post-dense column). '
        f'Seeds {result["seeds"]}; {figures}, mean ± std over seeds.'
        + (f' A 40%-narrower model (every head dim and MLP width x0.6, MACs '
           f'x{result["narrow"]["macs_ratio"]:.2f}) trained from scratch exactly as the dense '
           f'one: **{result["narrow"][first]:.2f}{unit}**.' if result.get('narrow') else ''),
        '',
        '| method | MACs ratio | params ratio | post-dense iterations | '
        + ' | '.join(f'{_LABELS.get(m, m)} after pruning | {_LABELS.get(m, m)} after fine-tune'
                     for m in metrics) + ' |',
        '|---|---:|---:|---:|' + '---:|' * (2 * len(metrics))]
    dense_ft = result.get('dense_finetuned')
    if dense_ft:
        # "after pruning" is the full-width export evaluated: the dense figure when export and
        # the retrain config reproduce the dense model.
        cells = []
        for m in metrics:
            before = mean_std([r[f'{m}_pruned'] for r in dense_ft['runs']])[0]
            cells += [f'{before:.2f}',
                      _pm(dense_ft[f'{m}_mean'], dense_ft[f'{m}_std'], dense_ft['seeds'])]
        lines.append(f'| {REFERENCE} | 1.000 | 1.000 | {dense_ft["post_dense_iters"]} | '
                     + ' | '.join(cells) + ' |')
    for r in result['summary']:
        cells = [_pm(r[f'{m}_{w}_mean'], r[f'{m}_{w}_std'], r['seeds'])
                 for m in metrics for w in ('pruned', 'finetuned')]
        lines.append(f'| {r["method"]} | {r["macs_ratio"]:.3f} | {r["params_ratio"]:.3f} | '
                     f'{r["post_dense_iters"]} | ' + ' | '.join(cells) + ' |')
    if result.get('comparisons'):
        family = result['comparisons'][0]['family']
        lines += ['', '## Paired comparisons', '',
                  f'Difference of {label} (points, first minus second), paired bootstrap over '
                  'test images and seeds; the corrected interval is at the level of its Holm '
                  f'step over the {family} comparisons of this table. A difference is called '
                  'only when the Holm-adjusted p-value is under 0.05.', '',
                  '| comparison | against | difference | 95% interval | corrected interval '
                  '| Holm p | verdict |', '|---|---|---:|---:|---:|---:|---|']
        for c in result['comparisons']:
            lines.append(f'| {c["name"]} | {c["b"]} | {c["diff"]:+.2f} | '
                         f'[{c["low95"]:+.2f}, {c["high95"]:+.2f}] | '
                         f'[{c["low"]:+.2f}, {c["high"]:+.2f}] ({100 * c["level"]:.1f}%) | '
                         f'{c["p_holm"]:.3f} | {verdict(c, alpha=ALPHA)} |')
    st = result['stability']
    lines += ['', '## Stability of the selection', '']
    if st['across_seeds']:
        lines += ['Jaccard overlap of the kept units (attention dims + MLP units) across seeds:',
                  '', '| method | MACs ratio | mean | min |', '|---|---:|---:|---:|']
        lines += [f'| {r["method"]} | {r["ratio"]:g} | {r["jaccard_mean"]:.3f} | '
                  f'{r["jaccard_min"]:.3f} |' for r in st['across_seeds']]
    else:
        lines.append('One seed: no overlap across seeds.')
    if st['processes']:
        lines += ['', '1- vs 2-process search (same seed, same total batch), Jaccard of the '
                  'kept units: ' + ', '.join(f'MACs x{r["ratio"]:g}: {r["jaccard"]:.3f}'
                                              for r in st['processes'])]
    lines += ['', 'Score separation at selection (kept minus dropped mean score, and lowest '
              'kept minus highest dropped, in units of the mean score; seed '
              f'{result["seeds"][0]}):', '',
              '| method | MACs ratio | attn gap | attn margin | MLP gap | MLP margin |',
              '|---|---:|---:|---:|---:|---:|']
    for r in result['runs']:
        if r['seed'] != result['seeds'][0]:
            continue
        a, m = r['separation'].get('attn', {}), r['separation'].get('mlp', {})
        lines.append(f'| {r["method"]} | {r["ratio"]:g} | {a.get("gap", float("nan")):.3f} | '
                     f'{a.get("margin", float("nan")):.3f} | {m.get("gap", float("nan")):.3f} | '
                     f'{m.get("margin", float("nan")):.3f} |')
    lines += ['', '## Goals', '']
    lines += goal_lines(result['goals'])
    name = result.get('output', f'selection_{result["preset"]}')
    lines += ['', f'{result["seconds"] / 60:.1f} min. JSON: {name}.json; plot: {name}.png.', '']
    return '\n'.join(lines)


def _plot(result: dict, path: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    metric, label = _task(result)['metric'], _task(result)['label']
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    methods = list(dict.fromkeys(r['method'] for r in result['summary']))
    for k, method in enumerate(methods):
        rows = sorted((r for r in result['summary'] if r['method'] == method),
                      key=lambda r: r['macs_ratio'])
        x = [r['macs_ratio'] + (k - len(methods) / 2) * 0.003 for r in rows]
        ax.errorbar(x, [r[f'{metric}_finetuned_mean'] for r in rows],
                    yerr=[r[f'{metric}_finetuned_std'] for r in rows], marker='o', capsize=3,
                    label=method, linestyle='-' if method.startswith('sidt') else '--')
    ax.axhline(result['dense'][metric], color='k', linewidth=1, label='dense')
    if result.get('dense_finetuned'):
        ax.axhline(result['dense_finetuned'][f'{metric}_mean'], color='k', linewidth=1,
                   linestyle=':', label=REFERENCE)
    ax.set_xlabel('backbone MACs ratio (pruned / dense)')
    ax.set_ylabel(f'{label} after fine-tune' + (' (%)' if metric == 'top1' else ''))
    ax.set_title(f'selection study ({result["preset"]}, seeds {result["seeds"]})')
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    save_figure(fig, path)
