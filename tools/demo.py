"""The embedded end-to-end SiDT job behind ``make demo`` (toy COCO, CPU, minutes).

dense train -> search (masks + sparsity loss) -> select + export (keep ratio 0.6)
-> retrain the pruned detector -> COCO test of dense and pruned -> report.md

Every stage runs the same command a user runs (tools/train.py, tools/export_subnet.py,
tools/test.py) through the stage runner ``sidt_mmdet.apis.chain``, so the demo doubles as a
walk-through. A stage whose output already
exists is reused, so an interrupted demo picks up where it stopped (``--fresh``
starts over). The report compares dense and pruned: backbone params and MACs,
measured backbone latency, and box/mask mAP.
"""
import argparse
import sys

from sidt_mmdet.apis.demo import detection_demo
from sidt_mmdet.utils.cli import positive_int, ratio, run_tool


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--work-dir', default='work_dirs/demo')
    parser.add_argument('--dense-iters', type=positive_int, default=800)
    parser.add_argument('--search-iters', type=positive_int, default=200)
    parser.add_argument('--retrain-iters', type=positive_int, default=400)
    parser.add_argument('--batch-size', type=positive_int, default=4,
                        help='training images per iteration, every stage')
    parser.add_argument('--keep-ratio', type=ratio, default=0.6)
    parser.add_argument('--round-to', type=positive_int, default=8)
    parser.add_argument('--data-root', default='data/toy_coco/')
    parser.add_argument('--num-train', type=positive_int, default=512,
                        help='toy COCO training images, when the demo generates the set')
    parser.add_argument('--num-val', type=positive_int, default=64)
    parser.add_argument('--timing-iters', type=positive_int, default=10)
    parser.add_argument('--fresh', action='store_true', help='delete the work dir first')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    return run_tool('demo.py', detection_demo, **vars(parse_args(argv)))


if __name__ == '__main__':
    sys.exit(main())
