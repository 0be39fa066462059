"""Low-rank methods at equal params, pruning alone and the hybrid, on the toy CIFAR-100
classifier (``tools/analysis/compare_lowrank.py`` runs :func:`compare_lowrank`).

Steps (each a real stage of the pipeline, on CPU in minutes):

1. dense + search as the other studies run them (``sidt_mmdet.studies.common.Stages``, in
   process and cached): the dense toy classifier, then its SiDT search from it, unless
   ``search_checkpoint`` is given;
2. methods at equal params: ``lowrank_export(method='svd', backbone_ratio=R)`` on the
   searched model (masks folded, every dim kept), then every other method with
   ``ranks_from`` the SVD run, so all of them have exactly the same ranks and params;
3. equal compression: pruning alone (``select_subnet(params=R x dense)``, attention and MLP)
   against the hybrid (``mlp_keep_ratio=K``, low-rank ``attn.qkv attn.proj``,
   ``backbone_ratio=R``) for each K;
4. every variant, and the uncompressed searched model as the reference (a row of both
   tables), is evaluated (top-1 on the test split) right after compression and after the same
   short fine-tune through the retrain config
   configs/lowrank/sidt-lowrank-retrain_cls_vit-toy-p4_linear_4e_toy-cifar100.py
   (``Stages.finetune``: ``finetune_iters`` iterations, cosine, no warm-up, ``finetune_lr``),
   once per fine-tune seed of ``seeds``; each run keeps its per-image predictions;
5. the paired comparisons behind the goals (:func:`lowrank_comparisons`): paired bootstrap
   over test images and seeds, Holm-corrected together.

The compression itself (dense model, search, factorization, pruning) is done once, at
``seed``; only the fine-tune seed varies. Writes WORK/compare_lowrank.md and
WORK/compare_lowrank.json (every seed's figures and prediction paths under each row's
``runs``). The hybrid's measure is the relative increase of the top-1 error over the
reference: ``(err - err_ref) / err_ref``.

With a validation split (the stages' ``num_val``, preset ``tiny-val``) each hybrid is
measured on it (the reference too, for its deltas), the MLP keep ratio is chosen there
(:meth:`Stages.choose`) and only the chosen hybrid is evaluated on the test split, once.
"""
from __future__ import annotations

import copy
import hashlib
import json
import math
import os.path as osp
import time
from pathlib import Path

import numpy as np
import torch

from .. import __version__
from ..apis.chain import REPO, data_root_options
from ..apis.demo import CLASSIFICATION_CONFIGS
from ..apis.lowrank import LowRankError, lowrank_export
from ..apis.runtime import build_model
from ..export import prune_model_state_dict
from ..export.lowrank import ALL_METHODS, CALIBRATED_METHODS
from ..models import Subnet
from ..models.complexity import backbone_complexity
from ..search.select import select_subnet
from ..utils import save_checkpoint_atomic
from ..utils.fileio import write_json_atomic, write_text_atomic
from .common import Stages, StageSettings, finish_study, goal_lines, load_correct, mean_std
from .stats import compare, verdict

__all__ = ['METHODS', 'PRESETS', 'REFERENCE', 'compare_lowrank', 'run_lowrank_study',
           'lowrank_comparisons', 'lowrank_goals', 'aggregate_runs', 'rel_error_increase',
           'markdown']

# The name of the reference row: the searched model, nothing removed, the same fine-tune.
REFERENCE = 'reference (uncompressed, same fine-tune)'
# The family-wise error of the study's comparisons (Holm).
ALPHA = 0.05

# Every factorization, the calibrated one (svd_whitened) included.
METHODS = ALL_METHODS

DENSE_CFG = Path(CLASSIFICATION_CONFIGS['dense'])
SEARCH_CFG = Path(CLASSIFICATION_CONFIGS['search'])
RETRAIN_CFG = (Path(REPO) / 'configs/lowrank/'
               'sidt-lowrank-retrain_cls_vit-toy-p4_linear_4e_toy-cifar100.py')


def log(msg: str) -> None:
    print(f'[compare_lowrank] {msg}', flush=True)


# ------------------------------------------------------------------------ stages
def build_search_model(ckpt: Path):
    return build_model(str(SEARCH_CFG), ckpt)


