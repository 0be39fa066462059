"""Heads and the simple pyramid agree on strides.

mmdet's RetinaNet base places anchors at P3-P7 (strides 8..128); SIDTSimpleFPN's default
pyramid is P2-P6 (4..64). A detector built from the one with the neck of the other used to
train without an error and score 0 mAP. It is refused when SIDTModel builds it, and at the
first forward when it is built by mmdet alone (tools/train.py with custom_imports);
``start_level=1`` gives single-stage heads their P3-P7.
"""
from __future__ import annotations

import copy
import re

import pytest
import torch
from helpers import REPO
from mmengine.config import Config
from mmengine.registry import MODELS, init_default_scope

from sidt_mmdet.models.stride_check import check_pyramid_strides

pytestmark = pytest.mark.usefixtures('one_torch_thread')

TINY_VIT = dict(type='SIDTViT', arch=dict(embed_dims=32, num_layers=2, num_heads=4),
                patch_size=16, img_size=64, init_cfg=None)
NECK = dict(type='SIDTSimpleFPN', backbone_channel=32, in_channels=[8, 16, 32, 32],
            out_channels=16, num_outs=5)
P3_P7 = [8, 16, 32, 64, 128]
IMAGE = (64, 96)
# (h, w) of each level for a 64 x 96 image: ceil(side / stride)
P3_P7_SIZES = [(8, 12), (4, 6), (2, 3), (1, 2), (1, 1)]


@pytest.fixture(scope='module')
def retinanet(tmp_path_factory) -> dict:
    """mmdet's own RetinaNet config with the backbone and neck swapped, as a user would."""
    path = tmp_path_factory.mktemp('cfg') / 'retinanet.py'
    path.write_text("_base_ = 'mmdet::_base_/models/retinanet_r50_fpn.py'\n")
    model = Config.fromfile(str(path)).model.to_dict()
    assert model['bbox_head']['anchor_generator']['strides'] == P3_P7  # mmdet's P3-P7
    model.update(backbone=TINY_VIT, neck=NECK)
    model['bbox_head'].update(in_channels=16, feat_channels=16, stacked_convs=1, num_classes=2)
    init_default_scope('mmdet')
    return model


def fcos(neck: dict) -> dict:
    """FCOS as mmdet's configs write it: a point head at strides 8..128."""
    return dict(type='FCOS', backbone=TINY_VIT, neck=neck,
                bbox_head=dict(type='FCOSHead', num_classes=2, in_channels=16, feat_channels=16,
                               stacked_convs=1, strides=P3_P7,
                               norm_cfg=dict(type='GN', num_groups=4, requires_grad=True)),
                test_cfg=dict(nms_pre=100, score_thr=0.05, nms=dict(type='nms', iou_threshold=0.5),
                              max_per_img=10))


MISSED = (r'model\.bbox_head\.anchor_generator\.strides=\[8, 16, 32, 64, 128\] but the neck '
          r'\(model\.neck: SIDTSimpleFPN, start_level=0, num_outs=5, on the stride-16 backbone '
          r'map\) gives strides \[4, 8, 16, 32, 64\]; set model\.neck\.start_level=1, num_outs=5 '
          r'.*, or model\.bbox_head\.anchor_generator\.strides=\[4, 8, 16, 32, 64\]')


def test_sidt_model_refuses_anchors_that_miss_the_pyramid(retinanet):
    with pytest.raises(ValueError, match='^SIDTModel: ' + MISSED):
        MODELS.build(dict(type='SIDTModel', model=copy.deepcopy(retinanet)))


def test_unwrapped_detector_is_refused_at_its_first_forward(retinanet):
    detector = MODELS.build(copy.deepcopy(retinanet))
    x = torch.zeros(1, 3, *IMAGE)
    for _ in range(2):  # and again: a refused check is not remembered as passed
        with pytest.raises(ValueError, match='^RetinaNet: ' + MISSED):
            detector(x, mode='tensor')


@pytest.mark.parametrize('wrapped', [False, True])
def test_retinanet_on_p3_p7(retinanet, wrapped):
    model = copy.deepcopy(retinanet)
    model['neck']['start_level'] = 1
    detector = MODELS.build(dict(type='SIDTModel', model=model) if wrapped else model)
    assert detector.neck.out_strides(16) == P3_P7
    with torch.no_grad():
        cls_scores, bbox_preds = detector(torch.randn(1, 3, *IMAGE), mode='tensor')
    # 9 anchors (3 scales x 3 ratios) per position, 2 classes
    assert [tuple(c.shape) for c in cls_scores] == [(1, 18, *s) for s in P3_P7_SIZES]
    assert [tuple(b.shape) for b in bbox_preds] == [(1, 36, *s) for s in P3_P7_SIZES]


