"""The two end-to-end demos, on generated data and on CPU, through the stage runner:

- :func:`detection_demo` (``make demo``, ``tools/demo.py``): toy COCO, Mask R-CNN with the
  toy SIDTViT; report: backbone params, MACs and latency (with its spread and the load
  average), the whole detectors' speed, box/mask mAP, dense vs pruned.
- :func:`classification_demo` (``make demo-cifar``, ``tools/demo_cifar.py``): toy CIFAR-100,
  the toy ViT classifier through mmpretrain; report: params, MACs, latency, top-1/top-5.

Both write ``WORK/report.md`` (and the detection demo ``WORK/report.json``).
"""
from __future__ import annotations

import os
import os.path as osp
import shutil
import time

from ..utils.fileio import replace_marked_block, write_json_atomic, write_text_atomic
from .chain import REPO, ChainResult, ChainSpec, run_chain

__all__ = ['DETECTION_CONFIGS', 'CLASSIFICATION_CONFIGS', 'detection_demo', 'detection_spec',
           'detection_report',
           'classification_demo', 'classification_spec', 'build_model', 'measure_classifier',
           'write_classification_report', 'classification_report', 'classification_readme_block',
           'CIFAR_README_BEGIN',
           'CIFAR_README_END']

_TOY = osp.join('configs', 'toy')
DETECTION_CONFIGS = dict(
    dense=osp.join(_TOY, 'sidt-dense_mask-rcnn_sidtvit-toy_simplefpn_100it_toy-coco.py'),
    search=osp.join(_TOY, 'sidt-search_mask-rcnn_sidtvit-toy-kr0.6_simplefpn_100it_toy-coco.py'),
    retrain=osp.join(_TOY,
                     'sidt-retrain_mask-rcnn_sidtvit-toy-kr0.6_simplefpn_100it_toy-coco.py'))
_CIFAR = osp.join(REPO, 'configs', 'cifar100')
CLASSIFICATION_CONFIGS = dict(
    dense=osp.join(_CIFAR, 'sidt-dense_cls_vit-toy-p4_linear_6e_toy-cifar100.py'),
    search=osp.join(_CIFAR, 'sidt-search_cls_vit-toy-p4-kr0.6_linear_2e_toy-cifar100.py'),
    retrain=osp.join(_CIFAR, 'sidt-retrain_cls_vit-toy-p4-kr0.6_linear_4e_toy-cifar100.py'))


def _log(tag: str):
    def log(msg: str) -> None:
        print(f'[{tag} {time.strftime("%H:%M:%S")}] {msg}', flush=True)
    return log


def build_model(config: str, subnet: str | None = None, checkpoint: str | None = None):
    """The model of ``config`` (relative to the repository), in eval mode
    (:func:`~sidt_mmdet.apis.runtime.build_model`)."""
    from .runtime import build_model as build
    return build(osp.join(REPO, config), checkpoint=checkpoint, subnet=subnet)


# ----------------------------------------------------------------------------- detection
def detection_spec(data_root: str, keep_ratio: float = 0.6, round_to: int = 8,
                   lengths: dict | None = None, batch_size: int | None = None) -> ChainSpec:
    extra = [] if batch_size is None else [f'train_dataloader.batch_size={batch_size}']
    return ChainSpec(task='detection', dense_cfg=DETECTION_CONFIGS['dense'],
                     search_cfg=DETECTION_CONFIGS['search'],
                     retrain_cfg=DETECTION_CONFIGS['retrain'], data_root=data_root,
                     export=['--keep-ratio', str(keep_ratio), '--round-to', str(round_to)],
                     lengths=dict(lengths or {}), extra_options=extra, skip=('pruned_test',))


