"""Whole-detector speed, dense against pruned, where the user runs it (CPU or CUDA).

mmdet's ``tools/analysis_tools/benchmark.py`` times ``model.test_step`` (data preprocessor,
backbone, neck, heads, NMS, rescaling), but needs a dataset, and in mmdet 3.3 calls
``torch.cuda`` unconditionally. :func:`benchmark_detectors` times the same call, and the
backbone and backbone + neck on their own, for one or more models built from their configs
(a checkpoint, a subnet file), on synthetic images at the config's test size (no dataset)
or on the config's test dataloader. Models are timed interleaved (``utils/timing.py``):
one call of each per round, so load from other jobs falls on all alike, and each row gives
the median, quartiles and extremes of its timings, ms per image and images per second
(mmdet's ``fps``). With two models, a row's ratio (second / first) is marked untrusted when
the load average exceeded the cores or the spread exceeds the difference.
"""
from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from ..utils.cli import ToolError, load_config
from ..utils.fileio import write_json_atomic
from ..utils.timing import load_average, ratio_trust, spread, time_interleaved

__all__ = ['ModelSpec', 'ROWS', 'benchmark_detectors', 'build_detector', 'config_test_size',
           'synthetic_batch', 'format_benchmark']

# row name -> what is timed
ROWS = {'backbone': 'model.backbone(inputs)',
        'backbone+neck': 'model.extract_feat(inputs)',
        'detector': 'model.test_step(data): preprocessor, backbone, neck, heads, NMS'}


@dataclass
class ModelSpec:
    """One model to time: a config, optionally its checkpoint and a subnet file that turns
    the config's backbone into a pruned one (as a retrain config does)."""

    config: str
    checkpoint: str | None = None
    subnet: str | None = None
    name: str | None = None


def build_detector(spec: ModelSpec, cfg_options: dict | None = None, device: str = 'cpu'):
    """(config, model in eval mode on ``device``) for ``spec``; the checkpoint is loaded
    strictly through the safe loader (:func:`~sidt_mmdet.apis.runtime.build_model`)."""
    from .runtime import ModelLoadError, build_model
    cfg = load_config(spec.config, cfg_options)
    if spec.subnet is not None and not os.path.isfile(spec.subnet):
        raise ToolError(f'subnet file {spec.subnet}: no such file')
    try:
        model = build_model(cfg, spec.checkpoint, spec.subnet, device=device,
                            where=spec.config)
    except ModelLoadError as e:
        raise ToolError(str(e)) from None
    return cfg, model


def config_test_size(cfg) -> tuple[int, int]:
    """(height, width) of a test image: the last ``Resize`` of the test pipeline. With
    ``keep_ratio`` its scale bounds the long and the short side, so the largest image it
    lets through lies landscape: (short, long)."""
    pipeline = cfg.get('test_dataloader', {}).get('dataset', {}).get('pipeline') or []
    for step in reversed(pipeline):
        if step.get('type', '').split('.')[-1] in ('Resize', 'FixScaleResize') and \
                step.get('scale') is not None:
            scale = step['scale']
            if isinstance(scale, int):
                return scale, scale
            w, h = scale
            return (min(w, h), max(w, h)) if step.get('keep_ratio') else (h, w)
    raise ToolError('the test pipeline (test_dataloader.dataset.pipeline) has no Resize with a '
                    'scale: give --input-size H W')


def synthetic_batch(size: tuple[int, int], batch: int = 1, seed: int = 0) -> dict:
    """A test batch as mmdet's ``PackDetInputs`` makes it: uint8 images (3, H, W) and their
    ``DetDataSample`` meta (no rescaling: the image is already at the test size)."""
    from mmdet.structures import DetDataSample
    g = torch.Generator().manual_seed(seed)
    h, w = size
    inputs = [torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8)
              for _ in range(batch)]
    samples = [DetDataSample(metainfo=dict(img_id=i, img_path=f'synthetic_{i}.png',
                                           img_shape=(h, w), ori_shape=(h, w),
                                           scale_factor=(1.0, 1.0), flip=False))
               for i in range(batch)]
    return dict(inputs=inputs, data_samples=samples)