def prune_only(search_model, ratio: float, out: Path) -> dict:
    """Pruning alone at ``ratio`` of the dense backbone's params (attention and MLP)."""
    bb = search_model.backbone
    dense = backbone_complexity(bb, bb.img_size).params
    subnet = select_subnet(bb, params=int(ratio * dense), source=dict(kind='prune-only'))
    out.mkdir(parents=True, exist_ok=True)
    subnet.save(out / 'subnet.json')
    state = prune_model_state_dict(search_model.state_dict(), subnet)
    save_checkpoint_atomic(dict(state_dict=state, meta=dict(subnet='subnet.json')),
                           out / 'pruned.pth')
    return dict(checkpoint=out / 'pruned.pth', subnet=subnet)


def dense_reference(search_model, out: Path) -> dict:
    """The searched model with masks folded, every dim kept, nothing factorized."""
    bb = search_model.backbone
    subnet = Subnet.dense(bb.embed_dims_dense, bb.num_layers, bb.num_heads, bb.mlp_hidden)
    out.mkdir(parents=True, exist_ok=True)
    subnet.save(out / 'subnet.json')
    state = prune_model_state_dict(search_model.state_dict(), subnet)
    save_checkpoint_atomic(dict(state_dict=state, meta={}), out / 'dense.pth')
    return dict(subnet_path=out / 'subnet.json', checkpoint=out / 'dense.pth',
                params=backbone_complexity(bb, bb.img_size).params)


def widths(subnet, bb) -> dict:
    attn = sum(len(v) for b in subnet.blocks for v in b['v'])
    mlp = sum(len(b['mlp']) for b in subnet.blocks)
    return dict(attn_kept=attn / (bb.num_layers * bb.embed_dims_dense),
                mlp_kept=mlp / (bb.num_layers * bb.mlp_hidden))


def rel_error_increase(top1: float, ref_top1: float) -> float:
    """The hybrid's measure: relative increase of the top-1 error over the reference."""
    err, ref = 100.0 - top1, 100.0 - ref_top1
    return (err - ref) / ref if ref > 0 else float('inf')


def aggregate_runs(runs: list[dict]) -> dict:
    """One row's figures from its fine-tune runs (one per seed, each with ``seed``,
    ``top1_before_ft``, ``top1_after_ft``, ``backbone_params`` and its prediction paths):
    the mean and sample std over seeds of both top-1 figures, the seeds, and the runs."""
    if not runs:
        raise ValueError('aggregate_runs: no runs')
    params = {r['backbone_params'] for r in runs}
    if len(params) != 1:
        raise ValueError(f'the runs of one row differ in backbone params: {sorted(params)}')
    out = dict(backbone_params=params.pop(), seeds=[r['seed'] for r in runs],
               finetune_seconds=round(sum(r.get('finetune_seconds', 0.0) for r in runs), 1))
    for key in ('top1_before_ft', 'top1_after_ft'):
        out[key], out[f'{key}_std'] = mean_std([r[key] for r in runs])
    out['runs'] = [dict(r) for r in runs]
    return out


