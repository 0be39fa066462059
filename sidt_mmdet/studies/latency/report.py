"""The rendering, from a study's plain data alone: the full Markdown tables with the goals,
the README's compact tables (the ``readme`` grid, ``scaling``, the ``gpu`` check), the plot
of latency ratio against MACs ratio, and the files (:func:`write_study`, :func:`load_study`,
:func:`update_readme`)."""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field

from ...utils.fileio import atomic_file, write_json_atomic, write_text_atomic
from .presets import (
    GOALS,
    GPU_BEGIN,
    GPU_END,
    README_BEGIN,
    README_END,
    SCALING_BEGIN,
    SCALING_END,
)

CUDA_GOAL = 'CUDA fp16 batch 64: speedup >= (MACs ratio) ** -0.85'


def _f(x, digits=3) -> str:
    return '—' if x is None or (isinstance(x, float) and math.isnan(x)) else f'{x:.{digits}f}'


def _shape_label(g: dict) -> str:
    s = g['shape']
    det = f' (window {s["window"]}, rel-pos)' if s['vitdet'] else ''
    return f'{s["name"]}{det}, bs {s["batch"]}' + (
        f', {g["device"]} {g["dtype"]}' if g['device'] != 'cpu' else '')


def _interp(points: list[tuple[float, float]], x: float) -> float | None:
    """Latency ratio of the reference at MACs ratio ``x`` (linear between its points)."""
    pts = sorted(points)
    if not pts:
        return None
    if len(pts) == 1 or x <= pts[0][0]:
        return pts[0][1] * x / pts[0][0] if x < pts[0][0] else pts[0][1]
    for (x0, y0), (x1, y1) in zip(pts, pts[1:]):
        if x0 <= x <= x1:
            return y0 + (y1 - y0) * (x - x0) / (x1 - x0) if x1 > x0 else y0
    return pts[-1][1] * x / pts[-1][0]


def _goal_lines(study: dict) -> list[str]:
    lines = []
    for g in study['groups']:
        rows = g['models']
        s = g['shape']
        sidt = [r for r in rows.values() if r['kind'] == 'sidt_pruned']
        if not sidt:
            continue
        if g['device'] != 'cpu':
            line = _cuda_goal_line(g)
            if line:
                lines.append(line)
            continue
        if s['vitdet']:
            limit, label = GOALS['latency/MACs, ViTDet'], 'latency/MACs, ViTDet'
        elif s['batch'] >= 8:
            limit, label = GOALS['latency/MACs, 224, batch 8'], 'latency/MACs, batch 8'
        else:
            limit, label = GOALS['latency/MACs, 224, batch 1'], 'latency/MACs, batch 1'
        worst = max(sidt, key=lambda r: r['latency_per_macs'])
        ok = worst['latency_per_macs'] <= limit
        lines.append(f'- {_shape_label(g)}: worst {label} {_f(worst["latency_per_macs"])} '
                     f'({_name(worst)}), goal <= {limit}: {"met" if ok else "NOT met"}')
        tp = [(r['macs_ratio'], r['latency_ratio']) for r in rows.values()
              if r['kind'] == 'tp_pruned']
        if tp:
            gaps = [r['latency_ratio'] - _interp(tp, r['macs_ratio']) for r in sidt
                    if r['round_to'] == 8 and r['layout'] == 'grouped' and not r['equal_heads']]
            gap = max(gaps)
            ok = gap <= GOALS['latency ratio above Torch-Pruning at the same MACs ratio']
            lines.append(f'  - largest latency-ratio excess over Torch-Pruning at the same '
                         f'MACs ratio (round 8): {gap:+.3f}, goal <= +0.03: '
                         f'{"met" if ok else "NOT met"}')
        ref = rows.get('ref SIDTViT')
        if ref and 'latency_ratio' in ref:
            model = rows['ref timm']['model']
            goal = (GOALS['dense SIDTViT / VisionTransformerSAM, 1024'] if s['vitdet']
                    else GOALS['dense SIDTViT / VisionTransformer, 224 batch 8'])
            lines.append(f'  - dense SIDTViT / timm {model}: {_f(ref["latency_ratio"])}, '
                         f'goal <= {goal}: '
                         f'{"met" if ref["latency_ratio"] <= goal else "NOT met"}')
    for c in study.get('search', []):
        lines.append(f'- search step / dense step, {c["shape"]["name"]} bs '
                     f'{c["shape"]["batch"]} ({c["device"]}): time {_f(c["time_ratio"])}, '
                     f'peak memory {_f(c["memory_ratio"])}, goal <= 1.10')
    return lines


