"""Every field of count_complexity's report, worked out by hand on small widths.

The per-block rows feed the complexity tables and the latency study, so each row is checked
whole (a renamed or dropped key fails), beside the totals. The formulas are those of
docs/complexity.md; the numbers below are written out term by term, not computed by the
package.
"""
import pytest
import torch

from sidt_mmdet.models import SIDTViT
from sidt_mmdet.models.complexity import (
    BlockWidths,
    backbone_complexity,
    backbone_structure,
    count_complexity,
)

pytestmark = pytest.mark.usefixtures('one_torch_thread')


def _two_blocks():
    """D 8, a 16 x 24 input in patches of 4 (a 4 x 6 grid, N 24). Block 0: two full heads
    of 4 in windows of 2 (6 windows of 4 tokens); block 1: heads (4 q/k, 4 v) and (2, 3),
    global, padded to the widest head. Relative positions on both, 4 table columns."""
    return [BlockWidths(qk=[4, 4], v=[4, 4], mlp=16, rel_cols=4),
            BlockWidths(qk=[4, 2], v=[4, 3], mlp=8, rel_cols=4, layout='padded')]


KW = dict(embed=8, input_size=(16, 24), patch_size=4, pretrain_grid=(3, 5),
          window_sizes=[2, 0], use_rel_pos=True,
          lowrank={'blocks.0.attn.proj': 2, 'blocks.1.mlp.fc2': 3})

ROW0 = dict(block=0, window=2, heads=2, qk=[4, 4], v=[4, 4], s_qk=8, s_v=8, mlp=16,
            # qkv 8*24+24, proj at rank 2: 2*(8+8)+8, fc1 8*16+16, fc2 16*8+8,
            # rel-pos tables (3+3 rows) * 4 columns, 2 LayerNorms 4*8
            params=216 + 40 + 144 + 136 + 24 + 32,
            macs=13824, macs_executed=13824, calls=1,
            # T 24 tokens: qkv 24*8*24; qk^T and attn@v 6 windows * 4^2 * 8;
            # rel-pos 24 * (2+2) * 8; proj 24*2*(8+8); MLP 2 * 24*8*16
            macs_parts=dict(qkv=4608, qk=768, av=768, rel_pos=768, proj=768, mlp=6144))
ROW1 = dict(block=1, window=0, heads=2, qk=[4, 2], v=[4, 3], s_qk=6, s_v=7, mlp=8,
            # qkv 8*19+19, proj 7*8+8, fc1 8*8+8, fc2 at rank 3: 3*(8+8)+8,
            # tables (7+11 rows) * 4 columns, LayerNorms 32
            params=171 + 64 + 72 + 56 + 72 + 32,
            macs=16608,
            # padded to (4, 4): qkv 24*8*24, proj 24*8*8, MLP 24*64 + 24*3*16,
            # attention 24^2 * (8+8), rel-pos 24 * (4+6) * 8
            macs_executed=4608 + 1536 + 1536 + 1152 + 9216 + 1920, calls=1,
            macs_parts=dict(qkv=3648, qk=3456, av=4032, rel_pos=1440, proj=1344,
                            mlp=1536 + 1152))
# patch embedding 8*3*4^2 + 8 bias; absolute positions of a 3 x 5 grid 15*8
STEM = dict(params=384 + 8 + 120, macs=24 * 8 * 48)


def test_every_field_of_a_two_block_report():
    """Catches a term dropped or mis-sized anywhere in the report: window padding, default
    table rows (2k - 1), the low-rank proj and fc2, the padded layout's executed MACs, the
    non-square pretraining grid, the elementwise count and the row keys."""
    rep = count_complexity(blocks=_two_blocks(), **KW)
    assert rep.blocks == [ROW0, ROW1]
    assert sum(ROW0['macs_parts'].values()) == ROW0['macs']
    assert sum(ROW1['macs_parts'].values()) == ROW1['macs']
    assert rep.stem == STEM
    assert rep.input_size == (16, 24)
    assert rep.params == STEM['params'] + ROW0['params'] + ROW1['params']
    assert rep.macs == STEM['macs'] + 13824 + 16608
    assert rep.macs_executed == STEM['macs'] + 13824 + ROW1['macs_executed']
    # softmax entries (windows * heads * n^2), two LayerNorms (2*N*D) and GELU (N * units)
    assert rep.elementwise == (6 * 2 * 16 + 2 * 24 * 8 + 24 * 16) + (2 * 576 + 384 + 24 * 8)


