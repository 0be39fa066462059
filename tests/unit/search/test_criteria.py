"""Baseline importance criteria on SiDT's units: same selection and export path as the masks,
and the same ranking as Torch-Pruning's importance classes on one block."""
from __future__ import annotations

import pytest
import torch
from helpers import perturb_

from sidt_mmdet.export import prune_backbone
from sidt_mmdet.models import SIDTViT
from sidt_mmdet.models.complexity import backbone_complexity
from sidt_mmdet.models.slicing import slice_vit_state_dict
from sidt_mmdet.search import select_subnet
from sidt_mmdet.search.criteria import (
    CRITERIA,
    accumulate_task_gradients,
    criterion_scores,
    magnitude_scores,
    random_scores,
    taylor_scores,
    uniform_scores,
)
from sidt_mmdet.search.select import UnitScores

pytestmark = pytest.mark.usefixtures('one_torch_thread')
TINY = dict(embed_dims=48, num_layers=3, num_heads=3)
SIZE = (32, 32)


def dense_vit(seed=0):
    torch.manual_seed(seed)
    model = SIDTViT(arch=TINY, img_size=32, patch_size=4, mode='dense')
    return perturb_(model, seed=seed, std=0.1)


def with_gradients(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(4, 3, *SIZE, generator=g)
    out = model(x)
    out = out[0] if isinstance(out, (tuple, list)) else out
    model.zero_grad()
    (out * torch.randn(out.shape, generator=g)).sum().backward()
    return model


def scores_for(name, model):
    if name == 'taylor':
        with_gradients(model)
    return criterion_scores(name, model, seed=1)


@pytest.mark.parametrize('name', CRITERIA)
@pytest.mark.parametrize('granularity', ['dim', 'head_uniform'])
def test_every_criterion_gives_a_valid_subnet_for_a_macs_budget(name, granularity):
    model = dense_vit()
    scores = scores_for(name, model)
    dense = backbone_complexity(model, SIZE)
    target = int(0.6 * dense.macs)
    sub = select_subnet(model, flops=target, input_size=SIZE, scores=scores,
                        granularity=granularity, round_to=4)
    assert sub.stats['macs_after'] <= target
    assert sub.stats['macs_after'] > 0.5 * dense.macs  # within a few units of the budget
    assert sub.budget['criterion'].startswith(name)
    # The export path: slice the dense weights, load them strictly, run and train.
    pruned = prune_backbone(model, sub)
    assert backbone_complexity(pruned, SIZE).macs == sub.stats['macs_after']
    rebuilt = SIDTViT(arch=TINY, img_size=32, patch_size=4, mode='pruned', subnet=sub)
    rebuilt.load_state_dict(slice_vit_state_dict(model.state_dict(), sub), strict=True)
    out = rebuilt(torch.randn(2, 3, *SIZE))
    out = out[0] if isinstance(out, (tuple, list)) else out
    out.sum().backward()
    assert all(p.grad is not None for p in rebuilt.parameters() if p.requires_grad)


def test_magnitude_is_the_sum_of_squares_over_the_unit_group():
    model = dense_vit()
    scores = magnitude_scores(model, normalize=False)
    blk = model.blocks[1]
    W, P = blk.attn.qkv.weight.detach(), blk.attn.proj.weight.detach()
    D, d = 48, 16
    h, j = 2, 5
    c = h * d + j
    want = sum(float(W[s * D + c].pow(2).sum()) for s in range(3)) + float(P[:, c].pow(2).sum())
    assert float(scores.qk[1][h, j]) == pytest.approx(want, rel=1e-6)
    u = 17
    fc1, fc2 = blk.mlp.fc1.weight.detach(), blk.mlp.fc2.weight.detach()
    want = float(fc1[u].pow(2).sum() + fc2[:, u].pow(2).sum())
    assert float(scores.mlp[1][u]) == pytest.approx(want, rel=1e-6)
    # normalisation divides each block's scores by their mean and keeps the order
    norm = magnitude_scores(model)
    torch.testing.assert_close(norm.mlp[1], scores.mlp[1] / scores.mlp[1].mean())


def test_taylor_needs_gradients_and_uses_them():
    model = dense_vit()
    with pytest.raises(ValueError, match='no gradient; run a backward pass'):
        taylor_scores(model)
    with_gradients(model)
    scores = taylor_scores(model, normalize=False)
    fc1, fc2 = model.blocks[0].mlp.fc1, model.blocks[0].mlp.fc2
    u = 3
    with torch.no_grad():
        want = float((fc1.weight[u] * fc1.weight.grad[u]).abs().sum()
                     + (fc2.weight[:, u] * fc2.weight.grad[:, u]).abs().sum())
    assert float(scores.mlp[0][u]) == pytest.approx(want, rel=1e-6)
    # normalised by default, like the magnitude criterion: each block over its mean
    torch.testing.assert_close(taylor_scores(model).mlp[0], scores.mlp[0] / scores.mlp[0].mean())


def test_random_is_seeded_and_uniform_keeps_equal_widths():
    model = dense_vit()
    a, b, c = random_scores(model, 0), random_scores(model, 0), random_scores(model, 1)
    assert all(torch.equal(x, y) for x, y in zip(a.mlp, b.mlp))
    assert not torch.equal(a.mlp[0], c.mlp[0])
    sub = select_subnet(model, keep_ratio=0.5, scores=uniform_scores(model), round_to=1,
                        min_mlp=1)
    assert {len(blk['mlp']) for blk in sub.blocks} == {96}
    assert {len(v) for blk in sub.blocks for v in blk['v']} == {8}
    # which units: the largest-magnitude ones of each layer
    mag = magnitude_scores(model, normalize=False)
    for i, blk in enumerate(sub.blocks):
        assert set(blk['mlp']) == set(torch.argsort(-mag.mlp[i])[:96].tolist())


def test_criterion_scores_pass_normalize_and_seed_through():
    """Catches ``criterion_scores`` or a criterion dropping ``normalize`` or ``seed`` (its
    default taking over) and the normalisation skipping a kind: normalised scores are each
    block's raw ones over their mean, for q/k and MLP alike, and ``random`` with seed s is
    torch.rand's draws, in block order, from a generator seeded s."""
    model = with_gradients(dense_vit())
    for name in ('magnitude', 'taylor'):
        raw = criterion_scores(name, model, normalize=False)
        for norm in (criterion_scores(name, model), criterion_scores(name, model,
                                                                     normalize=True)):
            for kind in ('qk', 'mlp'):
                for r, n in zip(getattr(raw, kind), getattr(norm, kind), strict=True):
                    assert not torch.allclose(r, n), (name, kind)
                    torch.testing.assert_close(n, r / r.mean())
    for seed in (0, 3):
        gen = torch.Generator().manual_seed(seed)
        qk = [torch.rand(3, 16, generator=gen) for _ in range(3)]
        mlp = [torch.rand(192, generator=gen) for _ in range(3)]
        drawn = [criterion_scores('random', model, seed=seed)]
        if seed == 0:
            drawn += [criterion_scores('random', model), random_scores(model)]
        for got in drawn:
            assert all(map(torch.equal, got.qk, qk)) and all(map(torch.equal, got.mlp, mlp))


def test_a_block_of_zero_scores_stays_zero_when_normalised():
    """Catches normalising by a mean of 0 (NaN scores, which rank nowhere): a block whose
    MLP weights are all 0 keeps scores of 0, the other blocks are still normalised."""
    model = dense_vit()
    with torch.no_grad():
        model.blocks[1].mlp.fc1.weight.zero_()
        model.blocks[1].mlp.fc2.weight.zero_()
    scores = magnitude_scores(model)
    assert torch.equal(scores.mlp[1], torch.zeros(192))
    assert float(scores.mlp[0].mean()) == pytest.approx(1.0)


def test_uniform_scores_are_one_minus_rank_over_n():
    """Catches a wrong rank score: within each head (and each MLP) the k-th largest
    magnitude gets 1 - k/n exactly (hand values on n = 16 and n = 192)."""
    model = dense_vit()
    mag = magnitude_scores(model, normalize=False)
    uni = uniform_scores(model)
    for got, m, n in ((uni.qk[2][1], mag.qk[2][1], 16), (uni.mlp[0], mag.mlp[0], 192)):
        want = torch.empty(n)
        want[torch.argsort(-m)] = torch.tensor([1 - k / n for k in range(n)])
        torch.testing.assert_close(got, want, rtol=0, atol=1e-7)
        assert got.dtype == torch.float32


def test_criteria_refuse_a_pruned_attention_layout():
    """Catches scoring a layout whose head dims are no longer H x d (rows would be summed
    into the wrong units): refused, with the modes the criteria take, when the q/k width
    alone or the v width alone differs from the dense one."""
    message = (r"^criteria score the dense layout: build the backbone in mode 'dense' or "
               r"'search', not 'pruned'$")
    for field in ('sum_qk', 'sum_v'):
        model = dense_vit()
        setattr(model.blocks[2].attn, field, 40)
        with pytest.raises(ValueError, match=message):
            magnitude_scores(model)


class _TaskModel(torch.nn.Module):
    """The three calls of an mmengine model that accumulate_task_gradients makes: loss
    ``x . w`` per batch (gradient: the batch's ``x``) and a sparsity term it must leave out."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
        self.u = torch.nn.Parameter(torch.tensor([3.0]))  # reached by the sparsity term only
        self.training_flags = []

    def data_preprocessor(self, batch, training):
        self.training_flags.append(training)
        return dict(inputs=batch['x'])

    def forward(self, inputs, mode):
        assert mode == 'loss', mode
        return {'loss_cls': (self.w * inputs).sum(),
                'loss_sparsity': 100 * self.w.pow(2).sum() + self.u.sum()}

    def parse_losses(self, losses):
        return sum(losses.values()), {}


def test_accumulate_task_gradients_sums_the_task_loss_of_the_first_batches():
    """Catches a stale gradient kept, the sparsity term included, one batch too many or too
    few, the preprocessor called outside training mode and a wrong count returned: the
    gradient is the sum of the first ``num_batches`` batches' ``x`` (hand values)."""
    batches = [dict(x=torch.tensor([float(i), 1.0])) for i in range(1, 5)]
    for num, want in ((1, [1.0, 1.0]), (3, [6.0, 3.0]), (9, [10.0, 4.0])):
        model = _TaskModel().eval()
        model.w.grad, model.u.grad = torch.tensor([50.0, 50.0]), torch.tensor([7.0])
        assert accumulate_task_gradients(model, iter(batches), num) == min(num, 4)
        assert model.u.grad is None  # no task gradient: none, not a stale or zero one
        assert model.training and model.training_flags == [True] * min(num, 4)
        assert model.w.grad.tolist() == want
    with pytest.raises(ValueError, match=r'^num_batches: expected >= 1, got 0$'):
        accumulate_task_gradients(_TaskModel(), iter(batches), 0)
    with pytest.raises(ValueError, match=r'^accumulate_task_gradients: the data loader '
                                         r'yielded no batch$'):
        accumulate_task_gradients(_TaskModel(), iter([]), 2)


def test_scores_of_the_wrong_shape_name_the_field():
    model = dense_vit()
    good = magnitude_scores(model)
    bad = UnitScores(qk=good.qk, v=good.v, mlp=[t[:10] for t in good.mlp])
    with pytest.raises(ValueError, match=r'scores.mlp\[0\]: expected shape \(192,\)'):
        select_subnet(model, keep_ratio=0.5, scores=bad)
    with pytest.raises(ValueError, match='criterion: expected one of'):
        criterion_scores('l1', model)
    with pytest.raises(ValueError, match='no search masks'):
        select_subnet(model, keep_ratio=0.5)


# ------------------------------------------------------------- against Torch-Pruning
class _Block(torch.nn.Module):
    """One SIDT block's MLP, as plain modules Torch-Pruning's dependency graph can trace."""

    def __init__(self, mlp):
        super().__init__()
        self.fc1, self.act, self.fc2 = mlp.fc1, torch.nn.GELU(), mlp.fc2

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class _Heads(torch.nn.Module):
    """One SIDT block's attention with q, k, v as separate Linears and the head dims laid out
    so that Torch-Pruning's group of ``v`` output channel c holds q/k/v row c and proj column c
    (element-wise products tie q and k to v)."""

    def __init__(self, attn):
        super().__init__()
        D = attn.qkv.in_features
        n = attn.sum_v
        self.q, self.k, self.v = (torch.nn.Linear(D, n) for _ in range(3))
        with torch.no_grad():
            for s, lin in enumerate((self.q, self.k, self.v)):
                lin.weight.copy_(attn.qkv.weight[s * n:(s + 1) * n])
                lin.bias.copy_(attn.qkv.bias[s * n:(s + 1) * n])
        self.proj = attn.proj

    def forward(self, x):
        return self.proj(self.q(x) * self.k(x) * self.v(x))


def _tp_scores(tp, module, layer, example, importance):
    graph = tp.DependencyGraph().build_dependency(module, example_inputs=example)
    group = graph.get_pruning_group(layer, tp.prune_linear_out_channels,
                                    idxs=list(range(layer.out_features)))
    return importance(group).detach()


def test_magnitude_and_taylor_rank_units_as_torch_pruning_does():
    tp = pytest.importorskip('torch_pruning', reason='Torch-Pruning is in the optional bench '
                             'group: pip install -e .[bench]')
    model = dense_vit()
    with_gradients(model)
    blk = model.blocks[1]
    ours = {'magnitude': magnitude_scores(model), 'taylor': taylor_scores(model)}
    theirs = {'magnitude': tp.importance.GroupMagnitudeImportance(p=2),
              'taylor': tp.importance.GroupTaylorImportance()}
    tokens = torch.randn(2, 5, 48)
    mlp, heads = _Block(blk.mlp), _Heads(blk.attn)
    for name in ('magnitude', 'taylor'):
        if name == 'taylor':  # Torch-Pruning reads the gradients stored on the same weights
            for lin in (heads.q, heads.k, heads.v):
                lin.weight.grad = None
            s = heads.q.weight.shape[0]
            grad = blk.attn.qkv.weight.grad
            for i, lin in enumerate((heads.q, heads.k, heads.v)):
                lin.weight.grad = grad[i * s:(i + 1) * s].clone()
        tp_mlp = _tp_scores(tp, mlp, mlp.fc1, tokens, theirs[name])
        assert torch.equal(torch.argsort(-tp_mlp, stable=True),
                           torch.argsort(-ours[name].mlp[1], stable=True)), name
        tp_attn = _tp_scores(tp, heads, heads.v, tokens, theirs[name])
        assert torch.equal(torch.argsort(-tp_attn, stable=True),
                           torch.argsort(-ours[name].qk[1].flatten(), stable=True)), name
