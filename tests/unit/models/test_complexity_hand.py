"""Kept MACs of pruned SIDTViTs derived by hand from the formulas of docs/method.md, section 2,
and counted by torch's own FLOP counter, against sidt_mmdet.models.complexity.

Formulas (N tokens, D width, per block S_qk / S_v kept q/k / v dims, h kept MLP units):
qkv N*D*(2*S_qk + S_v); q k^T N^2*S_qk (window attention: n^2*S_qk per window of n = w^2
tokens); attn @ v the same with S_v; output projection N*S_v*D; MLP 2*N*D*h. A window block
first pads the grid to whole windows (ViTDet/SAM), so its attention branch runs on the
padded tokens; decomposed relative positions add, per query token and head, one dot
product over the head's q dims with each of the k_h + k_w table rows it reads.
"""
import pytest
import torch
from helpers import perturb_
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from sidt_mmdet.models import SIDTViT, Subnet
from sidt_mmdet.models.complexity import backbone_complexity

pytestmark = pytest.mark.usefixtures('one_torch_thread')

R16 = list(range(16))


def two_block_subnet() -> Subnet:
    """Block 0 (window): head 1 keeps no v dim, so it goes with its q/k dims; heads 0 and 2
    keep 5/7 and 2/3 q/k / v dims. Block 1 (global): three heads of unequal widths.
    The embedding keeps 40 of 48 channels."""
    blocks = [
        dict(qk=[[0, 1, 2, 3, 4], R16, [2, 7]], v=[list(range(7)), [], [1, 2, 3]],
             mlp=list(range(0, 100, 2))),                                   # 50 units
        dict(qk=[R16, [3], list(range(10))], v=[R16, [0, 1, 2, 3], [5]],
             mlp=list(range(17))),
    ]
    return Subnet(48, 2, 3, 192, blocks=blocks, embed=list(range(40)))


def pruned_model(subnet, **kw):
    return SIDTViT(arch=dict(embed_dims=48, num_layers=2, num_heads=3), img_size=64,
                   mode='pruned', subnet=subnet, window_size=3, global_attn_indexes=[1],
                   use_rel_pos=True, **kw)


def test_two_block_pruned_model_by_hand():
    """Input 80 x 112 -> a 5 x 7 grid, N = 35 tokens, D = 40 kept channels.

    Catches: q k^T or attn @ v left out (mmengine's counter misses them), the window
    block counted on the unpadded 35 tokens instead of 6 windows x 9 = 54, the dropped
    head 1 of block 0 still counted, the rel-pos term missing or counted at the dense
    head width, the MLP counted on the padded tokens."""
    D, N, T = 40, 35, 54
    stem = 35 * D * 3 * 16 * 16                      # 16x16x3 patches -> D
    # block 0, window 3: the 5x7 grid is padded to 6x9 = 2x3 windows of 9 tokens
    s_qk, s_v = 5 + 2, 7 + 3
    b0 = dict(qkv=T * D * (2 * s_qk + s_v),          # 54 * 40 * 24
              qk=6 * 9 * 9 * s_qk,                     # per window n^2 = 81
              av=6 * 9 * 9 * s_v,
              rel_pos=T * (3 + 3) * s_qk,              # 3 rows of R_h + 3 of R_w per token
              proj=T * s_v * D,
              mlp=2 * N * D * 50)
    # block 1, global over the 35 tokens; rel-pos tables resampled to 5 and 7 positions
    s_qk, s_v = 16 + 1 + 10, 16 + 4 + 1
    b1 = dict(qkv=N * D * (2 * s_qk + s_v),
              qk=N * N * s_qk,
              av=N * N * s_v,
              rel_pos=N * (5 + 7) * s_qk,
              proj=N * s_v * D,
              mlp=2 * N * D * 17)
    assert b0 == dict(qkv=51840, qk=3402, av=4860, rel_pos=2268, proj=21600, mlp=140000)
    assert b1 == dict(qkv=105000, qk=33075, av=25725, rel_pos=11340, proj=29400, mlp=47600)
    rep = backbone_complexity(pruned_model(two_block_subnet()), (80, 112))
    assert rep.stem['macs'] == stem
    assert rep.blocks[0]['macs_parts'] == b0
    assert rep.blocks[1]['macs_parts'] == b1
    assert rep.macs == stem + sum(b0.values()) + sum(b1.values()) == 1551310