# ------------------------------------------------------------------------ report
def markdown(res: dict) -> str:
    ref = res['reference']
    dense = ref['backbone_params']
    k = res['settings']['finetune_iters']
    r0, r1 = ref['top1_before_ft'], ref['top1_after_ft']

    seeds = res['settings'].get('seeds') or [res['settings']['seed']]

    def top1(r, key, base):
        std = f' ± {r[key + "_std"]:.1f}' if len(seeds) > 1 and key + '_std' in r else ''
        return f'{r[key]:.1f}{std} ({r[key] - base:+.1f})'

    def row(r, *cells, split_column=False):
        share = r['backbone_params'] / dense
        val = r.get('split') == 'val'  # held against the reference on the same split
        b0, b1 = (ref['val']['top1_before_ft'], ref['val']['top1_after_ft']) if val else (r0, r1)
        line = ' | '.join([f'| {r["name"]}', f'{r["backbone_params"]:,} ({share:.0%})', *cells,
                           top1(r, 'top1_before_ft', b0), top1(r, 'top1_after_ft', b1) + ' |'])
        return line + (f' {"validation" if val else "test"} |' if split_column else '')

    lines = [
        '# Low-rank compression on the toy CIFAR-100 classifier', '',
        'Reference: the searched toy ViT ('
        + (res['settings'].get('source_note') or
           f'dense {res["settings"]["dense_epochs"]} epochs + search '
           f'{res["settings"]["search_epochs"]}')
        + f', masks folded, nothing removed), test top-1 '
        f'**{r0:.1f}%**; after the same {k}-iteration fine-tune as every variant **{r1:.1f}%**. '
        f'Backbone params {dense:,}. Top-1 in %, in brackets the change in points against the '
        'reference (before / after fine-tuning)'
        + (f', mean ± std over the fine-tune seeds {seeds} (the compression is made once)'
           if len(seeds) > 1 else f', fine-tune seed {seeds[0]}')
        + '. The relative error increase is in the '
        'JSON (rel_err_increase_*); it is only meaningful when the reference error is not ~0.',
        '', f'## Methods at equal params (SVD ranks at {res["settings"]["ratio"]:.0%} of the '
        'backbone, the same ranks for every method)', '',
        '| method | backbone params | mean rel. error | max rel. error | top-1 after '
        f'factorization | top-1 after {k}-it fine-tune |',
        '|---|---:|---:|---:|---:|---:|']
    for r in res['methods']:
        lines.append(row(r, f'{r["mean_rel_error"]:.3f}', f'{r["max_rel_error"]:.3f}'))
    choice = res.get('choice')
    lines += ['', f'## Pruning alone vs hybrid at {res["settings"]["ratio"]:.0%} of the '
              'backbone params', '']
    if choice:
        lines += [f'The hybrid\'s MLP keep ratio is chosen on the validation split '
                  f'({choice["num_val"]} training images held out): every hybrid is measured '
                  'there, in brackets against the reference there; only the chosen one is '
                  'evaluated on the test split.', '']
    lines += ['| variant | backbone params | attn dims kept | MLP units kept | low-rank layers | '
              f'top-1 after compression | top-1 after {k}-it fine-tune |',
              '|---|---:|---:|---:|---:|---:|---:|']
    if choice:
        lines[-2] += ' split |'
        lines[-1] += '---|'
    for r in res['budget']:
        lines.append(row(r, f'{r["attn_kept"]:.0%}', f'{r["mlp_kept"]:.0%}',
                         str(r['lowrank_layers']), split_column=bool(choice)))
    if res.get('comparisons'):
        lines += comparisons_markdown(res['comparisons'])
    s = res['settings']
    lines += ['', f'Settings: seed {s["seed"]} (compression), fine-tune seeds {seeds}, '
              f'fine-tune {k} iterations (AdamW lr '
              f'{s["finetune_lr"]}, cosine, batch 64), {s["threads"]} torch thread(s); '
              f'{res["seconds"]:.0f}s in all. rel. error = |W - AB|_F / |W|_F per factorized '
              'layer. JSON: compare_lowrank.json.', '']
    return '\n'.join(lines)


def comparisons_markdown(comparisons: list[dict]) -> list[str]:
    """The table of the paired comparisons: difference and corrected interval of each."""
    family = comparisons[0]['family']
    lines = ['', '## Paired comparisons', '',
             'Difference of top-1 (points, first minus second) on the same test images, paired '
             'bootstrap over test images and seeds; the corrected interval is at the level of '
             f'its Holm step over the {family} comparisons of this study. A difference is '
             f'called only when the Holm-adjusted p-value is under {ALPHA}.', '',
             '| comparison | difference | 95% interval | corrected interval | Holm p | verdict |',
             '|---|---:|---:|---:|---:|---|']
    lines += [f'| {c["name"]} | {c["diff"]:+.2f} | [{c["low95"]:+.2f}, {c["high95"]:+.2f}] | '
              f'[{c["low"]:+.2f}, {c["high"]:+.2f}] ({100 * c["level"]:.1f}%) | '
              f'{c["p_holm"]:.3f} | {verdict(c, alpha=ALPHA)} |' for c in comparisons]
    return lines


