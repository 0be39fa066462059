"""Generate a learnable data set in the real CIFAR-100 python format (cifar-100-python/)."""
import sys

from sidt_mmdet.datasets.generation.toy_cifar100 import main

if __name__ == '__main__':
    sys.exit(main(prog='make_toy_cifar100.py'))
