"""A deterministic data set in the real CIFAR-100 python format, with learnable classes.

Writes ``OUT_DIR/cifar-100-python/{train,test,meta}``: pickles of dicts with **str** keys,
as mmpretrain and torchvision read the official (Python 2) files with ``encoding='latin1'``.
``data`` is ``N x 3072`` uint8 in CHW order; label names and the fine -> coarse grouping are
CIFAR-100's own. Each fine class is a coloured grating: its superclass fixes the colour
family, the fine class the orientation and frequency; phase, jitter and noise vary per image,
so a small ViT learns it well above chance (1%) but not instantly.
"""
from __future__ import annotations

import argparse
import math
import os
import os.path as osp
import pickle
from collections.abc import Callable

import numpy as np

from ...utils.cli import int_at_least
from ...utils.fileio import atomic_output_dir, check_output_dir
from .common import check_positive, generator_arg_parser, run_generator

__all__ = ['CIFAR100_COARSE_TO_FINE', 'CIFAR100_FINE_NAMES', 'CIFAR100_COARSE_NAMES',
           'make_toy_cifar100']

# CIFAR-100's 20 superclasses and their 5 classes each, in the official label order.
CIFAR100_COARSE_TO_FINE = {
    'aquatic_mammals': ('beaver', 'dolphin', 'otter', 'seal', 'whale'),
    'fish': ('aquarium_fish', 'flatfish', 'ray', 'shark', 'trout'),
    'flowers': ('orchid', 'poppy', 'rose', 'sunflower', 'tulip'),
    'food_containers': ('bottle', 'bowl', 'can', 'cup', 'plate'),
    'fruit_and_vegetables': ('apple', 'mushroom', 'orange', 'pear', 'sweet_pepper'),
    'household_electrical_devices': ('clock', 'keyboard', 'lamp', 'telephone', 'television'),
    'household_furniture': ('bed', 'chair', 'couch', 'table', 'wardrobe'),
    'insects': ('bee', 'beetle', 'butterfly', 'caterpillar', 'cockroach'),
    'large_carnivores': ('bear', 'leopard', 'lion', 'tiger', 'wolf'),
    'large_man-made_outdoor_things': ('bridge', 'castle', 'house', 'road', 'skyscraper'),
    'large_natural_outdoor_scenes': ('cloud', 'forest', 'mountain', 'plain', 'sea'),
    'large_omnivores_and_herbivores': ('camel', 'cattle', 'chimpanzee', 'elephant',
                                       'kangaroo'),
    'medium_mammals': ('fox', 'porcupine', 'possum', 'raccoon', 'skunk'),
    'non-insect_invertebrates': ('crab', 'lobster', 'snail', 'spider', 'worm'),
    'people': ('baby', 'boy', 'girl', 'man', 'woman'),
    'reptiles': ('crocodile', 'dinosaur', 'lizard', 'snake', 'turtle'),
    'small_mammals': ('hamster', 'mouse', 'rabbit', 'shrew', 'squirrel'),
    'trees': ('maple_tree', 'oak_tree', 'palm_tree', 'pine_tree', 'willow_tree'),
    'vehicles_1': ('bicycle', 'bus', 'motorcycle', 'pickup_truck', 'train'),
    'vehicles_2': ('lawn_mower', 'rocket', 'streetcar', 'tank', 'tractor'),
}
CIFAR100_COARSE_NAMES = tuple(CIFAR100_COARSE_TO_FINE)
# Fine labels are numbered in alphabetical order of their names, as in the official files.
CIFAR100_FINE_NAMES = tuple(sorted(n for names in CIFAR100_COARSE_TO_FINE.values()
                                   for n in names))
_FINE_TO_COARSE = np.array([next(c for c, names in enumerate(CIFAR100_COARSE_TO_FINE.values())
                                 if fine in names) for fine in CIFAR100_FINE_NAMES])
_SIDE = 32
_CHUNK = 1000  # images generated (and reported) at a time


def _class_patterns() -> dict[str, np.ndarray]:
    """Fixed per-class parameters, the same for every seed (the classes *are* the data set)."""
    rng = np.random.default_rng(100)
    coarse_rgb = rng.uniform(30, 225, (len(CIFAR100_COARSE_NAMES), 3))
    index_in_coarse = np.array([CIFAR100_COARSE_TO_FINE[CIFAR100_COARSE_NAMES[c]].index(fine)
                                for fine, c in zip(CIFAR100_FINE_NAMES, _FINE_TO_COARSE,
                                                   strict=True)])
    return dict(
        rgb=coarse_rgb[_FINE_TO_COARSE] + rng.normal(0, 12, (100, 3)),
        angle=index_in_coarse * math.pi / 5 + rng.uniform(-0.1, 0.1, 100),
        cycles=1.5 + (index_in_coarse + _FINE_TO_COARSE) % 3 + rng.uniform(0, 0.3, 100),
        contrast=rng.uniform(40, 80, (100, 3)) * rng.choice([-1, 1], (100, 3)))


