"""Generate the toy COCO detection + instance segmentation set (layout of data/coco/)."""
from sidt_mmdet.datasets.generation import make_toy_coco
from sidt_mmdet.datasets.generation.common import (
    generator_arg_parser,
    int_at_least,
    run_generator,
)
from sidt_mmdet.datasets.generation.toy_coco import MIN_IMG_SIZE


def parse_args(argv=None):
    parser = generator_arg_parser(__doc__, 'data/toy_coco')
    parser.add_argument('--num-train', type=int_at_least(1), default=32,
                        help='images in train2017 (default: %(default)s)')
    parser.add_argument('--num-val', type=int_at_least(1), default=16,
                        help='images in val2017 (default: %(default)s)')
    parser.add_argument('--img-size', type=int_at_least(MIN_IMG_SIZE), default=160,
                        help='longest image side; sides vary in [0.75, 1] x this '
                             '(default: %(default)s)')
    parser.add_argument('--max-objects', type=int_at_least(1), default=4,
                        help='objects per image, at most (default: %(default)s)')
    return parser.parse_args(argv)


def main(argv=None):
    run_generator(make_toy_coco, parse_args(argv))


if __name__ == '__main__':
    main()
