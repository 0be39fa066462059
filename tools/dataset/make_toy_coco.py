"""Generate the toy COCO detection + instance segmentation set (layout of data/coco/)."""
import sys

from sidt_mmdet.datasets.generation.toy_coco import main

if __name__ == '__main__':
    sys.exit(main(prog='make_toy_coco.py'))
