"""Selection for a budget, physical export, the sparsity loss."""
import pytest
import torch
from helpers import hard_mask_, perturb_

from sidt_mmdet.export import prune_backbone
from sidt_mmdet.models import SIDTViT
from sidt_mmdet.search import SparsityLoss, select_subnet
from sidt_mmdet.utils.complexity import backbone_complexity

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


@pytest.mark.parametrize('kind', ['params', 'flops'])
def test_budget_met_within_one_dimension(kind):
    model = searched()
    dense = backbone_complexity(model, (64, 64))
    N = 16
    target = int(0.7 * (dense.params if kind == 'params' else dense.macs))
    sub = select_subnet(model, **{kind: target}, round_to=1, min_mlp=1)
    got = sub.stats['params_after'] if kind == 'params' else sub.stats['macs_after']
    one_dim = (3 * D + 3 + D) if kind == 'params' else (3 * N * D + 2 * N * N + N * D)
    assert got <= target
    assert target - got < one_dim
    pruned = prune_backbone(model, sub)
    assert sub.stats['params_after'] == sum(p.numel() for p in pruned.parameters())


def test_rounding_and_minimums_never_empty_a_layer():
    model = searched()
    with torch.no_grad():  # block 1 searched to nothing
        model.blocks[1].attn.dim_mask.zero_()
        model.blocks[1].mlp.hidden_mask.zero_()
    sub = select_subnet(model, keep_ratio=0.3, round_to=8, min_mlp=8)
    b1 = sub.blocks[1]
    assert sum(1 for v in b1['v'] if v) >= 1 and len(b1['mlp']) >= 8
    for b in sub.blocks:
        for dims in b['v']:
            assert len(dims) % 8 == 0 or len(dims) == d
        assert len(b['mlp']) % 8 == 0


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
