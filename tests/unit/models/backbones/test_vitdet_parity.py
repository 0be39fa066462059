"""ViTDet parity: SIDTViT against timm's VisionTransformerSAM (ViTDet/SAM architecture)."""
import importlib

import pytest
import torch
import torch.nn.functional as F
from helpers import build_pruned, hard_mask_, perturb_, random_masks_, subnet_from_masks
from timm.models.vision_transformer_sam import VisionTransformerSAM

from sidt_mmdet.models import SIDTViT

SAM_KW = dict(img_size=128, patch_size=16, embed_dim=48, depth=3, num_heads=3,
              window_size=4, global_attn_indexes=(1,), use_rel_pos=True, neck_chans=0,
              num_classes=0)


def sam_reference(seed=0):
    torch.manual_seed(seed)
    ref = VisionTransformerSAM(**SAM_KW).eval()
    return perturb_(ref, seed=seed)


def sam_features(ref, x):
    """The stride-16 map after the last block, before SAM's neck/final norm."""
    return ref.forward_intermediates(x, indices=[SAM_KW['depth'] - 1],
                                     intermediates_only=True)[0]


def ours_from(ref, tmp_path, **kw):
    path = tmp_path / 'sam.pth'
    torch.save({'model': ref.state_dict()}, path)
    model = SIDTViT(embed_dim=48, depth=3, num_heads=3, pretrain_img_size=128,
                    window_size=4, window_block_indexes=[0, 2], use_rel_pos=True,
                    norm_cfg=dict(type='LN', eps=1e-5),  # SAM uses nn.LayerNorm's default
                    init_cfg=dict(type='Pretrained', checkpoint=str(path)), **kw)
    model.init_weights()
    return model.eval()


@pytest.mark.parametrize('size', [(128, 128), (112, 176)])  # 8x8 grid; 7x11 (not x4)
def test_matches_vision_transformer_sam(tmp_path, size):
    ref = sam_reference()
    assert all(ref.blocks[i].attn.rel_pos_h.abs().sum() > 0 for i in range(3))
    ours = ours_from(ref, tmp_path)
    assert ours.global_attn_indexes == (1,)
    x = torch.randn(1, 3, *size)
    with torch.no_grad():
        want = sam_features(ref, x)
        got = ours(x)[0]
    assert got.shape == want.shape
    assert (got - want).abs().max() <= 1e-4


def test_sam_weights_load_into_search_and_pruned(tmp_path):
    ref = sam_reference()
    search = ours_from(ref, tmp_path, mode='search', search_dims=('attn', 'mlp'))
    x = torch.randn(1, 3, 112, 176)
    with torch.no_grad():
        assert (search(x)[0] - sam_features(ref, x)).abs().max() <= 1e-4
    random_masks_(search, seed=3)
    subnet = subnet_from_masks(search)
    hard_mask_(search, subnet)
    pruned = ours_from(ref, tmp_path, mode='pruned', subnet=subnet)
    # dense weights loaded into a pruned model: the sliced dense model, no masks to fold
    with torch.no_grad():
        for m in search.mask_parameters().values():
            m.copy_((m != 0).float())
        assert (search(x)[0] - pruned(x)[0]).abs().max() <= 1e-5


@pytest.mark.parametrize('split_qkv', [False, True])
def test_rel_pos_pruning_is_exact_window_and_global(split_qkv):
    torch.manual_seed(0)
    kw = dict(arch=dict(embed_dims=64, num_layers=4, num_heads=4), img_size=96,
              window_size=3, global_attn_indexes=[1, 3], use_rel_pos=True)
    search = perturb_(SIDTViT(mode='search', split_qkv=split_qkv, **kw), seed=4)
    random_masks_(search, seed=5, zero_frac=0.4)
    subnet = subnet_from_masks(search)
    hard_mask_(search, subnet)
    pruned = build_pruned(search, subnet, **kw).eval()
    search.eval()
    for size in [(96, 96), (80, 112)]:
        x = torch.randn(2, 3, *size)
        with torch.no_grad():
            assert (search(x)[0] - pruned(x)[0]).abs().max() <= 1e-5


def test_vitdet_b_parameter_count_matches_hand_formula():
    model = SIDTViT(embed_dim=768, depth=12, num_heads=12, pretrain_img_size=1024,
                    window_size=14, window_block_indexes=[0, 1, 3, 4, 6, 7, 9, 10],
                    use_rel_pos=True)
    D, d, grid = 768, 64, 64
    per_block = 12 * D * D + 9 * D + 4 * D  # qkv+proj+fc1+fc2 weights and biases, 2 LN
    rel = sum(2 * (2 * (grid if i in (2, 5, 8, 11) else 14) - 1) * d for i in range(12))
    want = 3 * 16 * 16 * D + D + grid * grid * D + 12 * per_block + rel
    assert sum(p.numel() for p in model.parameters()) == want


