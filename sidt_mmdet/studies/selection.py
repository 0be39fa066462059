"""Selection study: SiDT's searched widths against the usual pruning criteria at equal MACs.

On the hard toy CIFAR-100 preset (``configs/cifar100/*_toy-cifar100-hard.py``), from one
trained dense toy ViT:

- SiDT: a search (L1 masks, ``plain`` or ``macs_weighted``) per seed, then selection at
  granularity ``dim`` or ``head_uniform``;
- baselines on the same units (:mod:`sidt_mmdet.search.criteria`): weight ``magnitude``,
  first-order ``taylor`` (gradients of a few training batches), ``random`` and ``uniform``
  width, from the dense checkpoint;

each selected for the same backbone MACs budgets (ratios of the dense MACs), sliced through
the same export, evaluated right after pruning, fine-tuned with the same schedule, evaluated
again. Seeds vary the search (SiDT), the random draw and the Taylor batches, and the
fine-tune. Stability: the Jaccard overlap of the kept units across search seeds and between
a 1- and a 2-process search (same seed, same total batch), and how far apart the kept and
the dropped units' scores are at selection.

Writes ``selection_<preset>.json``, ``.md`` and ``.png`` in the work dir, and prints
the goals (met / missed / not assessable).

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

from .common import (
    Stages,
    StageSettings,
    binomial_se,
    jaccard,
    kept_units,
    log,
    mean_std,
    reference_top1,
    write_json_atomic,
    write_text_atomic,
)

__all__ = ['PRESETS', 'SelectionPreset', 'METHODS', 'run_selection_study', 'selection_goals']

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


@dataclass(frozen=True)
class SelectionPreset:
    """A study size. ``search_fraction`` of the dense iterations is the search length."""

    settings: dict
    seeds: tuple[int, ...] = (0, 1, 2)
    ratios: tuple[float, ...] = (0.6, 0.4)
    search_fraction: float = 0.10
    methods: tuple[str, ...] = tuple(METHODS)
    two_process: bool = True
    # Train a 40%-narrower model from scratch as the dense one: does the set need the width?
    narrow_check: bool = True
    # Give the dense model the same fine-tune as every pruned one (the fair reference: the
    # fine-tune adds iterations the dense run never had).
    dense_finetune: bool = True
    # Sub-directory of the work dir: presets on the same data share their dense model,
    # searches and exports there.
    workspace: str = 'hard'
    expected_minutes: float = 0.0
    notes: str = ''
    extra: dict = field(default_factory=dict)


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
        seeds=(0,), two_process=False, expected_minutes=25,
        notes='one seed: the std-based goals are not assessable'),
    # The shortest real run: one seed, a 5% fine-tune, the dim-granularity methods, no
    # narrow-model check.
    'short': SelectionPreset(
        settings=dict(finetune_iters=187, finetune_warmup=19),
        seeds=(0,), two_process=False, narrow_check=False, expected_minutes=12,
        methods=('sidt-l1/dim', 'sidt-l1-macs/dim', 'magnitude', 'taylor', 'random', 'uniform'),
        notes='one seed, 5% fine-tune, no narrow-model check: the std-based goals are not '
              'assessable'),
    # The study as the goals state it: 3 seeds, 20% fine-tune, 1- vs 2-process search.
    'full': SelectionPreset(settings=dict(), expected_minutes=95),
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


def _export_method(stages: Stages, method: str, ratio: float, seed: int, dense_ckpt: str,
                   search_iters: int, processes: int = 1) -> dict:
    source, variant, granularity = METHODS[method]
    if source == 'search':
        search = stages.search(dense_ckpt, search_iters, seed, macs_weighted=variant == 'macs',
                               processes=processes)
        tag = f'sidt-{variant}-it{search_iters}-s{seed}-p{processes}-{granularity}-r{ratio:g}'
        return stages.export(f'export-{tag}', dict(method=method, seed=seed), 'search',
                             search['checkpoint'], _sidt_scores, ratio, granularity) | \
            dict(tag=tag)
    tag = f'{variant}-s{seed}-{granularity}-r{ratio:g}'
    # Magnitude and uniform do not depend on the seed: their exports are shared.
    key_seed = seed if variant in ('random', 'taylor') else 0
    tag_export = f'{variant}-s{key_seed}-{granularity}-r{ratio:g}'
    out = stages.export(f'export-{tag_export}', dict(method=method, seed=key_seed), 'criterion',
                        dense_ckpt, _criterion_scores_fn(stages, variant, key_seed), ratio,
                        granularity)
    return out | dict(tag=tag)


def run_selection_study(preset: str = 'quick', work_dir: str = 'work_dirs/studies',
                        data_root: str | None = None, **overrides) -> dict:
    """Run (or resume) the study; return its JSON-ready result. See the module docstring.

    ``overrides`` replace fields of the preset (``seeds``, ``ratios``, ``methods``,
    ``two_process``, ``search_fraction``) or of its stage settings (any
    :class:`~sidt_mmdet.studies.common.StageSettings` field).
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
    settings = dict(p.settings, **overrides)
    work_dir = osp.abspath(osp.join(work_dir, p.workspace))
    default_root = osp.join(work_dir, 'data')
    stages = Stages(work_dir, StageSettings(data_root=data_root or default_root, **settings))
    start = time.perf_counter()
    dense = stages.dense()
    log(f'dense top-1 {dense["top1"]:.2f}')
    search_iters = max(1, round(p.search_fraction * stages.s.dense_iters))
    dense_ft = None
    if p.dense_finetune:
        dense_ft = stages.dense_finetuned(dense['checkpoint'], p.seeds)
        log(f'dense + the same fine-tune: top-1 {dense_ft["top1_mean"]:.2f}')

    runs = []
    subnets = {}
    for ratio, method, seed in itertools.product(p.ratios, p.methods, p.seeds):
        log(f'{method} at MACs x{ratio:g}, seed {seed}')
        exp = _export_method(stages, method, ratio, seed, dense['checkpoint'], search_iters)
        ft = stages.finetune(f'finetune-{exp["tag"]}', exp['subnet'], exp['checkpoint'], seed)
        runs.append(dict(method=method, ratio=ratio, seed=seed, subnet=exp['subnet'],
                         macs_ratio=exp['macs_ratio'], params_ratio=exp['params_ratio'],
                         separation=exp['separation'], top1_pruned=ft['top1_pruned'],
                         top1_finetuned=ft['top1_finetuned']))
        subnets[(method, ratio, seed)] = exp['subnet']

    narrow = stages.narrow(0.6) if p.narrow_check else None
    stability = _stability(stages, p, subnets, dense['checkpoint'], search_iters)
    summary = _summary(runs, p)
    result = dict(
        study='selection', preset=preset, notes=p.notes, seeds=list(p.seeds),
        ratios=list(p.ratios), search_iters=search_iters,
        settings=stages.s.to_dict(), dense=dict(top1=dense['top1'],
                                                checkpoint=dense['checkpoint'],
                                                config=stages.s.dense_config),
        dense_finetuned=dense_ft, retrain_config=stages.s.retrain_config,
        narrow=narrow, num_test=stages.num_test(),
        runs=runs, summary=summary, stability=stability,
        seconds=round(time.perf_counter() - start, 1))
    result['goals'] = selection_goals(result)
    write_json_atomic(osp.join(work_dir, f'selection_{preset}.json'), result)
    write_text_atomic(osp.join(work_dir, f'selection_{preset}.md'), selection_markdown(result))
    _plot(result, osp.join(work_dir, f'selection_{preset}.png'))
    for g in result['goals']:
        log(f'goal {g["status"].upper()}: {g["goal"]} ({g["detail"]})')
    return result


