"""The README's results table, generated from the studies' JSON (never typed by hand).

:func:`update_readme` reads what the studies wrote under their work dir (the largest preset
found of each: ``full`` before ``quick`` before ``tiny``), builds one Markdown table and puts
it between the ``<!-- results:begin -->`` and ``<!-- results:end -->`` lines of the README:

    python tools/analysis/results_table.py --work-dir work_dirs/studies --readme README.md

Per row: the study and method, the retrain config, the subnet file (of the first seed),
backbone params and MACs ratios (pruned / dense, our counter), the backbone latency ratio,
top-1 before and after fine-tuning (mean over seeds), the seeds. The latency ratio is timed
when the table is generated (backbone forward only, dense and pruned interleaved, median;
one thread), unless ``latency=False``: it is a ratio measured on whatever machine runs the
command, so the table states the machine's thread count next to it.
"""
from __future__ import annotations

import glob
import json
import os
import os.path as osp
import time

import torch

from .common import REPO, atomic_write_text

__all__ = ['BEGIN', 'END', 'PRESET_ORDER', 'find_results', 'results_rows', 'results_markdown',
           'update_readme', 'latency_ratio']

BEGIN = '<!-- results:begin -->'
END = '<!-- results:end -->'
PRESET_ORDER = ('full', 'quick', 'tiny')
_STUDIES = ('selection', 'search_cost', 'lowrank')


def find_results(work_dir: str) -> dict[str, dict]:
    """``{study: result}`` for each study found under ``work_dir``, the largest preset first."""
    found = {}
    for study in _STUDIES:
        for preset in PRESET_ORDER:
            paths = sorted(glob.glob(osp.join(work_dir, '**', f'{study}_{preset}.json'),
                                     recursive=True))
            if paths:
                with open(paths[0], encoding='utf-8') as f:
                    found[study] = dict(json.load(f), _path=paths[0])
                break
    return found


def _rel(path: str | None) -> str:
    if not path:
        return ''
    path = osp.abspath(path)
    return osp.relpath(path, REPO) if path.startswith(REPO + os.sep) else path


def _build(config: str, subnet: str | None):
    from mmengine.config import Config
    from mmengine.registry import MODELS, init_default_scope

    import sidt_mmdet  # noqa: F401  (registers SIDTViT/SIDTModel)
    cfg = Config.fromfile(config)
    if subnet is not None:
        cfg.merge_from_dict({'model.backbone.subnet': subnet})
    init_default_scope(cfg.get('default_scope', 'mmpretrain'))
    return MODELS.build(cfg.model).backbone.eval()


def latency_ratio(dense_config: str, retrain_config: str, subnet: str, batch: int = 64,
                  iters: int = 20) -> float:
    """Median backbone latency pruned / dense (forward, interleaved, current threads)."""
    dense, pruned = _build(dense_config, None), _build(retrain_config, subnet)
    size = tuple(dense.img_size)
    x = torch.randn(batch, 3, *size, generator=torch.Generator().manual_seed(0))
    times = {'dense': [], 'pruned': []}
    with torch.no_grad():
        for model in (dense, pruned):  # warm-up
            model(x)
        for _ in range(iters):
            for name, model in (('dense', dense), ('pruned', pruned)):
                t = time.perf_counter()
                model(x)
                times[name].append(time.perf_counter() - t)
    med = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
    return med['pruned'] / med['dense']


