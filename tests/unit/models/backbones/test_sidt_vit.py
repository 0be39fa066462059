"""SIDTViT: equivalence with timm, the three modes, exact pruning, bad input."""
import copy
import importlib

import pytest
import timm
import torch
from helpers import build_pruned, hard_mask_, perturb_, random_masks_, subnet_from_masks

from sidt_mmdet.models import SIDTViT, Subnet, SubnetError

TINY = dict(embed_dims=48, num_layers=3, num_heads=3)  # head_dim 16


# ------------------------------------------------------------------ timm parity
@pytest.mark.parametrize('size', [(224, 224), (160, 256)])
def test_matches_timm_forward_features(tmp_path, size):
    ref = timm.create_model('vit_base_patch16_224', pretrained=False, num_classes=0,
                            embed_dim=48, depth=3, num_heads=3, dynamic_img_size=True)
    perturb_(ref.eval())
    path = tmp_path / 'timm_vit.pth'
    torch.save({'model': ref.state_dict()}, path)
    ours = SIDTViT(arch=TINY, with_cls_token=True, final_norm=True, out_type='featmap',
                   init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    ours.init_weights()
    ours.eval()
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        want = ref.forward_features(x)[:, 1:]
        got = ours(x)[0]
    h, w = size[0] // 16, size[1] // 16
    assert got.shape == (2, 48, h, w)
    assert (got.flatten(2).transpose(1, 2) - want).abs().max() <= 1e-4


def test_search_with_unit_masks_equals_dense():
    torch.manual_seed(0)
    dense = perturb_(SIDTViT(arch=TINY, window_size=4, global_attn_indexes=[1],
                             use_rel_pos=True)).eval()
    search = SIDTViT(arch=TINY, window_size=4, global_attn_indexes=[1], use_rel_pos=True,
                     mode='search', search_dims=('attn', 'mlp', 'embed')).eval()
    missing, unexpected = search.load_state_dict(dense.state_dict(), strict=False)
    assert set(missing) == set(search.mask_parameters()) and not unexpected
    x = torch.randn(2, 3, 96, 80)
    with torch.no_grad():
        assert torch.equal(dense(x)[0], search(x)[0])


def test_window_covering_the_map_equals_global():
    torch.manual_seed(0)
    glob = perturb_(SIDTViT(arch=TINY, img_size=64)).eval()
    win = SIDTViT(arch=TINY, img_size=64, window_size=4, global_attn_indexes=[]).eval()
    win.load_state_dict(glob.state_dict())
    x = torch.randn(1, 3, 64, 64)  # 4x4 grid == one window
    with torch.no_grad():
        assert (glob(x)[0] - win(x)[0]).abs().max() <= 1e-5


@pytest.mark.parametrize('mode', ['dense', 'search'])
def test_every_parameter_gets_a_gradient_odd_sizes(mode):
    torch.manual_seed(0)
    kw = dict(search_dims=('attn', 'mlp', 'embed')) if mode == 'search' else {}
    model = SIDTViT(arch=TINY, window_size=3, global_attn_indexes=[2], use_rel_pos=True,
                    img_size=64, mode=mode, drop_path_rate=0.1, **kw)
    perturb_(model)
    model.train()
    x = torch.randn(2, 3, 50, 70)  # 4x5 grid, not a multiple of the window
    out = model(x)[0]
    assert out.shape == (2, 48, 4, 5)
    out.square().mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
    if mode == 'search':
        assert len(model.mask_parameters()) == 2 * 3 + 1


def test_with_cp_same_gradients_and_really_recomputes(monkeypatch):
    """Catches ``with_cp`` ignored (no block would run twice, no checkpoint call) and a
    checkpointed path that changes the maths (outputs or gradients would differ)."""
    torch.manual_seed(0)
    kw = dict(arch=TINY, img_size=64, window_size=3, global_attn_indexes=[1], use_rel_pos=True,
              mode='search', search_dims=('attn', 'mlp', 'embed'))
    a = perturb_(SIDTViT(**kw)).train()
    b = SIDTViT(with_cp=True, **kw).train()
    b.load_state_dict(a.state_dict())
    module = importlib.import_module('sidt_mmdet.models.backbones.sidt_vit')
    real_checkpoint = module.checkpoint
    cp_calls = []

    def counting_checkpoint(fn, *args, **kwargs):
        cp_calls.append(fn)
        return real_checkpoint(fn, *args, **kwargs)

    monkeypatch.setattr(module, 'checkpoint', counting_checkpoint)
    x = torch.randn(2, 3, 64, 64)
    grads, runs = [], []
    for model in (a, b):
        calls = []
        # a pre-hook: the recomputation stops early, before a forward hook would run
        hooks = [blk.register_forward_pre_hook(lambda *_, c=calls: c.append(1))
                 for blk in model.blocks]
        out = model(x)[0]
        out.square().mean().backward()
        for h in hooks:
            h.remove()
        runs.append(len(calls))
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    assert cp_calls == list(b.blocks)  # every block of b went through checkpoint, a's none
    assert runs == [3, 6]  # with checkpointing each block's forward is re-run in backward
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=1e-5, atol=1e-7,
                                   msg=name)


