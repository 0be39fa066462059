"""Datasets we register; the generators of toy data live in ``.generation``.

``ToyCIFAR100`` is an mmpretrain dataset: it is registered when
``sidt_mmdet.datasets.toy_cifar100`` is imported (the CIFAR-100 configs list it in their
``custom_imports``) or when ``sidt_mmdet.datasets.ToyCIFAR100`` is first accessed, so that
``import sidt_mmdet`` does not import mmpretrain for detection users.
"""
__all__ = ['ToyCIFAR100']


def __getattr__(name: str):
    if name == 'ToyCIFAR100':
        from .toy_cifar100 import ToyCIFAR100
        return ToyCIFAR100
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
