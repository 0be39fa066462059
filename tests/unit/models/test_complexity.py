"""Exact params/MACs of SIDTViT, cross-checked against mmengine's counter."""
import pytest
import torch
from mmengine.analysis import FlopAnalyzer
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from sidt_mmdet.models import SIDTViT, Subnet
from sidt_mmdet.models.complexity import backbone_complexity, count_complexity, mask_costs

TINY = dict(embed_dims=48, num_layers=3, num_heads=3)


def n_params(model):
    return sum(p.numel() for n, p in model.named_parameters() if not n.endswith('_mask'))


@pytest.mark.parametrize('kw', [
    dict(),
    dict(with_cls_token=True, final_norm=True, out_type='cls_token'),
    dict(window_size=3, global_attn_indexes=[1], use_rel_pos=True),
    dict(use_abs_pos=False, qkv_bias=False),
])
def test_params_equal_numel_dense_and_search(kw):
    for mode in ('dense', 'search'):
        model = SIDTViT(arch=TINY, img_size=64, mode=mode, **kw)
        assert backbone_complexity(model, (64, 64)).params == n_params(model)


def test_params_equal_numel_pruned_unequal_heads_rel_pos():
    sub = Subnet.dense(48, 3, 3, 192)
    sub.blocks[0] = dict(qk=[[0, 1, 2], [], list(range(16))], v=[[5], [1, 2], []], mlp=[3, 9])
    sub.blocks[2]['qk'][1] = [4, 7]
    sub = Subnet.from_dict(dict(sub.to_dict(), embed=list(range(0, 48, 3))))
    model = SIDTViT(arch=TINY, img_size=64, mode='pruned', subnet=sub, window_size=3,
                    global_attn_indexes=[2], use_rel_pos=True)
    rep = backbone_complexity(model, (64, 64))
    assert rep.params == n_params(model)
    assert rep.blocks[0]['qk'] == [3, 0] and rep.blocks[0]['v'] == [1, 2]
    # grouped layout (default): each width's heads run at their own width
    assert rep.macs_executed == rep.macs and rep.blocks[0]['calls'] == 2
    padded = SIDTViT(arch=TINY, img_size=64, mode='pruned', subnet=sub, window_size=3,
                     global_attn_indexes=[2], use_rel_pos=True, pruned_layout='padded')
    rep_p = backbone_complexity(padded, (64, 64))
    assert rep_p.macs == rep.macs and rep_p.params == rep.params
    # block 0: heads (3 q/k, 1 v) and (0, 2) run padded to (3, 2) on 4x4 = 16 tokens;
    # window 3 pads the 4x4 grid to 6x6 (36 tokens, 4 windows of 9)
    T, n, D = 36, 9, 16
    extra_qk, extra_v = 3, 1  # padded q/k and v dims beyond the kept ones
    want = (T * D * (2 * extra_qk + extra_v) + T * extra_v * D
            + 4 * n * n * (extra_qk + extra_v) + T * (3 + 3) * extra_qk)
    assert rep_p.blocks[0]['macs_executed'] - rep.blocks[0]['macs_executed'] == want