# -------------------------------------------------------------------------- main
class _RowFinetunes:
    """``ft(name, subnet, checkpoint, split)``: the row of one compressed model, its
    fine-tune once per seed, aggregated, on ``split`` (the validation split for a choice);
    the same compressed model in both tables is fine-tuned once."""

    def __init__(self, stages: Stages, work: Path, seeds, seed: int, iters: int, lr: float):
        self.stages, self.work, self.seeds, self.seed = stages, work, seeds, seed
        self.iters, self.lr = iters, lr
        self.done: dict = {}

    def __call__(self, name, subnet, checkpoint, split='test') -> dict:
        if (checkpoint, split) in self.done:
            return copy.deepcopy(self.done[checkpoint, split])
        digest = _digest(checkpoint)
        runs = []
        for s in self.seeds:
            log(f'fine-tuning {name} ({self.iters} iterations, seed {s})')
            # the study seed keeps the run name a single-seed study gave it (and its cache)
            run_name = name if s == self.seed else f'{name}-s{s}'
            r = self.stages.finetune(
                osp.relpath(self.work / 'finetune' / run_name, self.stages.work_dir),
                str(subnet), str(checkpoint), s, self.iters, config=str(RETRAIN_CFG),
                options={'optim_wrapper.optimizer.lr': self.lr}, warmup=0,
                key=dict(checkpoint_sha256=digest), split=split)
            runs.append(dict(seed=s, top1_before_ft=r['top1_pruned'],
                             top1_after_ft=r['top1_finetuned'],
                             backbone_params=r['backbone_params'], finetune_seconds=r['seconds'],
                             predictions_pruned=r['predictions_pruned'],
                             predictions=r['predictions'], final=r['final']))
        row = aggregate_runs(runs)
        finals = [r['final'] for r in runs]
        row.update(final=finals[0] if len(finals) == 1 else finals,
                   compressed=dict(finals[0], checkpoint=str(checkpoint)),
                   **({} if split == 'test' else dict(split=split)))
        self.done[checkpoint, split] = row
        return copy.deepcopy(row)