def _measure_detectors(chain: ChainResult, sizes, iters: int, log) -> list[dict]:
    """Backbone params, MACs and latency, dense against pruned, per (size, batch): the two
    backbones timed interleaved; each row keeps the spread of its timings, the load
    average around them and why its latency ratio cannot be trusted (if it cannot)."""
    import torch

    from ..models.complexity import backbone_complexity
    from ..utils.timing import load_average, ratio_trust, spread, time_interleaved

    dense = build_model(DETECTION_CONFIGS['dense'], checkpoint=chain.dense_ckpt).backbone
    pruned = build_model(DETECTION_CONFIGS['retrain'], chain.subnet,
                         chain.retrain_ckpt).backbone
    rows = []
    for side, batch in sizes:
        x = torch.randn(batch, 3, side, side)
        log(f'timing backbones at {side}x{side}, batch {batch}')

        def call(model, x=x):
            def fn():
                with torch.inference_mode():
                    model(x)
            return fn
        load_before = load_average()
        times = time_interleaved({'dense': call(dense), 'pruned': call(pruned)}, iters=iters,
                                 warmup=2)
        load_after = load_average()
        ms = {k: [v * 1e3 for v in t] for k, t in times.items()}
        a = backbone_complexity(dense, (side, side))
        b = backbone_complexity(pruned, (side, side))
        rows.append(dict(size=side, batch=batch, ms_dense=spread(ms['dense'])['median'],
                         ms_pruned=spread(ms['pruned'])['median'],
                         spread_dense=spread(ms['dense']), spread_pruned=spread(ms['pruned']),
                         load_average=[load_before, load_after], cores=os.cpu_count(),
                         threads=torch.get_num_threads(),
                         untrusted=ratio_trust(ms['dense'], ms['pruned'],
                                               load=[load_before, load_after], unit=' ms'),
                         params_dense=a.params,
                         params_pruned=b.params, macs_dense=a.macs, macs_pruned=b.macs,
                         macs_executed_pruned=b.macs_executed))
    return rows


def _benchmark_detectors(chain: ChainResult, iters: int, log) -> dict:
    """The whole detectors (mmdet's test_step: backbone, neck, heads, NMS), dense against
    pruned, on synthetic images at the config's test size (``apis.benchmark``)."""
    from .benchmark import ModelSpec, benchmark_detectors
    specs = [ModelSpec(osp.join(REPO, DETECTION_CONFIGS['dense']), chain.dense_ckpt,
                       name='dense'),
             ModelSpec(osp.join(REPO, DETECTION_CONFIGS['retrain']), chain.retrain_ckpt,
                       chain.subnet, name='pruned')]
    log('timing the whole detectors (test_step)')
    return benchmark_detectors(specs, device='cpu', iters=iters, warmup=2, log=log)


def _ms(s: dict) -> str:
    return f'{s["median"]:.1f} (IQR {s["iqr"]:.1f}, {s["min"]:.1f}-{s["max"]:.1f})'


def _load(v) -> str:
    return 'n/a' if v is None else f'{v:.2f}'


