"""The pruned attention layout: exact against the hard-masked supernet for every granularity
and layout, no activation gathers per forward, caches that follow the parameters."""
import pytest
import torch
from helpers import build_pruned, hard_mask_, perturb_, random_masks_, subnet_from_masks
from torch.overrides import TorchFunctionMode

from sidt_mmdet.export import prune_backbone
from sidt_mmdet.models import SIDTViT
from sidt_mmdet.search import select_subnet

pytestmark = pytest.mark.usefixtures('one_torch_thread')

TINY = dict(embed_dims=48, num_layers=3, num_heads=3)  # head_dim 16
VITDET = dict(arch=TINY, img_size=64, window_size=3, global_attn_indexes=[1])


def searched(split=False, dims=('attn', 'mlp'), seed=0, **kw):
    torch.manual_seed(seed)
    model = SIDTViT(mode='search', split_qkv=split, search_dims=dims, **{**VITDET, **kw})
    perturb_(model, seed=seed)
    random_masks_(model, seed=seed + 1)
    return model.eval()


@pytest.mark.parametrize('layout', ['grouped', 'padded'])
@pytest.mark.parametrize('granularity', ['dim', 'head_uniform', 'head'])
@pytest.mark.parametrize('split', [False, True])
@pytest.mark.parametrize('rel_pos', [True, False])
def test_layouts_equal_hard_masked_supernet(layout, granularity, split, rel_pos):
    model = searched(split=split, use_rel_pos=rel_pos)
    sub = select_subnet(model, keep_ratio=0.5, granularity=granularity, round_to=2)
    hard_mask_(model, sub)
    pruned = SIDTViT(mode='pruned', subnet=sub, pruned_layout=layout, use_rel_pos=rel_pos,
                     **VITDET)
    pruned.load_state_dict(prune_backbone(model, sub).state_dict())
    pruned.eval()
    x = torch.randn(2, 3, 70, 50)  # 5x4 grid: windows padded, global blocks off-size
    with torch.no_grad():
        want = model(x)[0]
        assert (want - pruned(x)[0]).abs().max() <= 1e-5
        assert (want - pruned(x)[0]).abs().max() <= 1e-5  # second call: cached weights


def test_unequal_heads_run_in_groups_and_uniform_v_heads_are_exact():
    model = searched(split=True, use_rel_pos=True, seed=3)
    sub = subnet_from_masks(model)
    # block 0: head 0 keeps v dims but no q/k dims (it attends uniformly)
    sub.blocks[0]['qk'][0] = []
    sub.blocks[0]['v'][0] = [1, 4, 5]
    sub.blocks[0]['qk'][1] = list(range(7))
    sub.blocks[0]['v'][1] = list(range(7))
    sub = type(sub).from_dict(sub.to_dict())
    hard_mask_(model, sub)
    for layout in ('grouped', 'padded'):
        pruned = build_pruned(model, sub, split_qkv=True, use_rel_pos=True,
                              pruned_layout=layout, **VITDET).eval()
        attn = pruned.blocks[0].attn
        if layout == 'grouped':
            assert len(attn.groups) == len({(a, b) for a, b in zip(attn.qk_dims, attn.v_dims)})
        else:
            assert len(attn.groups) == 1
        x = torch.randn(1, 3, 64, 48)
        with torch.no_grad():
            assert (model(x)[0] - pruned(x)[0]).abs().max() <= 1e-5


class _Recorder(TorchFunctionMode):
    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.calls.append((func, args))
        return func(*args, **(kwargs or {}))


def _gathers(calls):
    """Index-driven ops: index_select/gather/take, or subscripting with an index tensor."""
    out = []
    for func, args in calls:
        name = getattr(func, '__name__', str(func))
        if name in ('index_select', 'gather', 'take', 'take_along_dim', 'index'):
            out.append(name)
        elif name == '__getitem__':
            idx = args[1] if isinstance(args[1], tuple) else (args[1],)
            if any(isinstance(i, torch.Tensor) for i in idx):
                out.append(name)
    return out


@pytest.mark.parametrize('layout', ['grouped', 'padded'])
def test_pruned_forward_gathers_nothing_once_packed(layout):
    model = searched(use_rel_pos=True)
    sub = select_subnet(model, keep_ratio=0.5, round_to=1)
    assert any(len(set(w['qk'])) > 1 for w in sub.widths()), 'test needs unequal heads'
    pruned = build_pruned(model, sub, use_rel_pos=True, pruned_layout=layout, **VITDET).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        with _Recorder() as first:
            pruned(x)
        with _Recorder() as second:
            pruned(x)
    assert _gathers(first.calls), 'the first forward packs the weights (sanity check)'
    assert _gathers(second.calls) == []
    linears = [f for f, _ in second.calls if getattr(f, '__name__', '') == 'linear']
    sdpa = [f for f, _ in second.calls
            if getattr(f, '__name__', '') == 'scaled_dot_product_attention']
    calls = sum(len(b.attn.groups) for b in pruned.blocks)
    assert len(sdpa) == calls
    assert len(linears) == 4 * len(pruned.blocks)  # qkv, proj, fc1, fc2


