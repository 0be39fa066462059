"""COCO mAP per bootstrap draw, against pycocotools' own COCOeval on files written for it."""
from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest

from sidt_mmdet.studies.coco_matches import coco_matches, load_matches, save_matches
from sidt_mmdet.studies.stats import compare, paired_bootstrap


def _set(seed: int, num_images: int = 6):
    """A random ground truth of 3 categories and noisy detections of it (some missed, some
    false, some misplaced), in COCO's JSON layout."""
    rng = np.random.default_rng(seed)
    images, anns, dets = [], [], []
    for i in range(1, num_images + 1):
        images.append(dict(id=i, width=100, height=100, file_name=f'{i}.jpg'))
        for _ in range(rng.integers(1, 5)):
            x, y, w, h = rng.uniform(0, 60, 2).tolist() + rng.uniform(8, 40, 2).tolist()
            cat = int(rng.integers(1, 4))
            anns.append(dict(id=len(anns) + 1, image_id=i, category_id=cat, iscrowd=0,
                             bbox=[x, y, w, h], area=w * h))
            if rng.random() < 0.8:  # found, with some offset and sometimes the wrong class
                j = rng.normal(0, 4, 4)
                dets.append(dict(image_id=i, category_id=cat if rng.random() < 0.85 else
                                 int(rng.integers(1, 4)), score=float(rng.random()),
                                 bbox=[x + j[0], y + j[1], max(2, w + j[2]), max(2, h + j[3])]))
        for _ in range(rng.integers(0, 3)):  # false positives
            dets.append(dict(image_id=i, category_id=int(rng.integers(1, 4)),
                             score=float(rng.random() * 0.6),
                             bbox=rng.uniform(0, 70, 2).tolist() + rng.uniform(5, 30, 2).tolist()))
    cats = [dict(id=k, name=f'c{k}') for k in (1, 2, 3)]
    return dict(images=images, annotations=anns, categories=cats), dets


def _write(tmp_path, name, gt, dets):
    gt_file, dt_file = tmp_path / f'{name}_gt.json', tmp_path / f'{name}_dt.json'
    gt_file.write_text(json.dumps(gt))
    dt_file.write_text(json.dumps(dets))
    return str(gt_file), str(dt_file)


def _cocoeval_ap(gt_file, dt_file) -> float:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(gt_file)
        ev = COCOeval(gt, gt.loadRes(dt_file), 'bbox')
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return float(ev.stats[0])


def _repeat(gt, dets, counts):
    """The set with image i present counts[i] times (copies get new ids): what a bootstrap
    draw with those counts is, written out for COCOeval."""
    images, anns, out = [], [], []
    for img, c in zip(gt['images'], counts):
        for copy in range(c):
            new = 1000 * (copy + 1) + img['id']
            images.append(dict(img, id=new))
            anns += [dict(a, image_id=new) for a in gt['annotations']
                     if a['image_id'] == img['id']]
            out += [dict(d, image_id=new) for d in dets if d['image_id'] == img['id']]
    anns = [dict(a, id=k + 1) for k, a in enumerate(anns)]  # ground-truth ids stay unique
    return dict(gt, images=images, annotations=anns), out


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_unit_weights_give_cocoeval_ap(tmp_path, seed):
    gt, dets = _set(seed)
    gt_file, dt_file = _write(tmp_path, 'a', gt, dets)
    m = coco_matches(gt_file, dt_file, 'bbox')
    assert m.score() == pytest.approx(_cocoeval_ap(gt_file, dt_file), abs=1e-12)


@pytest.mark.parametrize('counts', [[2, 1, 0, 1, 3, 0], [0, 0, 1, 2, 0, 3], [1, 1, 1, 1, 1, 6]])
def test_weights_give_the_ap_of_the_drawn_set(tmp_path, counts):
    """Counting an image twice (or not at all) gives COCOeval's AP of the set in which it
    appears twice (or not), written out as a file: the bootstrap draw is that set."""
    gt, dets = _set(5)
    m = coco_matches(*_write(tmp_path, 'a', gt, dets), 'bbox')
    ref = _cocoeval_ap(*_write(tmp_path, 'b', *_repeat(gt, dets, counts)))
    assert m.score(np.array(counts, float)) == pytest.approx(ref, abs=1e-12)


def test_saved_matches_reload_and_bootstrap(tmp_path):
    gt, dets = _set(3)
    gt_file, dt_file = _write(tmp_path, 'a', gt, dets)
    m = coco_matches(gt_file, dt_file, 'bbox')
    save_matches(str(tmp_path / 'm.npz'), {'bbox': m})
    again = load_matches(str(tmp_path / 'm.npz'), 'bbox')
    assert again.score() == m.score()
    with pytest.raises(KeyError, match="no 'segm' matches"):
        load_matches(str(tmp_path / 'm.npz'), 'segm')
    # a model against itself: every draw's difference is 0
    r = paired_bootstrap([m], [again], draws=50, seed=0)
    assert (r['diff'], r['low'], r['high']) == (0.0, 0.0, 0.0)
    # a worse model (half its detections' scores shuffled) is behind on the point figure,
    # and compare() gives the same interval for it as paired_bootstrap with the same seed
    rng = np.random.default_rng(0)
    worse = [dict(d, score=float(rng.random())) if k % 2 else d for k, d in enumerate(dets)]
    w = coco_matches(gt_file, _write(tmp_path, 'w', gt, worse)[1], 'bbox')
    r = paired_bootstrap([m], [w], draws=200, seed=1)
    assert r['diff'] == pytest.approx(m.score() - w.score())
    c = compare({'x': ([m], [w]), 'y': ([w], [m])}, draws=200, seed=1, scale=1.0)
    assert (c['x']['low95'], c['x']['high95']) == pytest.approx((r['low'], r['high']))
    assert c['y']['diff'] == pytest.approx(-r['diff'])


def test_refuses_mixed_or_unequal_inputs(tmp_path):
    gt, dets = _set(4)
    m = coco_matches(*_write(tmp_path, 'a', gt, dets), 'bbox')
    with pytest.raises(ValueError, match='both per-image arrays or both lists of metrics'):
        paired_bootstrap([m], np.zeros(6))
    gt2, dets2 = _set(4, num_images=5)
    m2 = coco_matches(*_write(tmp_path, 'b', gt2, dets2), 'bbox')
    with pytest.raises(ValueError, match='same images'):
        paired_bootstrap([m], [m2])
    with pytest.raises(ValueError, match=r'weights: expected shape \(6,\)'):
        m.score(np.ones(5))
