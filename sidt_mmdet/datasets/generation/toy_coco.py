"""A deterministic COCO-format detection + instance segmentation set of coloured shapes.

The layout mirrors ``data/coco/``::

    OUT_DIR/annotations/instances_train2017.json
    OUT_DIR/annotations/instances_val2017.json
    OUT_DIR/train2017/000000000001.jpg ...
    OUT_DIR/val2017/...

Two presets:

- ``easy``: every object is one filled polygon (rotated rectangle, ellipse, triangle or
  star) in its class' own colour family, drawn on a textured, noisy background. Objects
  never overlap, so each polygon is exactly the visible mask of its object, and its box is
  the polygon's extent.
- ``hard``: eight classes that differ only in fine structure, in pairs (rectangle / cross,
  ellipse / octagon, triangle / arrow, five- / six-pointed star), every object in a colour
  drawn from one distribution for all classes, smaller (8-25% of the short side), up to 10
  an image, their boxes free to overlap (the shapes' pixels never do, so each polygon stays
  the exact visible mask), among unannotated clutter (strokes and blobs of the same
  colours). A detector must read shape, not colour, and separate neighbours.
- ``harder``: the hard preset with twelve classes in groups of two to four that share an
  outline (rectangle / cross / T / L, ellipse / hexagon / octagon, triangle / arrow, five- /
  six- / seven-pointed star), smaller objects (6-20% of the short side), up to 14 an image,
  and twice the clutter.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import os.path as osp
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw

from ...utils.cli import int_at_least
from ...utils.fileio import atomic_output_dir, check_output_dir
from .common import check_positive, generator_arg_parser, progress_steps, run_generator

__all__ = ['TOY_COCO_CLASSES', 'TOY_COCO_HARD_CLASSES', 'TOY_COCO_HARDER_CLASSES', 'PRESETS',
           'MIN_IMG_SIZE', 'make_toy_coco']

TOY_COCO_CLASSES = ('rectangle', 'ellipse', 'triangle', 'star')
TOY_COCO_HARD_CLASSES = ('rectangle', 'cross', 'ellipse', 'octagon', 'triangle', 'arrow',
                         'star5', 'star6')
TOY_COCO_HARDER_CLASSES = ('rectangle', 'cross', 'tee', 'ell', 'ellipse', 'hexagon', 'octagon',
                           'triangle', 'arrow', 'star5', 'star6', 'star7')
# preset -> its classes and default sizes; the hard presets' object size range (fraction of
# the short side) and clutter counts ([low, high) strokes and blobs)
PRESETS = {'easy': dict(classes=TOY_COCO_CLASSES, max_objects=4),
           'hard': dict(classes=TOY_COCO_HARD_CLASSES, max_objects=10, size=(0.08, 0.25),
                        strokes=(3, 9), blobs=(2, 6)),
           'harder': dict(classes=TOY_COCO_HARDER_CLASSES, max_objects=14, size=(0.06, 0.2),
                          strokes=(6, 18), blobs=(4, 12))}
MIN_IMG_SIZE = 32
# Each class has its own colour family so a tiny detector learns from a few iterations.
_CLASS_RGB = np.array([[220, 40, 40], [40, 90, 230], [40, 200, 60], [240, 200, 30]], float)
_SPLITS = (('train2017', 0), ('val2017', 1))
_MAX_PLACEMENT_TRIES = 30


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Gradient + oriented stripes + pixel noise, in muted colours."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    base = rng.uniform(70, 170, 3)
    slope = rng.uniform(-40, 40, (2, 3)) / max(height, width)
    angle = rng.uniform(0, math.pi)
    period = rng.uniform(6, 24)
    stripes = np.sin((xx * math.cos(angle) + yy * math.sin(angle)) * 2 * math.pi / period
                     + rng.uniform(0, 2 * math.pi))
    img = (base + xx[..., None] * slope[0] + yy[..., None] * slope[1]
           + stripes[..., None] * rng.uniform(5, 25, 3)
           + rng.normal(0, 10, (height, width, 3)))
    return img


def _shape_polygon(rng: np.random.Generator, label: int, size: float) -> np.ndarray:
    """An (N, 2) polygon of class ``label`` centred at the origin, about ``size`` across."""
    angle = rng.uniform(0, 2 * math.pi)
    name = TOY_COCO_CLASSES[label]
    if name == 'rectangle':
        half_w, half_h = size / 2 * rng.uniform(0.5, 1.0, 2)
        pts = np.array([[-half_w, -half_h], [half_w, -half_h], [half_w, half_h],
                        [-half_w, half_h]])
    elif name == 'ellipse':
        radii = size / 2 * rng.uniform(0.5, 1.0, 2)
        t = np.linspace(0, 2 * math.pi, 24, endpoint=False)
        pts = np.stack([radii[0] * np.cos(t), radii[1] * np.sin(t)], axis=1)
    elif name == 'triangle':
        t = np.array([0, 2, 4]) * math.pi / 3 + rng.uniform(-0.3, 0.3, 3)
        pts = size / 2 * np.stack([np.cos(t), np.sin(t)], axis=1)
    else:  # star
        t = np.arange(10) * math.pi / 5
        radius = np.where(np.arange(10) % 2 == 0, size / 2, size / 2 * 0.45)
        pts = np.stack([radius * np.cos(t), radius * np.sin(t)], axis=1)
    rotation = np.array([[math.cos(angle), -math.sin(angle)],
                         [math.sin(angle), math.cos(angle)]])
    return pts @ rotation.T


def _polygon_area(pts: np.ndarray) -> float:
    x, y = pts[:, 0], pts[:, 1]
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2)


def _boxes_overlap(a: list[float], b: list[float], gap: float = 2.0) -> bool:
    return not (a[0] + a[2] + gap <= b[0] or b[0] + b[2] + gap <= a[0]
                or a[1] + a[3] + gap <= b[1] or b[1] + b[3] + gap <= a[1])


def _make_image(rng: np.random.Generator, img_size: int, max_objects: int
                ) -> tuple[np.ndarray, list[dict]]:
    """One image and its objects: dicts with category index, polygon, bbox and area."""
    height, width = (int(v) for v in rng.integers(int(img_size * 0.75), img_size + 1, 2))
    canvas = Image.fromarray(np.clip(_background(rng, height, width), 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    objects: list[dict] = []
    for _ in range(int(rng.integers(1, max_objects + 1))):
        label = int(rng.integers(len(TOY_COCO_CLASSES)))
        colour = tuple(int(c) for c in np.clip(_CLASS_RGB[label] + rng.normal(0, 20, 3), 0, 255))
        for _ in range(_MAX_PLACEMENT_TRIES):
            size = rng.uniform(0.2, 0.45) * min(height, width)
            pts = _shape_polygon(rng, label, size)
            pts += rng.uniform(-pts.min(0) + 1, (width - 2, height - 2) - pts.max(0))
            pts = np.round(pts, 2)
            x0, y0 = pts.min(0)
            x1, y1 = pts.max(0)
            bbox = [float(x0), float(y0), float(x1 - x0), float(y1 - y0)]
            if x0 >= 0 and y0 >= 0 and x1 <= width - 1 and y1 <= height - 1 and not any(
                    _boxes_overlap(bbox, o['bbox']) for o in objects):
                break
        else:
            continue  # the image is full; fewer objects is fine
        draw.polygon([tuple(p) for p in pts.tolist()], fill=colour)
        objects.append(dict(label=label, polygon=pts.reshape(-1).tolist(), bbox=bbox,
                            area=_polygon_area(pts)))
    return np.asarray(canvas), objects


# ------------------------------------------------------------------------ the hard preset
def _hard_polygon(rng: np.random.Generator, name: str, size: float) -> np.ndarray:
    """An (N, 2) polygon of hard-preset class ``name`` centred at the origin, about ``size``
    across; the classes of a pair share their outline's extent and differ in detail."""
    r = size / 2
    if name in ('rectangle', 'cross', 'tee', 'ell'):
        hw, hh = r * rng.uniform(0.6, 1.0, 2)
        if name == 'rectangle':
            pts = np.array([[-hw, -hh], [hw, -hh], [hw, hh], [-hw, hh]])
        elif name == 'cross':  # a plus sign: the rectangle with its four corners cut out
            cw, ch = hw * rng.uniform(0.3, 0.45), hh * rng.uniform(0.3, 0.45)
            pts = np.array([[-cw, -hh], [cw, -hh], [cw, -ch], [hw, -ch], [hw, ch], [cw, ch],
                            [cw, hh], [-cw, hh], [-cw, ch], [-hw, ch], [-hw, -ch], [-cw, -ch]])
        elif name == 'tee':  # a bar across the top on a centred stem
            cw, bar = hw * rng.uniform(0.3, 0.45), 2 * hh * rng.uniform(0.3, 0.45)
            pts = np.array([[-hw, -hh], [hw, -hh], [hw, -hh + bar], [cw, -hh + bar], [cw, hh],
                            [-cw, hh], [-cw, -hh + bar], [-hw, -hh + bar]])
        else:  # ell: a stem down the left on a bar along the bottom
            stem, bar = 2 * hw * rng.uniform(0.3, 0.45), 2 * hh * rng.uniform(0.3, 0.45)
            pts = np.array([[-hw, -hh], [-hw + stem, -hh], [-hw + stem, hh - bar],
                            [hw, hh - bar], [hw, hh], [-hw, hh]])
    elif name in ('ellipse', 'hexagon', 'octagon'):
        radii = r * rng.uniform(0.7, 1.0, 2)
        corners = {'ellipse': 32, 'hexagon': 6, 'octagon': 8}[name]
        t = np.linspace(0, 2 * math.pi, corners, endpoint=False)
        t = t + (math.pi / 8 if name == 'octagon' else 0)
        pts = np.stack([radii[0] * np.cos(t), radii[1] * np.sin(t)], axis=1)
    elif name == 'triangle':
        t = np.array([0, 2, 4]) * math.pi / 3 + rng.uniform(-0.2, 0.2, 3)
        pts = r * np.stack([np.cos(t), np.sin(t)], axis=1)
    elif name == 'arrow':  # a triangle head on a shaft
        shaft = r * rng.uniform(0.18, 0.3)
        neck = r * rng.uniform(-0.1, 0.2)
        pts = np.array([[r, 0], [neck, r * 0.8], [neck, shaft], [-r, shaft], [-r, -shaft],
                        [neck, -shaft], [neck, -r * 0.8]])
    else:  # star5 / star6 / star7
        points = int(name[-1])
        t = np.arange(2 * points) * math.pi / points
        radius = np.where(np.arange(2 * points) % 2 == 0, r, r * rng.uniform(0.45, 0.6))
        pts = np.stack([radius * np.cos(t), radius * np.sin(t)], axis=1)
    angle = rng.uniform(0, 2 * math.pi)
    rotation = np.array([[math.cos(angle), -math.sin(angle)],
                         [math.sin(angle), math.cos(angle)]])
    return pts @ rotation.T