def test_cache_follows_parameter_changes():
    model = searched(use_rel_pos=True)
    sub = select_subnet(model, keep_ratio=0.5, round_to=1)
    pruned = prune_backbone(model, sub).eval()
    fresh = prune_backbone(model, sub).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        pruned(x)  # fills the caches
        for p in pruned.parameters():
            p.mul_(1.1)  # in place: same storage, new version
        fresh.load_state_dict(pruned.state_dict())
        assert torch.equal(pruned(x)[0], fresh(x)[0])
        state = {k: v * 0.9 for k, v in pruned.state_dict().items()}
        pruned.load_state_dict(state)
        fresh.load_state_dict(state)
        assert torch.equal(pruned(x)[0], fresh(x)[0])
        pruned.double()
        fresh.double()
        assert torch.equal(pruned(x.double())[0], fresh(x.double())[0])
        # through .data (no version bump), as EMA hooks swap weights, then eval()
        state = {k: v * 1.2 for k, v in pruned.state_dict().items()}
        for name, p in pruned.named_parameters():
            p.data.copy_(state[name])
        pruned.eval()
        fresh.load_state_dict(state)
        assert torch.equal(pruned(x.double())[0], fresh(x.double())[0])


def test_training_reaches_the_compact_parameters():
    model = searched(use_rel_pos=True)
    sub = select_subnet(model, keep_ratio=0.5, round_to=1)
    grads = {}
    for layout in ('grouped', 'padded'):
        pruned = build_pruned(model, sub, use_rel_pos=True, pruned_layout=layout, **VITDET)
        pruned.train()
        with torch.no_grad():  # an eval forward first must not leave stale weights
            pruned.eval()(torch.randn(1, 3, 64, 64))
        pruned.train()
        out = pruned(torch.randn(2, 3, 50, 70, generator=torch.Generator().manual_seed(0)))[0]
        out.square().mean().backward()
        grads[layout] = {n: p.grad.clone() for n, p in pruned.named_parameters()}
        assert all(g is not None and torch.isfinite(g).all() for g in grads[layout].values())
        assert all(g.abs().sum() > 0 for g in grads[layout].values())
    for name, g in grads['grouped'].items():
        assert torch.allclose(g, grads['padded'][name], atol=1e-6), name


def test_embedding_pruned_layouts_agree():
    model = searched(dims=('attn', 'mlp', 'embed'), use_rel_pos=True)
    sub = select_subnet(model, keep_ratio=0.5, round_to=1)
    assert sub.embed is not None
    a = build_pruned(model, sub, use_rel_pos=True, pruned_layout='grouped', **VITDET).eval()
    b = build_pruned(model, sub, use_rel_pos=True, pruned_layout='padded', **VITDET).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        out = a(x)[0]
        assert out.shape == (1, len(sub.kept_embed), 4, 4)
        assert (out - b(x)[0]).abs().max() <= 1e-5


def test_bad_layout():
    with pytest.raises(ValueError, match="layout: expected one of \\('grouped', 'padded'\\)"):
        SIDTViT(arch=TINY, pruned_layout='gathered')


@pytest.mark.parametrize('granularity', ['dim', 'head_uniform', 'head'])
def test_exact_after_mmengine_checkpoint_round_trip(tmp_path, granularity):
    from mmengine.runner import load_checkpoint

    from sidt_mmdet.utils import save_checkpoint_atomic
    model = searched(split=granularity == 'dim', use_rel_pos=True)
    sub = select_subnet(model, keep_ratio=0.5, granularity=granularity, round_to=2)
    hard_mask_(model, sub)
    pruned = prune_backbone(model, sub).eval()
    x = torch.randn(1, 3, 70, 50)
    with torch.no_grad():
        pruned(x)  # caches filled before saving must not leak into the file
    path, sub_path = tmp_path / 'pruned.pth', tmp_path / 'subnet.json'
    save_checkpoint_atomic({'state_dict': pruned.state_dict(), 'meta': {'iter': 1}}, path)
    sub.save(sub_path)
    kw = dict(use_rel_pos=True, split_qkv=granularity == 'dim', **VITDET)
    # mmengine's loader (safe loading installed by sidt_mmdet) and our init_cfg path
    again = SIDTViT(mode='pruned', subnet=str(sub_path), **kw)
    load_checkpoint(again, str(path), strict=True)
    by_init = SIDTViT(mode='pruned', subnet=str(sub_path),
                      init_cfg=dict(type='Pretrained', checkpoint=str(path)), **kw)
    by_init.init_weights()
    with torch.no_grad():
        want = model(x)[0]
        for m in (again.eval(), by_init.eval()):
            assert (want - m(x)[0]).abs().max() <= 1e-5
    assert set(torch.load(path, weights_only=True)['state_dict']) == set(pruned.state_dict())


def test_repr_shows_the_widths_and_calls_of_a_packed_layout():
    """Catches the module repr (what print(model) and mmengine's log show) losing the
    per-head widths of a pruned layer or calling a dense one packed."""
    from sidt_mmdet.models.layers.attention import SIDTAttention

    dense = SIDTAttention(48, 3, mask='shared')
    assert dense.extra_repr() == 'heads=3, head_dim=16, uniform, mask=shared'
    pruned = SIDTAttention(48, 3, qk_dims=[16, 8, 8], v_dims=[16, 8, 4])
    assert pruned.extra_repr() == (f'heads=3, head_dim=16, qk_dims=[16, 8, 8], '
                                   f'v_dims=[16, 8, 4], layout=grouped, '
                                   f'calls={len(pruned.groups)}, mask=None')
    assert len(pruned.groups) > 1
