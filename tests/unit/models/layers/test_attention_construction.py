"""SIDTAttention's constructor: its defaults, what it refuses (word for word) and the layout
flags the fast path reads. A wrong flag runs the right weights through the wrong path, which
the forward tests only notice on the shapes they happen to use."""
from __future__ import annotations

import pytest
import torch

from sidt_mmdet.models.layers.attention import SIDTAttention


def _refusal(**kwargs) -> str:
    with pytest.raises(ValueError) as err:
        SIDTAttention(**kwargs)
    return str(err.value)


def test_defaults_are_vit_and_vitdet_defaults():
    """Catches a changed default: timm's and mmpretrain's ViT have a q/k/v bias, ViTDet
    starts its relative-position tables at zero."""
    a = SIDTAttention(16, 2, use_rel_pos=True, rel_pos_size=(3, 5))
    assert a.qkv.bias is not None and a.dim == 16 and a.head_dim == 8
    assert a.rel_pos_h.shape == (5, 8) and a.rel_pos_w.shape == (9, 8)
    assert not a.rel_pos_h.any() and not a.rel_pos_w.any()
    assert SIDTAttention(16, 2, qkv_bias=False).qkv.bias is None


def test_random_relative_position_tables_have_vitdet_scale():
    """Catches an init that skips a table or uses another scale: ViTDet's alternative
    draws both tables from a normal of std 0.02 (4 000 values each, so +-10% is wide)."""
    torch.manual_seed(0)
    a = SIDTAttention(64, 2, use_rel_pos=True, rel_pos_size=(63, 63), rel_pos_zero_init=False)
    for table in (a.rel_pos_h.detach(), a.rel_pos_w.detach()):
        assert table.shape == (125, 32)
        assert 0.018 < float(table.std()) < 0.022 and abs(float(table.mean())) < 0.002


@pytest.mark.parametrize('kwargs,message', [
    (dict(dim=16, num_heads=2, qk_dims=[8, 8], v_dims=[8]),
     'qk_dims (2 heads) and v_dims (1 heads) must describe the same heads'),
    (dict(dim=16, num_heads=2, mask='dims'),
     "mask: expected None, 'shared' or 'split', got 'dims'"),
    # masks need every head at the full head_dim: one narrower head, or all of them, or one
    (dict(dim=16, num_heads=2, qk_dims=[8, 4], v_dims=[8, 8], mask='shared'),
     'masks are only defined on the dense layout (search mode)'),
    (dict(dim=16, num_heads=2, qk_dims=[4, 4], v_dims=[4, 4], mask='split'),
     'masks are only defined on the dense layout (search mode)'),
    (dict(dim=16, num_heads=1, head_dim=8, qk_dims=[4], v_dims=[4], mask='shared'),
     'masks are only defined on the dense layout (search mode)'),
    (dict(dim=16, num_heads=2, layout='ragged'),
     "layout: expected one of ('grouped', 'padded'), got 'ragged'"),
    (dict(dim=16, num_heads=2, use_rel_pos=True),
     'use_rel_pos=True needs rel_pos_size (window or feature size)'),
    (dict(dim=16, num_heads=2, qk_dims=[8, 4], v_dims=[8, 8], use_rel_pos=True,
          rel_pos_size=(4, 4), rel_pos_index=[[0, 1]]),
     'rel_pos_index: expected one column list per active head'),
])
def test_refusals(kwargs, message):
    assert _refusal(**kwargs) == message


def test_a_single_full_head_takes_masks():
    a = SIDTAttention(8, 1, mask='shared')
    assert a.dim_mask.shape == (1, 8) and not a.packed


@pytest.mark.parametrize('qk,v,layout,packed,rows_padded,cols_padded', [
    ([8, 8], [8, 8], 'grouped', False, None, None),        # dense
    ([4, 4], [6, 6], 'grouped', False, None, None),        # uniform: one call, no index
    ([8, 4], [8, 8], 'grouped', True, False, False),       # two calls, nothing padded
    ([8, 4], [8, 8], 'padded', True, True, False),         # q/k padded, v full
    ([8, 8], [8, 2], 'padded', True, True, True),          # v padded: rows and columns
    ([0, 0], [4, 4], 'grouped', False, None, None),        # no q/k: one uniform call
])
def test_layout_flags(qk, v, layout, packed, rows_padded, cols_padded):
    """Catches a dense or uniform layer sent through the index path (slower, and the
    counters' module hooks would not see it), or a padding flag that is set without a pad
    row (the fast path would drop a real row) or missing with one (it would read past the
    weight)."""
    a = SIDTAttention(16, 2, qk_dims=qk, v_dims=v, layout=layout)
    assert a.packed is packed
    if packed:
        assert (a.rows_padded, a.cols_padded) == (rows_padded, cols_padded)
        assert {n for n, _ in a.named_buffers()} == {'qkv_rows', 'proj_cols'}
        assert a.state_dict().keys() == {'qkv.weight', 'qkv.bias', 'proj.weight', 'proj.bias'}
    else:
        assert not hasattr(a, 'qkv_rows')


def test_train_defaults_to_training_and_dropout_only_trains():
    """Catches ``train()`` switching to eval by default, and attention dropout applied in
    eval (outputs would change between two evaluations) or never applied in training."""
    torch.manual_seed(0)
    a = SIDTAttention(16, 2, attn_drop=0.5).eval()
    assert a.train().training and a.eval().training is False
    x = torch.randn(2, 9, 16)
    with torch.no_grad():
        ref = SIDTAttention(16, 2)
        ref.load_state_dict(a.state_dict())
        assert torch.equal(a(x), ref.eval()(x))
        a.train()
        assert not torch.allclose(a(x), ref(x), atol=1e-3)


def test_relative_positions_refuse_a_missing_or_wrong_grid():
    a = SIDTAttention(16, 2, use_rel_pos=True, rel_pos_size=(3, 3))
    x = torch.zeros(1, 9, 16)
    for hw, message in ((None, 'relative positions need the token grid (hw)'),
                        ((2, 4), 'relative positions: 9 tokens do not form a 2x4 grid')):
        with pytest.raises(ValueError) as err:
            a(x, hw)
        assert str(err.value) == message
    assert a(x, (3, 3)).shape == (1, 9, 16)
