"""Accuracy against measured latency: SiDT and the baseline criteria selected for a MACs budget
and for a latency budget (a latency table built on this machine), beside Torch-Pruning, at
equal training after the dense model.

    python tools/analysis/compare_pareto.py --preset cifar --threads 2      # ~75 idle min
    python tools/analysis/compare_pareto.py --preset detection --threads 2  # ~90 idle min
    python tools/analysis/compare_pareto.py --render work_dirs/studies/hard/pareto_cifar.json \
        --readme README.md

Writes WORK_DIR/<workspace>/pareto_<preset>.{json,md,png} and prints the goals, met, missed
or not shown. The presets share the selection study's work dir, so its dense model, searches
and MACs-budget exports are reused. --readme rewrites the README's accuracy-latency block
from the JSON (--render: from a committed JSON, without running). Run it on an idle machine:
the latency table and the timing are measured. See sidt_mmdet/studies/pareto.py.
"""
import sys

from sidt_mmdet.studies.pareto import PRESETS, run_pareto_study, update_pareto_readme
from sidt_mmdet.utils.cli import doc_parser, run_tool


def parse_args(argv=None):
    parser = doc_parser(__doc__)
    parser.add_argument('--preset', choices=sorted(PRESETS), default='cifar',
                        help='study size (default: %(default)s); expected idle minutes: '
                             + ', '.join(f'{k} {v.expected_minutes:g}' for k, v in PRESETS.items()))
    parser.add_argument('--work-dir', default='work_dirs/studies')
    parser.add_argument('--data-root', help='data root (default: inside --work-dir)')
    parser.add_argument('--targets', type=float, nargs='+',
                        help="override the preset's latency targets (fractions of dense)")
    parser.add_argument('--no-torch-pruning', action='store_true',
                        help='leave out the Torch-Pruning row')
    parser.add_argument('--threads', type=int, default=1, help='torch threads (default: 1)')
    parser.add_argument('--readme', help='rewrite this README\'s accuracy-latency block')
    parser.add_argument('--render', metavar='JSON',
                        help='only rewrite --readme from this study JSON')
    return parser.parse_args(argv)


def _run(args) -> None:
    if args.render:
        if not args.readme:
            raise ValueError('--render needs --readme')
        update_pareto_readme(args.render, args.readme)
        return
    overrides = dict(threads=args.threads)
    if args.targets:
        overrides['targets'] = tuple(args.targets)
    if args.no_torch_pruning:
        overrides['torch_pruning'] = False
    result = run_pareto_study(args.preset, args.work_dir, args.data_root, **overrides)
    if args.readme:
        import os.path as osp
        update_pareto_readme(osp.join(args.work_dir, PRESETS[args.preset].workspace,
                                      f'pareto_{args.preset}.json'), args.readme)
    del result


def main(argv=None) -> int:
    return run_tool('compare_pareto.py', _run, parse_args(argv))


if __name__ == '__main__':
    sys.exit(main())