def detection_report(ctx: dict) -> str:
    """``report.md`` of the detection demo from its figures (``ctx``: what
    :func:`detection_demo` measured; ``detector`` is optional)."""
    t0 = ctx['timing'][0]
    rows = [
        ('backbone params', f'{t0["params_dense"]:,}', f'{t0["params_pruned"]:,}',
         t0['params_pruned'] / t0['params_dense'], ''),
    ]
    notes = []
    for t in ctx['timing']:
        lat = t['ms_pruned'] / t['ms_dense']
        mark = ''
        if t.get('untrusted'):
            mark = ' (untrusted)'
            notes.append(f'- latency @{t["size"]}px, batch {t["batch"]}: ratio untrusted: '
                         + '; '.join(t['untrusted']) + '.')
        rows += [
            (f'backbone MACs @{t["size"]}px', f'{t["macs_dense"]:,}', f'{t["macs_pruned"]:,}',
             t['macs_pruned'] / t['macs_dense'], ''),
            (f'backbone latency @{t["size"]}px, batch {t["batch"]} (ms)', f'{t["ms_dense"]:.1f}',
             f'{t["ms_pruned"]:.1f}', lat, mark),
            # 1.0: the pruned backbone is as much faster as its MACs promise
            (f'latency ratio / MACs ratio @{t["size"]}px', '', '',
             lat / (t['macs_pruned'] / t['macs_dense']), mark),
        ]
    for key, name in (('coco/bbox_mAP', 'box mAP'), ('coco/bbox_mAP_50', 'box mAP@50'),
                      ('coco/segm_mAP', 'mask mAP')):
        a, b = ctx['dense_metrics'].get(key), ctx['pruned_metrics'].get(key)
        if a is not None and b is not None:
            rows.append((name, f'{a:.3f}', f'{b:.3f}', b / a if a else float('nan'), ''))
    timing = ['## Timing', '',
              'Backbone latency: milliseconds per batch, median of the interleaved runs '
              '(IQR, min-max); load average (1 min) before and after the runs, against the '
              'cores. A ratio is marked untrusted when the load average exceeded the cores '
              'or the spread of either model is larger than the difference of the medians.',
              '', '| size, batch | dense ms | pruned ms | load average | threads / cores |',
              '|---|---:|---:|---:|---:|']
    for t in ctx['timing']:
        if 'spread_dense' in t:
            loads = ' / '.join(_load(v) for v in t['load_average'])
            timing.append(f'| {t["size"]}px, {t["batch"]} | {_ms(t["spread_dense"])} | '
                          f'{_ms(t["spread_pruned"])} | {loads} | {t["threads"]} / '
                          f'{t["cores"]} |')
    timing += [''] + (notes + [''] if notes else [])
    detector = ctx.get('detector')
    if detector:
        from .benchmark import format_benchmark
        timing += ['## Whole detector', '',
                   "mmdet's `test_step` (data preprocessor, backbone, neck, RPN, RoI heads, NMS, "
                   'mask pasting) on synthetic images at the test size, and its backbone and '
                   'backbone + neck, dense and pruned timed interleaved '
                   '(`tools/analysis/benchmark_detector.py`); ms per image, median (IQR).', '',
                   format_benchmark(detector), '']
    lines = [
        '# SiDT demo report (toy COCO, CPU)', '',
        f'Stages (iterations of {ctx["batch_size"]} images): dense {ctx["n_dense"]}, '
        f'search {ctx["n_search"]}, retrain {ctx["n_retrain"]}; keep ratio '
        f'{ctx["keep_ratio"]} of attention dims and '
        f'MLP units, widths rounded up to multiples of {ctx["round_to"]}. '
        f'Wall time {ctx["minutes"]:.1f} min on {os.cpu_count()} CPU cores.', '',
        '| | dense | pruned | pruned / dense |', '|---|---:|---:|---:|',
        *[f'| {n} | {a} | {b} | {r:.3f}{m} |' for n, a, b, r, m in rows], '',
        f'Toy data ({ctx["num_train"]} training and {ctx["num_val"]} validation images of '
        'four shape classes), every model trained from scratch on CPU: the mAP figures show '
        'that the chain keeps what the dense detector learned, not what SiDT reaches on COCO. '
        'The pruned model is searched and retrained from the dense one: it has trained '
        f'{ctx["n_search"] + ctx["n_retrain"]} iterations more than the dense model '
        f'({ctx["n_dense"]}), so a pruned mAP above the dense one is that extra training, not '
        'a gain of pruning (the studies compare at equal training: README, Results). '
        'Latency is the median of interleaved '
        'runs of the two backbones in one process (`sidt_mmdet.utils.timing`). '
        'MACs include the attention matmuls that module-hook counters miss.', '',
        *timing,
        '## Kept width per layer', '', '![kept widths](export/widths.png)', '',
        ctx['widths_md'], '',
        '## Reproduce', '', '```', *ctx['commands'], '```', '']
    return '\n'.join(lines)


_detection_report = detection_report


