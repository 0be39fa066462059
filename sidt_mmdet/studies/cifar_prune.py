"""SiDT's CIFAR-100 claim on the toy set: top-1 of a pruned, retrained classifier vs dense.

:func:`cifar_prune_benchmark` runs the toy chain of ``make demo-cifar`` (dense -> search ->
export -> retrain -> test, through the stage runner) with a budget that removes ``prune`` of
the backbone's parameters (``budget='params'``), of its MACs per 32x32 image (``'macs'``;
``'flops'`` is its older name) or of the searched dims (``'dims'``, a keep ratio; with
rounding to 8 the parameter cut is smaller than the dim cut), and writes every figure as
JSON. A benchmark, not a test: it trains for minutes; one seed per run.
"""
from __future__ import annotations

import os
import os.path as osp
import time

from ..apis.chain import ensure_data, run_chain
from ..apis.demo import (
    CLASSIFICATION_CONFIGS,
    build_model,
    classification_spec,
    measure_classifier,
)
from ..utils.fileio import write_json_atomic

__all__ = ['BUDGETS', 'OLD_BUDGETS', 'export_flags', 'cifar_prune_benchmark']

BUDGETS = ('params', 'macs', 'dims')
OLD_BUDGETS = {'flops': 'macs'}


def export_flags(budget: str, prune: float) -> list[str]:
    """The export flags for the budget; absolute targets come from the dense toy backbone."""
    budget = OLD_BUDGETS.get(budget, budget)
    if budget == 'dims':
        return ['--keep-ratio', f'{1 - prune:g}']
    from ..models.complexity import backbone_complexity
    dense = build_model(CLASSIFICATION_CONFIGS['dense'])
    c = backbone_complexity(dense.backbone, tuple(dense.backbone.img_size))
    total = c.params if budget == 'params' else c.macs
    return [f'--{budget}', str(int((1 - prune) * total))]


def cifar_prune_benchmark(prune: float = 0.4, budget: str = 'params',
                          work_dir: str = 'work_dirs/cifar-prune-benchmark',
                          data_root: str = 'data/toy_cifar100', dense_epochs: int | None = None,
                          search_epochs: int | None = None, retrain_epochs: int | None = None,
                          seed: int = 0, out: str | None = None,
                          python: str | None = None) -> dict:
    """Run the benchmark; returns (and writes to ``out``, default WORK/benchmark.json) the
    figures: top-1/top-5 dense, before and after retraining, their ratio, and the params,
    MACs and latency ratios."""
    from ..models import Subnet

    start = time.perf_counter()
    work_dir, data_root = osp.abspath(work_dir), osp.abspath(data_root)
    os.makedirs(work_dir, exist_ok=True)
    flags = export_flags(budget, prune)
    epochs = {k: v for k, v in (('dense', dense_epochs), ('search', search_epochs),
                                ('retrain', retrain_epochs)) if v is not None}
    ensure_data('classification', data_root)
    spec = classification_spec(data_root, flags, epochs, [f'randomness.seed={seed}'], python)
    chain = run_chain(spec, work_dir)
    figures = measure_classifier(chain.subnet)
    subnet = Subnet.load(chain.subnet)
    top1 = {k: v['accuracy/top1'] for k, v in chain.metrics.items()}
    ratio = top1['pruned'] / top1['dense']
    d, p = figures['dense'], figures['pruned']
    result = dict(
        budget=dict(kind=budget, prune=prune, export_flags=flags),
        subnet=chain.subnet, seed=seed, epochs=epochs or 'config defaults',
        top1=top1, top5={k: v['accuracy/top5'] for k, v in chain.metrics.items()},
        top1_ratio=ratio,
        params_ratio=p['backbone_params'] / d['backbone_params'],
        macs_ratio=p['backbone_macs'] / d['backbone_macs'],
        latency_ratio=p['latency_ms'] / d['latency_ms'],
        figures=figures, widths=subnet.widths(),
        minutes=(time.perf_counter() - start) / 60)
    out = out or osp.join(work_dir, 'benchmark.json')
    write_json_atomic(out, result)
    print(f'dense top-1            {top1["dense"]:.2f}')
    print(f'pruned, before retrain {top1["pruned_before_retrain"]:.2f}')
    print(f'pruned, retrained      {top1["pruned"]:.2f}')
    print(f'top-1 ratio (pruned / dense): {ratio:.4f}   backbone params x'
          f'{result["params_ratio"]:.3f}, MACs x{result["macs_ratio"]:.3f}, latency x'
          f'{result["latency_ratio"]:.3f}   -> {out}')
    return result
