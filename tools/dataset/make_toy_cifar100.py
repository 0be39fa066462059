"""Generate a learnable data set in the real CIFAR-100 python format (cifar-100-python/)."""
import argparse
import sys

from sidt_mmdet.datasets.generation import make_toy_cifar100
from sidt_mmdet.datasets.generation.common import int_at_least


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--out-dir', default='data/toy_cifar100',
                        help='data root to create; files go to OUT_DIR/cifar-100-python/ '
                             '(default: %(default)s)')
    parser.add_argument('--num-train', type=int_at_least(1), default=5000,
                        help='training images, balanced over the 100 classes '
                             '(default: %(default)s)')
    parser.add_argument('--num-test', type=int_at_least(1), default=1000,
                        help='test images (default: %(default)s)')
    parser.add_argument('--seed', type=int, default=0, help='same seed, same files')
    parser.add_argument('--overwrite', action='store_true',
                        help='replace a non-empty --out-dir')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        make_toy_cifar100(args.out_dir, num_train=args.num_train, num_test=args.num_test,
                          seed=args.seed, overwrite=args.overwrite)
    except FileExistsError as exc:
        sys.exit(f'{sys.argv[0]}: error: {exc}')


if __name__ == '__main__':
    main()
