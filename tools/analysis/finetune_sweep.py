"""Does the ranking of the selection methods hold as the fine-tune grows? The selection study
at MACs x0.6 for fine-tunes of 5%, 20% and 50% of the dense iterations.

    python tools/analysis/finetune_sweep.py --preset short --threads 2

Shares its work dir with tools/analysis/compare_selection.py (the 5% column is the short
selection study). Writes WORK_DIR/<workspace>/finetune_sweep_<preset>.{json,md,png} and one
selection report per length.
"""
import sys

from sidt_mmdet.studies.finetune_sweep import PRESETS, run_finetune_sweep
from sidt_mmdet.utils.cli import doc_parser, run_tool


def parse_args(argv=None):
    parser = doc_parser(__doc__)
    parser.add_argument('--preset', choices=sorted(PRESETS), default='short',
                        help='sweep size (default: %(default)s); expected idle minutes: '
                             + ', '.join(f'{k} {v.expected_minutes:g}' for k, v in PRESETS.items()))
    parser.add_argument('--work-dir', default='work_dirs/studies')
    parser.add_argument('--data-root', help='toy CIFAR-100 root (default: inside --work-dir)')
    parser.add_argument('--fractions', type=float, nargs='+',
                        help='fine-tune lengths as fractions of the dense iterations')
    parser.add_argument('--threads', type=int, default=1, help='torch threads (default: 1)')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    overrides = dict(threads=args.threads)
    if args.fractions:
        overrides['fractions'] = tuple(args.fractions)
    return run_tool('finetune_sweep.py', run_finetune_sweep, args.preset, args.work_dir,
                    args.data_root, **overrides)


if __name__ == '__main__':
    sys.exit(main())