def test_fcos_on_p3_p7_and_refused_on_the_default_pyramid():
    init_default_scope('mmdet')
    detector = MODELS.build(fcos(dict(NECK, start_level=1)))
    detector.eval()
    with torch.no_grad():
        cls_scores, bbox_preds, centerness = detector(torch.randn(1, 3, *IMAGE), mode='tensor')
    assert [tuple(c.shape) for c in cls_scores] == [(1, 2, *s) for s in P3_P7_SIZES]
    assert [tuple(b.shape) for b in bbox_preds] == [(1, 4, *s) for s in P3_P7_SIZES]
    assert [tuple(c.shape) for c in centerness] == [(1, 1, *s) for s in P3_P7_SIZES]
    with pytest.raises(ValueError, match=r'^SIDTModel: model\.bbox_head\.strides=\[8, 16, 32, '
                                         r'64, 128\] but .* gives strides \[4, 8, 16, 32, 64\]; '
                                         r'set model\.neck\.start_level=1, num_outs=5'):
        MODELS.build(dict(type='SIDTModel', model=fcos(NECK)))


def test_roi_extractors_read_the_first_levels():
    """Mask R-CNN: the RPN reads all five levels, the RoI extractors the first four."""
    cfg = Config.fromfile(str(REPO / 'configs/toy/'
                              'sidt-dense_mask-rcnn_sidtvit-toy_simplefpn_100it_toy-coco.py'))
    init_default_scope('mmdet')
    model = cfg.model  # a ConfigDict: the two-stage detector reads train_cfg.rpn
    check_pyramid_strides(MODELS.build(copy.deepcopy(model)))  # as shipped: agrees
    model.roi_head.mask_roi_extractor.featmap_strides = [8, 16, 32, 64]
    with pytest.raises(ValueError, match=r'^model: model\.roi_head\.mask_roi_extractor\.'
                                         r'featmap_strides=\[8, 16, 32, 64\] but .* gives strides '
                                         r'\[4, 8, 16, 32, 64\]; set model\.roi_head\.'
                                         r'mask_roi_extractor\.featmap_strides=\[4, 8, 16, 32\]'):
        check_pyramid_strides(MODELS.build(model))


# ---------------------------------------------------------------------- the shipped configs
# The strides are set by the model bases; a detector config that sets none of the keys
# below inherits them unchanged, so the bases and the configs that set one are checked.
STRIDE_KEYS = re.compile(r'\b(strides|featmap_strides|anchor_generator|num_outs|start_level|'
                         r'patch_size)\b')
DETECTION_CONFIGS = sorted(REPO.glob('configs/_base_/models/*.py')) + sorted(
    p for d in ('vit', 'vitdet', 'sidt', 'toy', 'lowrank')
    for p in (REPO / 'configs' / d).rglob('*.py')
    if '_cls_' not in p.name and '_r18-' not in p.name  # classifiers, the ResNet reference
    and STRIDE_KEYS.search(p.read_text()))


def test_stride_setting_configs_are_found():
    names = {p.name for p in DETECTION_CONFIGS}
    assert {f'{d}_sidtvit-b_simplefpn.py' for d in ('retinanet', 'faster-rcnn', 'mask-rcnn')} \
        <= names
    # the ViTDet-spelled configs set patch_size again
    assert 'sidt-dense_mask-rcnn_sidtvit-b_simplefpn_lsj-100e_coco.py' in names


def _inner(model: dict) -> dict:
    return model['model'] if model.get('type') == 'SIDTModel' and 'model' in model else model


@pytest.mark.parametrize('path', DETECTION_CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_agree(path):
    """Every shipped detector's head strides are its pyramid's, read from the config alone
    (SIDTSimpleFPN: strides patch * 2 ** (level - 2), levels start_level.. num_outs long)."""
    model = _inner(Config.fromfile(str(path)).model.to_dict())
    neck = model['neck']
    assert re.fullmatch(r'(mmdet\.)?SIDTSimpleFPN', neck['type']), path.name
    patch = model['backbone'].get('patch_size', 16)
    start = neck.get('start_level', 0)
    pyramid = [patch * 2 ** (level - 2) for level in range(start, start + neck['num_outs'])]
    checked = 0
    for head in ('rpn_head', 'bbox_head'):
        cfg = model.get(head) or {}
        strides = cfg.get('anchor_generator', {}).get('strides', cfg.get('strides'))
        if strides is not None:
            assert list(strides) == pyramid, f'{path.name}: {head}'
            checked += 1
    for extractor in ('bbox_roi_extractor', 'mask_roi_extractor'):
        strides = model.get('roi_head', {}).get(extractor, {}).get('featmap_strides')
        if strides is not None:
            assert list(strides) == pyramid[:len(strides)], f'{path.name}: {extractor}'
            checked += 1
    assert checked, f'{path.name}: no head strides found'
