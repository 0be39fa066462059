import io
import math

import numpy as np
import pytest
import scipy.linalg
import torch
from torch import nn

from sidt_mmdet.export.lowrank import (
    METHODS,
    TARGETS,
    factorize,
    factorize_linear,
    lowrank_model,
    rank_for_energy,
    ranks_for_budget,
    relative_error,
    replaced_ranks,
)
from sidt_mmdet.models.layers.lowrank import (
    LowRankLinear,
    apply_lowrank_structure,
    worth_factorizing,
)

SHAPES = [(37, 23), (23, 37), (64, 64)]  # (out, in)
QR_LIKE = [m for m in METHODS if m != 'svd']



pytestmark = pytest.mark.usefixtures('one_torch_thread')

def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def decaying(out_f, in_f, seed=0, power=1.5, noise=1e-4, dtype=torch.float64):
    """Trained-looking weight: U diag(i^-power) V^T plus small dense noise."""
    g = gen(seed)
    k = min(out_f, in_f)
    u = torch.linalg.qr(torch.randn(out_f, k, generator=g, dtype=torch.float64)).Q
    v = torch.linalg.qr(torch.randn(in_f, k, generator=g, dtype=torch.float64)).Q
    s = torch.arange(1, k + 1, dtype=torch.float64) ** -power
    w = (u * s) @ v.T + noise * torch.randn(out_f, in_f, generator=g, dtype=torch.float64)
    return w.to(dtype)