def test_classification_outputs():
    model = SIDTViT(arch=TINY, img_size=32, patch_size=4, with_cls_token=True, final_norm=True,
                    out_type='cls_token')
    assert model(torch.randn(3, 3, 32, 32))[0].shape == (3, 48)
    model = SIDTViT(arch=TINY, img_size=32, patch_size=4, out_type='avg')
    assert model(torch.randn(3, 3, 33, 31))[0].shape == (3, 48)


@pytest.mark.parametrize('frozen', [0, 2])
def test_frozen_stages(frozen):
    """frozen_stages=N freezes the embeddings and blocks 0..N-1, also through train() and a
    backward pass. Catches freezing stopped after block 0, the position embedding or class
    token left trainable, and frozen blocks put back in training mode (drop path)."""
    model = SIDTViT(arch=TINY, img_size=64, with_cls_token=True, frozen_stages=frozen,
                    drop_path_rate=0.1)
    model.train()
    model(torch.randn(1, 3, 64, 64))[0].sum().backward()
    frozen_prefixes = ('patch_embed.', 'pos_embed', 'cls_token') + tuple(
        f'blocks.{i}.' for i in range(frozen))
    for name, p in model.named_parameters():
        is_frozen = name.startswith(frozen_prefixes)
        assert p.requires_grad != is_frozen, name
        assert (p.grad is None) == is_frozen, name
    assert [blk.training for blk in model.blocks] == [i >= frozen for i in range(3)]
    assert not model.patch_embed.training


# ------------------------------------------------------------- exact pruning
@pytest.mark.parametrize('split_qkv', [False, True])
@pytest.mark.parametrize('rel_pos', [False, True])
def test_pruned_equals_hard_masked_supernet(split_qkv, rel_pos):
    torch.manual_seed(0)
    kw = dict(arch=TINY, img_size=64, window_size=3, global_attn_indexes=[1],
              use_rel_pos=rel_pos)
    search = SIDTViT(mode='search', split_qkv=split_qkv, **kw)
    perturb_(search)
    random_masks_(search, seed=1)
    subnet = subnet_from_masks(search)
    hard_mask_(search, subnet)
    widths = subnet.widths()
    assert any(len(set(w['qk'])) > 1 for w in widths), 'test needs unequal heads'
    pruned = build_pruned(search, subnet, **kw)
    assert not pruned.mask_parameters()
    x = torch.randn(2, 3, 70, 50)
    search.eval(), pruned.eval()
    with torch.no_grad():
        diff = (search(x)[0] - pruned(x)[0]).abs().max()
    assert diff <= 1e-5