def test_search_model_at_a_threshold_counts_what_pruning_keeps():
    """The count a search-mode backbone reports at a mask threshold (what selection uses)
    equals the hand count of the model that pruning at that threshold builds. Catches
    q/k dims of a head without v counted, and the rel-pos columns of another head."""
    sub = two_block_subnet()
    search = SIDTViT(arch=dict(embed_dims=48, num_layers=2, num_heads=3), img_size=64,
                     mode='search', split_qkv=True, window_size=3, global_attn_indexes=[1],
                     use_rel_pos=True, search_dims=('attn', 'mlp', 'embed'))
    with torch.no_grad():
        for blk, b in zip(search.blocks, sub.blocks):
            blk.attn.qk_mask.zero_()
            blk.attn.v_mask.zero_()
            for h in range(3):
                blk.attn.qk_mask[h, b['qk'][h]] = 1
                blk.attn.v_mask[h, b['v'][h]] = 1
            blk.mlp.hidden_mask.zero_()
            blk.mlp.hidden_mask[b['mlp']] = 1
        search.embed_mask.zero_()
        search.embed_mask[:40] = 1
    rep = backbone_complexity(search, (80, 112), threshold=0.5)
    assert rep.macs == 1551310  # the hand count above


def test_torch_flop_counter_agrees_where_heads_are_uniform():
    """torch.utils.flop_counter counts every matmul that really runs (SDPA, the rel-pos
    einsums, the padded windows), independently of any module hook. With equal head widths
    inside each block nothing is padded, so its count / 2 must be our kept MACs exactly."""
    blocks = [dict(qk=[list(range(6))] * 3, v=[list(range(4))] * 3, mlp=list(range(24))),
              dict(qk=[list(range(8)), [], [0, 5, 9, 11, 12, 13, 14, 15]],
                   v=[list(range(5)), [], [1, 2, 3, 4, 5]], mlp=list(range(40)))]
    sub = Subnet(48, 2, 3, 192, blocks=blocks, embed=list(range(0, 48, 2)))
    model = perturb_(pruned_model(sub)).eval()
    x = torch.randn(1, 3, 80, 112)
    counter = FlopCounterMode(display=False)
    # the math backend: torch's counter has no formula for the fused CPU attention kernel
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), counter:
        model(x)
    flops = counter.get_total_flops()
    rep = backbone_complexity(model, (80, 112))
    assert rep.macs == rep.macs_executed  # uniform heads: nothing padded
    assert flops == 2 * rep.macs


def test_dense_vit_b_by_the_unpruned_formula():
    """docs/complexity.md's unpruned block 12*N*D^2 + 2*N^2*D at 224 with the class token (N = 197,
    D = 768), plus the patch embedding on the 196 patches: 17.56 GMACs for timm's ViT-B
    backbone. Catches the class token left out of N, or the stem counted on N tokens."""
    model = SIDTViT(arch='base', img_size=224, with_cls_token=True, out_type='cls_token',
                    final_norm=True)
    N, D = 197, 768
    want = 12 * (12 * N * D * D + 2 * N * N * D) + 196 * D * 3 * 16 * 16
    assert want == 17_563_060_224
    assert backbone_complexity(model, (224, 224)).macs == want


@pytest.mark.parametrize('case', ['global with a class token', 'windows padded, rel-pos',
                                  'one-token windows'])