def _cuda_goal_line(g: dict) -> str | None:
    """The CUDA goal of a CUDA fp16 group at batch >= 64, on its worst SIDTViT variant
    (``None`` for any other group): met or missed, never asserted."""
    sidt = [r for r in g['models'].values() if r['kind'] == 'sidt_pruned']
    if not sidt or g['device'] == 'cpu' or g['dtype'] != 'fp16' or g['shape']['batch'] < 64:
        return None
    exponent = GOALS[CUDA_GOAL]
    worst = max(sidt, key=lambda r: r['latency_ratio'] / r['macs_ratio'] ** exponent)
    ok = worst['latency_ratio'] <= worst['macs_ratio'] ** exponent
    return (f'- {_shape_label(g)}: worst speedup {1 / worst["latency_ratio"]:.2f} against '
            f'(MACs ratio)^-{exponent} = {worst["macs_ratio"] ** -exponent:.2f} '
            f'({_name(worst)}): {"met" if ok else "missed"}')


def cuda_goal_lines(study: dict) -> list[str]:
    """The CUDA goal, one line per CUDA fp16 batch-64 group (what ``--preset gpu`` prints)."""
    lines = [line for g in study['groups'] if (line := _cuda_goal_line(g))]
    return lines or ['- no CUDA fp16 group at batch 64 in this study: not evaluated']


def _name(r: dict) -> str:
    if r['kind'] == 'tp_pruned':
        return f'Torch-Pruning kr {r["keep"]} r{r["round_to"]}'
    extra = (', padded' if r['layout'] == 'padded' else '') + (
        ', equal heads' if r['equal_heads'] else '')
    return f'{r["granularity"]} kr {r["keep"]} r{r["round_to"]}{extra}'


def render_markdown(study: dict) -> str:
    """The full tables of a study (what ``latency.md`` holds)."""
    m = study['meta']
    if m.get('not_run'):
        return '\n'.join(['# Latency study', '', _not_run_text(study), ''])
    lines = ['# Latency study', '',
             f'Preset `{m["preset"]}`, torch {m["torch"]}, {m["threads"]} threads, '
             f'{m["cpus"]} CPUs ({m["cpu"]}), CUDA: {m["cuda"] or "none"}, Torch-Pruning: '
             f'{m["torch_pruning"] or "not run"}; {m["date"]}, {m["seconds"]:.0f} s.', '',
             'Each group is timed interleaved in one process (median of the iterations); '
             'ratios are against the model\'s own dense model (SIDTViT pruned: dense '
             'SIDTViT; Torch-Pruning: timm\'s dense ViT). latency/MACs = latency ratio / '
             'MACs ratio (1.0 is the limit). MACs include q k^T and attn @ v.', '']
    lines += [f'- {n}' for n in m['notes']]
    for g in study['groups']:
        lines += ['', f'## {_shape_label(g)}', '',
                  '| model | MACs (G) | executed | attention calls | ms | latency ratio '
                  '| MACs ratio | latency/MACs |',
                  '|---|---:|---:|---:|---:|---:|---:|---:|']
        for name, r in g['models'].items():
            macs = r.get('macs')
            lines.append(
                f'| {name} | {_f(macs / 1e9 if macs else None, 3)} | '
                f'{_f(r["macs_executed"] / 1e9 if r.get("macs_executed") else None, 3)} | '
                f'{r.get("calls", "")} | {r["median_s"] * 1e3:.1f} | '
                f'{_f(r.get("latency_ratio"))} | {_f(r.get("macs_ratio"))} | '
                f'{_f(r.get("latency_per_macs"))} |')
    if study.get('search'):
        lines += ['', '## Search step against dense step', '', *_search_table(study), '',
                  f'Peak memory: {study["search"][0]["memory_measured_by"]}.']
    if any('memory_bytes' in g for g in study['groups']):
        lines += ['', '## Scaling', '', *_memory_table(study)]
    if study.get('detector'):
        lines += ['', '## Whole detector', '', *_detector_table(study)]
    if study.get('budget_check'):
        lines += ['', '## Latency budgets', '', *_budget_table(study['budget_check'])]
    lines += ['', '## Goals (printed, not asserted)', '', *_goal_lines(study), '']
    return '\n'.join(lines)


