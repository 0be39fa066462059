"""Fine-tune-length sweep: does the ranking of the selection methods hold as the fine-tune
after pruning grows?

The selection study (:mod:`sidt_mmdet.studies.selection`, equal training after the dense
model, both baseline controls, paired intervals) run at one MACs budget for fine-tunes of
several fractions of the dense iterations, sharing its work dir (dense model, searches,
exports and trained-on controls are computed once). Writes ``finetune_sweep_<preset>.json``,
``.md`` (one table: a row per method, a column per fine-tune length, and the verdict of each
paired comparison) and ``.png`` (top-1 against fine-tune length), and one selection report
per length (``selection_<preset>_ft<iters>.*``).
"""
from __future__ import annotations

import os.path as osp
import time
from dataclasses import dataclass

from .common import StageSettings, log, save_figure, write_json_atomic, write_text_atomic
from .selection import PRESETS as SELECTION_PRESETS
from .selection import REFERENCE, run_selection_study
from .stats import verdict

__all__ = ['PRESETS', 'SweepPreset', 'run_finetune_sweep', 'sweep_markdown']


@dataclass(frozen=True)
class SweepPreset:
    selection: str  # the selection preset each length runs
    fractions: tuple[float, ...] = (0.05, 0.20, 0.50)
    ratios: tuple[float, ...] = (0.6,)
    expected_minutes: float = 0.0
    notes: str = ''


PRESETS = {
    'tiny': SweepPreset('tiny', fractions=(0.25, 0.5), expected_minutes=1.5,
                        notes='plumbing only'),
    'short': SweepPreset('short', expected_minutes=60,
                         notes='one seed at MACs x0.6; 5% shared with the short selection study'),
}


def _dense_iters(selection: str) -> int:
    settings = SELECTION_PRESETS[selection].settings
    return settings.get('dense_iters', StageSettings.__dataclass_fields__['dense_iters'].default)


def run_finetune_sweep(preset: str = 'short', work_dir: str = 'work_dirs/studies',
                       data_root: str | None = None, **overrides) -> dict:
    """Run (or resume) the sweep; return its JSON-ready result (see the module docstring).

    ``overrides``: ``fractions`` and ``ratios``, else passed on to the selection study
    (its preset's fields or stage settings).
    """
    if preset not in PRESETS:
        raise ValueError(f'preset: expected one of {sorted(PRESETS)}, got {preset!r}')
    p = PRESETS[preset]
    fractions = tuple(overrides.pop('fractions', p.fractions))
    ratios = tuple(overrides.pop('ratios', p.ratios))
    if not fractions or any(not 0 < f <= 1 for f in fractions):
        raise ValueError(f'fractions: expected values in (0, 1], got {fractions}')
    dense_iters = overrides.get('dense_iters', _dense_iters(p.selection))
    start = time.perf_counter()
    columns = []
    for f in fractions:
        iters = max(1, round(f * dense_iters))
        log(f'fine-tune of {f:.0%} of the dense iterations ({iters})')
        res = run_selection_study(p.selection, work_dir, data_root,
                                  output=f'selection_{p.selection}_ft{iters}', ratios=ratios,
                                  narrow_check=False, two_process=False,
                                  finetune_iters=iters, finetune_warmup=iters // 10,
                                  **overrides)
        ref = res['dense_finetuned']
        columns.append(dict(
            fraction=f, finetune_iters=iters, search_iters=res['search_iters'],
            reference=dict(top1_mean=ref['top1_mean'], top1_std=ref['top1_std'],
                           post_dense_iters=ref['post_dense_iters']) if ref else None,
            rows=[dict(name=r['name'], ratio=r['ratio'], top1_mean=r['top1_finetuned_mean'],
                       top1_std=r['top1_finetuned_std'], post_dense_iters=r['post_dense_iters'])
                  for r in res['summary']],
            comparisons=res['comparisons'], goals=res['goals'], report=res['output'],
            dense_top1=res['dense']['top1'], provenance=res['provenance']))
    result = dict(study='finetune_sweep', preset=preset, notes=p.notes,
                  selection_preset=p.selection, fractions=list(fractions), ratios=list(ratios),
                  dense_iters=dense_iters, columns=columns,
                  seconds=round(time.perf_counter() - start, 1))
    workspace = osp.join(osp.abspath(work_dir), SELECTION_PRESETS[p.selection].workspace)
    stem = osp.join(workspace, f'finetune_sweep_{preset}')
    write_json_atomic(stem + '.json', result)
    write_text_atomic(stem + '.md', sweep_markdown(result))
    _plot(result, stem + '.png')
    return result


