"""Stage hand-offs that used to load in part without a word now stop with one error.

mmengine's ``load_from`` / ``--resume`` / ``tools/test.py`` call
``mmengine.runner.checkpoint.load_checkpoint``, which only logs shape mismatches and
dropped keys; these tests go through that same function.
"""
from __future__ import annotations

import json

import pytest
import torch
from mmengine.runner.checkpoint import load_checkpoint
from torch import nn

import sidt_mmdet  # noqa: F401  (installs the safe loader that records checkpoint files)
from sidt_mmdet.models import SIDTViT, Subnet, SubnetError
from sidt_mmdet.utils.safe_load import CheckpointMismatchError

ARCH = dict(embed_dims=16, num_layers=2, num_heads=2, mlp_ratio=2.0)  # head_dim 8, mlp 32
KW = dict(arch=ARCH, patch_size=8, img_size=32)


class Detector(nn.Module):
    """What a detector looks like to a checkpoint: a ``backbone.`` scope and a head."""

    def __init__(self, backbone):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(4, 2)


def _subnet(keep_mlp: int, keep_v: int = 8) -> Subnet:
    sub = Subnet.dense(16, 2, 2, 32)
    for b in sub.blocks:
        b['mlp'] = list(range(keep_mlp))
        b['v'] = [list(range(keep_v)), list(range(8))]
    return Subnet(16, 2, 2, 32, blocks=sub.blocks)


def _pruned(tmp_path, name, subnet) -> Detector:
    path = tmp_path / name
    subnet.save(path)
    return Detector(SIDTViT(mode='pruned', subnet=str(path), **KW))


def _save(model, path):
    torch.save({'state_dict': model.state_dict(), 'meta': {}}, path)
    return str(path)


def test_other_exports_pruned_pth_names_both_files(tmp_path):
    a = _pruned(tmp_path, 'a.json', _subnet(16))
    b = _pruned(tmp_path, 'b.json', _subnet(24))
    ckpt = _save(a, tmp_path / 'pruned_a.pth')
    with pytest.raises(CheckpointMismatchError) as err:
        load_checkpoint(b, ckpt, map_location='cpu')
    msg = str(err.value)
    assert ckpt in msg and str(tmp_path / 'b.json') in msg and str(tmp_path / 'a.json') in msg


def test_same_shapes_other_indices_is_caught_by_the_digest(tmp_path):
    """Two subnets of equal widths but other kept indices: shapes agree, weights do not."""
    sub_a, sub_b = _subnet(16), _subnet(16)
    for blk in sub_b.blocks:
        blk['mlp'] = list(range(16, 32))
    a, b = _pruned(tmp_path, 'a.json', sub_a), _pruned(tmp_path, 'b.json', sub_b)
    ckpt = _save(a, tmp_path / 'pruned_a.pth')
    with pytest.raises(CheckpointMismatchError, match='digest'):
        load_checkpoint(b, ckpt, map_location='cpu')


def test_own_export_loads_with_no_error(tmp_path):
    a = _pruned(tmp_path, 'a.json', _subnet(16))
    ckpt = _save(a, tmp_path / 'pruned_a.pth')
    again = _pruned(tmp_path, 'a.json', _subnet(16))
    load_checkpoint(again, ckpt, map_location='cpu', strict=True)
    for (k, v), w in zip(again.state_dict().items(), a.state_dict().values()):
        assert torch.equal(v, w), k


def test_search_checkpoint_into_a_pruned_model(tmp_path):
    search = Detector(SIDTViT(mode='search', **KW))
    ckpt = _save(search, tmp_path / 'iter_100.pth')
    pruned = _pruned(tmp_path, 'a.json', _subnet(16))
    with pytest.raises(CheckpointMismatchError) as err:
        load_checkpoint(pruned, ckpt, map_location='cpu')
    msg = str(err.value)
    assert ckpt in msg and 'search checkpoint' in msg and 'export_subnet.py' in msg
    assert str(tmp_path / 'a.json') in msg


def test_search_checkpoint_into_the_dense_model_is_refused(tmp_path):
    """Evaluating a search with the dense config would compute on the unmasked weights."""
    search = Detector(SIDTViT(mode='search', **KW))
    ckpt = _save(search, tmp_path / 'iter_100.pth')
    with pytest.raises(CheckpointMismatchError, match='masks would be dropped'):
        load_checkpoint(Detector(SIDTViT(**KW)), ckpt, map_location='cpu')


def test_dense_checkpoint_starts_a_search(tmp_path):
    dense = Detector(SIDTViT(**KW))
    ckpt = _save(dense, tmp_path / 'dense.pth')
    search = Detector(SIDTViT(mode='search', **KW))
    load_checkpoint(search, ckpt, map_location='cpu')
    assert torch.equal(search.backbone.blocks[0].attn.qkv.weight,
                       dense.backbone.blocks[0].attn.qkv.weight)