def _search_table(study: dict) -> list[str]:
    lines = ['| shape | device | dense step (ms) | search step (ms) | time ratio '
             '| dense peak (MiB) | search peak (MiB) | memory ratio |',
             '|---|---|---:|---:|---:|---:|---:|---:|']
    for c in study['search']:
        med, peak = c['median_s'], c['peak_bytes']
        lines.append(f'| {c["shape"]["name"]}, bs {c["shape"]["batch"]} | {c["device"]} | '
                     f'{med["dense step"] * 1e3:.0f} | {med["search step"] * 1e3:.0f} | '
                     f'{_f(c["time_ratio"])} | {peak["dense step"] / 2**20:.0f} | '
                     f'{peak["search step"] / 2**20:.0f} | {_f(c["memory_ratio"])} |')
    return lines


def _detector_table(study: dict) -> list[str]:
    """Per detector config: backbone, backbone + neck and test step, dense against pruned
    (median ms of the interleaved rounds)."""
    lines = ['| detector (input) | row | dense ms | pruned ms | ratio |',
             '|---|---|---:|---:|---:|']
    for d in study['detector']:
        name = os.path.basename(d['config']).removesuffix('.py')
        shape = 'x'.join(str(v) for v in d['input_shape'][-2:])
        for row, r in d['rows'].items():
            flag = ' (untrusted)' if r['untrusted'] else ''
            lines.append(f'| {name} ({shape}) | {row} | {r["dense_ms"]:.1f} | '
                         f'{r["pruned_ms"]:.1f} | {_f(r["ratio"])}{flag} |')
    first = study['detector'][0]
    lines += ['', f'Backbones pruned at keep {first["keep"]} (random masks, widths rounded to '
              f'8), random weights: {first["note"] or ""}']
    return lines


def _memory_table(study: dict) -> list[str]:
    lines = ['| shape, batch | dense ms | pruned ms | latency ratio | MACs ratio '
             '| dense peak MiB | pruned peak MiB | memory ratio |',
             '|---|---:|---:|---:|---:|---:|---:|---:|']
    for g in study['groups']:
        mem = g.get('memory_bytes')
        if not mem:
            continue
        dense = g['models']['sidt dense']
        name = next(n for n in mem if n != 'sidt dense')
        pruned = g['models'][name]
        ratio = mem[name] / mem['sidt dense'] if mem['sidt dense'] else None
        lines.append(f'| {_shape_label(g)} | {dense["median_s"] * 1e3:.0f} | '
                     f'{pruned["median_s"] * 1e3:.0f} | {_f(pruned.get("latency_ratio"))} | '
                     f'{_f(pruned.get("macs_ratio"))} | {mem["sidt dense"] / 2**20:.0f} | '
                     f'{mem[name] / 2**20:.0f} | {_f(ratio)} |')
    return lines


def scaling_table(study: dict) -> str:
    """Dense against pruned latency and peak forward memory per shape (the groups that
    measured memory), then the search step against the dense step per shape."""
    m = study['meta']
    lines = [f'Dense against pruned (keep 0.6, widths rounded to 8, random masks) ViTDet '
             f'backbones, timed interleaved; peak memory added by a steady-state inference '
             f'forward (its activations; the second call, each model in a fresh process). '
             f'torch {m["torch"]}, {m["threads"]} threads on {m["cpus"]} CPUs, preset '
             f'`{m["preset"]}`, {m["date"]}.', '', *_memory_table(study)]
    if study.get('search'):
        lines += ['', 'The search step (forward, backward, AdamW; masks on attention, MLP and '
                  'embedding) against the dense step:', '', *_search_table(study)]
    return '\n'.join(lines)


def _keep_cells(g: dict) -> list[tuple[float, str]]:
    """Per keep ratio of the group (largest first), its cells: latency ratio / MACs ratio of
    ``dim``, ``head_uniform``, ``head`` (round 8, grouped) and Torch-Pruning (round 8)."""
    rows = g['models'].values()
    keeps = sorted({r['keep'] for r in rows if r['kind'] in ('sidt_pruned', 'tp_pruned')},
                   reverse=True)
    out = []
    for keep in keeps:
        cells = []
        for want in ('dim', 'head_uniform', 'head', 'tp'):
            hit = [r for r in rows if r.get('keep') == keep and r.get('round_to') == 8
                   and ((want == 'tp' and r['kind'] == 'tp_pruned')
                        or (r['kind'] == 'sidt_pruned' and r['granularity'] == want
                            and r['layout'] == 'grouped' and not r['equal_heads']))]
            cells.append(f'{_f(hit[0]["latency_ratio"], 2)} / {_f(hit[0]["macs_ratio"], 2)}'
                         if hit else '—')
        out.append((keep, ' | '.join(cells)))
    return out


