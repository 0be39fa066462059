"""Generate the toy COCO detection + instance segmentation set (layout of data/coco/)."""
import argparse
import sys

from sidt_mmdet.datasets.generation import make_toy_coco
from sidt_mmdet.datasets.generation.common import int_at_least
from sidt_mmdet.datasets.generation.toy_coco import MIN_IMG_SIZE


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--out-dir', default='data/toy_coco',
                        help='data root to create (default: %(default)s)')
    parser.add_argument('--num-train', type=int_at_least(1), default=32,
                        help='images in train2017 (default: %(default)s)')
    parser.add_argument('--num-val', type=int_at_least(1), default=16,
                        help='images in val2017 (default: %(default)s)')
    parser.add_argument('--img-size', type=int_at_least(MIN_IMG_SIZE), default=160,
                        help='longest image side; sides vary in [0.75, 1] x this '
                             '(default: %(default)s)')
    parser.add_argument('--max-objects', type=int_at_least(1), default=4,
                        help='objects per image, at most (default: %(default)s)')
    parser.add_argument('--seed', type=int, default=0, help='same seed, same files')
    parser.add_argument('--overwrite', action='store_true',
                        help='replace a non-empty --out-dir')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        make_toy_coco(args.out_dir, num_train=args.num_train, num_val=args.num_val,
                      img_size=args.img_size, max_objects=args.max_objects, seed=args.seed,
                      overwrite=args.overwrite)
    except FileExistsError as exc:
        sys.exit(f'{sys.argv[0]}: error: {exc}')


if __name__ == '__main__':
    main()
