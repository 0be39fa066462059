"""Checkpoints whose backbone keys do not fit the config are refused by every Runner load.

mmengine's ``load_from`` / ``--resume`` / ``tools/test.py`` load with ``strict=False`` and
only log missing and unexpected keys: a checkpoint with relative-position tables evaluated
with a config without them ran to the end at mAP 0. These tests go through mmengine's
``load_checkpoint``, the function those paths call; ``init_cfg=dict(type='Pretrained')``
(converted pretrained weights, which may lack tensors on purpose) stays lenient.
"""
from __future__ import annotations

import pytest
import torch
from mmengine.runner.checkpoint import load_checkpoint
from torch import nn

import sidt_mmdet  # noqa: F401  (installs the safe loader that records checkpoint files)
from sidt_mmdet.apis.export import ExportError, load_search_state
from sidt_mmdet.models import SIDTViT
from sidt_mmdet.utils.safe_load import CheckpointMismatchError
from sidt_mmdet.utils.state_dict import explain_backbone_keys

ARCH = dict(embed_dims=16, num_layers=2, num_heads=2, mlp_ratio=2.0)
KW = dict(arch=ARCH, patch_size=8, img_size=32)
REL = dict(window_size=2, global_attn_indexes=[1], use_rel_pos=True)


class Detector(nn.Module):
    def __init__(self, backbone):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(4, 2)


def _save(model, path):
    torch.save({'state_dict': model.state_dict(), 'meta': {}}, path)
    return str(path)


def test_rel_pos_checkpoint_into_a_config_without_them(tmp_path):
    ckpt = _save(Detector(SIDTViT(**KW, **REL)), tmp_path / 'rel.pth')
    with pytest.raises(CheckpointMismatchError) as err:
        load_checkpoint(Detector(SIDTViT(**KW, window_size=2, global_attn_indexes=[1])), ckpt,
                        map_location='cpu')
    msg = str(err.value)
    assert ckpt in msg and 'backbone.blocks.0.attn.rel_pos_h' in msg
    assert 'trained with use_rel_pos=True' in msg and 'model.backbone.use_rel_pos=False' in msg
    assert '\n' not in msg


def test_checkpoint_without_rel_pos_into_a_rel_pos_config(tmp_path):
    ckpt = _save(Detector(SIDTViT(**KW)), tmp_path / 'plain.pth')
    with pytest.raises(CheckpointMismatchError) as err:
        load_checkpoint(Detector(SIDTViT(**KW, **REL)), ckpt, map_location='cpu')
    msg = str(err.value)
    assert ckpt in msg and 'lacks relative-position tables' in msg
    assert 'backbone.blocks.1.attn.rel_pos_w' in msg
    assert 'trained with use_rel_pos=False' in msg and 'model.backbone.use_rel_pos=True' in msg


def test_class_token_and_final_norm_are_named(tmp_path):
    # (no position embedding: with the class token it would be of another shape)
    ckpt = _save(Detector(SIDTViT(**KW, with_cls_token=True, final_norm=True, use_abs_pos=False,
                                  out_type='cls_token')), tmp_path / 'cls.pth')
    with pytest.raises(CheckpointMismatchError) as err:
        load_checkpoint(Detector(SIDTViT(**KW, use_abs_pos=False)), ckpt, map_location='cpu')
    msg = str(err.value)
    assert 'backbone.cls_token' in msg and 'with_cls_token=True' in msg
    assert 'backbone.norm.weight' in msg and 'final_norm=True' in msg


def test_a_search_from_a_dense_checkpoint_may_lack_only_its_masks(tmp_path):
    """The masks start at 1 (documented); any other missing tensor is still refused."""
    dense = Detector(SIDTViT(**KW)).state_dict()
    ckpt = _save(Detector(SIDTViT(**KW)), tmp_path / 'dense.pth')
    load_checkpoint(Detector(SIDTViT(**KW, mode='search')), ckpt, map_location='cpu')
    del dense['backbone.pos_embed']
    torch.save({'state_dict': dense}, tmp_path / 'no_pos.pth')
    with pytest.raises(CheckpointMismatchError, match=r'backbone\.pos_embed.*use_abs_pos'):
        load_checkpoint(Detector(SIDTViT(**KW, mode='search')), str(tmp_path / 'no_pos.pth'),
                        map_location='cpu')