def detection_demo(work_dir: str = 'work_dirs/demo', dense_iters: int = 800,
                   search_iters: int = 200, retrain_iters: int = 400, batch_size: int = 4,
                   keep_ratio: float = 0.6, round_to: int = 8, data_root: str = 'data/toy_coco/',
                   num_train: int = 512, num_val: int = 64, timing_iters: int = 10,
                   fresh: bool = False) -> dict:
    """``make demo``: dense -> search -> export -> retrain -> COCO test of dense and pruned
    -> ``WORK/report.md``; returns what ``WORK/report.json`` holds."""
    from .chain import ensure_data

    log = _log('demo')
    start = time.time()
    ensure_data('detection', data_root, num_train=num_train, num_val=num_val)
    spec = detection_spec(data_root, keep_ratio, round_to,
                          dict(dense=dense_iters, search=search_iters, retrain=retrain_iters),
                          batch_size)
    chain = run_chain(spec, work_dir, fresh=fresh, log=log)
    timing = _measure_detectors(chain, [(160, 8), (512, 2)], timing_iters, log)
    detector = _benchmark_detectors(chain, timing_iters, log)
    export = chain.dirs['export']
    with open(osp.join(export, 'widths.md'), encoding='utf-8') as f:
        widths_md = f.read()
    work = work_dir
    dense_cfg, search_cfg, retrain_cfg = (DETECTION_CONFIGS[k]
                                          for k in ('dense', 'search', 'retrain'))
    commands = [
        f'python tools/train.py {dense_cfg} --work-dir {work}/dense',
        f'python tools/train.py {search_cfg} --work-dir {work}/search '
        f'--cfg-options load_from={chain.dense_ckpt}',
        f'python tools/export_subnet.py {search_cfg} {chain.search_ckpt} --keep-ratio '
        f'{keep_ratio} -o {export}',
        f'python tools/train.py {retrain_cfg} --work-dir {work}/retrain --cfg-options '
        f'model.backbone.subnet={chain.subnet} load_from={chain.pruned_ckpt}',
        f'python tools/test.py {retrain_cfg} {chain.retrain_ckpt} --cfg-options '
        f'model.backbone.subnet={chain.subnet}',
        f'(iteration counts: --cfg-options train_cfg.max_iters=N ...; see '
        f'sidt_mmdet.apis.chain.schedule_options; batch size: train_dataloader.batch_size='
        f'{batch_size})']
    dense_metrics, pruned_metrics = chain.metrics['dense'], chain.metrics['pruned']
    report = osp.join(chain.work_dir, 'report.md')
    text = detection_report(dict(
        timing=timing, detector=detector, dense_metrics=dense_metrics,
        pruned_metrics=pruned_metrics,
        n_dense=dense_iters, n_search=search_iters, n_retrain=retrain_iters,
        batch_size=batch_size, num_train=num_train, num_val=num_val, keep_ratio=keep_ratio,
        round_to=round_to, minutes=(time.time() - start) / 60,
        widths_md=widths_md, commands=commands))
    write_text_atomic(report, text)
    result = dict(timing=timing, detector=detector, dense=dense_metrics, pruned=pruned_metrics,
                  iterations=dict(dense=dense_iters, search=search_iters,
                                  retrain=retrain_iters),
                  batch_size=batch_size, num_train=num_train, num_val=num_val,
                  minutes=(time.time() - start) / 60)
    write_json_atomic(osp.join(chain.work_dir, 'report.json'), result)
    log(f'done in {(time.time() - start) / 60:.1f} min: {report}')
    print(text)
    return result


# ------------------------------------------------------------------------ classification
def classification_spec(data_root: str, export: list[str], lengths: dict | None = None,
                        extra_options: list[str] | None = None,
                        python: str | None = None) -> ChainSpec:
    spec = ChainSpec(task='classification', dense_cfg=CLASSIFICATION_CONFIGS['dense'],
                     search_cfg=CLASSIFICATION_CONFIGS['search'],
                     retrain_cfg=CLASSIFICATION_CONFIGS['retrain'], data_root=data_root,
                     export=list(export), lengths=dict(lengths or {}),
                     extra_options=list(extra_options or []))
    if python is not None:
        spec.python = python
    return spec


def measure_classifier(subnet_path: str, batch: int = 64, iters: int = 30,
                       warmup: int = 5) -> dict:
    """Params, MACs (our counter, attention matmuls included) and backbone latency of the
    dense and the pruned toy classifier."""
    import torch

    from ..models.complexity import backbone_complexity
    from ..utils.timing import median_latency

    dense = build_model(CLASSIFICATION_CONFIGS['dense'])
    pruned = build_model(CLASSIFICATION_CONFIGS['retrain'], subnet_path)
    size = tuple(dense.backbone.img_size)
    out = {}
    for name, model in (('dense', dense), ('pruned', pruned)):
        c = backbone_complexity(model.backbone, size)
        head = sum(p.numel() for p in model.head.parameters())
        out[name] = dict(backbone_params=c.params, backbone_macs=c.macs,
                         classifier_params=sum(p.numel() for p in model.parameters()),
                         head_params=head, head_macs=model.head.fc.in_features
                         * model.head.fc.out_features, embed_dims=model.backbone.out_channels)
    threads = int(os.environ.get('OMP_NUM_THREADS', '1'))
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    x = torch.randn(batch, 3, *size)
    times = median_latency({'dense': dense.backbone, 'pruned': pruned.backbone}, x, iters,
                           warmup)
    for name, t in times.items():
        out[name]['latency_ms'] = t * 1e3
    out['latency'] = dict(batch=batch, input_size=list(size), iters=iters, threads=threads,
                          torch=torch.__version__)
    return out


