"""Search-cost study: how long must the SiDT search run to reach the dense model's top-1?

From the trained dense toy ViT of the hard toy CIFAR-100 preset, the search (L1 masks, the
default recipe) runs for 5%, 10% and 20% of the dense training iterations; each search is
selected at backbone MACs x0.6 (granularity ``dim``), fine-tuned with the schedule every
method of the selection study gets, and evaluated. The stages are those of
:mod:`sidt_mmdet.studies.selection` and share its work dir, so runs they have in common (the
dense model, the 10% search, its export and fine-tune) are computed once.

Writes ``search_cost_<preset>.json`` and ``.md`` and prints the goal: a search for at most
10% of the dense iterations reaches dense top-1 within 0.5 points, where "dense" is the dense
model given the same fine-tune (:meth:`Stages.dense_finetuned`, shared with the selection
study, lengthened by the search's iterations), so every row has as much training after the
dense model as its reference.

With a validation split (``num_val`` of the settings, preset ``tiny-val``) every length and its
reference are measured on the validation split, the length is chosen there
(:meth:`Stages.choose`), and only the chosen length and its reference are evaluated on the
test split, once; the goal reads those test figures.
"""
from __future__ import annotations

import itertools
import os.path as osp
import time
from dataclasses import dataclass, field

from .common import (
    Stages,
    StageSettings,
    finish_study,
    goal_lines,
    log,
    mean_std,
    provenance,
)
from .selection import PRESETS as SELECTION_PRESETS
from .selection import _export_method

__all__ = ['PRESETS', 'SearchCostPreset', 'run_search_cost_study', 'search_cost_goals']


@dataclass(frozen=True)
class SearchCostPreset:
    settings: dict
    fractions: tuple[float, ...] = (0.05, 0.10, 0.20)
    seeds: tuple[int, ...] = (0, 1, 2)
    ratio: float = 0.6
    workspace: str = 'hard'
    expected_minutes: float = 0.0
    notes: str = ''
    extra: dict = field(default_factory=dict)


PRESETS = {
    'tiny': SearchCostPreset(settings=SELECTION_PRESETS['tiny'].settings,
                             fractions=(0.25, 0.5), seeds=(0,), workspace='tiny',
                             expected_minutes=1, notes='plumbing only'),
    # The choice on a validation split at the suite's size (its own workspace: every stage
    # trains without the held-out images).
    'tiny-val': SearchCostPreset(settings=dict(SELECTION_PRESETS['tiny'].settings, num_val=50),
                                 fractions=(0.25, 0.5), seeds=(0,), workspace='tiny-val',
                                 expected_minutes=1,
                                 notes='plumbing only, the length chosen on 50 validation '
                                       'images'),
    'short': SearchCostPreset(settings=SELECTION_PRESETS['short'].settings, seeds=(0,),
                              expected_minutes=5, notes='one seed, 5% fine-tune'),
    'quick': SearchCostPreset(settings=SELECTION_PRESETS['quick'].settings, seeds=(0,),
                              expected_minutes=12, notes='one seed'),
    'full': SearchCostPreset(settings=SELECTION_PRESETS['full'].settings,
                             expected_minutes=40),
}