def _dataset_batches(cfg, n: int, batch: int) -> list[dict]:
    from mmengine.runner import Runner
    loader_cfg = cfg.test_dataloader.copy()
    # workers and shuffling would time the loader, not the model (mmdet's benchmark too)
    loader_cfg.update(batch_size=batch, num_workers=0, persistent_workers=False)
    batches = []
    for data in Runner.build_dataloader(loader_cfg):
        batches.append(data)
        if len(batches) == n:
            break
    if not batches:
        raise ToolError('the test dataloader gave no batch')
    return batches


def _stats_ms(times: Sequence[float], batch: int) -> dict:
    s = {k: (v * 1e3 if k != 'n' else v) for k, v in spread(times).items()}
    s['ms_per_img'] = s['median'] / batch
    s['fps'] = batch * 1e3 / s['median'] if s['median'] > 0 else float('inf')
    return s


def benchmark_detectors(specs: Sequence[ModelSpec], *, device: str | None = None,
                        iters: int = 20, warmup: int = 3, batch: int = 1,
                        input_size: tuple[int, int] | None = None, dataset: bool = False,
                        threads: int | None = None, cfg_options: dict | None = None,
                        out: str | None = None, log: Callable[[str], None] = print) -> dict:
    """Time each model's rows (:data:`ROWS`) interleaved with the other models'; returns
    (and with ``out`` writes atomically as JSON) plain data, times in milliseconds."""
    from ..models.complexity import backbone_complexity
    if not specs:
        raise ToolError('nothing to benchmark: give a config')
    if threads is not None:
        torch.set_num_threads(threads)
    device = device or ('cuda' if torch.cuda.is_available() else 'cpu')
    if device.startswith('cuda') and not torch.cuda.is_available():
        raise ToolError(f'--device {device}: CUDA is not available here (use --device cpu)')
    names = []
    for i, spec in enumerate(specs):
        name = spec.name or ('dense' if i == 0 and len(specs) == 2 else
                             'pruned' if i == 1 and len(specs) == 2 else f'model{i}')
        if name in names:
            name = f'{name}{i}'
        names.append(name)
    models, datas, feats_in, info = {}, {}, {}, {}
    for name, spec in zip(names, specs):
        cfg, model = build_detector(spec, cfg_options, device)
        size = tuple(input_size) if input_size else config_test_size(cfg)
        if dataset:
            batches = _dataset_batches(cfg, max(iters, 1), batch)
        else:
            batches = [synthetic_batch(size, batch)]
        with torch.no_grad():
            inputs = model.data_preprocessor(batches[0], False)['inputs']
        backbone = getattr(model, 'backbone', None)
        entry = dict(config=spec.config, checkpoint=spec.checkpoint, subnet=spec.subnet,
                     params=sum(p.numel() for p in model.parameters()),
                     input_shape=list(inputs.shape))
        if spec.checkpoint is None:
            entry['note'] = ('no checkpoint: random weights; the heads keep boxes by score, '
                             'so the detector row depends on the weights')
        if backbone is not None and hasattr(backbone, 'blocks'):  # SIDTViT
            cost = backbone_complexity(backbone, tuple(inputs.shape[-2:]))
            entry.update(backbone_mode=backbone.mode, backbone_params=cost.params,
                         backbone_macs=cost.macs, backbone_macs_executed=cost.macs_executed)
        models[name], datas[name], feats_in[name], info[name] = model, batches, inputs, entry
        log(f'[{name}] {spec.config}: {entry["params"]:,} params, input {entry["input_shape"]}'
            + (f', backbone {entry["backbone_mode"]} {entry["backbone_macs"] / 1e9:.3f} GMACs'
               if 'backbone_macs' in entry else ''))

    def rows_of(name):
        model, inputs, batches = models[name], feats_in[name], datas[name]
        calls = {}
        if getattr(model, 'backbone', None) is not None:
            calls['backbone'] = lambda: model.backbone(inputs)
        if getattr(model, 'with_neck', False):
            calls['backbone+neck'] = lambda: model.extract_feat(inputs)
        step = iter(range(10 ** 12))
        calls['detector'] = lambda: model.test_step(batches[next(step) % len(batches)])
        return calls

    calls = {name: rows_of(name) for name in names}
    loads = [load_average()]
    start = time.time()
    result = dict(device=device, threads=torch.get_num_threads(), cpu_count=os.cpu_count(),
                  machine=platform.machine(), torch=torch.__version__, batch=batch,
                  source='dataset' if dataset else 'synthetic', iters=iters, warmup=warmup,
                  timing='interleaved; median, quartiles, min and max per model',
                  models=info, rows={}, ratios={})
    for row in ROWS:
        fns = {}
        for name in names:
            if row in calls[name]:
                fn = calls[name][row]
                fns[name] = (lambda f=fn: _no_grad(f))
        if not fns:
            continue
        times = time_interleaved(fns, iters=iters, warmup=warmup, device=device)
        loads.append(load_average())
        result['rows'][row] = {name: _stats_ms(t, batch) for name, t in times.items()}
        for name, s in result['rows'][row].items():
            log(f'[{name}] {row:<13}: {s["ms_per_img"]:.1f} ms/img, fps {s["fps"]:.1f} img/s '
                f'(median of {s["n"]}; IQR {s["iqr"]:.2f} ms, min {s["min"]:.1f}, '
                f'max {s["max"]:.1f} ms per batch of {batch})')
        if len(names) >= 2 and names[0] in times and names[1] in times:
            a, b = ([v * 1e3 for v in times[n]] for n in names[:2])
            result['ratios'][row] = dict(
                of=f'{names[1]} / {names[0]}',
                ratio=spread(b)['median'] / spread(a)['median'],
                untrusted=ratio_trust(a, b, load=loads[-2:], unit=' ms'))
    result['load_average'] = dict(before=loads[0], after=loads[-1], max=max(
        (v for v in loads if v is not None), default=None))
    result['seconds'] = round(time.time() - start, 2)
    if out is not None:
        write_json_atomic(out, result)
    return result


