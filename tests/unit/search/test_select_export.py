"""Selection for a budget, physical export, the sparsity loss."""
import math

import pytest
import torch
from helpers import hard_mask_, perturb_

from sidt_mmdet.export import prune_backbone
from sidt_mmdet.models import SIDTViT, Subnet
from sidt_mmdet.models.complexity import backbone_complexity
from sidt_mmdet.search import SparsityLoss, select_subnet

TINY = dict(embed_dims=48, num_layers=3, num_heads=3)
D, d, L, H, HID = 48, 16, 3, 3, 192


def searched(seed=0, split=False, dims=('attn', 'mlp'), **kw):
    torch.manual_seed(seed)
    model = SIDTViT(arch=TINY, img_size=64, mode='search', split_qkv=split, search_dims=dims,
                    **kw)
    perturb_(model, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for m in model.mask_parameters().values():
            m.copy_(torch.rand(m.shape, generator=g) * torch.rand(m.shape, generator=g))
    return model.eval()


def test_keep_ratio_keeps_that_fraction_per_kind():
    model = searched()
    sub = select_subnet(model, keep_ratio=0.6, round_to=1, min_mlp=1)
    kept_attn = sum(len(q) for b in sub.blocks for q in b['v'])
    kept_mlp = sum(len(b['mlp']) for b in sub.blocks)
    assert kept_attn == round(0.6 * L * H * d)
    assert kept_mlp == round(0.6 * L * HID)
    widths = [len(b['mlp']) for b in sub.blocks]
    assert len(set(widths)) > 1, 'intrinsic widths differ per layer'
    # the kept dims are the largest |m| of their kind, pooled over all blocks
    score = [blk.mlp.hidden_mask.detach().abs() for blk in model.blocks]
    thr = min(float(score[i][j]) for i, b in enumerate(sub.blocks) for j in b['mlp'])
    dropped = [float(score[i][j]) for i, b in enumerate(sub.blocks)
               for j in set(range(HID)) - set(b['mlp'])]
    assert max(dropped) <= thr


def hand_macs(sub, size=(64, 64), window=0, global_blocks=(), rel_pos=False, patch=16):
    """docs/complexity.md written out, from the kept indices alone (heads without v dims are
    gone with their q/k dims). A window block pads the h x w grid to whole windows before the
    qkv projection: G windows of n = window^2 tokens, T = G * n tokens through attention;
    a global block has G = 1, n = T = N. Decomposed rel-pos: T * (k_h + k_w) per q/k dim."""
    hp, wp = math.ceil(size[0] / patch), math.ceil(size[1] / patch)
    N = hp * wp
    D = len(sub.kept_embed)
    total = N * D * 3 * patch * patch
    for i, b in enumerate(sub.blocks):
        if window and i not in global_blocks:
            G, n, kh, kw = math.ceil(hp / window) * math.ceil(wp / window), window ** 2, \
                window, window
        else:
            G, n, kh, kw = 1, N, hp, wp
        T = G * n
        active = [h for h, v in enumerate(b['v']) if v]
        s_qk = sum(len(b['qk'][h]) for h in active)
        s_v = sum(len(b['v'][h]) for h in active)
        total += (T * D * (2 * s_qk + s_v) + G * n * n * s_qk + G * n * n * s_v + T * s_v * D
                  + 2 * N * D * len(b['mlp']))
        if rel_pos:
            total += T * (kh + kw) * s_qk
    return total


# (model keywords, input size): global blocks only at the model's size; windows of 3 (the 4x4
# grid padded to 6x6, four windows) with rel-pos and one global block; the same on a 5x3
# grid (two windows, padded to 6x3)
LAYOUT_CASES = {
    'global': (dict(), (64, 64)),
    'windows': (dict(window_size=3, global_attn_indexes=[1], use_rel_pos=True), (64, 64)),
    'windows 5x3': (dict(window_size=3, global_attn_indexes=[1], use_rel_pos=True), (80, 48)),
}


def _hand_macs_of(sub, case):
    kw, size = LAYOUT_CASES[case]
    return hand_macs(sub, size, kw.get('window_size', 0), kw.get('global_attn_indexes', ()),
                     kw.get('use_rel_pos', False))


def test_hand_macs_of_the_dense_model():
    """The hand count agrees with docs/complexity.md's closed form for an unpruned global
    block (12 N D^2 + 2 N^2 D) and, for window blocks, with the sum written out once."""
    dense = Subnet.dense(D, L, H, HID)
    N = 16
    assert _hand_macs_of(dense, 'global') == L * (12 * N * D * D + 2 * N * N * D) + \
        N * D * 3 * 16 * 16
    # window blocks 0 and 2: T = 36 (4 windows of 9), rel-pos k_h = k_w = 3; global block 1
    window = 36 * D * 3 * D + 4 * 81 * 2 * D + 36 * D * D + 8 * N * D * D + 36 * 6 * D
    glob = 12 * N * D * D + 2 * N * N * D + 16 * 8 * D
    assert _hand_macs_of(dense, 'windows') == 2 * window + glob + N * D * 3 * 16 * 16


@pytest.mark.parametrize('granularity', ['dim', 'head_uniform'])
@pytest.mark.parametrize('case', list(LAYOUT_CASES))
@pytest.mark.parametrize('kind', ['params', 'flops'])
def test_budget_met_within_one_dimension(kind, case, granularity):
    """The target and the result are counted independently of the counter selection uses:
    params by the pruned model's numel, MACs by hand from docs/complexity.md (padded windows,
    rel-pos), at several targets. Catches a budget solved against a wrong cost model (e.g.
    without the attention matmuls, the window padding or the rel-pos terms, which would
    overshoot the real MACs), and a result further than one unit below the target."""
    kw, size = LAYOUT_CASES[case]
    model = searched(**kw)
    hp, wp = math.ceil(size[0] / 16), math.ceil(size[1] / 16)
    N = hp * wp
    if kind == 'params':
        dense = sum(p.numel() for n, p in model.named_parameters() if not n.endswith('_mask'))
    else:
        dense = _hand_macs_of(Subnet.dense(D, L, H, HID), case)
    # the most one selection unit can cost: a dim of one head ('dim') or of every head
    # ('head_uniform') in the dearest block, or one MLP unit
    per_head = H if granularity == 'head_uniform' else 1
    if kind == 'params':
        rel_rows = (2 * max(hp, wp) - 1) * 2 if kw.get('use_rel_pos') else 0
        one_unit = max(per_head * (3 * D + 3 + D + rel_rows), 2 * D + 1)
    else:
        w = kw.get('window_size', 0)
        costs = [4 * N * D + 2 * N * N + (N * (hp + wp) if kw.get('use_rel_pos') else 0)]
        if w:
            G = math.ceil(hp / w) * math.ceil(wp / w)
            costs.append(4 * G * w * w * D + 2 * G * w ** 4 + G * w * w * 2 * w)
        one_unit = max(per_head * max(costs), 2 * N * D)
    for frac in (0.5, 0.7, 0.9):
        target = int(frac * dense)
        sub = select_subnet(model, **{kind: target}, input_size=size, granularity=granularity,
                            round_to=1, min_mlp=1)
        pruned = prune_backbone(model, sub)
        got = (sum(p.numel() for p in pruned.parameters()) if kind == 'params'
               else _hand_macs_of(sub, case))
        assert got == sub.stats['params_after' if kind == 'params' else 'macs_after']
        assert got <= target
        assert target - got < one_unit, (frac, target - got, one_unit)


def test_rounding_and_minimums_never_empty_a_layer():
    """Widths are rounded *up* to a multiple of round_to (capped at the full width), after the
    minimums. With round_to=6 on heads of 16 dims and 192 MLP units, up, down and nearest give
    different widths, and the masks are set by hand so the count before rounding is known:
    a head with 7 kept dims gets 12 (down: 6), 13 and 15 get 16 (the cap), 5 gets 6 (down:
    0); the MLP's 50 and 94 get 54 and 96, and block 1, searched to nothing, gets one head
    with one dim -> 6 and min_mlp=8 -> 12 (down: 6)."""
    model = searched()
    big = {0: ({0: 7, 1: 13}, 50), 2: ({0: 11, 2: 5}, 94)}  # block: (head: dims, MLP units)
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for i, blk in enumerate(model.blocks):
            attn, hidden = blk.attn.dim_mask, blk.mlp.hidden_mask
            attn.copy_(torch.rand(attn.shape, generator=g) * 1e-3 + 1e-4)
            hidden.copy_(torch.rand(hidden.shape, generator=g) * 1e-3 + 1e-4)
            if i in big:
                for h, n in big[i][0].items():
                    attn[h, :n] = 1 + torch.rand(n, generator=g)
                hidden[:big[i][1]] = 1 + torch.rand(big[i][1], generator=g)
        model.blocks[1].attn.dim_mask.zero_()  # block 1 searched to nothing
        model.blocks[1].mlp.hidden_mask.zero_()
    # 36 of 144 attention dims and 144 of 576 MLP units are the large ones: keep exactly those
    sub = select_subnet(model, keep_ratio=0.25, round_to=6, min_mlp=8)
    assert [[len(v) for v in b['v']] for b in sub.blocks] == [[12, 16, 0], [6, 0, 0],
                                                             [12, 0, 6]]
    assert [b['qk'] for b in sub.blocks] == [b['v'] for b in sub.blocks]
    assert [len(b['mlp']) for b in sub.blocks] == [54, 12, 96]
    for i, (heads, units) in big.items():  # the rounding adds to the searched dims
        for h, n in heads.items():
            assert set(range(n)) <= set(sub.blocks[i]['v'][h])
        assert set(range(units)) <= set(sub.blocks[i]['mlp'])
    b1 = sub.blocks[1]
    assert sum(1 for v in b1['v'] if v) >= 1 and len(b1['mlp']) >= 8
    for b in sub.blocks:
        for dims in b['v']:
            assert len(dims) % 6 == 0 or len(dims) == d
        assert len(b['mlp']) % 6 == 0


@pytest.mark.parametrize('granularity', ['head_uniform', 'head'])
def test_granularities(granularity):
    sub = select_subnet(searched(), keep_ratio=0.5, granularity=granularity, round_to=1)
    for b in sub.blocks:
        widths = {len(v) for v in b['v']}
        if granularity == 'head_uniform':
            assert len(widths) == 1
        else:
            assert widths <= {0, d}


@pytest.mark.parametrize('granularity', ['dim', 'head_uniform', 'head'])
@pytest.mark.parametrize('split', [False, True])
def test_export_equals_hard_masked_supernet(granularity, split):
    model = searched(split=split, window_size=3, global_attn_indexes=[1], use_rel_pos=True)
    sub = select_subnet(model, keep_ratio=0.5, granularity=granularity, round_to=2)
    hard_mask_(model, sub)
    pruned = prune_backbone(model, sub).eval()
    x = torch.randn(2, 3, 70, 50)
    with torch.no_grad():
        assert (model(x)[0] - pruned(x)[0]).abs().max() <= 1e-5


def test_embedding_selection_and_export_shapes():
    model = searched(dims=('attn', 'mlp', 'embed'))
    sub = select_subnet(model, keep_ratio=0.5, round_to=8)
    assert len(sub.kept_embed) == 24
    pruned = prune_backbone(model, sub)
    assert pruned(torch.randn(1, 3, 64, 64))[0].shape == (1, 24, 4, 4)


def test_bad_budgets():
    model = searched()
    dense = backbone_complexity(model, (64, 64))
    for bad in (0, -0.1, 1.5):
        with pytest.raises(ValueError, match='keep_ratio: expected a value in \\(0, 1\\]'):
            select_subnet(model, keep_ratio=bad)
    with pytest.raises(ValueError, match='is above the dense model'):
        select_subnet(model, params=dense.params + 1)
    with pytest.raises(ValueError, match='below the smallest subnet'):
        select_subnet(model, flops=10)
    with pytest.raises(ValueError, match='exactly one budget'):
        select_subnet(model, keep_ratio=0.5, params=1000)
    with pytest.raises(ValueError, match='exactly one budget'):
        select_subnet(model)
    with pytest.raises(ValueError, match='granularity'):
        select_subnet(model, keep_ratio=0.5, granularity='channel')
    with pytest.raises(ValueError, match='no search masks'):
        select_subnet(SIDTViT(arch=TINY), keep_ratio=0.5)


def test_sparsity_loss_drives_masks_down():
    torch.manual_seed(0)
    model = SIDTViT(arch=TINY, img_size=32, patch_size=8, mode='search',
                    search_dims=('attn', 'mlp', 'embed'))
    loss_fn = SparsityLoss(lambda_attn=1e-2, lambda_mlp=1e-2, lambda_embed=1e-2,
                           macs_weighted=True, input_size=(32, 32))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0)
    x, target = torch.randn(4, 3, 32, 32), torch.randn(4, 48, 4, 4)
    first = None
    for _ in range(15):
        out = loss_fn(model)
        task = (model(x)[0] - target).square().mean()
        opt.zero_grad()
        (task + out['loss_sparsity']).backward()
        opt.step()
        first = first or {k: float(v) for k, v in out.items()}
    last = loss_fn(model)
    assert float(last['loss_sparsity']) < first['loss_sparsity']
    for kind in ('attn', 'mlp', 'embed'):
        assert float(last[f'sparsity_mean_abs_{kind}']) < first[f'sparsity_mean_abs_{kind}']
    with pytest.raises(ValueError, match='lambda_mlp: expected >= 0'):
        SparsityLoss(lambda_mlp=-1)
    with pytest.raises(ValueError, match='no search masks'):
        loss_fn(SIDTViT(arch=TINY))


