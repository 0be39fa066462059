"""SiDT's CIFAR-100 claim on the toy set: top-1 of a 40%-pruned, retrained classifier vs dense.

Runs the toy chain of `make demo-cifar` (tools/demo_cifar.py: dense -> search -> export ->
retrain -> test, through the real tools) with a budget that prunes ``--prune`` (default 0.4)
of the backbone:

    --budget params   keep (1 - prune) of the dense backbone's parameters   (default)
    --budget flops    keep (1 - prune) of its MACs per 32x32 image
    --budget dims     keep (1 - prune) of the searched dims (--keep-ratio; with rounding to 8
                      the parameter cut is smaller than the dim cut)

prints ``pruned top-1 / dense top-1`` and writes every figure as JSON (``--out``, default
WORK_DIR/benchmark.json). A benchmark, not a test: it trains for minutes; one seed per run.

    python tools/analysis/cifar_prune_benchmark.py [--budget params] [--prune 0.4]
"""
from __future__ import annotations

import argparse
import json
import os
import os.path as osp
import sys
import tempfile
import time

TOOLS = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, TOOLS)

import demo_cifar  # noqa: E402  (tools/demo_cifar.py: the toy chain and its measurements)


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected a number in (0, 1), got {text!r}') from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f'expected a value in (0, 1), got {value:g}')
    return value


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog='\n\n'.join(__doc__.split('\n\n')[1:]))
    parser.add_argument('--prune', type=_fraction, default=0.4,
                        help='fraction of the budget to remove (default: %(default)s)')
    parser.add_argument('--budget', choices=('params', 'flops', 'dims'), default='params',
                        help='what --prune is a fraction of (default: %(default)s)')
    parser.add_argument('--work-dir', default='work_dirs/cifar-prune-benchmark')
    parser.add_argument('--data-root', default='data/toy_cifar100',
                        help='toy CIFAR-100 root; generated when cifar-100-python/ is missing')
    parser.add_argument('--dense-epochs', type=int, default=None,
                        help='override the toy dense config (6 epochs)')
    parser.add_argument('--search-epochs', type=int, default=None,
                        help='override the toy search config (2 epochs)')
    parser.add_argument('--retrain-epochs', type=int, default=None,
                        help='override the toy retrain config (4 epochs)')
    parser.add_argument('--seed', type=int, default=0, help='randomness.seed of every stage')
    parser.add_argument('--out', default=None, help='JSON file (default: WORK_DIR/benchmark.json)')
    parser.add_argument('--python', default=sys.executable, help='interpreter for the tools')
    args = parser.parse_args(argv)
    for name in ('dense_epochs', 'search_epochs', 'retrain_epochs'):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f'argument --{name.replace("_", "-")}: expected >= 1, got {value}')
    return args


def export_args(budget: str, prune: float) -> list[str]:
    """The export flags for the budget; absolute targets come from the dense toy backbone."""
    if budget == 'dims':
        return ['--keep-ratio', f'{1 - prune:g}']
    from sidt_mmdet.utils.complexity import backbone_complexity
    dense = demo_cifar.build_model(demo_cifar.DENSE_CFG)
    c = backbone_complexity(dense.backbone, tuple(dense.backbone.img_size))
    total = c.params if budget == 'params' else c.macs
    return [f'--{budget}', str(int((1 - prune) * total))]


def write_json(path: str, data: dict) -> None:
    directory = osp.dirname(osp.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, suffix='.json')
    with os.fdopen(fd, 'w', encoding='utf-8') as f:
        json.dump(data, f, indent=1)
        f.write('\n')
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def main(argv=None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    work_dir = osp.abspath(args.work_dir)
    data_root = osp.abspath(args.data_root)
    os.makedirs(work_dir, exist_ok=True)
    flags = export_args(args.budget, args.prune)
    epochs = {k: v for k, v in (('dense', args.dense_epochs), ('search', args.search_epochs),
                                ('retrain', args.retrain_epochs)) if v is not None}
    try:
        demo_cifar.ensure_data(data_root, args.python, work_dir)
        chain = demo_cifar.run_chain(work_dir, data_root, flags, args.python, epochs=epochs,
                                     extra_options=[f'randomness.seed={args.seed}'])
    except demo_cifar.StageError as e:
        print(f'[benchmark] error: {e}', file=sys.stderr)
        return 1
    figures = demo_cifar.measure(chain['subnet'])
    from sidt_mmdet.models import Subnet
    subnet = Subnet.load(chain['subnet'])
    top1 = {k: v['accuracy/top1'] for k, v in chain['metrics'].items()}
    ratio = top1['pruned'] / top1['dense']
    d, p = figures['dense'], figures['pruned']
    result = dict(
        budget=dict(kind=args.budget, prune=args.prune, export_flags=flags),
        subnet=chain['subnet'], seed=args.seed, epochs=epochs or 'config defaults',
        top1=top1, top5={k: v['accuracy/top5'] for k, v in chain['metrics'].items()},
        top1_ratio=ratio,
        params_ratio=p['backbone_params'] / d['backbone_params'],
        macs_ratio=p['backbone_macs'] / d['backbone_macs'],
        latency_ratio=p['latency_ms'] / d['latency_ms'],
        figures=figures, widths=subnet.widths(),
        minutes=(time.perf_counter() - start) / 60)
    out = args.out or osp.join(work_dir, 'benchmark.json')
    write_json(out, result)
    print(f'dense top-1            {top1["dense"]:.2f}')
    print(f'pruned, before retrain {top1["pruned_before_retrain"]:.2f}')
    print(f'pruned, retrained      {top1["pruned"]:.2f}')
    print(f'top-1 ratio (pruned / dense): {ratio:.4f}   backbone params x'
          f'{result["params_ratio"]:.3f}, MACs x{result["macs_ratio"]:.3f}, latency x'
          f'{result["latency_ratio"]:.3f}   -> {out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