def _no_grad(fn):
    with torch.no_grad():
        return fn()


def format_benchmark(result: dict) -> str:
    """A Markdown table of :func:`benchmark_detectors`' result: ms per image (median) and
    the spread per model and row, the ratio of the first two models."""
    names = list(result['models'])
    head = ' | '.join(f'{n} ms/img (IQR)' for n in names)
    lines = [f'| row | {head} |' + (' ratio | |' if len(names) >= 2 else ''),
             '|---|' + '---:|' * len(names) + ('---:|---|' if len(names) >= 2 else '')]
    for row, per in result['rows'].items():
        cells = ' | '.join(f'{per[n]["ms_per_img"]:.1f} ({per[n]["iqr"] / result["batch"]:.1f})'
                           if n in per else '' for n in names)
        line = f'| {row} | {cells} |'
        r = result['ratios'].get(row)
        if r is not None:
            why = 'untrusted: ' + '; '.join(r['untrusted']) if r['untrusted'] else ''
            line += f' {r["ratio"]:.3f} | {why} |'
        lines.append(line)
    la = result['load_average']
    lines += ['', f'{result["device"]}, {result["threads"]} thread(s), {result["cpu_count"]} '
              f'cores, batch {result["batch"]}, {result["source"]} inputs, {result["iters"]} '
              f'interleaved rounds after {result["warmup"]} warm-up; load average '
              f'{_fmt_load(la["before"])} before, {_fmt_load(la["after"])} after.']
    return '\n'.join(lines)


def _fmt_load(v) -> str:
    return 'n/a' if v is None else f'{v:.2f}'
