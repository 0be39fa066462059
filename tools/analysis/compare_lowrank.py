"""Compare low-rank methods, pruning alone and the hybrid on the toy CIFAR-100 classifier.

    python tools/analysis/compare_lowrank.py --work-dir work_dirs/compare_lowrank

Runs ``sidt_mmdet.studies.lowrank.compare_lowrank`` (its doc lists the steps): dense + search
as the other studies run them (in process, cached), the six factorizations at equal params,
pruning alone vs the hybrid at equal compression, each evaluated before and after the same
short fine-tune, once per fine-tune seed (--seeds). Writes
WORK/compare_lowrank.md and WORK/compare_lowrank.json.

    python tools/analysis/compare_lowrank.py --preset short   # the hard toy set, ~25 min

With --preset, the study runs on the hard toy CIFAR-100 preset from the selection study's
dense model and search (same --work-dir, default work_dirs/studies) and writes
WORK/<workspace>/lowrank_<preset>.{json,md} with its goals.
"""
import argparse
import sys

from sidt_mmdet.studies.lowrank import METHODS, PRESETS, compare_lowrank, run_lowrank_study
from sidt_mmdet.utils.cli import open_ratio, run_tool


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--preset', choices=sorted(PRESETS),
                   help='run on the hard toy preset instead (expected idle minutes: '
                        + ', '.join(f'{k} {v["expected_minutes"]}' for k, v in PRESETS.items())
                        + '); only --work-dir, --data-root, --ratio, --methods, --seed, '
                          '--seeds and --threads apply')
    p.add_argument('--work-dir')
    p.add_argument('--data-root',
                   help='toy CIFAR-100 root; generated if missing (default: data/toy_cifar100, '
                        'with --preset the hard set inside --work-dir)')
    p.add_argument('--search-checkpoint', help='skip the search: use this searched checkpoint '
                   'of configs/cifar100/sidt-search_cls_vit-toy-p4-kr0.6_linear_2e_toy-cifar100.py')
    p.add_argument('--dense-epochs', type=int, default=6)
    p.add_argument('--search-epochs', type=int, default=2)
    p.add_argument('--ratio', type=open_ratio, default=0.5,
                   help='backbone params after compression, fraction of the dense backbone')
    p.add_argument('--mlp-keep-ratios', type=float, nargs='+', default=[0.5, 0.6],
                   help='hybrid: MLP keep ratios to try (attention takes the rest by low rank)')
    p.add_argument('--methods', nargs='+', choices=METHODS, default=list(METHODS))
    p.add_argument('--finetune-iters', type=int, default=150)
    p.add_argument('--finetune-lr', type=float, default=5e-4)
    p.add_argument('--seed', type=int, default=0,
                   help='seed of the dense model, the search and the compression')
    p.add_argument('--seeds', type=int, nargs='+',
                   help='fine-tune seeds, every row fine-tuned once per seed (default: --seed '
                        "alone, with --preset the preset's)")
    p.add_argument('--threads', type=int, default=1,
                   help='torch threads (1 is fastest for this tiny model on a shared CPU)')
    args = p.parse_args(argv)
    if args.dense_epochs < 2:  # 1 warm-up epoch, then cosine
        p.error(f'--dense-epochs must be >= 2, got {args.dense_epochs}')
    if args.search_epochs < 1:
        p.error(f'--search-epochs must be >= 1, got {args.search_epochs}')
    if args.finetune_iters < 1:
        p.error(f'--finetune-iters must be >= 1, got {args.finetune_iters}')
    return args


def main(argv=None) -> int:
    args = vars(parse_args(argv))
    preset = args.pop('preset')
    if preset:
        return run_tool('compare_lowrank.py', run_lowrank_study, preset,
                        args['work_dir'] or 'work_dirs/studies', ratio=args['ratio'],
                        methods=args['methods'], seed=args['seed'], seeds=args['seeds'],
                        data_root=args['data_root'], threads=args['threads'])
    args['work_dir'] = args['work_dir'] or 'work_dirs/compare_lowrank'
    args['data_root'] = args['data_root'] or 'data/toy_cifar100'
    return run_tool('compare_lowrank.py', compare_lowrank, **args)


if __name__ == '__main__':
    sys.exit(main())