def test_search_masks_of_another_layout_are_named(tmp_path):
    ckpt = _save(Detector(SIDTViT(**KW, mode='search', search_dims=('attn', 'mlp', 'embed'))),
                 tmp_path / 'search.pth')
    with pytest.raises(CheckpointMismatchError) as err:
        load_checkpoint(Detector(SIDTViT(**KW, mode='search')), ckpt, map_location='cpu')
    assert 'backbone.embed_mask' in str(err.value) and "search_dims=('attn', 'mlp')" in \
        str(err.value)


def test_init_cfg_pretrained_still_loads_what_it_has(tmp_path):
    """MAE weights have no rel-pos tables; ViTDet starts them at zero."""
    dense = SIDTViT(**KW)
    torch.save(dense.state_dict(), tmp_path / 'mae.pth')
    model = SIDTViT(**KW, **REL, init_cfg=dict(type='Pretrained',
                                               checkpoint=str(tmp_path / 'mae.pth')))
    model.init_weights()
    assert torch.equal(model.blocks[0].attn.qkv.weight, dense.blocks[0].attn.qkv.weight)
    assert not model.blocks[0].attn.rel_pos_h.any()


def test_export_refuses_tensors_the_config_would_drop(tmp_path):
    """export_subnet's search checkpoint with rel-pos tables, the config without them: the
    pruned.pth would lose the tables (it used to be a warning)."""
    ckpt = _save(Detector(SIDTViT(**KW, **REL, mode='search')), tmp_path / 'search.pth')
    model = Detector(SIDTViT(**KW, window_size=2, global_attn_indexes=[1], mode='search'))
    with pytest.raises(ExportError) as err:
        load_search_state(ckpt, model)
    assert ckpt in str(err.value) and 'use_rel_pos=True' in str(err.value)


def test_explanation_groups_keys_by_setting():
    text = explain_backbone_keys(
        missing=['blocks.0.attn.qkv.bias'],
        unexpected=['blocks.0.attn.rel_pos_h', 'blocks.1.attn.rel_pos_h', 'blocks.4.mlp.fc1.weight',
                    'head.fc.weight'],
        settings=dict(use_rel_pos=False, qkv_bias=True, num_layers=2), prefix='backbone.')
    assert ('the checkpoint has relative-position tables (backbone.blocks.0.attn.rel_pos_h, '
            'backbone.blocks.1.attn.rel_pos_h) that the config does not build: it was trained '
            'with use_rel_pos=True, the config has model.backbone.use_rel_pos=False') in text
    assert 'blocks (backbone.blocks.4.mlp.fc1.weight)' in text and 'num_layers=2' in text
    assert 'backbone.head.fc.weight' in text and 'another backbone' in text
    assert 'lacks qkv biases (backbone.blocks.0.attn.qkv.bias)' in text
    assert 'trained with qkv_bias=False' in text
    assert explain_backbone_keys([], [], {}) == ''


def test_rel_pos_tables_of_another_window_name_the_window_settings(tmp_path):
    ckpt = _save(Detector(SIDTViT(**KW, **REL)), tmp_path / 'window2.pth')
    with pytest.raises(CheckpointMismatchError) as err:
        load_checkpoint(Detector(SIDTViT(**KW, **dict(REL, window_size=3))), ckpt,
                        map_location='cpu')
    msg = str(err.value)
    assert ckpt in msg and 'blocks.0.attn.rel_pos_h: checkpoint (3, 8) vs model (5, 8)' in msg
    assert 'only relative-position tables differ' in msg and 'window_size=3' in msg