def _ranking(column: dict, ratio: float) -> dict[str, int]:
    rows = sorted((r for r in column['rows'] if r['ratio'] == ratio),
                  key=lambda r: -r['top1_mean'])
    return {r['name']: k + 1 for k, r in enumerate(rows)}


def sweep_markdown(result: dict) -> str:
    cols = result['columns']
    head = ' | '.join(f'fine-tune {c["finetune_iters"]} ({c["fraction"]:.0%})' for c in cols)
    lines = ['# Fine-tune-length sweep: does the ranking hold?', '',
             f'Preset `{result["preset"]}` ({result["notes"]}): the `{result["selection_preset"]}`'
             ' selection study at each fine-tune length, every row with the same training '
             'after the dense model within a column (the search length is added to the '
             'baselines\' controls and to the reference). Top-1 in %, mean over seeds, rank '
             'among the pruned rows in brackets.', '']
    for ratio in result['ratios']:
        names = list(dict.fromkeys(r['name'] for c in cols for r in c['rows']
                                   if r['ratio'] == ratio))
        lines += [f'## MACs x{ratio:g}', '', f'| method | {head} |',
                  '|---|' + '---:|' * len(cols)]
        if all(c['reference'] for c in cols):
            lines.append(f'| {REFERENCE} | ' + ' | '.join(
                f'{c["reference"]["top1_mean"]:.2f}' for c in cols) + ' |')
        ranks = [_ranking(c, ratio) for c in cols]
        for name in names:
            cells = []
            for c, rank in zip(cols, ranks):
                r = next((r for r in c['rows'] if r['name'] == name and r['ratio'] == ratio),
                         None)
                cells.append('' if r is None else f'{r["top1_mean"]:.2f} ({rank[name]})')
            lines.append(f'| {name} | ' + ' | '.join(cells) + ' |')
        comps = list(dict.fromkeys(k['name'] for c in cols for k in c['comparisons']
                                   if k['ratio'] == ratio))
        if comps:
            lines += ['', 'Paired comparisons (difference in points, Holm-corrected interval, '
                      'verdict):', '', f'| comparison | {head} |', '|---|' + '---:|' * len(cols)]
            for name in comps:
                cells = []
                for c in cols:
                    k = next((k for k in c['comparisons'] if k['name'] == name), None)
                    cells.append('' if k is None else
                                 f'{k["diff"]:+.2f} [{k["low"]:+.2f}, {k["high"]:+.2f}] '
                                 f'{verdict(k)}')
                lines.append(f'| {name} | ' + ' | '.join(cells) + ' |')
        lines.append('')
    lines += ['Reports per length: ' + ', '.join(f'{c["report"]}.md' for c in cols) + '.',
              '', f'{result["seconds"] / 60:.1f} min. JSON: finetune_sweep_{result["preset"]}'
              '.json; plot: finetune_sweep_' + result['preset'] + '.png.', '']
    return '\n'.join(lines)


def _plot(result: dict, path: str) -> None:

    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    cols = result['columns']
    fig, axes = plt.subplots(1, len(result['ratios']), figsize=(6.4 * len(result['ratios']), 4.2),
                             squeeze=False)
    x = [c['finetune_iters'] for c in cols]
    for ax, ratio in zip(axes[0], result['ratios']):
        names = list(dict.fromkeys(r['name'] for c in cols for r in c['rows']
                                   if r['ratio'] == ratio))
        for name in names:
            y = [next((r['top1_mean'] for r in c['rows']
                       if r['name'] == name and r['ratio'] == ratio), float('nan')) for c in cols]
            ax.plot(x, y, marker='o', label=name,
                    linestyle='-' if name.startswith('sidt') else '--')
        if all(c['reference'] for c in cols):
            ax.plot(x, [c['reference']['top1_mean'] for c in cols], color='k', marker='s',
                    label=REFERENCE)
        ax.set_xscale('log')
        ax.set_xlabel('fine-tune iterations')
        ax.set_ylabel('top-1 after fine-tune (%)')
        ax.set_title(f'MACs x{ratio:g}')
        ax.legend(fontsize=6)
    fig.tight_layout()
    save_figure(fig, path)