def _summary(runs: list[dict], p: SelectionPreset) -> list[dict]:
    rows = []
    for ratio, method in itertools.product(p.ratios, p.methods):
        rs = [r for r in runs if r['method'] == method and r['ratio'] == ratio]
        if not rs:
            continue
        b_mean, b_std = mean_std([r['top1_pruned'] for r in rs])
        a_mean, a_std = mean_std([r['top1_finetuned'] for r in rs])
        rows.append(dict(method=method, ratio=ratio, seeds=[r['seed'] for r in rs],
                         macs_ratio=mean_std([r['macs_ratio'] for r in rs])[0],
                         params_ratio=mean_std([r['params_ratio'] for r in rs])[0],
                         top1_pruned_mean=b_mean, top1_pruned_std=b_std,
                         top1_finetuned_mean=a_mean, top1_finetuned_std=a_std,
                         subnet=rs[0]['subnet']))
    return rows


def _stability(stages: Stages, p: SelectionPreset, subnets: dict, dense_ckpt: str,
               search_iters: int) -> dict:
    from ..models import Subnet
    out = dict(across_seeds=[], processes=[])

    def units(path):
        return kept_units(Subnet.load(path))

    for method, ratio in itertools.product(p.methods, p.ratios):
        paths = [subnets[(method, ratio, s)] for s in p.seeds if (method, ratio, s) in subnets]
        if len(paths) > 1 and METHODS[method][1] not in ('magnitude', 'uniform'):
            pairs = [jaccard(units(a), units(b)) for a, b in itertools.combinations(paths, 2)]
            out['across_seeds'].append(dict(method=method, ratio=ratio,
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


def _find(summary, method, ratio):
    return next((r for r in summary if r['method'] == method and r['ratio'] == ratio), None)


def selection_goals(result: dict) -> list[dict]:
    """The goals of the study, each ``met``, ``missed`` or ``not assessable``."""
    goals = []
    dense = result['dense']['top1']
    summary = result['summary']
    goals.append(dict(goal='dense top-1 in 50-85%', status='met' if 50 <= dense <= 85 else 'missed',
                      detail=f'{dense:.2f}'))
    # The binomial standard error of one top-1 near the dense one on this test split: the
    # resolution of every comparison below (stated next to each).
    se = binomial_se(dense, result.get('num_test', 0))
    se2 = 2 * se
    narrow = result.get('narrow')
    if narrow is not None:
        gap = dense - narrow['top1']
        goals.append(dict(goal='a 40%-narrower model trained the same way scores measurably '
                               'lower than dense (by more than 2 standard errors)',
                          status='met' if gap > se2 else 'missed',
                          detail=f'{narrow["top1"]:.2f} vs dense {dense:.2f} ({-gap:+.2f}; '
                                 f'2 s.e. {se2:.2f}, {result["num_test"]} test images)'))

    several = len(result['seeds']) > 1
    s06 = _find(summary, SIDT_DEFAULT, 0.6)
    if s06 is not None:
        ref, ref_name = reference_top1(result)
        top1 = s06['top1_finetuned_mean']
        gap = top1 - ref
        detail = f'{top1:.2f} vs {ref_name} {ref:.2f} ({gap:+.2f})'
        if result.get('dense_finetuned'):
            detail += f'; vs dense as trained {dense:.2f} ({top1 - dense:+.2f})'
        goals.append(dict(goal=f'{SIDT_DEFAULT} at MACs x0.6 within 0.5 points of '
                               f'{ref_name} top-1',
                          status='met' if gap >= -0.5 else 'missed', detail=detail))
    for ratio, need_std in ((0.6, True), (0.4, False)):
        s = _find(summary, SIDT_DEFAULT, ratio)
        if s is None:
            continue
        for base in BASELINES:
            b = _find(summary, base, ratio)
            if b is None:
                continue
            diff = s['top1_finetuned_mean'] - b['top1_finetuned_mean']
            margin = max(s['top1_finetuned_std'], b['top1_finetuned_std']) if need_std else 0.0
            text = (f'{SIDT_DEFAULT} ahead of {base} at MACs x{ratio:g}'
                    + (' by more than the seeds\' std' if need_std else ''))
            detail = (f'{s["top1_finetuned_mean"]:.2f} vs {b["top1_finetuned_mean"]:.2f} '
                      f'({diff:+.2f}' + (f', std {margin:.2f}' if need_std else '')
                      + f'; binomial s.e. of one top-1 {se:.2f})')
            if need_std and not several:
                status = 'not assessable'
                detail += '; one seed, no std'
            else:
                status = 'met' if diff > margin else 'missed'
            goals.append(dict(goal=text, status=status, detail=detail))
    return goals


def _pm(mean, std, seeds):
    return f'{mean:.2f}' if len(seeds) < 2 else f'{mean:.2f} ± {std:.2f}'


def selection_markdown(result: dict) -> str:
    dense = result['dense']['top1']
    lines = [
        '# Selection study: SiDT against pruning criteria at equal MACs', '',
        f'Preset `{result["preset"]}`{": " + result["notes"] if result["notes"] else ""}. '
        f'Dense toy ViT top-1 **{dense:.2f}%** ({result["settings"]["dense_iters"]} '
        f'iterations); search {result["search_iters"]} iterations; every pruned model '
        f'fine-tuned {result["settings"]["finetune_iters"]} iterations with '
        f'`{osp.basename(result["retrain_config"])}`. Seeds {result["seeds"]}; top-1 in %, '
        'mean ± std over seeds.'
        + (f' A 40%-narrower model (every head dim and MLP width x0.6, MACs '
           f'x{result["narrow"]["macs_ratio"]:.2f}) trained from scratch exactly as the dense '
           f'one: **{result["narrow"]["top1"]:.2f}%**.' if result.get('narrow') else ''), '',
        '| method | MACs ratio | params ratio | top-1 after pruning | top-1 after fine-tune |',
        '|---|---:|---:|---:|---:|']
    dense_ft = result.get('dense_finetuned')
    if dense_ft:
        # "after pruning" is the full-width export evaluated: the dense top-1 when export and
        # the retrain config reproduce the dense model.
        before = mean_std([r['top1_pruned'] for r in dense_ft['runs']])[0]
        lines.append(f'| dense + the same fine-tune | 1.000 | 1.000 | {before:.2f} | '
                     f'{_pm(dense_ft["top1_mean"], dense_ft["top1_std"], dense_ft["seeds"])} |')
    for r in result['summary']:
        lines.append(f'| {r["method"]} | {r["macs_ratio"]:.3f} | {r["params_ratio"]:.3f} | '
                     f'{_pm(r["top1_pruned_mean"], r["top1_pruned_std"], r["seeds"])} | '
                     f'{_pm(r["top1_finetuned_mean"], r["top1_finetuned_std"], r["seeds"])} |')
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
    lines += [f'- **{g["status"]}**: {g["goal"]} ({g["detail"]})' for g in result['goals']]
    name = f'selection_{result["preset"]}'
    lines += ['', f'{result["seconds"] / 60:.1f} min. JSON: {name}.json; plot: {name}.png.', '']
    return '\n'.join(lines)


def _plot(result: dict, path: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    methods = list(dict.fromkeys(r['method'] for r in result['summary']))
    for k, method in enumerate(methods):
        rows = sorted((r for r in result['summary'] if r['method'] == method),
                      key=lambda r: r['macs_ratio'])
        x = [r['macs_ratio'] + (k - len(methods) / 2) * 0.003 for r in rows]
        ax.errorbar(x, [r['top1_finetuned_mean'] for r in rows],
                    yerr=[r['top1_finetuned_std'] for r in rows], marker='o', capsize=3,
                    label=method, linestyle='-' if method.startswith('sidt') else '--')
    ax.axhline(result['dense']['top1'], color='k', linewidth=1, label='dense')
    if result.get('dense_finetuned'):
        ax.axhline(result['dense_finetuned']['top1_mean'], color='k', linewidth=1,
                   linestyle=':', label='dense + same fine-tune')
    ax.set_xlabel('backbone MACs ratio (pruned / dense)')
    ax.set_ylabel('top-1 after fine-tune (%)')
    ax.set_title(f'selection study ({result["preset"]}, seeds {result["seeds"]})')
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    tmp = path + '.tmp.png'
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    import os
    os.replace(tmp, path)