def _k(n: float) -> str:
    for unit, scale in (('G', 1e9), ('M', 1e6), ('K', 1e3)):
        if abs(n) >= scale:
            return f'{n / scale:.3f}{unit}'
    return f'{n:g}'


def write_classification_report(path: str, chain: dict, figures: dict, subnet, elapsed: float,
                                plot: str | None) -> str:
    """``report.md`` of the classification demo; ``chain`` is ``ChainResult.to_dict()``."""
    d, p = figures['dense'], figures['pruned']
    t = chain['metrics']
    lat = figures['latency']

    def row(label, key, fmt=_k):
        ratio = p[key] / d[key] if d[key] else float('nan')
        return f'| {label} | {fmt(d[key])} | {fmt(p[key])} | {ratio:.3f} |'

    def acc(label, key):
        a, b = t['dense'][key], t['pruned'][key]
        return f'| {label} | {a:.2f} | {b:.2f} | {b / a if a else float("nan"):.3f} |'

    budget = ', '.join(f'{k}={v}' for k, v in subnet.budget.items())
    lines = [
        '# demo-cifar: SiDT on the toy CIFAR-100 classifier', '',
        f'Generated by `tools/demo_cifar.py` in {elapsed / 60:.1f} min on CPU. Data: generated '
        'CIFAR-100 (real pickle format), read by `ToyCIFAR100`. Model: '
        f'`{osp.relpath(CLASSIFICATION_CONFIGS["dense"], REPO)}` (ViT {d["embed_dims"]} wide, '
        f'{subnet.num_layers} blocks, {subnet.num_heads} heads, 4x4 patches on 32x32).', '',
        f'Subnet: {budget}; `{osp.relpath(chain["subnet"], REPO)}`.', '',
        '| | dense | pruned | pruned / dense |', '|---|---|---|---|',
        row('backbone params', 'backbone_params'),
        row('classifier params (backbone + head)', 'classifier_params'),
        row('backbone MACs / image', 'backbone_macs'),
        row('head MACs / image', 'head_macs'),
        row(f'backbone latency, ms / batch of {lat["batch"]} ({lat["threads"]} thread)',
            'latency_ms', lambda v: f'{v:.2f}'),
        acc('top-1 (%), retrained', 'accuracy/top1'),
        acc('top-5 (%), retrained', 'accuracy/top5'),
        '',
        f'Top-1 of the pruned model before retraining (sliced weights, masks folded): '
        f'{t["pruned_before_retrain"]["accuracy/top1"]:.2f}%.', '',
        'MACs are counted by `sidt_mmdet.models.complexity` (attention matmuls included, '
        'softmax/norms not). Latency: backbone forward only, dense and pruned timed '
        f'interleaved, median of {lat["iters"]} runs, torch {lat["torch"]}.', '',
        '## Kept widths per block', '',
        '| block | heads | q/k dims per head | v dims per head | MLP units |',
        '|---|---|---|---|---|',
    ]
    for i, w in enumerate(subnet.widths()):
        heads = sum(1 for v in w['v'] if v)
        lines.append(f'| {i} | {heads}/{subnet.num_heads} | {w["qk"]} | {w["v"]} | '
                     f'{w["mlp"]}/{subnet.mlp_hidden} |')
    if plot:
        lines += ['', f'![kept widths]({osp.basename(plot)})']
    lines += ['', '## Files', '']
    for key, value in chain['dirs'].items():
        lines.append(f'- {key}: `{osp.relpath(value, REPO)}`')
    text = '\n'.join(lines) + '\n'
    write_text_atomic(path, text)
    return text


def _cifar_sizes(data_root: str) -> dict[str, int]:
    import pickle
    sizes = {}
    for key, split in (('num_train', 'train'), ('num_test', 'test')):
        with open(osp.join(data_root, 'cifar-100-python', split), 'rb') as f:
            sizes[key] = len(pickle.load(f, encoding='latin1')['fine_labels'])
    return sizes


CIFAR_README_BEGIN = ('<!-- demo-cifar:begin (generated by tools/demo_cifar.py --readme '
                      'docs/cifar100.md; do not edit) -->')