def test_explicit_table_rows_and_switches():
    """Catches the table rows given by the model ignored, the final norm or the q/k/v bias
    not counted, and a window of 1 taken for global attention."""
    base = count_complexity(blocks=_two_blocks(), **KW)
    rows = count_complexity(blocks=_two_blocks(), rel_pos_rows=[(5, 5), (9, 13)], **KW)
    assert rows.params - base.params == (10 - 6) * 4 + (22 - 18) * 4
    more = count_complexity(blocks=_two_blocks(), final_norm=True, qkv_bias=False, **KW)
    assert more.params - base.params == 2 * 8 - (24 + 19)
    one = count_complexity(embed=8, blocks=[BlockWidths(qk=[4, 4], v=[4, 4], mlp=16)],
                           input_size=(16, 24), patch_size=4, use_abs_pos=False,
                           window_sizes=[1])
    # 24 windows of one token: q k^T and attn @ v are 24 * 1 * 8 each
    assert one.macs == 24 * 8 * 48 + (4608 + 1536 + 6144 + 2 * 24 * 8)
    assert one.elementwise == 24 * 2 * 1 + 2 * 24 * 8 + 24 * 16


def test_defaults():
    """Catches a changed default: absolute positions of a 14 x 14 grid, q/k/v bias, no
    relative positions, no windows, no final norm."""
    rep = count_complexity(embed=8, blocks=[BlockWidths(qk=[4, 4], v=[4, 4], mlp=16)],
                           input_size=(16, 24), patch_size=4)
    assert rep.params == (384 + 8 + 196 * 8) + (216 + 72 + 144 + 136 + 32)
    assert rep.macs == 24 * 8 * 48 + 4608 + 1536 + 6144 + 2 * 576 * 8
    assert rep.elementwise == 2 * 576 + 384 + 384


def test_structure_read_from_a_model_counted_at_another_size():
    """Catches the table rows re-derived from the measured input instead of read from the
    model: tables built for a 64 x 64 input (15 rows) counted at 32 x 32 must still be
    counted as 15 rows, and the parameter count stays the model's own."""
    bb = SIDTViT(arch=dict(embed_dims=16, num_layers=2, num_heads=2, mlp_ratio=2.0),
                 patch_size=8, img_size=64, use_rel_pos=True, window_size=2,
                 global_attn_indexes=[1])
    s = backbone_structure(bb)
    assert s['rel_pos_rows'] == [(3, 3), (15, 15)] and s['window_sizes'] == [2, 0]
    assert s['lowrank'] == {} and s['qkv_bias'] is True and s['pretrain_grid'] == (8, 8)
    n = sum(p.numel() for p in bb.parameters())
    assert backbone_complexity(bb, (32, 32)).params == n
    with torch.no_grad():
        assert bb(torch.zeros(1, 3, 32, 32))[0].shape[-2:] == (4, 4)


def test_structure_of_a_one_block_model_without_bias():
    """Catches the q/k/v bias read from another block than the first (a one-block model has
    no other) or assumed."""
    bb = SIDTViT(arch=dict(embed_dims=16, num_layers=1, num_heads=2, mlp_ratio=2.0),
                 patch_size=8, img_size=32, qkv_bias=False)
    s = backbone_structure(bb)
    assert s['qkv_bias'] is False and s['window_sizes'] == [0] and s['use_rel_pos'] is False
    assert backbone_complexity(bb, (32, 32)).params == sum(p.numel() for p in bb.parameters())
