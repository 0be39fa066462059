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
4. every variant, and the uncompressed searched model as the reference, is evaluated (top-1 on
   the test split) right after compression and after the same short fine-tune through the
   retrain config configs/lowrank/sidt-lowrank-retrain_cls_vit-toy-p4_linear_4e_toy-cifar100.py
   (``Stages.finetune``: ``finetune_iters`` iterations, cosine, no warm-up, ``finetune_lr``).

Writes WORK/compare_lowrank.md and WORK/compare_lowrank.json. The hybrid's measure is the
relative increase of the top-1 error over the reference: ``(err - err_ref) / err_ref``.

With a validation split (the stages' ``num_val``, preset ``tiny-val``) each hybrid is
measured on it (the reference too, for its deltas), the MLP keep ratio is chosen there
(:meth:`Stages.choose`) and only the chosen hybrid is evaluated on the test split, once.
"""
from __future__ import annotations

import hashlib
import json
import math
import os.path as osp
import time
from pathlib import Path

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
from .common import Stages, StageSettings, binomial_se

__all__ = ['METHODS', 'PRESETS', 'compare_lowrank', 'run_lowrank_study', 'lowrank_goals',
           'rel_error_increase', 'markdown']

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


# ------------------------------------------------------------------------ report
def markdown(res: dict) -> str:
    ref = res['reference']
    dense = ref['backbone_params']
    k = res['settings']['finetune_iters']
    r0, r1 = ref['top1_before_ft'], ref['top1_after_ft']

    def row(r, *cells, split_column=False):
        share = r['backbone_params'] / dense
        val = r.get('split') == 'val'  # held against the reference on the same split
        b0, b1 = (ref['val']['top1_before_ft'], ref['val']['top1_after_ft']) if val else (r0, r1)
        line = ' | '.join([f'| {r["name"]}', f'{r["backbone_params"]:,} ({share:.0%})', *cells,
                           f'{r["top1_before_ft"]:.1f} ({r["top1_before_ft"] - b0:+.1f})',
                           f'{r["top1_after_ft"]:.1f} ({r["top1_after_ft"] - b1:+.1f}) |'])
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
        'reference (before / after fine-tuning). The relative error increase is in the '
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
    s = res['settings']
    lines += ['', f'Settings: seed {s["seed"]}, fine-tune {k} iterations (AdamW lr '
              f'{s["finetune_lr"]}, cosine, batch 64), {s["threads"]} torch thread(s); '
              f'{res["seconds"]:.0f}s in all. rel. error = |W - AB|_F / |W|_F per factorized '
              'layer. JSON: compare_lowrank.json.', '']
    return '\n'.join(lines)


# -------------------------------------------------------------------------- main
def compare_lowrank(work_dir: str = 'work_dirs/compare_lowrank',
                    data_root: str = 'data/toy_cifar100', search_checkpoint: str | None = None,
                    dense_epochs: int = 6, search_epochs: int = 2, ratio: float = 0.5,
                    mlp_keep_ratios=(0.5, 0.6), methods=METHODS, finetune_iters: int = 150,
                    finetune_lr: float = 5e-4, seed: int = 0, threads: int = 1,
                    calibration_batches: int = 8, source_note: str | None = None,
                    stages: Stages | None = None) -> dict:
    """Run the comparison (see the module doc); returns what compare_lowrank.json holds.

    ``ratio``: backbone params after compression, as a fraction of the dense backbone;
    ``mlp_keep_ratios``: the hybrid's MLP keep ratios to try (attention takes the rest by
    low rank); ``calibration_batches``: training batches whose layer inputs calibrate
    the calibrated methods (``svd_whitened``); ``source_note`` describes a given
    ``search_checkpoint`` in the report. ``stages``: the study's stages (data, fine-tune,
    evaluation; default: the easy toy set at ``data_root``, whose dense and search runs
    of ``dense_epochs`` / ``search_epochs`` give the searched model).
    """
    settings = dict(work_dir=work_dir, data_root=data_root,
                    search_checkpoint=search_checkpoint, dense_epochs=dense_epochs,
                    search_epochs=search_epochs, ratio=ratio,
                    mlp_keep_ratios=list(mlp_keep_ratios), methods=list(methods),
                    finetune_iters=finetune_iters, finetune_lr=finetune_lr, seed=seed,
                    threads=threads)
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

    options = data_root_options('classification', data_root)
    if stages.s.num_val:  # the calibration batches never hold a validation image
        options['train_dataloader.dataset.indices'] = (stages.num_train_images()
                                                       - stages.s.num_val)

    def lowrank(name, **rule):
        out = work / 'compressed' / name
        calib = (dict(calibration_batches=calibration_batches)
                 if rule.get('method') in CALIBRATED_METHODS else {})
        lowrank_export(str(SEARCH_CFG), str(ckpt), str(out), overwrite=True, seed=seed,
                       cfg_options=options, **calib, **rule)
        report = json.loads((out / 'lowrank_report.json').read_text())
        return out, report

    done = {}

    def ft(name, subnet, checkpoint, split='test'):
        if (checkpoint, split) in done:  # the same compressed model in both tables
            return dict(done[checkpoint, split])
        log(f'fine-tuning {name} ({finetune_iters} iterations)')
        r = stages.finetune(
            osp.relpath(work / 'finetune' / name, stages.work_dir), str(subnet),
            str(checkpoint), seed, finetune_iters, config=str(RETRAIN_CFG),
            options={'optim_wrapper.optimizer.lr': finetune_lr}, warmup=0,
            key=dict(checkpoint_sha256=_digest(checkpoint)), split=split)
        r = dict(top1_before_ft=r['top1_pruned'], top1_after_ft=r['top1_finetuned'],
                 backbone_params=r['backbone_params'], finetune_seconds=r['seconds'],
                 final=r['final'], compressed=dict(r['final'], checkpoint=str(checkpoint)),
                 **({} if split == 'test' else dict(split=split)))
        done[checkpoint, split] = dict(r)
        return r

    # Reference: the searched model with every dim kept (masks folded), same fine-tune.
    reference = dense_reference(search_model, work / 'compressed' / 'reference')
    ref = ft('reference', reference['subnet_path'], reference['checkpoint'])
    ref['backbone_params'] = reference['params']
    results = dict(settings=dict(settings, data_root=data_root, search_checkpoint=str(ckpt),
                                 source_note=source_note),
                   reference=ref, methods=[], budget=[])

    results['methods'], svd_dir = _equal_params_rows(lowrank, ft, methods, ratio, ref)
    results['budget'] = _equal_compression_rows(search_model, lowrank, ft, methods, ratio,
                                                mlp_keep_ratios, svd_dir, ref, work,
                                                choose_on_val=bool(stages.s.num_val))
    if stages.s.num_val:
        results['choice'] = _choose_hybrid(stages, results['budget'], ref)

    results['num_test'] = len(loader.dataset)
    results['seconds'] = round(time.time() - t0, 1)
    results['sidt_mmdet_version'] = __version__
    write_json_atomic(work / 'compare_lowrank.json', _plain(results))
    write_text_atomic(work / 'compare_lowrank.md', markdown(results))
    log(f'wrote {work / "compare_lowrank.md"} and compare_lowrank.json '
        f'({results["seconds"]:.0f}s)')
    print(markdown(results))
    return results


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
    chosen = dict(hybrids[choice['chosen']])
    before = stages.evaluate_final('choice-hybrid-mlp-keep-compressed-test',
                                   chosen['compressed'])
    chosen.update(name=f'{chosen["name"]}, chosen on validation', split='test',
                  top1_before_ft=before['top1'], top1_after_ft=choice['test']['top1'])
    chosen.update(_increase(chosen, ref))
    rows.append(chosen)
    ref['val'] = {key: stages.evaluate_final(f'choice-hybrid-mlp-keep-reference-{key}',
                                             ref[what], split='val')['top1']
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
PRESETS = {
    'tiny': dict(selection='tiny', finetune_iters=2, mlp_keep_ratios=(0.5,),
                 calibration_batches=1, expected_minutes=2),
    # the keep ratio chosen on 50 held-out training images (its own workspace: every stage
    # trains without them)
    'tiny-val': dict(selection='tiny', finetune_iters=2, mlp_keep_ratios=(0.5, 0.6),
                     calibration_batches=1, num_val=50, workspace='tiny-val',
                     expected_minutes=2),
    'short': dict(selection='short', finetune_iters=187, expected_minutes=10),
    'full': dict(selection='full', finetune_iters=748, expected_minutes=45),
}


def run_lowrank_study(preset: str = 'short', work_dir: str = 'work_dirs/studies',
                      ratio: float = 0.5, methods=METHODS, seed: int = 0,
                      data_root: str | None = None, threads: int = 1) -> dict:
    """:func:`compare_lowrank` on the hard preset at ``ratio`` of the backbone params;
    writes ``lowrank_<preset>.json``/``.md`` in the selection study's workspace and prints
    the goals (``svd_whitened`` ahead of SVD right after factorization; SVD > QR variants >
    LU after fine-tune). ``data_root`` is the hard set's root (default: inside the
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
        source_note=f'hard toy CIFAR-100 preset: dense {stages.s.dense_iters} iterations, '
                    f'search {iters}')
    res = dict(res, study='lowrank', preset=preset, retrain_config=str(RETRAIN_CFG),
               dense=dict(top1=dense['top1']))
    res['goals'] = lowrank_goals(res)
    write_json_atomic(osp.join(work, f'lowrank_{preset}.json'), _plain(res))
    text = markdown(res) + '\n## Goals\n\n' + '\n'.join(
        f'- **{g["status"]}**: {g["goal"]} ({g["detail"]})' for g in res['goals']) + '\n'
    write_text_atomic(osp.join(work, f'lowrank_{preset}.md'), text)
    for g in res['goals']:
        log(f'goal {g["status"].upper()}: {g["goal"]} ({g["detail"]})')
    return res


