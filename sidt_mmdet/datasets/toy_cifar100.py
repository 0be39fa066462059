"""CIFAR-100 files we generated ourselves, read by mmpretrain's own CIFAR-100 code."""
from __future__ import annotations

import os.path as osp

from mmengine.fileio import exists, join_path
from mmpretrain.datasets import CIFAR100
from mmpretrain.registry import DATASETS

__all__ = ['ToyCIFAR100']


@DATASETS.register_module()
class ToyCIFAR100(CIFAR100):
    """Data in the CIFAR-100 python format that is not the official archive.

    mmpretrain's ``CIFAR100`` checks each file's md5 against the official archive and, on a
    mismatch, downloads it. Generated files (``tools/dataset/make_toy_cifar100.py``) never
    match, so this subclass lists the same files without md5 and never downloads; a missing
    file is an error naming its path. The stock class stays as it is and keeps protecting
    real data.
    """

    train_list = [['train', None]]
    test_list = [['test', None]]
    meta = {'filename': 'meta', 'key': 'fine_label_names', 'md5': None}

    def _check_integrity(self) -> bool:
        root = self.data_prefix['root']
        for filename, _ in self.train_list + self.test_list + [[self.meta['filename'], None]]:
            path = join_path(root, self.base_folder, filename)
            if not exists(path):
                raise FileNotFoundError(
                    f'{type(self).__name__}: {osp.abspath(path)} does not exist; data_root '
                    f'must hold {self.base_folder}/{{train,test,meta}}, e.g. from '
                    f'tools/dataset/make_toy_cifar100.py --out-dir {root or "."}')
        return True