def compare_lowrank(work_dir: str = 'work_dirs/compare_lowrank',
                    data_root: str = 'data/toy_cifar100', search_checkpoint: str | None = None,
                    dense_epochs: int = 6, search_epochs: int = 2, ratio: float = 0.5,
                    mlp_keep_ratios=(0.5, 0.6), methods=METHODS, finetune_iters: int = 150,
                    finetune_lr: float = 5e-4, seed: int = 0, threads: int = 1,
                    calibration_batches: int = 8, source_note: str | None = None,
                    stages: Stages | None = None, seeds=None,
                    bootstrap_draws: int = 4000) -> dict:
    """Run the comparison (see the module doc); returns what compare_lowrank.json holds.

    ``ratio``: backbone params after compression, as a fraction of the dense backbone;
    ``mlp_keep_ratios``: the hybrid's MLP keep ratios to try (attention takes the rest by
    low rank); ``calibration_batches``: training batches whose layer inputs calibrate
    the calibrated methods (``svd_whitened``); ``source_note`` describes a given
    ``search_checkpoint`` in the report. ``stages``: the study's stages (data, fine-tune,
    evaluation; default: the easy toy set at ``data_root``, whose dense and search runs
    of ``dense_epochs`` / ``search_epochs`` give the searched model). ``seed`` makes the
    dense model, the search and the compression; ``seeds`` (default: ``seed`` alone) are the
    fine-tune seeds, each row's fine-tune run once per seed. ``bootstrap_draws``: the draws of
    each paired comparison.
    """
    seeds = [seed] if seeds is None else [int(s) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f'seeds: expected distinct fine-tune seeds, got {seeds}')
    settings = dict(work_dir=work_dir, data_root=data_root,
                    search_checkpoint=search_checkpoint, dense_epochs=dense_epochs,
                    search_epochs=search_epochs, ratio=ratio,
                    mlp_keep_ratios=list(mlp_keep_ratios), methods=list(methods),
                    finetune_iters=finetune_iters, finetune_lr=finetune_lr, seed=seed,
                    seeds=seeds, threads=threads, bootstrap_draws=bootstrap_draws)
    t0 = time.time()
    work = Path(work_dir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    if stages is None:
        stages = _easy_stages(work, data_root, dense_epochs, finetune_iters, threads)
    torch.set_num_threads(threads)
    data_root = stages.ensure_data()
    if search_checkpoint:
        ckpt = Path(search_checkpoint)
    else:
        per_epoch = _iters_per_epoch(stages)
        dense = stages.dense(seed)
        ckpt = Path(stages.search(dense['checkpoint'], search_epochs * per_epoch,
                                  seed)['checkpoint'])
    search_model = build_search_model(ckpt)
    loader = stages.test_loader()

    lowrank = _compressor(stages, work, ckpt, seed, calibration_batches)
    ft = _RowFinetunes(stages, work, seeds, seed, finetune_iters, finetune_lr)
    ref = _reference_row(search_model, work, ft)
    results = dict(settings=dict(settings, data_root=data_root, search_checkpoint=str(ckpt),
                                 source_note=source_note),
                   reference=ref, methods=[], budget=[])

    ref_row = dict(ref, name=REFERENCE, reference=True, **_increase(ref, ref))
    results['methods'], svd_dir = _equal_params_rows(lowrank, ft, methods, ratio, ref)
    results['methods'].insert(0, dict(ref_row, mean_rel_error=0.0, max_rel_error=0.0,
                                      layers=0))
    results['budget'] = _equal_compression_rows(search_model, lowrank, ft, methods, ratio,
                                                mlp_keep_ratios, svd_dir, ref, work,
                                                choose_on_val=bool(stages.s.num_val))
    if stages.s.num_val:
        results['choice'] = _choose_hybrid(stages, results['budget'], ref)
    results['budget'].insert(0, dict(ref_row, attn_kept=1.0, mlp_kept=1.0, lowrank_layers=0))
    results['comparisons'] = lowrank_comparisons(results, draws=bootstrap_draws)

    results['num_test'] = len(loader.dataset)
    results['seconds'] = round(time.time() - t0, 1)
    results['sidt_mmdet_version'] = __version__
    write_json_atomic(work / 'compare_lowrank.json', _plain(results))
    write_text_atomic(work / 'compare_lowrank.md', markdown(results))
    log(f'wrote {work / "compare_lowrank.md"} and compare_lowrank.json '
        f'({results["seconds"]:.0f}s)')
    print(markdown(results))
    return results


def _compressor(stages: Stages, work: Path, ckpt: Path, seed: int, calibration_batches: int):
    """``lowrank(name, **rule)``: the searched checkpoint compressed by ``rule`` into
    ``work/compressed/<name>``; its directory and report. Calibration batches (whitened SVD)
    never hold a validation image."""
    options = data_root_options('classification', stages.ensure_data())
    if stages.s.num_val:
        options['train_dataloader.dataset.indices'] = (stages.num_train_images()
                                                       - stages.s.num_val)

    def lowrank(name, **rule):
        out = work / 'compressed' / name
        calib = (dict(calibration_batches=calibration_batches)
                 if rule.get('method') in CALIBRATED_METHODS else {})
        lowrank_export(str(SEARCH_CFG), str(ckpt), str(out), overwrite=True, seed=seed,
                       cfg_options=options, **calib, **rule)
        return out, json.loads((out / 'lowrank_report.json').read_text())
    return lowrank


def _reference_row(search_model, work: Path, ft) -> dict:
    """The searched model with every dim kept (masks folded) given the same fine-tune: the
    reference, a row of both tables."""
    reference = dense_reference(search_model, work / 'compressed' / 'reference')
    ref = ft('reference', reference['subnet_path'], reference['checkpoint'])
    ref['backbone_params'] = reference['params']
    for r in ref['runs']:
        r['backbone_params'] = reference['params']
    return ref


def _increase(r: dict, ref: dict) -> dict:
    return dict(rel_err_increase_before_ft=rel_error_increase(r['top1_before_ft'],
                                                              ref['top1_before_ft']),
                rel_err_increase_after_ft=rel_error_increase(r['top1_after_ft'],
                                                             ref['top1_after_ft']))


def _equal_params_rows(lowrank, ft, methods, ratio: float, ref: dict):
    """Every method at the SVD run's ranks (equal params): its rows, and the SVD run's
    directory (run even when SVD is not among ``methods``: the others take its ranks)."""
    rows, svd_dir = [], None
    for method in ['svd'] + [m for m in methods if m != 'svd']:
        rule = (dict(backbone_ratio=ratio) if method == 'svd'
                else dict(ranks_from=str(svd_dir / 'subnet.json')))
        out, report = lowrank(f'lowrank-{method}', method=method, **rule)
        svd_dir = svd_dir or out
        if method not in methods:
            continue
        errors = [row['rel_error'] for row in report['layers'] if row['replaced']]
        r = ft(f'lowrank-{method}', out / 'subnet.json', out / 'lowrank.pth')
        r.update(name=method, mean_rel_error=sum(errors) / len(errors),
                 max_rel_error=max(errors), layers=len(errors), **_increase(r, ref))
        rows.append(r)
    return rows, svd_dir


def _equal_compression_rows(search_model, lowrank, ft, methods, ratio: float,
                            mlp_keep_ratios, svd_dir: Path, ref: dict, work: Path,
                            choose_on_val: bool = False) -> list:
    """Pruning alone, low rank alone and the hybrid at ``ratio`` of the backbone params
    (``choose_on_val``: the hybrids measured on the validation split)."""
    bb = search_model.backbone
    variants = []
    pruned = prune_only(search_model, ratio, work / 'compressed' / 'prune-only')
    variants.append(('pruning only', work / 'compressed' / 'prune-only' / 'subnet.json',
                     pruned['checkpoint'], pruned['subnet'], 0))
    if 'svd' in methods:
        sub = json.loads((svd_dir / 'subnet.json').read_text())
        variants.append(('low rank only (SVD, all four)', svd_dir / 'subnet.json',
                         svd_dir / 'lowrank.pth', _subnet(svd_dir), len(sub['lowrank']['ranks'])))
    for keep in mlp_keep_ratios:
        name = f'hybrid (MLP keep {keep:g} + SVD attention)'
        try:
            out, _ = lowrank(f'hybrid-mlp{keep:g}', method='svd', mlp_keep_ratio=keep,
                             targets=('attn.qkv', 'attn.proj'), backbone_ratio=ratio)
        except LowRankError as e:
            log(f'  skipped {name}: infeasible at --ratio {ratio}: {e}')
            continue
        sub = _subnet(out)
        variants.append((name, out / 'subnet.json', out / 'lowrank.pth', sub,
                         len(sub.lowrank['ranks'])))
    rows = []
    for name, subnet_path, checkpoint, subnet, n_lowrank in variants:
        # with a validation split the hybrids are candidates of a choice: measured there
        split = 'val' if choose_on_val and name.startswith('hybrid') else 'test'
        r = ft(Path(checkpoint).parent.name, subnet_path, checkpoint, split)
        r.update(name=name, lowrank_layers=n_lowrank, **widths(subnet, bb))
        if split == 'test':
            r.update(_increase(r, ref))
        rows.append(r)
    return rows


def _choose_hybrid(stages: Stages, rows: list[dict], ref: dict) -> dict:
    """The hybrid's MLP keep ratio of the best validation top-1 after the fine-tune; the
    chosen hybrid evaluated on the test split (compressed and fine-tuned, once each) and
    appended to ``rows``; the reference on the validation split for the hybrids' deltas."""
    hybrids = {r['name']: r for r in rows if r.get('split') == 'val'}
    if not hybrids:
        return {}
    choice = stages.choose('choice-hybrid-mlp-keep',
                           {name: (lambda r=r: r['final']) for name, r in hybrids.items()})
    # the validation runs' figures (seeds, std, predictions) are not the test row's
    chosen = {k: v for k, v in hybrids[choice['chosen']].items()
              if k != 'runs' and not k.endswith('_std')}
    before = stages.evaluate_final('choice-hybrid-mlp-keep-compressed-test',
                                   chosen['compressed'])
    chosen.update(name=f'{chosen["name"]}, chosen on validation', split='test',
                  top1_before_ft=before['top1'], top1_after_ft=choice['test']['top1'])
    chosen.update(_increase(chosen, ref))
    rows.append(chosen)

    def val_top1(name, final):  # the mean over the seeds' final models
        finals = final if isinstance(final, list) else [final]
        return sum(stages.evaluate_final(name if i == 0 else f'{name}-{i}', f,
                                         split='val')['top1']
                   for i, f in enumerate(finals)) / len(finals)
    ref['val'] = {key: val_top1(f'choice-hybrid-mlp-keep-reference-{key}', ref[what])
                  for key, what in (('top1_before_ft', 'compressed'),
                                    ('top1_after_ft', 'final'))}
    return dict(metric=choice['metric'], chosen=choice['chosen'], val=choice['val'],
                test=choice['test'], num_val=stages.s.num_val)


def _digest(path) -> str:
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            h.update(chunk)
    return h.hexdigest()[:16]


def _iters_per_epoch(stages: Stages) -> int:
    from ..datasets.generation.toy_cifar100 import PRESETS as DATA_PRESETS
    num_train = stages.s.num_train or DATA_PRESETS[stages.s.data_preset]['num_train']
    return math.ceil((num_train - stages.s.num_val) / stages.s.batch_size)


def _easy_stages(work: Path, data_root: str, dense_epochs: int, finetune_iters: int,
                 threads: int) -> Stages:
    """The stages of the standalone comparison: the easy toy set at ``data_root``, the toy
    classifier's dense, search and low-rank retrain configs, ``dense_epochs`` of dense
    training (one of them warm-up)."""
    settings = StageSettings(
        data_root=osp.abspath(data_root), data_preset='easy', dense_config=str(DENSE_CFG),
        search_config=str(SEARCH_CFG), retrain_config=str(RETRAIN_CFG),
        finetune_iters=finetune_iters, finetune_warmup=0, batch_size=64, threads=threads)
    stages = Stages(str(work), settings)
    per_epoch = _iters_per_epoch(stages)
    settings.dense_iters, settings.dense_warmup = dense_epochs * per_epoch, per_epoch
    return stages


def _subnet(out: Path) -> Subnet:
    return Subnet.load(out / 'subnet.json')


def _plain(x):
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, Path):
        return str(x)
    return x