def _raster(pts: np.ndarray, height: int, width: int, grow: int = 0) -> np.ndarray:
    """The polygon's pixels as a bool (height, width) array, grown by ``grow`` pixels."""
    img = Image.new('L', (width, height), 0)
    ImageDraw.Draw(img).polygon([tuple(p) for p in pts.tolist()], fill=1,
                                outline=1 if grow else None)
    mask = np.asarray(img, dtype=bool)
    for _ in range(grow):
        grown = mask.copy()
        grown[1:] |= mask[:-1]
        grown[:-1] |= mask[1:]
        grown[:, 1:] |= mask[:, :-1]
        grown[:, :-1] |= mask[:, 1:]
        mask = grown
    return mask


def _object_colour(rng: np.random.Generator) -> tuple[int, ...]:
    return tuple(int(c) for c in rng.uniform(20, 235, 3))


def _clutter(rng: np.random.Generator, draw: ImageDraw.ImageDraw, height: int,
             width: int, strokes: tuple[int, int], blobs: tuple[int, int]) -> None:
    """Unannotated strokes and small blobs, in the objects' colours."""
    for _ in range(int(rng.integers(*strokes))):
        x0, y0 = rng.uniform(0, width), rng.uniform(0, height)
        length, angle = rng.uniform(0.1, 0.4) * min(height, width), rng.uniform(0, math.pi)
        draw.line([(x0, y0), (x0 + length * math.cos(angle), y0 + length * math.sin(angle))],
                  fill=_object_colour(rng), width=int(rng.integers(1, 3)))
    for _ in range(int(rng.integers(*blobs))):
        cx, cy, rad = rng.uniform(0, width), rng.uniform(0, height), rng.uniform(1.5, 4)
        draw.ellipse([cx - rad, cy - rad, cx + rad, cy + rad], fill=_object_colour(rng))


