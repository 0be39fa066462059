"""`make demo-cifar`: the whole SiDT flow as CIFAR-100 classification, on CPU, in minutes.

On the generated toy CIFAR-100 set (real pickle format, data/toy_cifar100/, created when
missing) and the toy ViT classifier (configs/cifar100/*_toy-cifar100.py), through the same
tools a user runs:

    dense training -> dense test -> search (sparsity loss) -> export (select 0.6) ->
    test of the pruned model before retraining -> retrain -> test

then writes WORK_DIR/report.md: params and MACs of backbone and classifier, measured backbone
latency dense vs pruned (interleaved timing, median), top-1/top-5 dense vs pruned, and the
per-layer width plot (WORK_DIR/widths.png). Every stage's full log stays in its work dir; the
console shows the stage banners and mmengine's epoch lines.

Threads: each stage runs with OMP_NUM_THREADS=1 unless OMP_NUM_THREADS is set. One thread is
the safe choice on a shared 2-core machine (two threads competing with other jobs run several
times slower); on an idle machine `OMP_NUM_THREADS=2 make demo-cifar` is faster.

A stage that finished before is reused (``--fresh`` starts over).

    python tools/demo_cifar.py [--work-dir work_dirs/demo-cifar] [--keep-ratio 0.6]
                               [--readme docs/cifar100.md]
"""
import argparse
import sys

from sidt_mmdet.apis.demo import classification_demo
from sidt_mmdet.utils.cli import doc_parser, ratio, run_tool


def parse_args(argv=None) -> argparse.Namespace:
    parser = doc_parser(__doc__)
    parser.add_argument('--work-dir', default='work_dirs/demo-cifar')
    parser.add_argument('--data-root', default='data/toy_cifar100',
                        help='toy CIFAR-100 root; generated when cifar-100-python/ is missing')
    parser.add_argument('--keep-ratio', type=ratio, default=0.6,
                        help='fraction of searched dims kept (default: %(default)s)')
    parser.add_argument('--python', default=sys.executable, help='interpreter for the tools')
    parser.add_argument('--fresh', action='store_true', help='delete the work dir first')
    parser.add_argument('--readme', default=None,
                        help='regenerate the demo-cifar table between the markers of this '
                             'Markdown file from WORK_DIR/report.json (the table lives in '
                             'docs/cifar100.md)')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    return run_tool('demo_cifar.py', classification_demo, **vars(parse_args(argv)))


if __name__ == '__main__':
    sys.exit(main())
