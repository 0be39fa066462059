"""A deterministic data set in the real CIFAR-100 python format, with learnable classes.

Writes ``OUT_DIR/cifar-100-python/{train,test,meta}``: pickles of dicts with **str** keys,
as mmpretrain and torchvision read the official (Python 2) files with ``encoding='latin1'``.
``data`` is ``N x 3072`` uint8 in CHW order; label names and the fine -> coarse grouping are
CIFAR-100's own. Two presets:

- ``easy``: each fine class is a coloured grating (its superclass fixes the colour family,
  the fine class the orientation and frequency; phase, jitter and noise vary per image).
  A small ViT learns it almost perfectly within minutes: for fast tests of the chain.
- ``hard``: each class is a shape x texture x colour combination of the largest object in
  a cluttered image with distractors (see ``_render_hard``'s comments for why each part is
  there). It is built so that a small ViT learns it only partly and a narrower one less,
  which is what comparing pruning methods needs.
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
           'PRESETS', 'make_toy_cifar100']

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


# ------------------------------------------------------------------------ the hard preset
# Why this set needs capacity (each point defeats a shortcut a small model could take):
# - a class is a *conjunction* of three attributes of one object: shape (5) x texture (5)
#   x colour (4) = 100 classes. No single attribute, and no pair, names the class;
# - 1-3 smaller distractor objects drawn from the same shapes, textures and colours share
#   attributes with other classes, so the model must bind attributes to the *largest*
#   object instead of pooling them over the image (mean colour or "is there a stripe"
#   says little);
# - the textures have a period of 3-5 pixels, finer than the 4x4 patches of the toy ViT,
#   so they are read from within-patch structure, not from coarse layout;
# - clutter (random line segments, a colour gradient, noise) and per-image jitter
#   (position, scale, rotation, colour, brightness) defeat template matching: a
#   nearest-class-mean classifier on pixels stays near chance.
_SHAPES = ('disk', 'square', 'triangle', 'plus', 'ring')
_TEXTURES = ('hstripes', 'vstripes', 'diagonal', 'checker', 'dots')
# Colours are far apart in hue; the texture's second tone is the same colour, darker.
_COLOURS = np.array([[220, 60, 50], [60, 190, 70], [60, 90, 230], [225, 200, 50]], np.float32)


def _hard_attributes() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(shape, texture, colour) index of each fine class: the superclass fixes shape and
    colour (20 = 5 x 4), the class within its superclass the texture."""
    coarse = _FINE_TO_COARSE
    index_in_coarse = np.array([CIFAR100_COARSE_TO_FINE[CIFAR100_COARSE_NAMES[c]].index(fine)
                                for fine, c in zip(CIFAR100_FINE_NAMES, coarse, strict=True)])
    return coarse % 5, index_in_coarse, coarse // 5