def _render(rng: np.random.Generator, labels: np.ndarray, patterns: dict) -> np.ndarray:
    """Images for ``labels`` as an (N, 32, 32, 3) uint8 array."""
    n = len(labels)
    yy, xx = np.mgrid[0:_SIDE, 0:_SIDE].astype(np.float32) / _SIDE
    angle = patterns['angle'][labels] + rng.normal(0, 0.08, n)
    cycles = patterns['cycles'][labels] * rng.uniform(0.9, 1.1, n)
    phase = rng.uniform(0, 2 * math.pi, n)
    proj = (xx[None] * np.cos(angle)[:, None, None] + yy[None] * np.sin(angle)[:, None, None])
    grating = np.sin(2 * math.pi * cycles[:, None, None] * proj + phase[:, None, None])
    rgb = patterns['rgb'][labels] + rng.normal(0, 10, (n, 3))
    img = (rgb[:, None, None, :] + grating[..., None] * patterns['contrast'][labels][:, None, None]
           + rng.normal(0, 18, (n, _SIDE, _SIDE, 3)))
    return np.clip(img, 0, 255).astype(np.uint8)


def _make_split(num_images: int, seed: int, split_code: int, name: str,
                progress: Callable[[str], None]) -> dict:
    rng = np.random.default_rng([seed, split_code])
    labels = rng.permutation(np.arange(num_images) % 100)
    patterns = _class_patterns()
    data = np.empty((num_images, 3 * _SIDE * _SIDE), np.uint8)
    for start in range(0, num_images, _CHUNK):
        stop = min(start + _CHUNK, num_images)
        images = _render(rng, labels[start:stop], patterns)
        data[start:stop] = images.transpose(0, 3, 1, 2).reshape(stop - start, -1)  # HWC -> CHW
        progress(f'[toy_cifar100] {name}: {stop}/{num_images} images')
    return {
        'filenames': [f'{CIFAR100_FINE_NAMES[k]}_s_{i:06d}.png' for i, k in enumerate(labels)],
        'batch_label': f'{"training" if name == "train" else "testing"} batch 1 of 1',
        'fine_labels': labels.tolist(),
        'coarse_labels': _FINE_TO_COARSE[labels].tolist(),
        'data': data,
    }


def make_toy_cifar100(out_dir: str, num_train: int = 5000, num_test: int = 1000, seed: int = 0,
                      overwrite: bool = False, progress: Callable[[str], None] = print) -> str:
    """Write ``out_dir/cifar-100-python/{train,test,meta}`` atomically; return ``out_dir``.

    Labels are balanced (``i % 100`` before shuffling), so each split needs no minimum size.

    Raises:
        ValueError: ``num_train`` or ``num_test`` is not a positive integer.
        FileExistsError: ``out_dir`` is not empty and ``overwrite`` is false.
    """
    check_positive('num_train', num_train)
    check_positive('num_test', num_test)
    out_dir = check_output_dir(out_dir, overwrite)
    with atomic_output_dir(out_dir, overwrite) as tmp_dir:
        base = osp.join(tmp_dir, 'cifar-100-python')
        os.makedirs(base)
        for split_code, (name, num) in enumerate((('train', num_train), ('test', num_test))):
            with open(osp.join(base, name), 'wb') as f:
                pickle.dump(_make_split(num, seed, split_code, name, progress), f, protocol=4)
        with open(osp.join(base, 'meta'), 'wb') as f:
            pickle.dump({'fine_label_names': list(CIFAR100_FINE_NAMES),
                         'coarse_label_names': list(CIFAR100_COARSE_NAMES)}, f, protocol=4)
    progress(f'[toy_cifar100] wrote {num_train} train + {num_test} test images to {out_dir}')
    return out_dir


def build_parser(prog: str = 'make_toy_cifar100.py') -> argparse.ArgumentParser:
    """The flags of ``tools/dataset/make_toy_cifar100.py``."""
    parser = generator_arg_parser(
        prog, 'Generate a learnable data set in the real CIFAR-100 python format '
        '(cifar-100-python/).', 'data/toy_cifar100',
        'data root to create; files go to OUT_DIR/cifar-100-python/')
    parser.add_argument('--num-train', type=int_at_least(1), default=5000,
                        help='training images, balanced over the 100 classes '
                             '(default: %(default)s)')
    parser.add_argument('--num-test', type=int_at_least(1), default=1000,
                        help='test images (default: %(default)s)')
    return parser


def main(argv=None, prog: str = 'make_toy_cifar100.py') -> int:
    """``tools/dataset/make_toy_cifar100.py``: exit code as in ``sidt_mmdet.utils.cli``."""
    return run_generator(make_toy_cifar100, build_parser(prog), argv)
