"""Datasets we register; the generators of toy data live in ``.generation``."""
from .toy_cifar100 import ToyCIFAR100

__all__ = ['ToyCIFAR100']