class Attention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        x = nn.functional.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim, heads, hidden):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, hidden)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TinyViT(nn.Module):
    """timm naming (blocks.N.attn.qkv ...); ``head`` is a Linear no target matches."""

    def __init__(self, dim=48, heads=4, hidden=144, depth=2, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.blocks = nn.ModuleList(Block(dim, heads, hidden) for _ in range(depth))
        self.head = nn.Linear(dim, 10)
        with torch.no_grad():
            for i, (name, m) in enumerate(self.named_modules()):
                if any(name.endswith(t) for t in TARGETS):
                    m.weight.copy_(decaying(*m.weight.shape, seed=seed + i, noise=1e-5,
                                            dtype=torch.float32))

    def forward(self, x):
        for blk in self.blocks:
            x = blk(x)
        return self.head(x.mean(1))


@pytest.mark.parametrize('shape', SHAPES)
@pytest.mark.parametrize('method', METHODS)
def test_full_rank_reproduces_layer(method, shape):
    out_f, in_f = shape
    torch.manual_seed(0)
    linear = nn.Linear(in_f, out_f)
    low = factorize_linear(linear, min(shape), method, allow_full_rank=True, generator=gen())
    product = low.up.weight @ low.down.weight
    assert (product - linear.weight).abs().max() <= 1e-5
    x = torch.randn(5, in_f)
    assert (low(x) - linear(x)).abs().max() <= 1e-5
    assert low.up.weight.dtype == torch.float32
    a, b = factorize(linear.weight, min(shape), method, generator=gen())
    assert a.shape == (out_f, min(shape)) and b.shape == (min(shape), in_f)


@pytest.mark.parametrize('bias', [True, False])
def test_param_counts_exact(bias):
    for (out_f, in_f), rank in zip(SHAPES, (5, 11, 31), strict=True):
        low = factorize_linear(nn.Linear(in_f, out_f, bias=bias), rank, 'svd')
        n = sum(p.numel() for p in low.parameters())
        assert n == rank * (in_f + out_f) + (out_f if bias else 0)
        assert (low.in_features, low.out_features, low.rank) == (in_f, out_f, rank)
        assert f'rank={rank}' in repr(low)
        assert set(low.state_dict()) == {'down.weight', 'up.weight'} | (
            {'up.bias'} if bias else set())
    assert LowRankLinear(23, 37, np.int64(5)).rank == 5


def test_factorize_linear_keeps_dtype_and_mode():
    linear = nn.Linear(23, 37, dtype=torch.float64).eval()
    low = factorize_linear(linear, 7, 'qr_pivoted')
    assert low.down.weight.dtype == low.up.bias.dtype == torch.float64
    assert not low.training
    assert torch.equal(low.up.bias, linear.bias)



@pytest.mark.parametrize('shape', SHAPES)
def test_qr_pivoted_matches_lapack(shape):
    """Our torch pivoted QR picks the same columns as LAPACK geqp3 (via scipy, a pinned dev
    dependency: the test runs, it is never skipped)."""
    w = torch.randn(*shape, generator=gen(11), dtype=torch.float64)
    _, r_ref, perm_ref = scipy.linalg.qr(w.numpy(), mode='economic', pivoting=True)
    rank = min(shape) // 2
    a, b = factorize(w, rank, 'qr_pivoted')
    # B = R[:rank] with the columns put back; signs of Householder rows may differ.
    r = b[:, torch.from_numpy(perm_ref)]
    assert torch.allclose(r.abs(), torch.from_numpy(r_ref[:rank]).abs(), atol=1e-12)
    assert torch.allclose(a.T @ a, torch.eye(rank, dtype=torch.float64), atol=1e-12)

@pytest.mark.parametrize('kind', ['random', 'decaying'])
@pytest.mark.parametrize('shape', [(48, 96), (96, 48), (64, 64)])
def test_svd_is_best_eckart_young(kind, shape):
    """The SVD factorization reaches the Eckart-Young bound, computed from LAPACK's singular
    values (numpy): Frobenius error sqrt(sum of the discarded sigma_i^2), spectral error
    sigma_{r+1}. Catches a truncation that keeps the wrong singular triplets (e.g. the
    smallest, or an off-by-one), drops the singular values from the factors, or any other
    factorization standing in for the SVD; the other methods are never better."""
    w = (torch.randn(*shape, generator=gen(1), dtype=torch.float64) if kind == 'random'
         else decaying(*shape, seed=1))
    sigma = np.linalg.svd(w.numpy(), compute_uv=False)  # descending
    for rank in (1, 4, 16, 40):
        a, b = factorize(w, rank, 'svd')
        assert a.shape == (shape[0], rank) and b.shape == (rank, shape[1])
        residual = (w - a @ b).numpy()
        tail = math.sqrt(float(np.sum(sigma[rank:] ** 2)))
        assert np.linalg.norm(residual, 'fro') == pytest.approx(tail, rel=1e-9)
        assert np.linalg.norm(residual, 2) == pytest.approx(float(sigma[rank]), rel=1e-9)
        best = relative_error(w, a, b)
        assert best == pytest.approx(tail / float(np.linalg.norm(sigma)), rel=1e-9)
        for method in QR_LIKE:
            err = relative_error(w, *factorize(w, rank, method, generator=gen()))
            assert best <= err + 1e-12, (method, rank, best, err)


def test_decaying_spectrum_errors_are_small_and_ordered():
    w = decaying(96, 192, seed=2)
    err = {m: relative_error(w, *factorize(w, 24, m, generator=gen())) for m in METHODS}
    # arXiv 2308.10839's ordering: SVD best, the QR variants next, LU worst; pivoting and the
    # power-iterated sketch beat plain QR (stable over seeds at this size).
    assert err['svd'] < 0.03
    assert err['svd'] < err['qr_randomized'] < err['qr_pivoted'] < err['qr']
    assert max(err, key=err.get) == 'lu'


def test_qr_randomized_is_reproducible():
    w = decaying(64, 80, seed=3)
    a1, b1 = factorize(w, 10, 'qr_randomized', generator=gen(7))
    a2, b2 = factorize(w, 10, 'qr_randomized', generator=gen(7))
    assert torch.equal(a1, a2) and torch.equal(b1, b2)
    a3, _ = factorize(torch.randn(64, 80, generator=gen(4)), 10, 'qr_randomized',
                      generator=gen(8))
    a4, _ = factorize(torch.randn(64, 80, generator=gen(4)), 10, 'qr_randomized',
                      generator=gen(9))
    assert not torch.equal(a3, a4)


def test_rank_for_energy_on_known_spectrum():
    w = torch.diag(torch.tensor([4.0, 3.0, 2.0, 1.0]))  # sigma^2 = 16, 9, 4, 1 of 30
    assert rank_for_energy(w, 16 / 30 - 1e-9) == 1
    assert rank_for_energy(w, 0.54) == 2
    assert rank_for_energy(w, 25 / 30 - 1e-9) == 2
    assert rank_for_energy(w, 0.9) == 3
    assert rank_for_energy(w, 1.0) == 4
    w = decaying(40, 60, seed=5)
    ranks = [rank_for_energy(w, e) for e in (0.1, 0.5, 0.9, 0.99, 0.999, 1.0)]
    assert ranks == sorted(ranks) and ranks[0] == 1 and ranks[-1] == 40


def _budget_cost(weights, ranks):
    total = 0
    for name, w in weights.items():
        out_f, in_f = w.shape
        r = ranks[name]
        total += r * (in_f + out_f) if worth_factorizing(in_f, out_f, r) else in_f * out_f
    return total


def test_ranks_for_budget_meets_budget():
    weights = {'a': decaying(32, 96, seed=6), 'b': decaying(64, 64, seed=7, power=0.5),
               'c': torch.randn(48, 24, generator=gen(8), dtype=torch.float64)}
    minimum = 128 + 128 + 72
    dense = sum(w.numel() for w in weights.values())
    assert ranks_for_budget(weights, minimum) == {'a': 1, 'b': 1, 'c': 1}
    previous = 0
    for budget in (minimum, 1000, 2000, 4000, 6000, dense - 1, dense):
        ranks = ranks_for_budget(weights, budget)
        cost = _budget_cost(weights, ranks)
        assert previous <= cost <= budget
        previous = cost
    assert ranks_for_budget(weights, dense) == {'a': 32, 'b': 64, 'c': 24}
    assert ranks_for_budget(weights, minimum + 99, fixed_params=99) == {'a': 1, 'b': 1, 'c': 1}


def test_ranks_for_budget_prefers_energy_per_param():
    g = gen(9)
    u = torch.randn(64, 2, generator=g, dtype=torch.float64)
    low_rank = u @ torch.randn(2, 64, generator=g, dtype=torch.float64)
    flat = torch.randn(64, 64, generator=g, dtype=torch.float64)
    ranks = ranks_for_budget({'low': low_rank, 'flat': flat}, 12 * 128)
    # The second direction of the rank-2 layer is worth far more than any flat sigma.
    assert ranks['low'] == 2 and ranks['flat'] == 10


@pytest.mark.parametrize('method', METHODS)
def test_lowrank_model_energy_roundtrip_and_grads(method):
    model = TinyViT().eval()
    x = torch.randn(2, 9, 48, generator=gen(10))
    ref = model(x)
    report = lowrank_model(model, method, energy=0.999, generator=gen())
    assert set(report) == {f'blocks.{i}.{t}' for i in range(2) for t in TARGETS}
    assert all(e['replaced'] for e in report.values())
    for name, e in report.items():
        module = model.get_submodule(name)
        assert isinstance(module, LowRankLinear) and module.rank == e['rank']
        assert e['params_after'] == sum(p.numel() for p in module.parameters())
        assert e['params_after'] < e['params_before'] == e['in'] * e['out'] + e['out']
        assert 0 < e['rel_error'] < (0.05 if method == 'svd' else 0.2)
    assert isinstance(model.head, nn.Linear)
    out = model(x)
    assert (out - ref).abs().max() / ref.abs().max() < (0.02 if method == 'lu' else 5e-3)

    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    fresh = apply_lowrank_structure(TinyViT(seed=1), replaced_ranks(report)).eval()
    fresh.load_state_dict(state, strict=True)
    assert torch.equal(fresh(x), out)

    fresh.train()
    fresh(x).square().mean().backward()
    for name, p in fresh.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name



def test_mmengine_checkpoint_roundtrip(tmp_path):
    """Ranks in the checkpoint meta rebuild the structure; weights load strictly by name."""
    checkpoint = pytest.importorskip('mmengine.runner.checkpoint')
    model = TinyViT().eval()
    report = lowrank_model(model, 'svd', energy=0.99)
    meta = {'lowrank': {'method': 'svd', 'ranks': replaced_ranks(report)}}
    path = str(tmp_path / 'lowrank.pth')
    checkpoint.save_checkpoint({'state_dict': model.state_dict(), 'meta': meta}, path)
    ranks = torch.load(path, weights_only=True)['meta']['lowrank']['ranks']
    fresh = apply_lowrank_structure(TinyViT(seed=1), ranks).eval()
    checkpoint.load_checkpoint(fresh, path, strict=True)
    x = torch.randn(2, 5, 48, generator=gen(12))
    assert torch.equal(fresh(x), model(x))

def test_lowrank_model_budget_and_explicit_ranks():
    model = TinyViT()
    layers = {n: m for n, m in model.named_modules() if any(n.endswith(t) for t in TARGETS)}
    dense = sum(p.numel() for m in layers.values() for p in m.parameters())
    report = lowrank_model(model, 'svd', params_budget=dense // 2)
    after = sum(p.numel() for n in layers for p in model.get_submodule(n).parameters())
    assert after == sum(e['params_after'] for e in report.values()) <= dense // 2

    model = TinyViT()
    report = lowrank_model(model, 'qr', ranks={'blocks.0.attn.qkv': 4, 'blocks.1.mlp.fc2': 40})
    assert report['blocks.0.attn.qkv']['replaced']
    # 40 * (144 + 48) > 144 * 48: not worth it, left dense.
    assert not report['blocks.1.mlp.fc2']['replaced']
    assert isinstance(model.blocks[1].mlp.fc2, nn.Linear)
    assert replaced_ranks(report) == {'blocks.0.attn.qkv': 4}

    model = TinyViT()
    report = lowrank_model(model, 'svd', energy=1.0, targets=('mlp.fc1',))
    assert set(report) == {'blocks.0.mlp.fc1', 'blocks.1.mlp.fc1'}
    assert not any(e['replaced'] for e in report.values())


def test_worth_factorizing():
    assert worth_factorizing(64, 64, 31) and not worth_factorizing(64, 64, 32)
    assert worth_factorizing(768, 3072, 614) and not worth_factorizing(768, 3072, 615)


def test_bad_inputs():
    w = torch.randn(37, 23)
    linear = nn.Linear(23, 37)
    with pytest.raises(ValueError, match=r'rank must be an integer in \[1, 23\].*got 0'):
        factorize(w, 0, 'svd')
    with pytest.raises(ValueError, match=r'rank must be an integer in \[1, 23\].*got 24'):
        factorize(w, 24, 'svd')
    with pytest.raises(ValueError, match=r'rank must be an integer.*got 2.5'):
        factorize(w, 2.5, 'svd')
    with pytest.raises(ValueError, match=r'rank must be an integer.*got True'):
        factorize(w, True, 'svd')
    with pytest.raises(ValueError, match=r'rank must be an integer in \[1, 22\].*allow_full_rank'):
        factorize_linear(linear, 23, 'svd')
    with pytest.raises(ValueError, match=r'rank must be an integer in \[1, 22\].*got -1'):
        factorize_linear(linear, -1, 'svd')
    with pytest.raises(ValueError, match=r'rank must be an integer in \[1, 23\].*got 0'):
        LowRankLinear(23, 37, 0)
    with pytest.raises(ValueError, match='method must be one of svd, qr, qr_pivoted, qr_rows, '
                                         "qr_randomized, lu, svd_whitened; got 'cholesky'"):
        factorize(w, 3, 'cholesky')
    with pytest.raises(ValueError, match=r'weight must be a 2-D .* got shape \(3, 4, 5\)'):
        factorize(torch.randn(3, 4, 5), 1, 'svd')
    with pytest.raises(ValueError, match='oversample and power_iters must be >= 0'):
        factorize(w, 3, 'qr_randomized', oversample=-1)
    for energy in (0, -0.1, 1.5, math.nan):
        with pytest.raises(ValueError, match=r'energy must be in \(0, 1\], got'):
            rank_for_energy(w, energy)
        with pytest.raises(ValueError, match=r'energy must be in \(0, 1\], got'):
            lowrank_model(TinyViT(), 'svd', energy=energy)
    with pytest.raises(ValueError, match='params_budget=50 is below the minimum achievable 60'):
        ranks_for_budget({'a': torch.randn(30, 30)}, 50)
    with pytest.raises(ValueError, match='params_budget=10 is below the minimum achievable'):
        lowrank_model(TinyViT(), 'svd', params_budget=10)


def test_bad_model_inputs():
    model = TinyViT()
    with pytest.raises(ValueError, match="method must be one of .*; got 'SVD'"):
        lowrank_model(model, 'SVD', energy=0.9)
    with pytest.raises(ValueError, match='exactly one of energy, params_budget or ranks must be '
                                         'given, got none'):
        lowrank_model(model, 'svd')
    with pytest.raises(ValueError, match='exactly one .* got energy, params_budget'):
        lowrank_model(model, 'svd', energy=0.9, params_budget=1000)
    with pytest.raises(ValueError, match="targets must be a non-empty subset of attn.qkv, "
                                         "attn.proj, mlp.fc1, mlp.fc2; unknown: 'attn.q'"):
        lowrank_model(model, 'svd', energy=0.9, targets=('attn.q',))
    with pytest.raises(ValueError, match='no nn.Linear in Sequential has a name ending with'):
        lowrank_model(nn.Sequential(nn.Linear(4, 4)), 'svd', energy=0.9)
    with pytest.raises(ValueError, match="no module named 'blocks.7.attn.qkv' in TinyViT"):
        lowrank_model(model, 'svd', ranks={'blocks.7.attn.qkv': 3})
    with pytest.raises(ValueError, match=r"ranks\['blocks.0.attn.proj'\] must be an integer in "
                                         r'\[1, 47\].*got 48'):
        lowrank_model(model, 'svd', ranks={'blocks.0.attn.proj': 48})
    with pytest.raises(ValueError, match="no module named 'blocks.0.attn.qkvx' in TinyViT"):
        apply_lowrank_structure(model, {'blocks.0.attn.qkvx': 3})
    with pytest.raises(ValueError, match="module 'blocks.0.norm1' is a LayerNorm, expected "
                                         'nn.Linear'):
        apply_lowrank_structure(model, {'blocks.0.norm1': 3})
    with pytest.raises(ValueError, match=r"ranks\['blocks.0.attn.proj'\]=30 does not save "
                                         'parameters'):
        apply_lowrank_structure(model, {'blocks.0.attn.proj': 30})
    apply_lowrank_structure(model, {'blocks.0.attn.proj': 3})
    with pytest.raises(ValueError, match="'blocks.0.attn.proj' is a LowRankLinear, expected"):
        apply_lowrank_structure(model, {'blocks.0.attn.proj': 3})