def test_macs_match_hand_formula_global_attention():
    D, L, img, p = 48, 3, 64, 16
    model = SIDTViT(arch=TINY, img_size=img)
    N = (img // p) ** 2
    per_block = 12 * N * D * D + 2 * N * N * D  # docs/complexity.md, unpruned
    want = L * per_block + N * D * 3 * p * p
    assert backbone_complexity(model, (img, img)).macs == want


def test_window_blocks_count_padded_windows():
    model = SIDTViT(arch=TINY, img_size=64, window_size=3, global_attn_indexes=[])
    rep = backbone_complexity(model, (80, 80))  # 5x5 grid -> 2x2 windows of 3x3 (36 tokens)
    D, T, n = 48, 36, 9
    assert rep.blocks[0]['macs_parts']['qkv'] == T * D * 3 * D
    assert rep.blocks[0]['macs_parts']['qk'] == 4 * n * n * D
    assert rep.blocks[0]['macs_parts']['mlp'] == 2 * 25 * D * 4 * D


@pytest.mark.parametrize('rel', [False, True])
def test_cross_check_with_mmengine_counter(rel):
    """mmengine counts every Linear/Conv exactly as we do, and misses SDPA's matmuls (and the
    rel-pos einsums); torch's FlopCounterMode says how much that is."""
    model = SIDTViT(arch=TINY, img_size=64, window_size=3, global_attn_indexes=[1],
                    use_rel_pos=rel).eval()
    x = torch.randn(1, 3, 80, 64)
    analyzer = FlopAnalyzer(model, (x,))
    analyzer.unsupported_ops_warnings(False)
    analyzer.uncalled_modules_warnings(False)
    theirs = analyzer.by_module()
    ours = backbone_complexity(model, (80, 64))
    assert theirs['patch_embed.proj'] == ours.stem['macs']
    for i, row in enumerate(ours.blocks):
        parts = row['macs_parts']
        assert theirs[f'blocks.{i}.attn.qkv'] == parts['qkv']
        assert theirs[f'blocks.{i}.attn.proj'] == parts['proj']
        assert theirs[f'blocks.{i}.mlp.fc1'] + theirs[f'blocks.{i}.mlp.fc2'] == parts['mlp']
    linear_conv = theirs['patch_embed.proj'] + sum(
        theirs[f'blocks.{i}.{m}'] for i in range(3)
        for m in ('attn.qkv', 'attn.proj', 'mlp.fc1', 'mlp.fc2'))
    # What mmengine misses, counted by torch's dispatcher-level counter (it sees SDPA and the
    # rel-pos einsums) rather than summed from our own parts: exactly q k^T, attn @ v and the
    # rel-pos terms.
    counter = FlopCounterMode(display=False)
    # the math backend: torch's counter has no formula for the fused CPU attention kernel
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), counter:
        model(x)
    missed = counter.get_total_flops() // 2 - linear_conv
    assert missed == sum(r['macs_parts']['qk'] + r['macs_parts']['av']
                         + r['macs_parts']['rel_pos'] for r in ours.blocks) > 0
    assert ours.macs == linear_conv + missed


def test_lowrank_widths_are_counted():
    base = count_complexity(embed=48, blocks=[], input_size=(64, 64), patch_size=16,
                            pretrain_grid=(4, 4))
    assert base.params == 48 * 3 * 256 + 48 + 16 * 48
    from sidt_mmdet.models.complexity import BlockWidths
    blk = [BlockWidths(qk=[16] * 3, v=[16] * 3, mlp=192)]
    full = count_complexity(embed=48, blocks=blk, input_size=(64, 64), patch_size=16)
    lr = count_complexity(embed=48, blocks=blk, input_size=(64, 64), patch_size=16,
                          lowrank={'blocks.0.mlp.fc1': 8})
    assert full.params - lr.params == 48 * 192 - 8 * (48 + 192)


def test_mask_costs_shapes_and_ordering():
    model = SIDTViT(arch=TINY, img_size=64, mode='search', search_dims=('attn', 'mlp', 'embed'))
    costs = mask_costs(model, (64, 64))
    masks = model.mask_parameters()
    assert set(costs) == set(masks)
    for name, c in costs.items():
        assert c.shape == masks[name].shape and (c > 0).all()
    # an attention dim (q, k, v rows + proj column) costs more than an MLP unit here
    assert costs['blocks.0.attn.dim_mask'][0, 0] > costs['blocks.0.mlp.hidden_mask'][0]
    # by hand (docs/complexity.md, 4x4 grid: N = T = 16, D = 48, 192 hidden units): a shared
    # dim is its q, k, v rows and proj column (4 T D) plus q k^T and attn @ v (2 N^2); an MLP
    # unit 2 N D; an embedding channel the patch embedding (16 patches x 3 x 16^2) and per
    # block the qkv and proj (4 T D) and fc1/fc2 (2 N hidden)
    N, D = 16, 48
    for i in range(3):
        assert (costs[f'blocks.{i}.attn.dim_mask'] == 4 * N * D + 2 * N * N).all()
        assert (costs[f'blocks.{i}.mlp.hidden_mask'] == 2 * N * D).all()
    assert (costs['embed_mask'] == 16 * 3 * 256 + 3 * (4 * N * D + 2 * N * 192)).all()
