"""COCO mAP per image draw: the detection studies' paired bootstrap over test images.

A top-1 is a mean of per-image 0/1 results, so a bootstrap redraws images and averages. COCO
mAP is not a mean over images: each category's precision-recall curve pools the detections
of all images. :func:`coco_matches` runs pycocotools' ``COCOeval.evaluate`` once (the same
matching of detections to ground truth as mmdet's ``CocoMetric``) and keeps, for area
``all`` and 100 detections an image, each detection's image, category, score and whether it
matched at each IoU threshold, and each image's ground-truth count per category.
:meth:`CocoMatches.score` then recomputes COCOeval's ``accumulate`` (101-point interpolated
precision, averaged over IoU thresholds 0.50:0.95 and over the categories with ground truth)
with each image counted ``weights[i]`` times, which is the mAP of the test set the draw made.
With every weight 1 it is COCOeval's AP (``stats[0]``), to floating point.
"""
from __future__ import annotations

import contextlib
import io
import json
import os.path as osp

import numpy as np

from ..utils.fileio import atomic_file

__all__ = ['CocoMatches', 'coco_matches', 'save_matches', 'load_matches']

_REC_THRS = np.linspace(0.0, 1.00, 101)


class CocoMatches:
    """The matched detections of one model on one test set (see the module docstring).

    ``det_img``/``det_cat``: image and category index of each detection; ``det_score``;
    ``det_tp``/``det_ignore``: ``(thresholds, detections)`` booleans; ``gt_count``:
    ``(categories, images)`` non-ignored ground truths.
    """

    def __init__(self, det_img, det_cat, det_score, det_tp, det_ignore, gt_count):
        self.det_img = np.asarray(det_img, dtype=np.int64)
        self.det_cat = np.asarray(det_cat, dtype=np.int64)
        self.det_score = np.asarray(det_score, dtype=np.float64)
        self.det_tp = np.asarray(det_tp, dtype=bool)
        self.det_ignore = np.asarray(det_ignore, dtype=bool)
        self.gt_count = np.asarray(gt_count, dtype=np.int64)
        self.num_images = self.gt_count.shape[1]
        # per category: its detections in COCOeval's order (score descending, stable)
        self._order = []
        for k in range(self.gt_count.shape[0]):
            idx = np.flatnonzero(self.det_cat == k)
            self._order.append(idx[np.argsort(-self.det_score[idx], kind='mergesort')])

    def __len__(self) -> int:
        return self.num_images

    def score(self, weights=None) -> float:
        """mAP@[.50:.95] with image ``i`` counted ``weights[i]`` times (default once each);
        nan when no category has ground truth in the weighted set."""
        w = np.ones(self.num_images) if weights is None else np.asarray(weights, np.float64)
        if w.shape != (self.num_images,):
            raise ValueError(f'weights: expected shape ({self.num_images},), got {w.shape}')
        aps = []
        npig_all = self.gt_count @ w
        for k, order in enumerate(self._order):
            npig = npig_all[k]
            if npig <= 0:
                continue
            dw = w[self.det_img[order]]
            keep = dw > 0
            order, dw = order[keep], dw[keep]
            if order.size == 0:
                aps.append(np.zeros(self.det_tp.shape[0]))
                continue
            ig = self.det_ignore[:, order]
            tp = (self.det_tp[:, order] & ~ig) * dw
            fp = (~self.det_tp[:, order] & ~ig) * dw
            tp_sum, fp_sum = np.cumsum(tp, axis=1), np.cumsum(fp, axis=1)
            rc = tp_sum / npig
            pr = tp_sum / (tp_sum + fp_sum + np.spacing(1))
            # precision envelope: the best precision at this recall or beyond
            pr = np.maximum.accumulate(pr[:, ::-1], axis=1)[:, ::-1]
            ap = np.empty(rc.shape[0])
            for t in range(rc.shape[0]):
                inds = np.searchsorted(rc[t], _REC_THRS, side='left')
                valid = inds < rc.shape[1]
                q = np.zeros(_REC_THRS.size)
                q[valid] = pr[t, inds[valid]]
                ap[t] = q.mean()
            aps.append(ap)
        return float(np.mean(aps)) if aps else float('nan')


def coco_matches(ann_file: str, results_file: str, iou_type: str) -> CocoMatches:
    """Match the detections of ``results_file`` (COCO results JSON, as mmdet's CocoMetric
    writes it) to the ground truth of ``ann_file`` for ``iou_type`` (``'bbox'`` or
    ``'segm'``), as pycocotools does; images in the annotation file's order."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(ann_file)
        with open(results_file, encoding='utf-8') as f:
            results = json.load(f)
        dt = gt.loadRes(results) if results else COCO()
        ev = COCOeval(gt, dt, iou_type)
        ev.params.imgIds = img_ids = sorted(gt.getImgIds())
        ev.evaluate()
    p = ev.params
    cat_ids, max_det = p.catIds, p.maxDets[-1]
    num_area = len(p.areaRng)
    gt_count = np.zeros((len(cat_ids), len(img_ids)), dtype=np.int64)
    det_img, det_cat, det_score, det_tp, det_ig = [], [], [], [], []
    for k in range(len(cat_ids)):
        for i in range(len(img_ids)):
            e = ev.evalImgs[k * num_area * len(img_ids) + i]  # area 'all' comes first
            if e is None:
                continue
            gt_count[k, i] = int(np.count_nonzero(e['gtIgnore'] == 0))
            n = min(len(e['dtScores']), max_det)
            if n == 0:
                continue
            det_img.append(np.full(n, i))
            det_cat.append(np.full(n, k))
            det_score.append(np.asarray(e['dtScores'][:n]))
            det_tp.append(e['dtMatches'][:, :n] > 0)
            det_ig.append(e['dtIgnore'][:, :n].astype(bool))
    t = len(p.iouThrs)
    if det_img:
        return CocoMatches(np.concatenate(det_img), np.concatenate(det_cat),
                           np.concatenate(det_score), np.concatenate(det_tp, axis=1),
                           np.concatenate(det_ig, axis=1), gt_count)
    empty = np.zeros((t, 0), dtype=bool)
    return CocoMatches([], [], [], empty, empty, gt_count)


def save_matches(path: str, matches: dict[str, CocoMatches]) -> None:
    """Write ``{iou_type: CocoMatches}`` to one ``.npz`` (atomically)."""
    arrays = {}
    for kind, m in matches.items():
        arrays.update({f'{kind}.{k}': getattr(m, k) for k in
                       ('det_img', 'det_cat', 'det_score', 'det_tp', 'det_ignore', 'gt_count')})
    with atomic_file(path) as tmp, open(tmp, 'wb') as f:
        np.savez_compressed(f, **arrays)


def load_matches(path: str, kind: str) -> CocoMatches:
    """The ``kind`` (``'bbox'`` / ``'segm'``) matches :func:`save_matches` wrote to ``path``."""
    with np.load(path) as f:
        keys = ('det_img', 'det_cat', 'det_score', 'det_tp', 'det_ignore', 'gt_count')
        missing = [k for k in keys if f'{kind}.{k}' not in f]
        if missing:
            raise KeyError(f'{osp.basename(path)}: no {kind!r} matches (missing {missing})')
        return CocoMatches(*(f[f'{kind}.{k}'] for k in keys))