def _budget_table(check: dict) -> list[str]:
    """Selections at latency budgets, measured against their targets."""
    key, s = check['key'], check['shape']
    lines = [f'The latency table of {s["name"]}, bs {s["batch"]} (random masks), built on '
             f'{key["device"]} in {key["dtype"]}: {check["measurements"]} timings in '
             f'{check["table_seconds"]:.0f} s. `select_subnet(latency=budget)` on it, the '
             f'selection then timed against the dense backbone (interleaved, the fastest of '
             f'the calls):', '',
             '| budget | measured / dense | predicted / dense | MACs ratio | dense ms '
             '| pruned ms |', '|---:|---:|---:|---:|---:|---:|']
    for r in check['rows']:
        if 'infeasible' in r:
            lines.append(f'| {r["target"]} | infeasible: {r["infeasible"]} | | | | |')
            continue
        lines.append(f'| {r["target"]} | {_f(r["measured_ratio"])} | '
                     f'{_f(r["predicted_ratio"])} | {_f(r["macs_ratio"])} | '
                     f'{_f(r["dense_ms"], 2)} | {_f(r["pruned_ms"], 2)} |')
    worst = check['max_abs_error_vs_target']
    lines += ['', 'Largest |measured / budget - 1|: '
              + ('—' if worst is None else f'{worst:.1%}') + '.']
    return lines


def _not_run_text(study: dict) -> str:
    return (f'Not run yet: no CUDA machine has run `--preset {study["meta"]["preset"]}`, so '
            'this block holds no figures. On one, `bash tools/deploy/install_gpu_wheels.sh` '
            'runs it (docs/benchmarks.md, "The GPU check"); its JSON, rendered with '
            '`--render JSON --readme README.md`, replaces this text.')


def pending_study(preset: str = 'gpu') -> dict:
    """A study JSON that records only that ``preset`` has not been run: what the README's
    GPU block is rendered from until a CUDA machine has run the check."""
    return dict(format='sidt-latency-study', version=1,
                meta=dict(preset=preset, not_run=True, notes=[]),
                groups=[], search=[], detector=[], goals=GOALS)


def gpu_table(study: dict) -> str:
    """The README block of the ``gpu`` check: dense ms and latency ratio / MACs ratio per row,
    dtype and keep, the CUDA goal, and the latency budgets measured against their targets."""
    m = study['meta']
    if m.get('not_run'):
        return _not_run_text(study) + '\n'
    lines = [f'{m["cuda"] or "No CUDA device (" + m["cpu"] + ")"}, torch {m["torch"]}, preset '
             f'`{m["preset"]}`, {m["date"]}, {m["seconds"]:.0f} s. Cells: latency ratio / MACs '
             'ratio against the model\'s own dense model (widths rounded to 8; random masks, '
             'speed depends on widths only), under autocast in the row\'s dtype.', '',
             '| model, batch, dtype | dense ms | keep | `dim` | `head_uniform` | `head` '
             '| Torch-Pruning |', '|---|---:|---:|---:|---:|---:|---:|']
    for g in study['groups']:
        dense = f'{g["models"]["sidt dense"]["median_s"] * 1e3:.2f}'
        lines += [f'| {_shape_label(g)} | {dense} | {keep} | {cells} |'
                  for keep, cells in _keep_cells(g)]
    lines += ['', f'Goal (printed, not asserted): {CUDA_GOAL}.', '', *cuda_goal_lines(study)]
    if study.get('budget_check'):
        lines += ['', *_budget_table(study['budget_check'])]
    lines += [''] + [f'- {n}' for n in m['notes']]
    return '\n'.join(lines).rstrip() + '\n'


def readme_table(study: dict, image: str | None = None) -> str:
    """The compact table for the README: round 8, grouped layout, per shape and keep."""
    lines = ['| model, batch | keep | `dim` | `head_uniform` | `head` | Torch-Pruning |',
             '|---|---:|---:|---:|---:|---:|']
    for g in study['groups']:
        lines += [f'| {_shape_label(g)} | {keep} | {cells} |' for keep, cells in _keep_cells(g)]
    refs = [(g, g['models']['ref SIDTViT']) for g in study['groups']
            if 'latency_ratio' in g['models'].get('ref SIDTViT', {})]
    m = study['meta']
    out = ['Cells: latency ratio / MACs ratio against the model\'s own dense model (widths '
           'rounded to 8; random masks, speed depends on widths only). '
           f'torch {m["torch"]}, {m["threads"]} threads on {m["cpus"]} CPUs, '
           f'preset `{m["preset"]}`, {m["date"]}.', '', *lines]
    if refs:
        out += ['', '| dense SIDTViT against timm | time ratio |', '|---|---:|']
        out += [f'| {_shape_label(g)} vs `{g["models"]["ref timm"]["model"]}` | '
                f'{_f(r["latency_ratio"])} |' for g, r in refs]
    if study.get('search'):
        out += ['', '| search step / dense step | time | peak memory |', '|---|---:|---:|']
        out += [f'| {c["shape"]["name"]}, bs {c["shape"]["batch"]} ({c["device"]}) | '
                f'{_f(c["time_ratio"])} | {_f(c["memory_ratio"])} |' for c in study['search']]
    out += [''] + [f'- {n}' for n in m['notes']]
    if image:
        out += ['', f'![latency ratio against MACs ratio]({image})']
    return '\n'.join(out).rstrip() + '\n'


