"""How long must the SiDT search run? Top-1 after retrain for searches of 5/10/20% of dense.

    python tools/analysis/search_cost.py --preset quick   # ~12 min on one idle core
    python tools/analysis/search_cost.py --preset full    # ~40 min: 3 seeds

Shares its work dir (dense model, searches, exports) with tools/analysis/compare_selection.py.
Writes WORK_DIR/<workspace>/search_cost_<preset>.{json,md} and prints the goal.
"""
import sys

from sidt_mmdet.studies.search_cost import PRESETS, run_search_cost_study
from sidt_mmdet.utils.cli import doc_parser, run_tool


def parse_args(argv=None):
    parser = doc_parser(__doc__)
    parser.add_argument('--preset', choices=sorted(PRESETS), default='quick',
                        help='study size (default: %(default)s); expected idle minutes: '
                             + ', '.join(f'{k} {v.expected_minutes:g}' for k, v in PRESETS.items()))
    parser.add_argument('--work-dir', default='work_dirs/studies')
    parser.add_argument('--data-root', help='toy CIFAR-100 root (default: inside --work-dir)')
    parser.add_argument('--seeds', type=int, nargs='+', help='override the preset\'s seeds')
    parser.add_argument('--threads', type=int, default=1, help='torch threads (default: 1)')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    overrides = dict(threads=args.threads)
    if args.seeds:
        overrides['seeds'] = tuple(args.seeds)
    return run_tool('search_cost.py', run_search_cost_study, args.preset, args.work_dir,
                    args.data_root, **overrides)


if __name__ == '__main__':
    sys.exit(main())