def test_mask_costs_by_hand_on_a_non_square_input(case):
    """Catches the mask costs (the MACs weights of the sparsity loss) reading height for
    width, leaving out or subtracting the class token, treating a 1-token window as global
    attention, or missing the padding and rel-pos terms. Input 32 x 48 at patch 8 is a
    4 x 6 grid, D = 16, 2 heads, MLP 32, two blocks; the costs per entry from the module
    docstring's formulas: a q/k dim 2*T*D + groups*n^2 (+ T*(k_h + k_w) with rel-pos), a v
    dim 2*T*D + groups*n^2, an MLP unit 2*N*D, an embedding channel the patch projection
    plus, per block, T*4*D + 2*N*32."""
    from sidt_mmdet.models.complexity import mask_costs

    kw = dict(arch=dict(embed_dims=16, num_layers=2, num_heads=2, mlp_ratio=2.0),
              patch_size=8, img_size=32, mode='search', search_dims=('attn', 'mlp', 'embed'))
    if case == 'global with a class token':
        bb = SIDTViT(with_cls_token=True, out_type='cls_token', **kw)
        N = T = 4 * 6 + 1
        qk = v = 2 * T * 16 + N * N
    elif case == 'windows padded, rel-pos':  # 4 x 4 windows over 4 x 6: padded to 4 x 8
        bb = SIDTViT(window_size=4, use_rel_pos=True, **kw)
        N, T = 24, 2 * 16
        v = 2 * T * 16 + 2 * 16 * 16
        qk = v + T * (4 + 4)
    else:
        bb = SIDTViT(window_size=1, use_rel_pos=True, **kw)
        N, T = 24, 24
        v = 2 * T * 16 + 24
        qk = v + T * (1 + 1)
    costs = mask_costs(bb, (32, 48))
    for i in range(2):
        assert torch.equal(costs[f'blocks.{i}.attn.dim_mask'], torch.full((2, 8), qk + v + 0.))
        assert torch.equal(costs[f'blocks.{i}.mlp.hidden_mask'], torch.full((32,), 2. * N * 16))
    embed = 24 * 3 * 64 + 2 * (T * 4 * 16 + 2 * N * 32)
    assert torch.equal(costs['embed_mask'], torch.full((16,), float(embed)))


def test_low_rank_factors_counted_by_hand():
    """Catches the rank-r count of a factorised Linear wrong (r * (n_in + n_out) weights,
    its bias, N * r * (n_in + n_out) MACs), including a qkv without bias: one block, D 16,
    a 4 x 4 grid (N 16), qkv (16 -> 48, no bias) at rank 2 and fc1 (16 -> 32) at rank 4."""
    from sidt_mmdet.models.complexity import BlockWidths, count_complexity

    kw = dict(embed=16, blocks=[BlockWidths(qk=[8, 8], v=[8, 8], mlp=32)], input_size=(32, 32),
              patch_size=8, pretrain_grid=(4, 4), qkv_bias=False)
    dense = count_complexity(**kw)
    low = count_complexity(lowrank={'blocks.0.attn.qkv': 2, 'blocks.0.mlp.fc1': 4}, **kw)
    d_params = (2 * (16 + 48) - 16 * 48) + (4 * (16 + 32) + 32 - (16 * 32 + 32))
    d_macs = 16 * (2 * (16 + 48) - 16 * 48) + 16 * (4 * (16 + 32) - 16 * 32)
    assert (low.params - dense.params, low.macs - dense.macs) == (d_params, d_macs)
    assert low.macs_executed - dense.macs_executed == d_macs


def test_widths_at_a_threshold_keep_only_what_is_above_it():
    """Catches entries equal to the threshold counted as kept, and the rel-pos columns (the
    union of the q/k dims the heads keep) counted per head or over everything."""
    from sidt_mmdet.models.complexity import backbone_widths

    bb = SIDTViT(arch=dict(embed_dims=16, num_layers=1, num_heads=2, mlp_ratio=2.0),
                 patch_size=8, img_size=32, mode='search', use_rel_pos=True,
                 search_dims=('attn', 'mlp', 'embed'))
    with torch.no_grad():
        m = bb.blocks[0].attn.dim_mask
        m.fill_(0.1)  # exactly the threshold: dropped
        m[0, [0, 1]] = 0.5
        m[1, [1, 2, 3]] = 0.5
        bb.blocks[0].mlp.hidden_mask.fill_(0.1)
        bb.blocks[0].mlp.hidden_mask[:5] = 0.2
        bb.embed_mask.fill_(0.1)
        bb.embed_mask[:7] = 0.3
    embed, (w,) = backbone_widths(bb, threshold=0.1)
    assert (embed, w.qk, w.v, w.mlp, w.rel_cols) == (7, [2, 3], [2, 3], 5, 4)