@pytest.mark.parametrize('split', [False, True])
@pytest.mark.parametrize('weighted', [False, True])
def test_sparsity_loss_value_by_hand(split, weighted):
    """loss = lambda_attn*sum|m_attn| + lambda_mlp*sum|m_mlp| + lambda_embed*|m_embed|_1, each
    entry weighted (macs_weighted) by the MACs it costs divided by the mean cost of its
    kind. The costs are derived here from docs/complexity.md for a 4x4 grid (N = 16, D = 48):
    window blocks (3) pad to 4 windows of 9 tokens (T = 36), the global block has T = 16.
    A q/k dim costs its q and k rows (2*T*D), q k^T (windows * n^2) and its rel-pos rows
    (T * (k_h + k_w)); a v dim its v row and proj column (2*T*D) and attn @ v. Catches
    a missing abs, a lambda applied to the wrong kind, weights not normalised to mean 1
    (the loss would be ~6000x larger) or normalised over all kinds together."""
    model = SIDTViT(arch=TINY, img_size=64, mode='search', split_qkv=split, window_size=3,
                    global_attn_indexes=[1], use_rel_pos=True, search_dims=('attn', 'mlp', 'embed'))
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for m in model.mask_parameters().values():
            m.copy_(torch.rand(m.shape, generator=g) * 2 - 1)  # negative entries too
    lam = dict(attn=0.1, mlp=0.01, embed=0.001)
    loss = SparsityLoss(lambda_attn=lam['attn'], lambda_mlp=lam['mlp'], lambda_embed=lam['embed'],
                        macs_weighted=weighted, input_size=(64, 64))(model)['loss_sparsity']
    window = dict(qk=2 * 36 * D + 4 * 81 + 36 * (3 + 3), v=2 * 36 * D + 4 * 81)  # 3996, 3780
    glob = dict(qk=2 * 16 * D + 256 + 16 * (4 + 4), v=2 * 16 * D + 256)         # 1920, 1792
    costs = [window, glob, window]
    blocks = model.blocks
    if split:
        attn_terms = [(c['qk'], blk.attn.qk_mask) for c, blk in zip(costs, blocks)]
        attn_terms += [(c['v'], blk.attn.v_mask) for c, blk in zip(costs, blocks)]
        mean = (2 * 3996 + 1920 + 2 * 3780 + 1792) / 6
    else:
        attn_terms = [(c['qk'] + c['v'], blk.attn.dim_mask) for c, blk in zip(costs, blocks)]
        mean = (2 * 7776 + 3712) / 3
    want = 0.
    for cost, m in attn_terms:
        w = cost / mean if weighted else 1.
        want += lam['attn'] * w * float(m.abs().sum())
    # every MLP unit costs 2*N*D and every embedding channel the same: weights are all 1
    want += lam['mlp'] * sum(float(blk.mlp.hidden_mask.abs().sum()) for blk in blocks)
    want += lam['embed'] * float(model.embed_mask.abs().sum())
    assert float(loss) == pytest.approx(want, rel=1e-5)
