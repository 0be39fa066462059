"""Generate a learnable data set in the real CIFAR-100 python format (cifar-100-python/)."""
from sidt_mmdet.datasets.generation import make_toy_cifar100
from sidt_mmdet.datasets.generation.common import (
    generator_arg_parser,
    int_at_least,
    run_generator,
)


def parse_args(argv=None):
    parser = generator_arg_parser(__doc__, 'data/toy_cifar100',
                                  'data root to create; files go to OUT_DIR/cifar-100-python/')
    parser.add_argument('--num-train', type=int_at_least(1), default=5000,
                        help='training images, balanced over the 100 classes '
                             '(default: %(default)s)')
    parser.add_argument('--num-test', type=int_at_least(1), default=1000,
                        help='test images (default: %(default)s)')
    return parser.parse_args(argv)


def main(argv=None):
    run_generator(make_toy_cifar100, parse_args(argv))


if __name__ == '__main__':
    main()