class KeptChannelsLayerNorm(torch.nn.Module):
    """The LayerNorm a pruned model computes: statistics over the kept channels only."""

    def __init__(self, norm, kept):
        super().__init__()
        self.norm = norm
        self.register_buffer('kept', torch.as_tensor(kept))

    def forward(self, x):
        k = x.index_select(-1, self.kept)
        mean = k.mean(-1, keepdim=True)
        var = k.var(-1, unbiased=False, keepdim=True)
        return (x - mean) / torch.sqrt(var + self.norm.eps) * self.norm.weight + self.norm.bias


@pytest.mark.parametrize('final_norm', [False, True])
def test_embedding_pruning_is_exact_up_to_layernorm_statistics(final_norm):
    """With every LayerNorm of the hard-masked supernet taking its statistics over the kept
    channels, the pruned model must equal it exactly: the embedding mask folds into every
    write to and read from the residual stream. Catches a fold missed on any of them
    (patch embedding, position embedding, class token, attn.proj, fc2, norm weights), which
    a loose bound on the gap would let through. With the stock LayerNorm the gap must be
    real (the reason the retrain stage exists)."""
    torch.manual_seed(0)
    kw = dict(arch=TINY, img_size=64, final_norm=final_norm, with_cls_token=final_norm)
    search = SIDTViT(mode='search', search_dims=('attn', 'mlp', 'embed'), **kw)
    perturb_(search)
    random_masks_(search, seed=2, zero_frac=0.25)
    subnet = subnet_from_masks(search)
    hard_mask_(search, subnet)
    kept = subnet.kept_embed
    assert 0 < len(kept) < 48
    pruned = build_pruned(search, subnet, **kw).eval()
    assert pruned.out_channels == len(kept)
    x = torch.randn(2, 3, 64, 80)
    with torch.no_grad():
        b = pruned(x)[0]
        stock_gap = (search.eval()(x)[0][:, kept] - b).abs().max()
        for blk in search.blocks:
            blk.norm1 = KeptChannelsLayerNorm(blk.norm1, kept)
            blk.norm2 = KeptChannelsLayerNorm(blk.norm2, kept)
        if final_norm:
            search.norm = KeptChannelsLayerNorm(search.norm, kept)
        a = search(x)[0][:, kept]
    assert b.shape == (2, len(kept), 4, 5)
    assert (a - b).abs().max() <= 1e-5
    assert stock_gap > 1e-3


def hand_params(D, patch, in_ch, n_pos, blocks, qkv_bias=True, rel=None, final_norm=False):
    """docs/complexity.md, plus embeddings and (optionally) rel-pos tables."""
    total = D * in_ch * patch * patch + D + n_pos * D
    for s_qk, s_v, h in blocks:
        total += D * (2 * s_qk + s_v) + (2 * s_qk + s_v) * qkv_bias + s_v * D + D
        total += 2 * D * h + h + D + 4 * D
    if rel:
        total += rel
    return total + 2 * D * final_norm


def test_pruned_parameter_count_is_exact():
    d = 16
    blocks = [
        dict(qk=[list(range(5)), list(range(16)), [0, 3]], v=[list(range(7)), [], [1, 2, 3]],
             mlp=list(range(0, 192, 3))),
        dict(qk=[[], list(range(8)), list(range(16))], v=[[4], list(range(8)), list(range(16))],
             mlp=[5, 6]),
        dict(qk=[list(range(d))] * 3, v=[list(range(d))] * 3, mlp=list(range(192))),
    ]
    embed = list(range(0, 48, 2))
    subnet = Subnet(48, 3, 3, 192, blocks=blocks, embed=embed)
    model = SIDTViT(arch=TINY, img_size=64, mode='pruned', subnet=subnet)
    D = len(embed)
    # head 1 of block 0 has no v: its q/k dims go too.
    per_block = [(5 + 2, 7 + 3, 64), (0 + 8 + 16, 1 + 8 + 16, 2), (48, 48, 192)]
    want = hand_params(D, 16, 3, 16, per_block)
    assert sum(p.numel() for p in model.parameters()) == want
    # with relative positions: union of kept q/k columns per block, (2S-1) rows each
    model = SIDTViT(arch=TINY, img_size=64, mode='pruned', subnet=subnet, use_rel_pos=True)
    unions = [len({0, 1, 2, 3, 4} | {0, 3}), len(set(range(16))), 16]
    want_rel = sum(2 * (2 * 4 - 1) * u for u in unions)
    assert sum(p.numel() for p in model.parameters()) == want + want_rel