def test_dense_checkpoint_of_another_width(tmp_path):
    ckpt = _save(Detector(SIDTViT(**dict(KW, arch=dict(ARCH, embed_dims=32)))),
                 tmp_path / 'wide.pth')
    with pytest.raises(CheckpointMismatchError, match="init_cfg=dict"):
        load_checkpoint(Detector(SIDTViT(**KW)), ckpt, map_location='cpu')


# ------------------------------------------------------------------ arguments
def test_typo_in_arch_dict_names_the_key_and_the_valid_ones():
    with pytest.raises(ValueError) as err:
        SIDTViT(arch=dict(ARCH, mlp_raito=2))
    msg = str(err.value)
    assert "'mlp_raito'" in msg and "did you mean 'mlp_ratio'" in msg
    assert "['embed_dims', 'num_layers', 'num_heads', 'mlp_ratio']" in msg


def test_vitdet_img_size_with_pretrain_img_size():
    """ViTDet: img_size is the input (global rel-pos tables), pretrain_img_size the
    position embedding (MAE's 224)."""
    bb = SIDTViT(arch=ARCH, patch_size=16, img_size=128, pretrain_img_size=64,
                 window_size=2, global_attn_indexes=[1], use_rel_pos=True)
    assert bb.img_size == (128, 128) and bb.pretrain_grid == (4, 4)
    assert bb.pos_embed.shape == (1, 16, 16)
    assert bb.blocks[1].attn.rel_pos_h.shape[0] == 2 * 8 - 1  # input grid 8
    assert bb.blocks[0].attn.rel_pos_h.shape[0] == 2 * 2 - 1  # window 2
    assert bb(torch.randn(1, 3, 128, 128))[0].shape == (1, 16, 8, 8)


@pytest.mark.parametrize('kw', [dict(img_size=64), dict(pretrain_img_size=64)])
def test_one_size_alone_sets_both(kw):
    bb = SIDTViT(arch=ARCH, patch_size=16, use_rel_pos=True, **kw)
    assert bb.img_size == (64, 64) and bb.pretrain_grid == bb.input_grid == (4, 4)


@pytest.mark.parametrize('size', [0, -32, 3.5, (32,), (32, 32, 32), True])
def test_bad_img_size_names_the_argument(size):
    with pytest.raises(ValueError, match='img_size'):
        SIDTViT(arch=ARCH, patch_size=8, img_size=size)


# ------------------------------------------------------------------ subnet files
def test_subnet_path_that_is_a_directory(tmp_path):
    Subnet.dense(16, 2, 2, 32).save(tmp_path / 'subnet.json')
    with pytest.raises(SubnetError) as err:
        SIDTViT(mode='pruned', subnet=str(tmp_path), **KW)
    assert f'{tmp_path} is a directory' in str(err.value)
    assert str(tmp_path / 'subnet.json') in str(err.value)


def test_pruned_pth_given_as_the_subnet_file(tmp_path):
    path = tmp_path / 'pruned.pth'
    torch.save({'state_dict': {'w': torch.zeros(2)}}, path)
    with pytest.raises(SubnetError) as err:
        SIDTViT(mode='pruned', subnet=str(path), **KW)
    assert str(path) in str(err.value) and 'checkpoint' in str(err.value)


def test_binary_subnet_file_is_no_unicode_error(tmp_path):
    path = tmp_path / 'subnet.json'
    path.write_bytes(b'{"format": "\xff\xfe"}')
    with pytest.raises(SubnetError, match='not UTF-8'):
        Subnet.load(path)


def test_unknown_key_in_a_block_is_named(tmp_path):
    doc = Subnet.dense(16, 2, 2, 32).to_dict()
    doc['blocks'][1]['mlps'] = [0]
    path = tmp_path / 'subnet.json'
    path.write_text(json.dumps(doc))
    with pytest.raises(SubnetError, match=r"blocks\[1\].*'mlps'"):
        Subnet.load(path)


def test_export_overwritten_after_the_checkpoint_says_so(tmp_path):
    """A checkpoint made from one subnet.json, loaded after that file was replaced (an export
    written again with --overwrite): the refusal says the export was overwritten, and names
    the path with both digests."""
    path = tmp_path / 'export' / 'subnet.json'
    path.parent.mkdir()
    old = _subnet(16)
    old.save(path)
    ckpt = _save(Detector(SIDTViT(mode='pruned', subnet=str(path), **KW)), tmp_path / 'it.pth')
    new = _subnet(16)
    for blk in new.blocks:
        blk['mlp'] = list(range(16, 32))
    new.save(path)  # same widths, other indices: only the digest tells them apart
    model = Detector(SIDTViT(mode='pruned', subnet=str(path), **KW))
    with pytest.raises(CheckpointMismatchError) as err:
        load_checkpoint(model, ckpt, map_location='cpu')
    msg = str(err.value)
    assert 'overwritten after' in msg and '--overwrite' in msg, msg
    assert str(path) in msg and ckpt in msg
    assert old.digest() in msg and new.digest() in msg
