"""Finding and rewriting the backbone in flat and SIDTModel-wrapped model configs."""
from __future__ import annotations

import pytest
from mmengine.config import ConfigDict

from sidt_mmdet.utils.config import backbone_cfg, inner_model_cfg, is_type, with_pruned_backbone


class SIDTViT:  # a class given as ``type``
    pass


def test_is_type():
    assert is_type(dict(type='SIDTViT'), 'SIDTViT')
    assert is_type(dict(type='mmdet.SIDTViT'), 'SIDTViT')
    assert is_type(dict(type=SIDTViT), 'SIDTViT')
    assert not is_type(dict(type='MySIDTViT'), 'SIDTViT')
    assert not is_type('SIDTViT', 'SIDTViT')


FLAT = dict(type='MaskRCNN', backbone=dict(type='SIDTViT', mode='search'))
NESTED = dict(type='SIDTModel', sparsity=dict(weight=1), model=FLAT)
BESIDE = dict(type='mmdet.SIDTModel', model_type='MaskRCNN', sparsity=dict(weight=1),
              backbone=dict(type='mmdet.SIDTViT', mode='search'))


@pytest.mark.parametrize('cfg', [FLAT, NESTED, BESIDE])
def test_backbone_is_found_and_rewritten(cfg):
    cfg = ConfigDict(cfg)
    assert backbone_cfg(cfg)['mode'] == 'search'
    assert backbone_cfg(cfg) is inner_model_cfg(cfg)['backbone']  # a reference
    pruned = with_pruned_backbone(cfg, {'subnet': 1}, 'x.py')
    assert is_type(pruned, 'SIDTModel') and 'sparsity' not in pruned
    assert backbone_cfg(pruned) == dict(type=backbone_cfg(cfg)['type'], mode='pruned',
                                        subnet={'subnet': 1}, init_cfg=None)
    assert backbone_cfg(cfg)['mode'] == 'search'  # the input is left alone


def test_not_a_sidtvit_names_the_file():
    with pytest.raises(ValueError, match=r"x.py: model.backbone must be a SIDTViT, got 'ResNet'"):
        backbone_cfg(dict(type='RetinaNet', backbone=dict(type='ResNet')), 'x.py')
