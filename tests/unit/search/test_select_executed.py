"""Budgets on executed MACs (padding counted) and kept MACs; equalised head widths."""
import warnings

import pytest
import torch
from helpers import perturb_

from sidt_mmdet.export import prune_backbone
from sidt_mmdet.models import SIDTViT, Subnet
from sidt_mmdet.models.complexity import backbone_complexity, head_groups
from sidt_mmdet.search import select_subnet

pytestmark = pytest.mark.usefixtures('one_torch_thread')

TINY = dict(embed_dims=48, num_layers=3, num_heads=3)
D, H, N = 48, 3, 16  # 64 px, patch 16


def searched(seed=0):
    torch.manual_seed(seed)
    model = SIDTViT(arch=TINY, img_size=64, mode='search')
    perturb_(model, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for m in model.mask_parameters().values():
            m.copy_(torch.rand(m.shape, generator=g))
    return model.eval()


def test_head_groups():
    assert head_groups([8, 16, 8], [8, 16, 8]) == [((1,), 16, 16), ((0, 2), 8, 8)]
    assert head_groups([8, 16, 8], [8, 4, 8], 'padded') == [((0, 1, 2), 16, 8)]
    assert head_groups([0, 4], [4, 4]) == [((1,), 4, 4), ((0,), 0, 4)]
    with pytest.raises(ValueError, match='layout: expected one of'):
        head_groups([1], [1], 'gathered')


def hand_executed_macs(sub, layout):
    """docs/complexity.md "Two MAC figures", from the kept indices alone (global blocks,
    N = 16 tokens): ``grouped`` runs each active head at its own widths (the kept MACs);
    ``padded`` runs every active head of a block at the block's widest q/k and v widths, so
    its q/k/v rows, projection columns and both attention matmuls count the padding."""
    D_kept = len(sub.kept_embed)
    total = N * D_kept * 3 * 16 * 16
    for b in sub.blocks:
        active = [h for h, v in enumerate(b['v']) if v]
        qk = [len(b['qk'][h]) for h in active]
        v = [len(b['v'][h]) for h in active]
        if layout == 'padded':
            qk, v = [max(qk)] * len(active), [max(v)] * len(active)
        s_qk, s_v = sum(qk), sum(v)
        total += (N * D_kept * (2 * s_qk + s_v) + N * N * (s_qk + s_v) + N * s_v * D_kept
                  + 2 * N * D_kept * len(b['mlp']))
    return total


@pytest.mark.parametrize('layout', ['padded', 'grouped'])
def test_executed_budget_met_within_one_unit(layout):
    """Executed-MACs budgets, the result counted by hand from the kept indices and the layout
    (not by the counter selection uses), the exported model and the one built from config +
    subnet file counted alike. Catches padding left out of the executed count (the budget
    would be overshot) and a result further than one unit below the target."""
    model = searched()
    dense = backbone_complexity(model, (64, 64))
    assert dense.macs == hand_executed_macs(Subnet.dense(D, 3, H, 4 * D), 'grouped')
    # One attention dim, executed: when it widens the layer's widest head every head of the
    # padded layout grows by one (q, k, v rows + proj column + both attention matmuls).
    one_unit = H * (3 * N * D + N * D + 2 * N * N)
    for frac in (0.45, 0.6, 0.8):
        target = int(frac * dense.macs)
        sub = select_subnet(model, flops=target, macs='executed', layout=layout, round_to=1,
                            min_mlp=1)
        got = sub.stats['macs_executed_after']
        assert got == hand_executed_macs(sub, layout)
        assert sub.stats['macs_after'] == hand_executed_macs(sub, 'grouped')
        assert got <= target
        assert target - got < one_unit
        assert sub.stats['macs_after'] <= got
        assert sub.budget['macs'] == 'executed' and sub.budget['layout'] == layout
        # the export, and a backbone built from the subnet alone, run the layout it records
        for built in (prune_backbone(model, sub),
                      SIDTViT(arch=TINY, img_size=64, mode='pruned', subnet=sub),
                      SIDTViT(arch=TINY, img_size=64, mode='pruned', subnet=sub,
                              pruned_layout=layout)):
            assert built.blocks[0].attn.layout == layout
            rep = backbone_complexity(built, (64, 64))
            assert (rep.macs, rep.macs_executed) == (sub.stats['macs_after'], got)
        grouped = SIDTViT(arch=TINY, img_size=64, mode='pruned', subnet=sub,
                          pruned_layout='grouped')  # an explicit layout overrides the file's
        rep = backbone_complexity(grouped, (64, 64))
        assert rep.macs == rep.macs_executed == sub.stats['macs_after']
    kept = select_subnet(model, flops=int(0.6 * dense.macs), layout='padded', round_to=1)
    executed = select_subnet(model, flops=int(0.6 * dense.macs), macs='executed',
                             layout='padded', round_to=1)
    assert executed.stats['macs_executed_after'] <= kept.stats['macs_executed_after']
    assert kept.stats['macs_executed_after'] == hand_executed_macs(kept, 'padded')


def test_grouped_layout_executes_the_kept_macs():
    sub = select_subnet(searched(), keep_ratio=0.5, round_to=1)
    assert sub.stats['macs_executed_after'] == sub.stats['macs_after']
    padded = select_subnet(searched(), keep_ratio=0.5, round_to=1, layout='padded')
    assert padded.stats['macs_executed_after'] > padded.stats['macs_after']
    assert padded.blocks == sub.blocks  # the layout changes the count, not the choice


@pytest.mark.parametrize('split', [False, True])
def test_equal_heads(split):
    torch.manual_seed(0)
    model = SIDTViT(arch=TINY, img_size=64, mode='search', split_qkv=split)
    with torch.no_grad():
        for m in model.mask_parameters().values():
            m.uniform_(0, 1)
    plain = select_subnet(model, keep_ratio=0.5, round_to=1)
    equal = select_subnet(model, keep_ratio=0.5, round_to=1, equal_heads=True)
    assert equal.budget['equal_heads'] is True
    for a, b in zip(plain.blocks, equal.blocks):
        widths_qk = {len(q) for q, v in zip(b['qk'], b['v']) if v}
        widths_v = {len(v) for v in b['v'] if v}
        assert len(widths_qk) == 1 and len(widths_v) == 1
        assert max(len(v) for v in a['v']) == widths_v.pop()  # the widest head's width
        for h in range(H):  # only ever adds dims
            assert set(a['qk'][h]) <= set(b['qk'][h]) and set(a['v'][h]) <= set(b['v'][h])
    pruned = prune_backbone(model, equal)
    assert all(len(blk.attn.groups) == 1 for blk in pruned.blocks)
    with pytest.raises(ValueError, match="macs_count: expected one of \\('kept', 'executed'\\)"):
        select_subnet(model, keep_ratio=0.5, macs_count='padded')
    with pytest.raises(ValueError, match="macs_count: expected one of"):  # the older name
        select_subnet(model, keep_ratio=0.5, macs='padded')


def test_kinds_select_the_mlp_alone_as_an_mlp_only_search_would():
    """``kinds=('mlp',)`` gives the subnet an MLP-only search backbone with the same weights
    and MLP masks selects (what the low-rank hybrid built before), attention and embedding
    kept whole."""
    torch.manual_seed(0)
    model = SIDTViT(arch=TINY, img_size=64, mode='search', search_dims=('attn', 'mlp', 'embed'))
    with torch.no_grad():
        for m in model.mask_parameters().values():
            m.uniform_(0, 1)
    view = model.to_search(dims=('mlp',))
    view.load_state_dict({k: v for k, v in model.state_dict().items()
                          if k in view.state_dict()}, strict=True)
    for budget in (dict(keep_ratio=0.4), dict(macs=int(0.8 * backbone_complexity(
            model, (64, 64)).macs))):
        got = select_subnet(model, kinds=('mlp',), round_to=1, **budget)
        want = select_subnet(view, round_to=1, **budget)
        assert got.blocks == want.blocks and got.embed is None and got.stats == want.stats
        assert all(len(q) == D // H for b in got.blocks for q in b['qk'] + b['v'])
        assert sum(len(b['mlp']) for b in got.blocks) < 3 * 4 * D
    with pytest.raises(ValueError, match=r"kinds: unknown \['heads'\]; expected a subset of "
                                         r"\('attn', 'mlp', 'embed'\)"):
        select_subnet(model, keep_ratio=0.5, kinds=('heads',))


def test_older_names_warn_once_and_select_the_same(monkeypatch):
    from sidt_mmdet.utils import deprecation
    monkeypatch.setattr(deprecation, '_WARNED', set())
    model = searched()
    target = int(0.6 * backbone_complexity(model, (64, 64)).macs)
    with pytest.warns(FutureWarning, match='select_subnet: flops= is deprecated, use macs='):
        old = select_subnet(model, flops=target, round_to=1)
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # the second use is silent
        again = select_subnet(model, flops=target, round_to=1)
        new = select_subnet(model, macs=target, round_to=1)
    assert old.blocks == again.blocks == new.blocks and new.budget['kind'] == 'macs'