# ------------------------------------------------------------- on the hard preset
# The hard toy CIFAR-100 preset, from the dense model and the 10% search the selection
# study trains (sidt_mmdet.studies.selection, same work dir and cache), so the low-rank
# methods are compared where a worse compression shows.
# ``seeds``: the fine-tune seeds (the dense model, the search and the compression stay the
# selection study's seed-0 ones); one fine-tune of every row per seed.
PRESETS = {
    'tiny': dict(selection='tiny', finetune_iters=2, mlp_keep_ratios=(0.5,),
                 calibration_batches=1, seeds=(0,), bootstrap_draws=500, expected_minutes=2),
    # the keep ratio chosen on 50 held-out training images (its own workspace: every stage
    # trains without them)
    'tiny-val': dict(selection='tiny', finetune_iters=2, mlp_keep_ratios=(0.5, 0.6),
                     calibration_batches=1, num_val=50, workspace='tiny-val', seeds=(0,),
                     bootstrap_draws=500, expected_minutes=2),
    'short': dict(selection='short', finetune_iters=187, seeds=(0,), expected_minutes=10),
    'full': dict(selection='full', finetune_iters=748, seeds=(0, 1, 2), expected_minutes=40),
}


def run_lowrank_study(preset: str = 'short', work_dir: str = 'work_dirs/studies',
                      ratio: float = 0.5, methods=METHODS, seed: int = 0,
                      data_root: str | None = None, threads: int = 1, seeds=None) -> dict:
    """:func:`compare_lowrank` on the hard preset at ``ratio`` of the backbone params;
    writes ``lowrank_<preset>.json``/``.md`` in the selection study's workspace and prints
    the goals (:func:`lowrank_goals`). ``seed`` makes the dense model, the search and the
    compression (the selection study's runs at that seed); ``seeds`` are the fine-tune seeds
    (default: the preset's). ``data_root`` is the hard set's root (default: inside the
    workspace, as the selection study's); give the selection study's to share its runs."""
    from .selection import PRESETS as SELECTION_PRESETS
    if preset not in PRESETS:
        raise ValueError(f'preset: expected one of {sorted(PRESETS)}, got {preset!r}')
    p = PRESETS[preset]
    sel = SELECTION_PRESETS[p['selection']]
    work = osp.abspath(osp.join(work_dir, p.get('workspace', sel.workspace)))
    stages = Stages(work, StageSettings(data_root=data_root or osp.join(work, 'data'),
                                        **dict(sel.settings, threads=threads,
                                               num_val=p.get('num_val', 0))))
    dense = stages.dense(seed)
    iters = max(1, round(sel.search_fraction * stages.s.dense_iters))
    search = stages.search(dense['checkpoint'], iters, seed)
    res = compare_lowrank(
        work_dir=osp.join(work, f'lowrank-{preset}'), data_root=stages.ensure_data(),
        stages=stages,
        search_checkpoint=search['checkpoint'], ratio=ratio,
        mlp_keep_ratios=p.get('mlp_keep_ratios', (0.5, 0.6)), methods=methods,
        finetune_iters=p['finetune_iters'], seed=seed, threads=stages.s.threads,
        calibration_batches=p.get('calibration_batches', 8),
        seeds=p['seeds'] if seeds is None else seeds,
        bootstrap_draws=p.get('bootstrap_draws', 4000),
        source_note=f'hard toy CIFAR-100 preset: dense {stages.s.dense_iters} iterations, '
                    f'search {iters}')
    res = dict(res, study='lowrank', preset=preset, retrain_config=str(RETRAIN_CFG),
               dense=dict(top1=dense['top1']))
    res['goals'] = lowrank_goals(res)
    return finish_study(work, f'lowrank_{preset}', _plain(res),
                        lambda r: markdown(r) + '\n## Goals\n\n' + '\n'.join(
                            goal_lines(r['goals'])) + '\n')


