"""SparsityLoss on hand values: its defaults, its refusals, the MACs weights and every log
figure on a 20-entry mask whose quantiles and cut can be read off by hand."""
from __future__ import annotations

import logging

import pytest
import torch

from sidt_mmdet.models import SIDTViT
from sidt_mmdet.models.complexity import mask_costs
from sidt_mmdet.search import sparsity
from sidt_mmdet.search.sparsity import SparsityLoss

ARCH = dict(embed_dims=16, num_layers=2, num_heads=2, mlp_ratio=2.0)


def _search(**kw):
    return SIDTViT(arch=ARCH, patch_size=8, img_size=32, mode='search', window_size=2,
                   global_attn_indexes=[1], use_rel_pos=True, **kw)


def test_defaults_are_the_documented_ones():
    """Catches a changed default (configs that leave a key out rely on it): lambdas 1e-4 for
    attention and MLP and 0 for the embedding, no MACs weighting, keep threshold 0.05, no
    export ratio, no loss-free search."""
    loss = SparsityLoss()
    assert loss.lambdas == dict(attn=1e-4, mlp=1e-4, embed=0.)
    assert (loss.macs_weighted, loss.keep_threshold, loss.keep_ratio, loss.allow_zero,
            loss.input_size) == (False, 0.05, None, False, None)
    assert SparsityLoss(input_size=[64, 48]).input_size == (64, 48)


@pytest.mark.parametrize('kw,message', [
    (dict(lambda_attn=-1), 'lambda_attn: expected >= 0, got -1'),
    (dict(lambda_mlp=-0.5), 'lambda_mlp: expected >= 0, got -0.5'),
    (dict(lambda_embed=-2), 'lambda_embed: expected >= 0, got -2'),
    (dict(keep_threshold=-0.1), 'keep_threshold: expected a number >= 0, got -0.1'),
    (dict(keep_threshold='0.1'), "keep_threshold: expected a number >= 0, got '0.1'"),
    (dict(keep_ratio=0), 'keep_ratio: expected a number in (0, 1], got 0'),
    (dict(keep_ratio=1.5), 'keep_ratio: expected a number in (0, 1], got 1.5'),
])
def test_bad_settings_are_refused_by_name(kw, message):
    """Catches a refusal that names the wrong setting or the wrong range."""
    with pytest.raises(ValueError) as err:
        SparsityLoss(**kw)
    assert str(err.value) == message


def test_the_edges_of_the_ranges_are_accepted():
    """Catches an off-by-one range: keep_ratio 1 (export everything) and keep_threshold 0."""
    assert SparsityLoss(keep_ratio=1, keep_threshold=0).keep_ratio == 1


def test_macs_weights_are_the_costs_at_the_given_size_mean_one_per_kind():
    """Catches the weights taken at the backbone's own size when ``input_size`` is given, a
    kind of mask left unweighted, and a normalisation that is not per kind; at 64 px the
    window and global blocks cost in other proportions than at 32 px."""
    bb = _search(search_dims=('attn', 'mlp', 'embed'))
    weights = SparsityLoss(macs_weighted=True, input_size=(64, 64))._mask_weights(bb)
    assert set(weights) == set(bb.mask_parameters())
    costs = mask_costs(bb, (64, 64))
    for names in (['embed_mask'], [n for n in costs if n.endswith('hidden_mask')]):
        mean = torch.cat([costs[n].flatten() for n in names]).mean()
        for n in names:
            torch.testing.assert_close(weights[n], costs[n] / mean)
    attn = [n for n in costs if n.endswith(('dim_mask', 'qk_mask', 'v_mask'))]
    assert float(torch.cat([weights[n].flatten() for n in attn]).mean()) == pytest.approx(1.0)
    at_32 = SparsityLoss(macs_weighted=True)._mask_weights(bb)
    assert not torch.allclose(weights[attn[0]], at_32[attn[0]])