def run_search_cost_study(preset: str = 'quick', work_dir: str = 'work_dirs/studies',
                          data_root: str | None = None, **overrides) -> dict:
    """Run (or resume) the study; return its JSON-ready result (see the module docstring).

    ``overrides``: ``fractions``/``seeds``/``ratio``, or :class:`StageSettings` fields.
    """
    if preset not in PRESETS:
        raise ValueError(f'preset: expected one of {sorted(PRESETS)}, got {preset!r}')
    p = PRESETS[preset]
    fractions = tuple(overrides.pop('fractions', p.fractions))
    seeds = tuple(overrides.pop('seeds', p.seeds))
    ratio = overrides.pop('ratio', p.ratio)
    if any(not 0 < f <= 1 for f in fractions):
        raise ValueError(f'fractions: expected values in (0, 1], got {fractions}')
    work_dir = osp.abspath(osp.join(work_dir, p.workspace))
    stages = Stages(work_dir, StageSettings(data_root=data_root or osp.join(work_dir, 'data'),
                                            **dict(p.settings, **overrides)))
    start = time.perf_counter()
    stages.record_git()
    dense = stages.dense()
    # with a validation split every length is measured there and one is chosen
    split = 'val' if stages.s.num_val else 'test'
    runs, finals = [], {}
    for frac, seed in itertools.product(fractions, seeds):
        iters = max(1, round(frac * stages.s.dense_iters))
        log(f'search for {frac:.0%} of the dense iterations ({iters}), seed {seed}')
        exp = _export_method(stages, 'sidt-l1/dim', ratio, seed, dense['checkpoint'], iters)
        ft = stages.finetune(f'finetune-{exp["tag"]}', exp['subnet'], exp['checkpoint'], seed,
                             split=split)
        finals.setdefault(frac, []).append(ft['final'])
        runs.append(dict(fraction=frac, search_iters=iters, seed=seed, subnet=exp['subnet'],
                         macs_ratio=exp['macs_ratio'], top1_pruned=ft['top1_pruned'],
                         top1_finetuned=ft['top1_finetuned'], separation=exp['separation'],
                         post_dense_iters=iters + stages.s.finetune_iters,
                         **({} if split == 'test' else dict(split=split))))
    summary, references = [], {}
    for frac in fractions:
        rs = [r for r in runs if r['fraction'] == frac]
        a_mean, a_std = mean_std([r['top1_finetuned'] for r in rs])
        b_mean, b_std = mean_std([r['top1_pruned'] for r in rs])
        # the dense model given the same training after it: the fine-tune plus this search
        ref = references[frac] = stages.dense_finetuned(
            dense['checkpoint'], seeds, extra_iters=rs[0]['search_iters'], split=split)
        summary.append(dict(fraction=frac, search_iters=rs[0]['search_iters'],
                            seeds=[r['seed'] for r in rs],
                            top1_pruned_mean=b_mean, top1_pruned_std=b_std,
                            top1_finetuned_mean=a_mean, top1_finetuned_std=a_std,
                            post_dense_iters=rs[0]['post_dense_iters'],
                            reference_top1=ref['top1_mean'], reference_iters=ref['iters'],
                            subnet=rs[0]['subnet'], **({} if split == 'test' else
                                                       dict(split=split))))
    result = dict(study='search_cost', preset=preset, notes=p.notes, ratio=ratio,
                  seeds=list(seeds), settings=stages.s.to_dict(),
                  dense=dict(top1=dense['top1'], checkpoint=dense['checkpoint'],
                             predictions=dense['predictions'], config=stages.s.dense_config),
                  retrain_config=stages.s.retrain_config,
                  runs=runs, summary=summary, provenance=provenance(stages))
    if split == 'val':
        result['choice'] = _choose_length(stages, summary, finals, references)
    result['seconds'] = round(time.perf_counter() - start, 1)
    result['goals'] = search_cost_goals(result)
    return finish_study(work_dir, f'search_cost_{preset}', result, search_cost_markdown)


def _choose_length(stages: Stages, summary: list[dict], finals: dict, references: dict) -> dict:
    """The search length of the best validation top-1 after the fine-tune, its test top-1
    and its reference's (each of their models evaluated on the test split once)."""
    by_label = {f'{r["fraction"]:g}': r for r in summary}
    choice = stages.choose('choice-search-length',
                           {label: (lambda r=r: finals[r['fraction']])
                            for label, r in by_label.items()})
    row = by_label[choice['chosen']]
    ref = [stages.evaluate_final(f'choice-search-length-reference-test{i}', run['final'])
           for i, run in enumerate(references[row['fraction']]['runs'])]
    return dict(fraction=row['fraction'], search_iters=row['search_iters'],
                val_top1=choice['val'], top1_test=choice['test']['top1'],
                reference_top1_test=mean_std([r['top1'] for r in ref])[0],
                reference_iters=row['reference_iters'], test=choice['test'],
                reference_test=ref)