def plot_study(study: dict, path: str) -> None:
    """Latency ratio against MACs ratio per model, with the y = x limit line."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 6))
    markers = {'dim': 'o', 'head_uniform': 's', 'head': '^', 'dim, padded': 'D',
               'dim, equal heads': 'P', 'Torch-Pruning': 'x'}

    def kind(r):
        if r['kind'] == 'tp_pruned':
            return 'Torch-Pruning'
        if r['layout'] == 'padded':
            return f'{r["granularity"]}, padded'
        return f'{r["granularity"]}, equal heads' if r['equal_heads'] else r['granularity']

    colors = plt.rcParams['axes.prop_cycle'].by_key()['color']
    lo, hi = 1.0, 1.0
    for i, g in enumerate(study['groups']):
        color = colors[i % len(colors)]
        for key, marker in markers.items():
            pts = [(r['macs_ratio'], r['latency_ratio']) for r in g['models'].values()
                   if 'macs_ratio' in r and kind(r) == key]
            if pts:
                xs, ys = zip(*pts)
                lo, hi = min(lo, *xs, *ys), max(hi, *xs)
                ax.scatter(xs, ys, marker=marker, color=color, s=28,
                           label=f'{_shape_label(g)}: {key}')
    lo = max(0.0, lo - 0.05)
    ax.plot([lo, hi + 0.05], [lo, hi + 0.05], 'k--', linewidth=1,
            label='y = x (latency follows MACs)')
    ax.set_xlabel('MACs ratio (pruned / dense)')
    ax.set_ylabel('latency ratio (pruned / dense)')
    ax.set_title(f'Pruned backbones: latency against MACs ({study["meta"]["preset"]})')
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, loc='upper left')
    fig.tight_layout()
    with atomic_file(path) as tmp:
        fig.savefig(tmp, dpi=120, format='png')
    plt.close(fig)


@dataclass
class StudyFiles:
    json: str
    markdown: str
    png: str | None
    extra: dict = field(default_factory=dict)


def write_study(study: dict, out_dir: str, plot: bool = True) -> StudyFiles:
    """``latency.json``, ``latency.md`` and (``plot``) ``latency.png`` in ``out_dir``. The
    ``gpu`` presets plot nothing: a GPU machine has no matplotlib, and their README block is
    a table."""
    files = StudyFiles(json=os.path.join(out_dir, 'latency.json'),
                       markdown=os.path.join(out_dir, 'latency.md'),
                       png=os.path.join(out_dir, 'latency.png') if plot else None)
    write_json_atomic(files.json, study)
    write_text_atomic(files.markdown, render_markdown(study))
    if plot:
        plot_study(study, files.png)
    return files


def load_study(path: str) -> dict:
    with open(path, encoding='utf-8') as f:
        study = json.load(f)
    if not isinstance(study, dict) or study.get('format') != 'sidt-latency-study':
        raise ValueError(f'{path}: not a latency study JSON (expected "format": '
                         '"sidt-latency-study")')
    return study


def update_readme(readme: str, study: dict, image: str | None = None) -> None:
    """Replace the text between the study's markers in ``readme`` by :func:`readme_table`
    (a ``scaling`` study: between the scaling markers, by :func:`scaling_table`; a ``gpu``
    one, run or not: between the GPU markers, by :func:`gpu_table`)."""
    from ...utils.fileio import replace_marked_block
    if study['meta']['preset'] in ('gpu', 'gpu-tiny'):
        replace_marked_block(readme, GPU_BEGIN, GPU_END, lambda: gpu_table(study),
                             'the generated GPU check')
        return
    if study['meta']['preset'] == 'scaling':
        replace_marked_block(readme, SCALING_BEGIN, SCALING_END, lambda: scaling_table(study),
                             'the generated scaling table')
        return
    replace_marked_block(readme, README_BEGIN, README_END, lambda: readme_table(study, image),
                         'the generated latency table')