def _make_hard_image(rng: np.random.Generator, img_size: int, max_objects: int,
                     preset: str = 'hard') -> tuple[np.ndarray, list[dict]]:
    """One image of a hard preset (``'hard'`` or ``'harder'``) and its objects (as
    :func:`_make_image`)."""
    p = PRESETS[preset]
    classes = p['classes']
    height, width = (int(v) for v in rng.integers(int(img_size * 0.75), img_size + 1, 2))
    canvas = Image.fromarray(np.clip(_background(rng, height, width), 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    _clutter(rng, draw, height, width, p['strokes'], p['blobs'])
    taken = np.zeros((height, width), dtype=bool)  # object pixels, each grown by 1
    objects: list[dict] = []
    for _ in range(int(rng.integers(2, max_objects + 1))):
        label = int(rng.integers(len(classes)))
        for _ in range(_MAX_PLACEMENT_TRIES):
            size = rng.uniform(*p['size']) * min(height, width)
            pts = _hard_polygon(rng, classes[label], size)
            pts += rng.uniform(-pts.min(0) + 1, (width - 2, height - 2) - pts.max(0))
            pts = np.round(pts, 2)
            x0, y0 = pts.min(0)
            x1, y1 = pts.max(0)
            # boxes may overlap; pixels may not (so the polygon is the visible mask)
            if x0 >= 0 and y0 >= 0 and x1 <= width - 1 and y1 <= height - 1 and \
                    not (taken & _raster(pts, height, width, grow=1)).any():
                break
        else:
            continue
        taken |= _raster(pts, height, width, grow=1)
        draw.polygon([tuple(p) for p in pts.tolist()], fill=_object_colour(rng))
        objects.append(dict(label=label, polygon=pts.reshape(-1).tolist(),
                            bbox=[float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
                            area=_polygon_area(pts)))
    return np.asarray(canvas), objects


def _write_split(root: str, split: str, split_code: int, num_images: int, first_id: int,
                 img_size: int, max_objects: int, seed: int,
                 progress: Callable[[str], None], preset: str = 'easy') -> None:
    os.makedirs(osp.join(root, split))
    images, annotations = [], []
    report_at = progress_steps(num_images)
    for index in range(num_images):
        # One generator per image: image k is the same whatever --num-* is.
        rng = np.random.default_rng([seed, split_code, index])
        pixels, objects = (_make_image(rng, img_size, max_objects) if preset == 'easy' else
                           _make_hard_image(rng, img_size, max_objects, preset))
        image_id = first_id + index
        file_name = f'{image_id:012d}.jpg'
        Image.fromarray(pixels).save(osp.join(root, split, file_name), quality=95)
        images.append(dict(id=image_id, file_name=file_name, height=int(pixels.shape[0]),
                           width=int(pixels.shape[1])))
        for obj in objects:
            annotations.append(dict(
                id=len(annotations) + 1, image_id=image_id, category_id=obj['label'] + 1,
                bbox=[round(v, 2) for v in obj['bbox']], area=round(obj['area'], 2),
                segmentation=[obj['polygon']], iscrowd=0))
        if index + 1 in report_at:
            progress(f'[toy_coco] {split}: {index + 1}/{num_images} images')
    coco = dict(
        info=dict(description='sidt-mmdet toy COCO: coloured shapes on textured backgrounds'
                  + ('' if preset == 'easy' else f' ({preset} preset)'),
                  version='1.0', year=2026, seed=seed),
        licenses=[],
        images=images,
        annotations=annotations,
        categories=[dict(id=i + 1, name=name, supercategory='shape')
                    for i, name in enumerate(PRESETS[preset]['classes'])])
    with open(osp.join(root, 'annotations', f'instances_{split}.json'), 'w') as f:
        json.dump(coco, f)


def make_toy_coco(out_dir: str, num_train: int = 32, num_val: int = 16, img_size: int = 160,
                  max_objects: int | None = None, seed: int = 0, overwrite: bool = False,
                  progress: Callable[[str], None] = print, preset: str = 'easy') -> str:
    """Write the toy COCO set to ``out_dir`` (atomically) and return its absolute path.

    Image sides are drawn from ``[0.75 * img_size, img_size]``, so sizes vary as in COCO.
    Train image ids are ``1..num_train`` and val ids follow them, so ids never collide.
    ``preset``: ``'easy'``, ``'hard'`` or ``'harder'`` (see the module docstring); ``max_objects``
    defaults to the preset's.

    Raises:
        ValueError: unknown ``preset``, a size is not a positive integer, or
            ``img_size < MIN_IMG_SIZE``.
        FileExistsError: ``out_dir`` is not empty and ``overwrite`` is false.
    """
    if preset not in PRESETS:
        raise ValueError(f'preset: expected one of {sorted(PRESETS)}, got {preset!r}')
    max_objects = PRESETS[preset]['max_objects'] if max_objects is None else max_objects
    check_positive('num_train', num_train)
    check_positive('num_val', num_val)
    check_positive('img_size', img_size, MIN_IMG_SIZE)
    check_positive('max_objects', max_objects)
    out_dir = check_output_dir(out_dir, overwrite)
    with atomic_output_dir(out_dir, overwrite) as tmp_dir:
        os.makedirs(osp.join(tmp_dir, 'annotations'))
        first_ids = {'train2017': 1, 'val2017': num_train + 1}
        counts = {'train2017': num_train, 'val2017': num_val}
        for split, split_code in _SPLITS:
            _write_split(tmp_dir, split, split_code, counts[split], first_ids[split], img_size,
                         max_objects, seed, progress, preset)
    progress(f'[toy_coco] wrote {num_train} train + {num_val} val images ({preset} preset) '
             f'to {out_dir}')
    return out_dir


def build_parser(prog: str = 'make_toy_coco.py') -> argparse.ArgumentParser:
    """The flags of ``tools/dataset/make_toy_coco.py``."""
    parser = generator_arg_parser(
        prog, 'Generate the toy COCO detection + instance segmentation set (layout of '
        'data/coco/).', 'data/toy_coco')
    parser.add_argument('--num-train', type=int_at_least(1), default=32,
                        help='images in train2017 (default: %(default)s)')
    parser.add_argument('--num-val', type=int_at_least(1), default=16,
                        help='images in val2017 (default: %(default)s)')
    parser.add_argument('--img-size', type=int_at_least(MIN_IMG_SIZE), default=160,
                        help='longest image side; sides vary in [0.75, 1] x this '
                             '(default: %(default)s)')
    parser.add_argument('--preset', choices=sorted(PRESETS), default='easy',
                        help='easy: 4 shapes, one colour family each; hard: 8 shapes told '
                             'apart by detail, any colour, small, boxes overlapping, clutter; '
                             'harder: 12 such shapes, smaller, more of them, more clutter '
                             '(default: %(default)s)')
    parser.add_argument('--max-objects', type=int_at_least(1),
                        help='objects per image, at most (default per preset: '
                             + ', '.join(f'{k} {v["max_objects"]}' for k, v in PRESETS.items())
                             + ')')
    return parser


def main(argv=None, prog: str = 'make_toy_coco.py') -> int:
    """``tools/dataset/make_toy_coco.py``: exit code as in ``sidt_mmdet.utils.cli``."""
    return run_generator(make_toy_coco, build_parser(prog), argv)