QR_VARIANTS = ('qr', 'qr_pivoted', 'qr_rows', 'qr_randomized')
AFTER_FACTORIZATION, AFTER_FINETUNE = 'after factorization', 'after fine-tune'
_PREDICTIONS = {AFTER_FACTORIZATION: 'predictions_pruned', AFTER_FINETUNE: 'predictions'}


def _comparison_plan(names: list[str]) -> list[tuple[str, str, str, str]]:
    """``(goal, a, b, stage)`` of every comparison the goals make, for the methods
    ``names`` of the equal-params table (the reference row among them)."""
    plan = []
    if 'svd' in names and 'svd_whitened' in names:
        plan.append(('whitened', 'svd_whitened', 'svd', AFTER_FACTORIZATION))
    qr = [m for m in QR_VARIANTS if m in names]
    if 'svd' in names and 'lu' in names and qr:
        plan += [('ordering', 'svd', m, AFTER_FINETUNE) for m in qr]
        plan += [('ordering', m, 'lu', AFTER_FINETUNE) for m in qr]
    if REFERENCE in names:
        plan += [(f'reference:{m}', m, REFERENCE, AFTER_FINETUNE)
                 for m in names if m != REFERENCE]
    return plan


def lowrank_comparisons(res: dict, draws: int = 4000) -> list[dict]:
    """The paired comparisons behind the goals, from the runs' stored per-image predictions
    (each row's ``runs``, one per fine-tune seed): ``svd_whitened`` against SVD right after
    factorization; after the fine-tune SVD against every QR variant, every QR variant against
    LU, and every method against the reference. Paired bootstrap over test images and seeds
    (:func:`~sidt_mmdet.studies.stats.compare`), Holm-corrected over all of them."""
    by = {r['name']: r for r in res['methods']}
    loaded: dict = {}

    def scores(name, stage):
        if (name, stage) not in loaded:
            loaded[name, stage] = np.stack([load_correct(run[_PREDICTIONS[stage]])
                                            for run in by[name]['runs']])
        return loaded[name, stage]

    pairs, meta = {}, {}
    for goal, a, b, stage in _comparison_plan(list(by)):
        key = f'{a} vs {b} {stage}'
        pairs[key] = (scores(a, stage), scores(b, stage))
        meta[key] = dict(goal=goal, a=a, b=b, stage=stage)
    out = compare(pairs, alpha=ALPHA, draws=draws) if pairs else {}
    return [dict(name=k, **meta[k], **out[k]) for k in pairs]