def _shape_sdf(shape: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Signed distance (object radius = 1) to the outline of each image's shape; < 0 inside."""
    r = np.sqrt(u * u + v * v)
    box = np.maximum(np.abs(u), np.abs(v)) - 0.8
    # Equilateral triangle of circumradius 1: the farthest of its three edge lines.
    tri = np.max(np.stack([u * math.cos(a) + v * math.sin(a)
                           for a in (math.pi / 2, math.pi * 7 / 6, math.pi * 11 / 6)]), 0) - 0.5
    bar = 0.34
    plus = np.minimum(np.maximum(np.abs(u) - bar, np.abs(v) - 1.0),
                      np.maximum(np.abs(u) - 1.0, np.abs(v) - bar))
    ring = np.abs(r - 0.72) - 0.28
    sdfs = np.stack([r - 1.0, box, tri, plus, ring])  # order of _SHAPES
    return np.take_along_axis(sdfs, shape[None, :, None, None], 0)[0]


def _texture(texture: np.ndarray, px: np.ndarray, py: np.ndarray,
             period: np.ndarray) -> np.ndarray:
    """1 where the texture shows the dark tone, 0 elsewhere; coordinates in pixels."""
    f = 2 * math.pi / period[:, None, None]
    sx, sy = np.sin(f * px), np.sin(f * py)
    tex = np.stack([sy > 0, sx > 0, np.sin(f * (px + py) / math.sqrt(2)) > 0,
                    sx * sy > 0, (np.cos(f * px) > 0.5) & (np.cos(f * py) > 0.5)])
    return np.take_along_axis(tex, texture[None, :, None, None], 0)[0].astype(np.float32)


def _draw_objects(rng, img, shape, texture, colour, radius, cx, cy):
    """Alpha-blend one object per image (rotated, jittered) into ``img`` (N, S, S, 3)."""
    n = len(shape)
    yy, xx = np.mgrid[0:_SIDE, 0:_SIDE].astype(np.float32) + 0.5
    angle = rng.uniform(-0.2, 0.2, n).astype(np.float32)  # ~ +-11 deg: stripes stay distinct
    cos, sin = np.cos(angle)[:, None, None], np.sin(angle)[:, None, None]
    dx, dy = xx[None] - cx[:, None, None], yy[None] - cy[:, None, None]
    px, py = cos * dx + sin * dy, -sin * dx + cos * dy  # object frame, pixels
    rad = radius[:, None, None]
    sdf = _shape_sdf(shape, px / rad, py / rad) * rad  # in pixels
    alpha = np.clip(0.5 - sdf, 0, 1)[..., None]
    period = rng.uniform(3.2, 4.8, n).astype(np.float32)
    dark = _texture(texture, px + rng.uniform(0, 5, n)[:, None, None],
                    py + rng.uniform(0, 5, n)[:, None, None], period)[..., None]
    base = _COLOURS[colour] * rng.uniform(0.8, 1.1, (n, 1)) + rng.normal(0, 12, (n, 3))
    tone = base[:, None, None, :] * (1 - 0.6 * dark)
    img *= 1 - alpha
    img += alpha * tone


def _render_hard(rng: np.random.Generator, labels: np.ndarray) -> np.ndarray:
    """Images for ``labels`` as an (N, 32, 32, 3) uint8 array (the hard preset)."""
    n = len(labels)
    shapes, textures, colours = (a[labels] for a in _hard_attributes())
    yy, xx = np.mgrid[0:_SIDE, 0:_SIDE].astype(np.float32) / _SIDE
    # Background: a random colour gradient.
    c0 = rng.uniform(40, 170, (n, 3)).astype(np.float32)
    c1 = rng.uniform(40, 170, (n, 3)).astype(np.float32)
    g_angle = rng.uniform(0, 2 * math.pi, n)
    t = (xx[None] * np.cos(g_angle)[:, None, None] + yy[None] * np.sin(g_angle)[:, None, None])
    t = ((t - t.min(axis=(1, 2), keepdims=True))
         / np.ptp(t, axis=(1, 2), keepdims=True))[..., None]
    img = c0[:, None, None] * (1 - t) + c1[:, None, None] * t
    # Clutter: 4 thin random line segments per image, in random colours.
    for _ in range(4):
        p0 = rng.uniform(0, _SIDE, (n, 2)).astype(np.float32)
        p1 = rng.uniform(0, _SIDE, (n, 2)).astype(np.float32)
        seg = p1 - p0
        px, py = xx[None] * _SIDE + 0.5, yy[None] * _SIDE + 0.5
        rel_x, rel_y = px - p0[:, 0, None, None], py - p0[:, 1, None, None]
        length2 = np.maximum((seg ** 2).sum(1), 1e-3)[:, None, None]
        s = np.clip((rel_x * seg[:, 0, None, None] + rel_y * seg[:, 1, None, None]) / length2,
                    0, 1)
        dist = np.hypot(rel_x - s * seg[:, 0, None, None], rel_y - s * seg[:, 1, None, None])
        alpha = np.clip(1.0 - dist, 0, 1)[..., None] * 0.8
        col = rng.uniform(0, 255, (n, 3)).astype(np.float32)[:, None, None]
        img = img * (1 - alpha) + alpha * col
    # Distractors: 1-3 small objects of random attributes, drawn under the target.
    num_distractors = rng.integers(1, 4, n)
    for k in range(3):
        draw = num_distractors > k
        sub = img[draw]
        m = int(draw.sum())
        _draw_objects(rng, sub, rng.integers(0, 5, m), rng.integers(0, 5, m),
                      rng.integers(0, 4, m), rng.uniform(3.5, 5.5, m).astype(np.float32),
                      rng.uniform(4, _SIDE - 4, m).astype(np.float32),
                      rng.uniform(4, _SIDE - 4, m).astype(np.float32))
        img[draw] = sub
    # The target: the largest object, anywhere it fits.
    radius = rng.uniform(8.0, 11.0, n).astype(np.float32)
    cx = rng.uniform(radius, _SIDE - radius).astype(np.float32)
    cy = rng.uniform(radius, _SIDE - radius).astype(np.float32)
    _draw_objects(rng, img, shapes, textures, colours, radius, cx, cy)
    img = img * rng.uniform(0.75, 1.2, (n, 1, 1, 1)) + rng.normal(0, 8, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


PRESETS = {
    # Coloured gratings: learnt well above chance within a minute; for fast tests.
    'easy': dict(num_train=5000, num_test=1000),
    # Shape x texture x colour of the largest of several objects, among clutter. 10000 test
    # images put the binomial std of a top-1 near 75% at 0.4 points, so that differences
    # of about a point between methods can be resolved.
    'hard': dict(num_train=20000, num_test=10000),
}


def _make_split(num_images: int, seed: int, split_code: int, name: str, preset: str,
                progress: Callable[[str], None]) -> dict:
    rng = np.random.default_rng([seed, split_code])
    labels = rng.permutation(np.arange(num_images) % 100)
    patterns = _class_patterns() if preset == 'easy' else None
    data = np.empty((num_images, 3 * _SIDE * _SIDE), np.uint8)
    for start in range(0, num_images, _CHUNK):
        stop = min(start + _CHUNK, num_images)
        chunk = labels[start:stop]
        images = _render(rng, chunk, patterns) if patterns else _render_hard(rng, chunk)
        data[start:stop] = images.transpose(0, 3, 1, 2).reshape(stop - start, -1)  # HWC -> CHW
        progress(f'[toy_cifar100] {name}: {stop}/{num_images} images')
    return {
        'filenames': [f'{CIFAR100_FINE_NAMES[k]}_s_{i:06d}.png' for i, k in enumerate(labels)],
        'batch_label': f'{"training" if name == "train" else "testing"} batch 1 of 1',
        'fine_labels': labels.tolist(),
        'coarse_labels': _FINE_TO_COARSE[labels].tolist(),
        'data': data,
    }


def make_toy_cifar100(out_dir: str, num_train: int | None = None, num_test: int | None = None,
                      seed: int = 0, overwrite: bool = False,
                      progress: Callable[[str], None] = print, preset: str = 'easy') -> str:
    """Write ``out_dir/cifar-100-python/{train,test,meta}`` atomically; return ``out_dir``.

    ``preset`` is ``'easy'`` (coloured gratings, for fast tests) or ``'hard'`` (shape x
    texture x colour of the largest object among distractors and clutter, which a small
    ViT learns only partly); ``num_train``/``num_test`` default to the preset's
    (:data:`PRESETS`). Labels are balanced (``i % 100`` before shuffling), so each split
    needs no minimum size.

    Raises:
        ValueError: unknown ``preset``, or ``num_train``/``num_test`` not a positive integer.
        FileExistsError: ``out_dir`` is not empty and ``overwrite`` is false.
    """
    if preset not in PRESETS:
        raise ValueError(f'preset: expected one of {sorted(PRESETS)}, got {preset!r}')
    num_train = PRESETS[preset]['num_train'] if num_train is None else num_train
    num_test = PRESETS[preset]['num_test'] if num_test is None else num_test
    check_positive('num_train', num_train)
    check_positive('num_test', num_test)
    out_dir = check_output_dir(out_dir, overwrite)
    with atomic_output_dir(out_dir, overwrite) as tmp_dir:
        base = osp.join(tmp_dir, 'cifar-100-python')
        os.makedirs(base)
        for split_code, (name, num) in enumerate((('train', num_train), ('test', num_test))):
            with open(osp.join(base, name), 'wb') as f:
                pickle.dump(_make_split(num, seed, split_code, name, preset, progress), f,
                            protocol=4)
        with open(osp.join(base, 'meta'), 'wb') as f:
            pickle.dump({'fine_label_names': list(CIFAR100_FINE_NAMES),
                         'coarse_label_names': list(CIFAR100_COARSE_NAMES)}, f, protocol=4)
    progress(f'[toy_cifar100] wrote {num_train} train + {num_test} test images ({preset} '
             f'preset) to {out_dir}')
    return out_dir


def build_parser(prog: str = 'make_toy_cifar100.py') -> argparse.ArgumentParser:
    """The flags of ``tools/dataset/make_toy_cifar100.py``."""
    parser = generator_arg_parser(
        prog, 'Generate a learnable data set in the real CIFAR-100 python format '
        '(cifar-100-python/). Presets: easy (coloured gratings, learnt almost perfectly: '
        'fast tests and demos) and hard (shape x texture x colour of the largest object '
        'among distractors and clutter: a small ViT learns it only partly, so pruning '
        'methods can be told apart).', 'data/toy_cifar100',
        'data root to create; files go to OUT_DIR/cifar-100-python/')
    parser.add_argument('--preset', choices=sorted(PRESETS), default='easy',
                        help='which classes to draw (default: %(default)s)')
    sizes = ', '.join(f'{k} {v["num_train"]}/{v["num_test"]}' for k, v in PRESETS.items())
    parser.add_argument('--num-train', type=int_at_least(1), default=None,
                        help='training images, balanced over the 100 classes (default per '
                             f'preset, train/test: {sizes})')
    parser.add_argument('--num-test', type=int_at_least(1), default=None,
                        help='test images (default per preset)')
    return parser


def main(argv=None, prog: str = 'make_toy_cifar100.py') -> int:
    """``tools/dataset/make_toy_cifar100.py``: exit code as in ``sidt_mmdet.utils.cli``."""
    return run_generator(make_toy_cifar100, build_parser(prog), argv)