def lowrank_goals(res: dict) -> list[dict]:
    """The low-rank goals, each ``met``/``missed``/``not shown``: a difference within 2
    binomial standard errors of one top-1 decides nothing."""
    by = {r['name']: r for r in res['methods']}
    goals = []
    if 'svd' in by and 'svd_whitened' in by:
        a, b = by['svd_whitened']['top1_before_ft'], by['svd']['top1_before_ft']
        detail = f'{a:.2f} vs {b:.2f} ({a - b:+.2f}'
        status = 'met' if a > b else 'missed'
        if res.get('num_test'):
            se = binomial_se(b, res['num_test'])
            within = abs(a - b) <= 2 * se
            detail += f'; binomial s.e. of one top-1 {se:.2f}' + (', within 2 s.e.' if within
                                                                  else '')
            status = 'not shown' if within else status
        goals.append(dict(goal='svd_whitened beats plain SVD right after factorization at '
                               'equal params', status=status, detail=detail + ')'))
    qr = [m for m in ('qr', 'qr_pivoted', 'qr_rows', 'qr_randomized') if m in by]
    if 'svd' in by and 'lu' in by and qr:
        svd, lu = by['svd']['top1_after_ft'], by['lu']['top1_after_ft']
        qrs = {m: by[m]['top1_after_ft'] for m in qr}
        ok = all(svd >= v >= lu for v in qrs.values())
        goals.append(dict(goal='after fine-tune: SVD >= every QR variant >= LU',
                          status='met' if ok else 'missed',
                          detail=f'SVD {svd:.2f}, ' + ', '.join(f'{m} {v:.2f}'
                                                                 for m, v in qrs.items())
                                 + f', LU {lu:.2f}'))
    return goals