def test_subnet_roundtrip_and_pruned_from_path(tmp_path):
    sub = Subnet.dense(48, 3, 3, 192)
    sub.blocks[0]['mlp'] = [1, 2, 3]
    path = tmp_path / 'subnet.json'
    sub.save(path)
    again = Subnet.load(path)
    assert again.to_dict() == sub.to_dict()
    model = SIDTViT(arch=TINY, mode='pruned', subnet=str(path))
    assert model.blocks[0].mlp.hidden_features == 3


# ------------------------------------------------------------------ bad input
def test_bad_arguments():
    with pytest.raises(ValueError, match="arch: unknown 'gigantic'"):
        SIDTViT(arch='gigantic')
    with pytest.raises(ValueError, match='num_heads=5 does not divide embed_dims=48'):
        SIDTViT(arch=dict(embed_dims=48, num_layers=2, num_heads=5))
    with pytest.raises(ValueError, match='mode: expected one of'):
        SIDTViT(arch=TINY, mode='slim')
    with pytest.raises(ValueError, match="needs subnet"):
        SIDTViT(arch=TINY, mode='pruned')
    with pytest.raises(ValueError, match='search_dims: unknown'):
        SIDTViT(arch=TINY, mode='search', search_dims=('ffn',))
    with pytest.raises(ValueError, match='class token'):
        SIDTViT(arch=TINY, with_cls_token=True, window_size=4, global_attn_indexes=[0])


def test_bad_subnets(tmp_path):
    sub = Subnet.dense(48, 2, 3, 192).to_dict()
    with pytest.raises(SubnetError, match='num_layers: subnet has 2, model has 3'):
        SIDTViT(arch=TINY, mode='pruned', subnet=sub)
    bad = copy.deepcopy(Subnet.dense(48, 3, 3, 192).to_dict())
    bad['blocks'][1]['qk'][0] = [0, 16]
    with pytest.raises(SubnetError, match=r'blocks\[1\].qk\[0\]: indices must lie in \[0, 16\)'):
        SIDTViT(arch=TINY, mode='pruned', subnet=bad)
    bad = copy.deepcopy(Subnet.dense(48, 3, 3, 192).to_dict())
    bad['blocks'] = bad['blocks'][:2]
    with pytest.raises(SubnetError, match='expected 3 blocks'):
        Subnet.from_dict(bad)
    bad = Subnet.dense(48, 3, 3, 192).to_dict()
    bad['version'] = 99
    with pytest.raises(SubnetError, match='unknown subnet version 99'):
        Subnet.from_dict(bad)
    bad = Subnet.dense(48, 3, 3, 192).to_dict()
    bad['blocks'][0]['v'] = [[], [], []]
    with pytest.raises(SubnetError, match=r'blocks\[0\]: keeps no attention head'):
        Subnet.from_dict(bad)
    path = tmp_path / 'broken.json'
    path.write_text('{"format": "sidt-subnet", ')
    with pytest.raises(SubnetError, match='broken.json: not valid JSON'):
        Subnet.load(path)


def test_checkpoint_of_another_arch_lists_mismatches(tmp_path):
    other = timm.create_model('vit_base_patch16_224', pretrained=False, num_classes=0,
                              embed_dim=64, depth=3, num_heads=4)
    path = tmp_path / 'other.pth'
    torch.save(other.state_dict(), path)
    model = SIDTViT(arch=TINY, init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    with pytest.raises(ValueError, match=r'(?s)shape mismatches:.*blocks\.0\.attn\.qkv\.weight: '
                                         r'checkpoint \(192, 64\) vs model \(144, 48\)'):
        model.init_weights()