CIFAR_README_END = '<!-- demo-cifar:end -->'


def classification_report(chain: dict, figures: dict, subnet, minutes: float,
                          sizes: dict[str, int], report_json: str) -> dict:
    """What ``WORK/report.json`` of the classification demo holds."""
    budget = (f'{subnet.budget.get("kind", "budget")} {subnet.budget.get("value", "")}, '
              f'granularity {subnet.budget.get("granularity", "?")}').replace('_', ' ')
    return dict(metrics=chain['metrics'], figures=figures, subnet=chain['subnet'],
                budget=budget, minutes=minutes, report_json=osp.relpath(report_json, REPO),
                **sizes)


def classification_readme_block(report: dict) -> str:
    """The demo-cifar table of docs/cifar100.md, from what ``WORK/report.json`` holds."""
    m, f = report['metrics'], report['figures']
    d, p = f['dense'], f['pruned']

    def ratio(key):
        return f'x{p[key] / d[key]:.3f}'

    top1 = (m['dense']['accuracy/top1'], m['pruned_before_retrain']['accuracy/top1'],
            m['pruned']['accuracy/top1'])
    lat = f['latency']
    return '\n'.join([
        f'Generated by `python tools/demo_cifar.py --readme docs/cifar100.md` from '
        f'`{report["report_json"]}` ({report["minutes"]:.1f} min; latency: backbone forward, '
        f'batch {lat["batch"]}, {lat["threads"]} thread(s), dense and pruned interleaved).', '',
        f'| run (toy CIFAR-100, {report["num_train"]}/{report["num_test"]} images) | dense '
        'top-1 | pruned, before retrain | pruned, retrained | backbone params | MACs | '
        'latency |', '|---|---:|---:|---:|---|---|---|',
        f'| demo, {report["budget"]} | {top1[0]:.2f} | {top1[1]:.2f} | {top1[2]:.2f} | '
        f'{ratio("backbone_params")} | {ratio("backbone_macs")} | {ratio("latency_ms")} |',
        '', f'Retrained pruned / dense top-1 = **{top1[2] / top1[0]:.3f}**.'])


def classification_demo(work_dir: str = 'work_dirs/demo-cifar',
                        data_root: str = 'data/toy_cifar100', keep_ratio: float = 0.6,
                        python: str | None = None, fresh: bool = False,
                        readme: str | None = None) -> str:
    """``make demo-cifar``: dense -> test -> search -> export -> test -> retrain -> test ->
    ``WORK/report.md`` (returned as text) and ``WORK/report.json``; with ``readme``, the
    table between its demo-cifar markers is generated from that JSON."""
    from ..models import Subnet
    from .chain import ensure_data

    log = _log('demo-cifar')
    start = time.perf_counter()
    work_dir, data_root = osp.abspath(work_dir), osp.abspath(data_root)
    ensure_data('classification', data_root)
    spec = classification_spec(data_root, ['--keep-ratio', str(keep_ratio)], python=python)
    chain = run_chain(spec, work_dir, fresh=fresh, log=log).to_dict()
    log('report: params, MACs, backbone latency (dense vs pruned, interleaved)')
    figures = measure_classifier(chain['subnet'])
    subnet = Subnet.load(chain['subnet'])
    plot = osp.join(chain['dirs']['export'], 'widths.png')
    if osp.isfile(plot):
        shutil.copyfile(plot, osp.join(work_dir, 'widths.png'))
        plot = osp.join(work_dir, 'widths.png')
    else:
        plot = None
    report = osp.join(work_dir, 'report.md')
    text = write_classification_report(report, chain, figures, subnet,
                                       time.perf_counter() - start, plot)
    print(text)
    report_json = osp.join(work_dir, 'report.json')
    result = classification_report(chain, figures, subnet, (time.perf_counter() - start) / 60,
                                   _cifar_sizes(data_root), report_json)
    write_json_atomic(report_json, result)
    if readme is not None:
        replace_marked_block(readme, CIFAR_README_BEGIN, CIFAR_README_END,
                             classification_readme_block(result), 'the demo-cifar table')
        log(f'{readme}: demo-cifar table generated from {osp.relpath(report_json)}')
    log(f'done in {(time.perf_counter() - start) / 60:.1f} min: {osp.relpath(report)}')
    return text