def results_rows(found: dict[str, dict], latency: bool = True) -> list[dict]:
    rows = []
    sel = found.get('selection')
    if sel is not None:
        dense_cfg = sel['dense']['config']
        rows.append(dict(study=f'selection ({sel["preset"]})', method='dense',
                         config=_rel(dense_cfg), subnet='', params_ratio=1.0, macs_ratio=1.0,
                         latency_ratio=1.0 if latency else None, top1_before=None,
                         top1_after=sel['dense']['top1'], seeds=[0]))
        for r in sel['summary']:
            rows.append(dict(study=f'selection ({sel["preset"]})', method=r['method'],
                             config=_rel(sel['retrain_config']), subnet=_rel(r['subnet']),
                             params_ratio=r['params_ratio'], macs_ratio=r['macs_ratio'],
                             latency_ratio=(latency_ratio(dense_cfg, sel['retrain_config'],
                                                          r['subnet']) if latency else None),
                             top1_before=r['top1_pruned_mean'],
                             top1_after=r['top1_finetuned_mean'], seeds=r['seeds']))
    cost = found.get('search_cost')
    if cost is not None:
        for r in cost['summary']:
            rows.append(dict(study=f'search cost ({cost["preset"]})',
                             method=f'sidt-l1/dim, search {r["fraction"]:.0%} of dense',
                             config=_rel(cost['retrain_config']), subnet=_rel(r['subnet']),
                             params_ratio=None, macs_ratio=cost['ratio'], latency_ratio=None,
                             top1_before=r['top1_pruned_mean'],
                             top1_after=r['top1_finetuned_mean'], seeds=r['seeds']))
    low = found.get('lowrank')
    if low is not None:
        dense_params = low['reference']['backbone_params']
        for group in ('methods', 'budget'):
            for r in low.get(group, []):
                rows.append(dict(study=f'low rank ({low.get("preset", "?")})', method=r['name'],
                                 config=_rel(low.get('retrain_config')), subnet='',
                                 params_ratio=r['backbone_params'] / dense_params,
                                 macs_ratio=None, latency_ratio=None,
                                 top1_before=r['top1_before_ft'], top1_after=r['top1_after_ft'],
                                 seeds=[low.get('settings', {}).get('seed', 0)]))
    return rows


def _f(value, fmt='{:.3f}') -> str:
    return '' if value is None else fmt.format(value)


def results_markdown(found: dict[str, dict], rows: list[dict]) -> str:
    if not rows:
        return ('No study results found yet: run `python tools/analysis/compare_selection.py`, '
                '`tools/analysis/search_cost.py` and `tools/analysis/compare_lowrank.py`, then '
                '`python tools/analysis/results_table.py`.')
    lines = [
        'Generated by `python tools/analysis/results_table.py` from '
        + ', '.join(f'`{_rel(r["_path"])}`' for r in found.values())
        + f' ({torch.get_num_threads()} torch thread(s) for the latency ratios). Top-1 (%) on '
        'the hard toy CIFAR-100 preset, mean over the seeds; ratios are pruned / dense '
        'backbone.', '',
        '| study | method | config | subnet | params | MACs | latency | top-1 before '
        'fine-tune | top-1 after | seeds |',
        '|---|---|---|---|---:|---:|---:|---:|---:|---|']
    for r in rows:
        subnet = f'`{r["subnet"]}`' if r['subnet'] else ''
        lines.append(f'| {r["study"]} | {r["method"]} | `{osp.basename(r["config"] or "")}` | '
                     f'{subnet} | {_f(r["params_ratio"])} | {_f(r["macs_ratio"])} | '
                     f'{_f(r["latency_ratio"])} | {_f(r["top1_before"], "{:.2f}")} | '
                     f'{_f(r["top1_after"], "{:.2f}")} | {",".join(map(str, r["seeds"]))} |')
    goals = [(study, g) for study, res in found.items() for g in res.get('goals', [])]
    if goals:
        lines += ['', 'Goals, as the studies printed them:', '']
        lines += [f'- {study}: **{g["status"]}**: {g["goal"]} ({g["detail"]})'
                  for study, g in goals]
    return '\n'.join(lines)


def update_readme(work_dir: str = 'work_dirs/studies', readme: str = 'README.md',
                  latency: bool = True) -> str:
    """Rewrite the README's results block from the studies' JSON; return the block.

    Raises:
        ValueError: ``readme`` lacks the ``BEGIN``/``END`` marker lines (or has them in the
            wrong order).
    """
    with open(readme, encoding='utf-8') as f:
        text = f.read()
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < 0 or end < start:
        raise ValueError(f'{readme}: expected a line {BEGIN!r} followed by a line {END!r} '
                         'around the results table')
    found = find_results(work_dir)
    block = results_markdown(found, results_rows(found, latency))
    new = text[:start] + BEGIN + '\n' + block + '\n' + text[end:]
    if new != text:
        atomic_write_text(readme, new)
    return block