def search_cost_goals(result: dict) -> list[dict]:
    """Each search length is held against the dense model given the same training after it
    (its fine-tune plus that search's length); with a validation split, only the length
    chosen there is, on the test split."""
    if result.get('choice'):
        return _chosen_goal(result)
    cheap = [r for r in result['summary'] if r['fraction'] <= 0.10 + 1e-9]
    if not cheap:
        return [dict(goal='a search for <= 10% of the dense iterations reaches dense top-1 '
                          'within 0.5 points', status='not assessable',
                     detail='no fraction <= 10% was run')]
    best = max(cheap, key=lambda r: r['top1_finetuned_mean'] - r['reference_top1'])
    gap = best['top1_finetuned_mean'] - best['reference_top1']
    return [dict(goal=f'a search for <= 10% of the dense iterations reaches dense top-1 within '
                      f'0.5 points at MACs x{result["ratio"]:g}, the dense model given the '
                      'same training after it',
                 status='met' if gap >= -0.5 else 'missed',
                 detail=f'best: {best["fraction"]:.0%} ({best["search_iters"]} iterations) '
                        f'{best["top1_finetuned_mean"]:.2f} vs dense + '
                        f'{best["reference_iters"]} iterations {best["reference_top1"]:.2f} '
                        f'({gap:+.2f}); point estimates, no interval')]


def _chosen_goal(result: dict) -> list[dict]:
    c = result['choice']
    goal = (f'the search length chosen on the validation split is <= 10% of the dense '
            f'iterations and reaches dense top-1 within 0.5 points on the test split at MACs '
            f'x{result["ratio"]:g}, the dense model given the same training after it')
    if c['fraction'] > 0.10 + 1e-9:
        return [dict(goal=goal, status='not assessable',
                     detail=f'validation chose {c["fraction"]:.0%} ({c["search_iters"]} '
                            'iterations), longer than 10%')]
    gap = c['top1_test'] - c['reference_top1_test']
    return [dict(goal=goal, status='met' if gap >= -0.5 else 'missed',
                 detail=f'chosen: {c["fraction"]:.0%} ({c["search_iters"]} iterations), test '
                        f'{c["top1_test"]:.2f} vs dense + {c["reference_iters"]} iterations '
                        f'{c["reference_top1_test"]:.2f} ({gap:+.2f}); point estimates, '
                        'no interval')]


def search_cost_markdown(result: dict) -> str:
    dense = result['dense']['top1']
    several = len(result['seeds']) > 1
    lines = [
        '# Search-cost study: search length against top-1 after retrain', '',
        f'Preset `{result["preset"]}`{": " + result["notes"] if result["notes"] else ""}. '
        f'Dense top-1 **{dense:.2f}%** ({result["settings"]["dense_iters"]} iterations). '
        f'Each search is selected at backbone MACs x{result["ratio"]:g} and fine-tuned '
        f'{result["settings"]["finetune_iters"]} iterations. Seeds {result["seeds"]}. '
        'Reference of each row: the dense model fine-tuned for the fine-tune plus that '
        'search length (the same training after the dense model).', '',
        '| search length | iterations | top-1 after pruning | top-1 after retrain | '
        'reference | vs reference |',
        '|---|---:|---:|---:|---:|---:|']
    choice = result.get('choice')
    if choice:
        lines[-4] += (f' With {result["settings"]["num_val"]} training images held out as a '
                      'validation split: every length is measured on it, the length is chosen '
                      'there, and only the chosen one (and its reference) on the test split.')
        lines[-2] += ' split |'
        lines[-1] += '---|'
    for r in result['summary']:
        pm = (lambda m, s: f'{m:.2f} ± {s:.2f}') if several else (lambda m, s: f'{m:.2f}')
        lines.append(f'| {r["fraction"]:.0%} of dense | {r["search_iters"]} | '
                     f'{pm(r["top1_pruned_mean"], r["top1_pruned_std"])} | '
                     f'{pm(r["top1_finetuned_mean"], r["top1_finetuned_std"])} | '
                     f'{r["reference_top1"]:.2f} | '
                     f'{r["top1_finetuned_mean"] - r["reference_top1"]:+.2f} |'
                     + (' validation |' if choice else ''))
    if choice:
        lines.append(f'| {choice["fraction"]:.0%} of dense, chosen | {choice["search_iters"]} '
                     f'| not tested | {choice["top1_test"]:.2f} | '
                     f'{choice["reference_top1_test"]:.2f} | '
                     f'{choice["top1_test"] - choice["reference_top1_test"]:+.2f} | test |')
    lines += ['', '## Goals', '']
    lines += goal_lines(result['goals'])
    lines += ['', f'{result["seconds"] / 60:.1f} min. JSON: search_cost_{result["preset"]}.json.',
              '']
    return '\n'.join(lines)
