"""The backbone's spec: its arguments resolved once (ViTDet's spelling translated), frozen,
and the same architecture rebuilt in another mode by to_dense / to_search / to_pruned."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from sidt_mmdet.models import SIDTViT, Subnet
from sidt_mmdet.models.backbones.vit_spec import ViTSpec

ARCH = dict(embed_dims=32, num_layers=4, num_heads=4, mlp_ratio=2.0)
OURS = dict(arch=ARCH, img_size=64, pretrain_img_size=32, window_size=2,
            global_attn_indexes=[1, 3], use_rel_pos=True)
VITDET = dict(embed_dim=32, depth=4, num_heads=4, mlp_ratio=2.0, img_size=64,
              pretrain_img_size=32, window_size=2, window_block_indexes=[0, 2],
              use_rel_pos=True, pretrain_use_cls_token=True)


def half_subnet(layout=None) -> Subnet:
    sub = Subnet.dense(32, 4, 4, 64)
    for b in sub.blocks:
        b['qk'][1] = b['qk'][1][:4]
        b['v'][1] = b['v'][1][:4]
        b['mlp'] = b['mlp'][:16]
    if layout:
        sub.budget = dict(layout=layout)
    return sub


def test_vitdet_spelling_resolves_to_the_same_spec():
    ours, theirs = SIDTViT(**OURS).spec, SIDTViT(**VITDET).spec
    assert ours == theirs
    assert ours.global_attn_indexes == (1, 3) and ours.img_size == (64, 64)
    assert ours.pos_size == (32, 32) and ours.pretrain_grid == (2, 2)
    assert ours.input_grid == (4, 4) and [ours.window_of(i) for i in range(4)] == [2, 0, 2, 0]


def test_spec_is_frozen_and_unknown_arguments_are_refused():
    spec = SIDTViT(**OURS).spec
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.embed_dims = 64
    with pytest.raises(TypeError, match=r"unknown arguments \['use_rel_posx'\] "
                                        r"\('use_rel_posx': did you mean 'use_rel_pos'\?\)"):
        SIDTViT(arch=ARCH, use_rel_posx=True)


@pytest.mark.parametrize('mode', ['dense', 'search', 'pruned'])
def test_kwargs_rebuild_the_same_spec(mode):
    extra = dict(subnet=half_subnet()) if mode == 'pruned' else dict(search_dims=('mlp',))
    model = SIDTViT(**OURS, mode=mode, **(extra if mode != 'dense' else {}))
    assert SIDTViT(**model.spec.kwargs()).spec == model.spec
    assert ViTSpec.resolve(**model.spec.kwargs()) == model.spec


def test_other_modes_keep_every_setting():
    dense = SIDTViT(**OURS, qkv_bias=False, final_norm=True, drop_path_rate=0.1)
    search = dense.to_search(dims=('attn', 'embed'), split_qkv=True)
    pruned = search.to_pruned(half_subnet())
    assert (search.mode, search.search_dims, search.split_qkv) == ('search', ('attn', 'embed'),
                                                                   True)
    assert pruned.mode == 'pruned' and pruned.search_dims == ()
    back = pruned.to_dense()  # split_qkv is kept for a later to_search
    assert back.spec == dataclasses.replace(dense.spec, split_qkv=True)
    same = ('embed_dims', 'num_layers', 'num_heads', 'mlp_ratio', 'img_size', 'pos_size',
            'qkv_bias', 'final_norm', 'drop_path_rate', 'window_size', 'global_attn_indexes',
            'use_rel_pos')
    for m in (search, pruned):
        assert {k: getattr(m.spec, k) for k in same} == {k: getattr(dense.spec, k) for k in same}
    x = torch.randn(1, 3, 64, 64)
    assert pruned(x)[0].shape == dense(x)[0].shape


def test_pruned_backbone_runs_the_layout_its_subnet_records():
    dense = SIDTViT(**OURS)
    assert dense.to_pruned(half_subnet()).blocks[0].attn.layout == 'grouped'
    padded = dense.to_pruned(half_subnet('padded'))
    assert padded.spec.pruned_layout == 'padded'
    assert all(len(blk.attn.groups) == 1 for blk in padded.blocks)
    assert all(len(blk.attn.groups) == 2
               for blk in dense.to_pruned(half_subnet('padded'), layout='grouped').blocks)
    with pytest.raises(ValueError, match="layout: expected one of \\('grouped', 'padded'\\)"):
        dense.to_pruned(half_subnet(), layout='gathered')