def _goal(goal: str, comparisons: list[dict]) -> dict:
    """A goal met only where every one of its comparisons is ahead, missed where any is
    behind, else not shown."""
    verdicts = [verdict(c, alpha=ALPHA) for c in comparisons]
    status = ('met' if all(v == 'ahead' for v in verdicts) else
              'missed' if 'behind' in verdicts else 'not shown')
    detail = '; '.join(
        f'{c["a"]} - {c["b"]} {c["diff"]:+.2f} [{c["low"]:+.2f}, {c["high"]:+.2f}] '
        f'({100 * c["level"]:.1f}% Holm-corrected over {c["family"]}): {v}'
        for c, v in zip(comparisons, verdicts))
    return dict(goal=goal, status=status, detail=detail)


def lowrank_goals(res: dict) -> list[dict]:
    """The low-rank goals, each ``met``/``missed``/``not shown``, from the paired comparisons
    (``res['comparisons']``, or :func:`lowrank_comparisons` of ``res``): a goal is met only
    where every one of its comparisons is ahead (Holm-adjusted p under 0.05), missed where
    any is behind."""
    comparisons = res.get('comparisons')
    if comparisons is None:
        comparisons = lowrank_comparisons(res)
    groups: dict[str, list[dict]] = {}
    for c in comparisons:
        groups.setdefault(c['goal'], []).append(c)
    texts = {'whitened': 'svd_whitened ahead of plain SVD right after factorization at equal '
                         'params',
             'ordering': 'after fine-tune: SVD ahead of every QR variant, each QR variant '
                         'ahead of LU'}
    goals = []
    for key, cs in groups.items():
        text = texts.get(key) or (f'{cs[0]["a"]} ahead of the {REFERENCE} after the '
                                  'fine-tune')
        goals.append(_goal(text, cs))
    return goals