def test_weighted_loss_is_the_weighted_sum_of_abs_masks():
    """Catches the weights applied to the wrong entries or dropped: the loss is
    sum_kind lambda_kind * sum(w * |m|), computed here by hand from the weights."""
    bb = _search(search_dims=('attn', 'mlp'))
    with torch.no_grad():
        for i, m in enumerate(bb.mask_parameters().values()):
            m.copy_(torch.linspace(-1, 1, m.numel()).view_as(m) * (i + 1))
    loss = SparsityLoss(lambda_attn=2.0, lambda_mlp=3.0, macs_weighted=True)
    w = loss._mask_weights(bb)
    want = sum((3.0 if n.endswith('hidden_mask') else 2.0) * float((w[n] * m.abs()).sum())
               for n, m in bb.mask_parameters().items())
    assert float(loss(bb)['loss_sparsity']) == pytest.approx(want, rel=1e-6)


def test_no_masks_is_refused_with_the_mode_to_use():
    """Catches the refusal's text changing (it tells the user which mode to build)."""
    bb = SIDTViT(arch=ARCH, patch_size=8, img_size=32, mode='dense')
    with pytest.raises(ValueError) as err:
        SparsityLoss()(bb)
    assert str(err.value) == ("SparsityLoss: the backbone has no search masks "
                              "(build it with mode='search')")


def test_zero_lambdas_are_refused_or_warned_once(monkeypatch):
    """Catches a loss-free search running silently, a refusal that does not list the kinds
    and lambdas, and the warning of ``allow_zero`` repeated at every iteration or sent
    elsewhere than mmengine's current logger at WARNING."""
    bb = _search(search_dims=('attn', 'mlp'))
    what = ('model.sparsity has lambda_attn=0, lambda_mlp=0 for every kind of search mask the '
            'backbone has (attn, mlp): no sparsity loss, the masks move by the task gradient '
            'only')
    with pytest.raises(ValueError) as err:
        SparsityLoss(lambda_attn=0, lambda_mlp=0, lambda_embed=1e-4)(bb)
    assert str(err.value) == (f'SiDT search without a sparsity loss: {what}. Set a lambda > 0 '
                              '(e.g. lambda_attn=1e-4, lambda_mlp=1e-4), or '
                              'model.sparsity.allow_zero=True for a loss-free search on purpose')
    logged = []
    monkeypatch.setattr(sparsity, 'print_log', lambda msg, **kw: logged.append((msg, kw)))
    loss = SparsityLoss(lambda_attn=0, lambda_mlp=0, allow_zero=True)
    loss(bb)
    loss(bb)
    assert logged == [('SiDT search WITHOUT a sparsity loss (model.sparsity.allow_zero=True): '
                       f'{what}', dict(logger='current', level=logging.WARNING))]


V = torch.tensor([i * 0.05 for i in range(20)])  # 0, 0.05, ..., 0.95


@pytest.mark.parametrize('keep_ratio,cut,done', [
    (0.25, 0.70, 1 / 15),   # keeps 5 of 20: drops the 15 smallest, of which only 0 is < 0.05
    (0.01, 0.90, 1 / 19),   # keeps at least one entry: drops 19
    (1.0, 0.0, 1.0),        # drops nothing: no cut, nothing left to switch off
])
def test_log_figures_on_hand_values(keep_ratio, cut, done):
    """Catches an off-by-one in the kept fraction (> vs >= the threshold), the quantiles,
    the cut and the done fraction (< vs <= the threshold), and the values of the
    nothing-dropped case."""
    out = SparsityLoss(keep_ratio=keep_ratio).figures('mlp', V)
    assert float(out['sparsity_mean_abs_mlp']) == pytest.approx(0.475)
    assert float(out['sparsity_kept_mlp']) == pytest.approx(18 / 20)
    assert [round(float(out[f'sparsity_p{q}_mlp']), 4) for q in (10, 50, 90)] == [0.1, 0.5, 0.9]
    assert float(out['sparsity_cut_mlp']) == pytest.approx(cut)
    assert float(out['sparsity_done_mlp']) == pytest.approx(done)


def test_quantiles_of_two_entries_stay_in_range():
    """Catches a quantile index past the clamp to the last entry: of 2 entries p10 is the
    first, p50 and p90 the second (index min(n - 1, q * n // 100))."""
    out = SparsityLoss().figures('attn', torch.tensor([0.2, 0.6]))
    assert [float(out[f'sparsity_p{q}_attn']) for q in (10, 50, 90)] == \
        pytest.approx([0.2, 0.6, 0.6])
    assert 'sparsity_cut_attn' not in out