def test_vitdet_argument_errors():
    with pytest.raises(ValueError, match=r'window_block_indexes: \[12\] out of range'):
        SIDTViT(embed_dim=48, depth=12, num_heads=3, window_size=4,
                window_block_indexes=[0, 12])
    with pytest.raises(ValueError, match='conflicting values: embed_dim=64 but arch gives '
                                         'embed_dims=48'):
        SIDTViT(arch=dict(embed_dims=48, num_layers=2, num_heads=3), embed_dim=64)
    with pytest.raises(ValueError, match='conflicting values: global_attn_indexes'):
        SIDTViT(arch='tiny', window_size=4, global_attn_indexes=[2],
                window_block_indexes=[0, 1])
    # img_size with pretrain_img_size is ViTDet's meaning (input size, pos-embed size):
    # tests/unit/models/test_handoffs.py::test_vitdet_img_size_with_pretrain_img_size


def test_rel_pos_table_with_wrong_head_dim_is_refused(tmp_path):
    ref = sam_reference()
    state = ref.state_dict()
    state['blocks.0.attn.rel_pos_h'] = torch.zeros(7, 12)
    path = tmp_path / 'bad.pth'
    torch.save(state, path)
    model = SIDTViT(embed_dim=48, depth=3, num_heads=3, pretrain_img_size=128, window_size=4,
                    window_block_indexes=[0, 2], use_rel_pos=True,
                    init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    with pytest.raises(ValueError, match=r'blocks\.0\.attn\.rel_pos_h: checkpoint \(7, 12\) '
                                         r'vs model \(7, 16\)'):
        model.init_weights()


def test_rel_pos_tables_of_another_size_are_resampled(tmp_path, monkeypatch):
    """Every rel-pos table of every block made for another size, h and w of different lengths
    (the global block's for a 16x16 and a 12x12 grid, 31 and 23 rows, into an 8x8 model's 15;
    the window blocks' for windows 6 and 7, 11 and 13 rows, into window 4's 7): each resampled
    linearly as SAM's get_rel_pos does, and logged. Catches a table truncated, left at its
    zero init, changed without a log line, or one table's resampling applied to another
    (h for w, one block for all, global blocks only)."""
    ref = sam_reference()
    state = ref.state_dict()
    g = torch.Generator().manual_seed(5)
    lengths = {0: (11, 13), 1: (31, 23), 2: (13, 11)}
    tables = {}
    for i, (rows_h, rows_w) in lengths.items():
        for axis, rows in (('h', rows_h), ('w', rows_w)):
            key = f'blocks.{i}.attn.rel_pos_{axis}'
            tables[key] = torch.randn(rows, 16, generator=g)
            state[key] = tables[key]
    path = tmp_path / 'other_size.pth'
    torch.save(state, path)
    model = SIDTViT(embed_dim=48, depth=3, num_heads=3, pretrain_img_size=128, window_size=4,
                    window_block_indexes=[0, 2], use_rel_pos=True,
                    init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    lines = []
    monkeypatch.setattr(importlib.import_module('sidt_mmdet.models.backbones.sidt_vit'),
                        'print_log', lambda msg, **_: lines.append(msg))
    model.init_weights()
    loaded = model.state_dict()
    for key, table in tables.items():
        size = 15 if key.startswith('blocks.1.') else 7
        want = F.interpolate(table.t()[None], size=size, mode='linear')[0].t()
        torch.testing.assert_close(loaded[key], want, msg=key)
        assert f'SIDTViT: resized {key} {len(table)} -> {size} (linear)' in lines, (key, lines)
    assert sum(' resized ' in line for line in lines) == len(tables), lines
    # the other weights load as they are
    torch.testing.assert_close(loaded['blocks.0.attn.qkv.weight'],
                               state['blocks.0.attn.qkv.weight'])


def test_get_layer_depth():
    model = SIDTViT(arch='tiny')
    assert model.get_layer_depth('backbone.pos_embed', 'backbone.') == (0, 14)
    assert model.get_layer_depth('backbone.blocks.3.attn.qkv.weight', 'backbone.') == (4, 14)
    assert model.get_layer_depth('backbone.norm.weight', 'backbone.') == (13, 14)
    assert model.get_layer_depth('neck.conv.weight', 'backbone.') == (13, 14)
