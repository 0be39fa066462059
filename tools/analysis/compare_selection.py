"""SiDT's searched widths against magnitude, Taylor, random and uniform width at equal MACs and
equal training after the dense model.

    python tools/analysis/compare_selection.py --preset quick   # ~25 min on one idle core
    python tools/analysis/compare_selection.py --preset full    # ~95 min: 3 seeds, 2 processes
    python tools/analysis/compare_selection.py --preset detection-short --threads 2

On the hard toy CIFAR-100 preset, or for the detection-* presets the toy Mask R-CNN on the
hard toy COCO preset (box and mask mAP), the set generated when missing. Writes
WORK_DIR/<workspace>/selection_<preset>.{json,md,png} and prints the goals, met or missed.
Finished stages are cached under the work dir: a second run resumes. See
sidt_mmdet/studies/selection.py for what each preset runs.
"""
import sys

from sidt_mmdet.studies.selection import METHODS, PRESETS, run_selection_study
from sidt_mmdet.utils.cli import doc_parser, run_tool


def parse_args(argv=None):
    parser = doc_parser(__doc__)
    parser.add_argument('--preset', choices=sorted(PRESETS), default='quick',
                        help='study size (default: %(default)s); expected idle minutes: '
                             + ', '.join(f'{k} {v.expected_minutes:g}' for k, v in PRESETS.items()))
    parser.add_argument('--work-dir', default='work_dirs/studies')
    parser.add_argument('--data-root', help='toy CIFAR-100 (or toy COCO, detection-*) root '
                                            '(default: inside --work-dir)')
    parser.add_argument('--seeds', type=int, nargs='+', help='override the preset\'s seeds')
    parser.add_argument('--methods', nargs='+', choices=list(METHODS),
                        help='override the preset\'s methods')
    parser.add_argument('--ratios', type=float, nargs='+',
                        help='override the preset\'s backbone MACs budgets (ratios of dense)')
    parser.add_argument('--threads', type=int, default=1, help='torch threads (default: 1)')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    overrides = dict(threads=args.threads)
    if args.seeds:
        overrides['seeds'] = tuple(args.seeds)
    if args.methods:
        overrides['methods'] = tuple(args.methods)
    if args.ratios:
        overrides['ratios'] = tuple(args.ratios)
    return run_tool('compare_selection.py', run_selection_study, args.preset, args.work_dir,
                    args.data_root, **overrides)


if __name__ == '__main__':
    sys.exit(main())
