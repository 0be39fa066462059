"""Generators of small data sets in real formats (no downloads are possible here).

Not imported by ``sidt_mmdet``: only the ``tools/dataset/make_toy_*.py`` scripts and the
tests need them.
"""
from .toy_cifar100 import make_toy_cifar100
from .toy_coco import (
    TOY_COCO_CLASSES,
    TOY_COCO_HARD_CLASSES,
    TOY_COCO_HARDER_CLASSES,
    make_toy_coco,
)

__all__ = ['TOY_COCO_CLASSES', 'TOY_COCO_HARD_CLASSES', 'TOY_COCO_HARDER_CLASSES',
           'make_toy_cifar100', 'make_toy_coco']
