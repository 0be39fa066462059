"""SiDT's CIFAR-100 claim on the toy set: top-1 of a 40%-pruned, retrained classifier vs dense.

Runs the toy chain of `make demo-cifar` (dense -> search -> export -> retrain -> test, through
the real tools and the stage runner; ``sidt_mmdet.studies.cifar_prune``) with a budget that
prunes ``--prune`` (default 0.4) of the backbone:

    --budget params   keep (1 - prune) of the dense backbone's parameters   (default)
    --budget macs     keep (1 - prune) of its MACs per 32x32 image (flops: its older name)
    --budget dims     keep (1 - prune) of the searched dims (--keep-ratio; with rounding to 8
                      the parameter cut is smaller than the dim cut)

prints ``pruned top-1 / dense top-1`` and writes every figure as JSON (``--out``, default
WORK_DIR/benchmark.json). A benchmark, not a test: it trains for minutes; one seed per run.

    python tools/analysis/cifar_prune_benchmark.py [--budget params] [--prune 0.4]
"""
import sys

from sidt_mmdet.studies.cifar_prune import BUDGETS, OLD_BUDGETS, cifar_prune_benchmark
from sidt_mmdet.utils.cli import doc_parser, open_ratio, positive_int, run_tool


def parse_args(argv=None):
    parser = doc_parser(__doc__)
    parser.add_argument('--prune', type=open_ratio, default=0.4,
                        help='fraction of the budget to remove (default: %(default)s)')
    parser.add_argument('--budget', choices=BUDGETS + tuple(OLD_BUDGETS), default='params',
                        help='what --prune is a fraction of (default: %(default)s)')
    parser.add_argument('--work-dir', default='work_dirs/cifar-prune-benchmark')
    parser.add_argument('--data-root', default='data/toy_cifar100',
                        help='toy CIFAR-100 root; generated when cifar-100-python/ is missing')
    parser.add_argument('--dense-epochs', type=positive_int, default=None,
                        help='override the toy dense config (6 epochs)')
    parser.add_argument('--search-epochs', type=positive_int, default=None,
                        help='override the toy search config (2 epochs)')
    parser.add_argument('--retrain-epochs', type=positive_int, default=None,
                        help='override the toy retrain config (4 epochs)')
    parser.add_argument('--seed', type=int, default=0, help='randomness.seed of every stage')
    parser.add_argument('--out', default=None, help='JSON file (default: WORK_DIR/benchmark.json)')
    parser.add_argument('--python', default=sys.executable, help='interpreter for the tools')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    return run_tool('cifar_prune_benchmark.py', cifar_prune_benchmark, **vars(parse_args(argv)))


if __name__ == '__main__':
    sys.exit(main())
