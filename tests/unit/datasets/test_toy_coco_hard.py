"""The hard and harder toy COCO presets: read by pycocotools and mmdet's
CocoDataset, and hard in the ways they claim (classes told apart by shape alone, small
objects, overlapping boxes, each polygon still the exact visible mask). Its determinism in
the seed is tested with the easy preset's, in test_generation.py."""
from __future__ import annotations

import filecmp
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from sidt_mmdet.datasets.generation import (
    TOY_COCO_HARD_CLASSES,
    TOY_COCO_HARDER_CLASSES,
    make_toy_coco,
)
from sidt_mmdet.datasets.generation import toy_coco as coco_cli


def _quiet(_msg):
    pass


CLASSES = {'hard': TOY_COCO_HARD_CLASSES, 'harder': TOY_COCO_HARDER_CLASSES}


@pytest.fixture(scope='module', params=sorted(CLASSES))
def hard_dir(request, tmp_path_factory):
    preset = request.param
    return preset, Path(make_toy_coco(str(tmp_path_factory.mktemp(preset) / 'coco'),
                                      num_train=24, num_val=4, img_size=128, seed=3,
                                      progress=_quiet, preset=preset))


def _boxes_overlap(a, b):
    return (a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3]
            and b[1] < a[1] + a[3])


def test_read_by_pycocotools_with_masks_that_do_not_overlap(hard_dir):
    preset, hard_dir = hard_dir
    coco = COCO(str(hard_dir / 'annotations' / 'instances_train2017.json'))
    assert [c['name'] for c in coco.loadCats(coco.getCatIds())] == list(CLASSES[preset])
    overlapping = small = 0
    for img in coco.loadImgs(coco.getImgIds()):
        anns = coco.loadAnns(coco.getAnnIds(imgIds=img['id']))
        masks = np.stack([coco.annToMask(a) for a in anns]).astype(int)
        assert masks.sum(axis=0).max() == 1  # the polygons are the visible masks
        for a, m in zip(anns, masks, strict=True):
            assert abs(m.sum() - a['area']) <= 0.25 * a['area'] + 12  # rasterised polygon
            small += a['bbox'][2] * a['bbox'][3] < 32 ** 2
        overlapping += sum(_boxes_overlap(a['bbox'], b['bbox'])
                           for i, a in enumerate(anns) for b in anns[i + 1:])
    assert len(coco.getAnnIds()) >= 24 * 2
    assert overlapping > 0 and small > 0.5 * len(coco.getAnnIds())
    # every class appears, and the colour says nothing of the class: one colour distribution
    assert {a['category_id'] for a in coco.loadAnns(coco.getAnnIds())} == \
        set(range(1, len(CLASSES[preset]) + 1))


def test_read_by_mmdet_coco_dataset(hard_dir):
    preset, hard_dir = hard_dir
    from mmcv.transforms import LoadImageFromFile
    from mmdet.datasets import CocoDataset
    from mmdet.datasets.transforms import LoadAnnotations

    dataset = CocoDataset(
        data_root=str(hard_dir), ann_file='annotations/instances_val2017.json',
        data_prefix=dict(img='val2017/'), metainfo=dict(classes=CLASSES[preset]),
        pipeline=[LoadImageFromFile(), LoadAnnotations(with_bbox=True, with_mask=True)])
    assert len(dataset) == 4
    for idx in range(len(dataset)):
        sample = dataset[idx]
        masks = sample['gt_masks'].to_ndarray()
        assert masks.shape[0] == len(sample['gt_bboxes']) >= 2
        assert set(sample['gt_bboxes_labels'].tolist()) <= set(range(len(CLASSES[preset])))


def test_the_presets_make_other_files(tmp_path):
    # determinism in the seed is tested for both presets beside the easy one's readers
    kwargs = dict(num_train=3, num_val=2, img_size=64, seed=7, progress=_quiet)
    hard = Path(make_toy_coco(str(tmp_path / 'h'), preset='hard', **kwargs))
    easy = Path(make_toy_coco(str(tmp_path / 'e'), preset='easy', **kwargs))
    files = sorted(p.relative_to(hard) for p in hard.rglob('*') if p.is_file())
    _, mismatch, _ = filecmp.cmpfiles(hard, easy, files, shallow=False)
    assert mismatch


def test_the_tool_takes_the_preset_and_refuses_an_unknown_one(tmp_path, capsys):
    out = tmp_path / 'tool'
    assert coco_cli.main(['--out-dir', str(out), '--preset', 'hard', '--num-train', '1',
                          '--num-val', '1',
                          '--img-size', '64']) == 0
    info = json.loads((out / 'annotations' / 'instances_train2017.json').read_text())
    assert len(info['categories']) == 8 and 'hard preset' in info['info']['description']
    with Image.open(next((out / 'train2017').iterdir())) as im:
        assert max(im.size) <= 64
    with pytest.raises(ValueError,
                       match=r"preset: expected one of \['easy', 'hard', 'harder'\]"):
        make_toy_coco(str(tmp_path / 'x'), preset='medium', progress=_quiet)


def test_harder_has_more_and_smaller_objects_than_hard(tmp_path):
    kwargs = dict(num_train=40, num_val=1, img_size=256, seed=5, progress=_quiet)
    stats = {}
    for preset in CLASSES:
        root = Path(make_toy_coco(str(tmp_path / preset), preset=preset, **kwargs))
        coco = json.loads((root / 'annotations' / 'instances_train2017.json').read_text())
        areas = [a['bbox'][2] * a['bbox'][3] for a in coco['annotations']]
        stats[preset] = len(areas) / len(coco['images']), float(np.median(areas))
    assert stats['harder'][0] > stats['hard'][0] and stats['harder'][1] < stats['hard'][1]
