"""select_subnet on scores chosen so that the subnet can be worked out by hand: which units a
keep ratio takes, in which order ties go, how empty layers get their minimum head, how widths
round up, equal heads, head_uniform and whole-head units, and the kinds left unscored.

The backbone has 2 blocks of 2 heads of 8 dims and MLPs of 32 units. Scores (q/k and v
shared):

- block 0: head 0 dims 0..7 score 16..9, head 1 dims 0..7 score 0.01..0.08;
- block 1: head 0 scores 0.3 but dim 5 scores 0.6 (head mean 0.3375), head 1 scores 0.5 on
  every dim (a tie: the lower dim first);
- MLP: block 0 unit u scores u, block 1 unit u scores 32 - u.
"""
from __future__ import annotations

import pytest
import torch

from sidt_mmdet.models import SIDTViT
from sidt_mmdet.search import select_subnet
from sidt_mmdet.search.select import UnitScores

ALL = list(range(8))


def _backbone():
    return SIDTViT(arch=dict(embed_dims=16, num_layers=2, num_heads=2, mlp_ratio=2.0),
                   patch_size=8, img_size=32, mode='search')


def _scores(embed=None, mlp=True):
    b0 = torch.stack([torch.arange(16., 8., -1), torch.arange(1., 9.) / 100])
    b1 = torch.stack([torch.full((8,), 0.3), torch.full((8,), 0.5)])
    b1[0, 5] = 0.6
    mlp_scores = [torch.arange(32.), 32 - torch.arange(32.)] if mlp else []
    return UnitScores(qk=[b0, b1], v=[b0, b1], mlp=mlp_scores, embed=embed)


def _select(keep_ratio, **kw):
    kw.setdefault('round_to', 1)
    sub = select_subnet(_backbone(), keep_ratio=keep_ratio, scores=kw.pop('scores', _scores()),
                        **kw)
    return [(b['qk'], b['v'], b['mlp']) for b in sub.blocks], sub


def test_dim_units_pooled_over_blocks_with_the_minimum_head():
    """Catches units ranked the wrong way or per block instead of pooled, the MLP ties not
    broken towards the lower block, an empty block left empty, its minimum head chosen by
    another score than the head's mean q/k + v score (head 1 here, not head 0 or the lower
    index), and more than its one best dim given (the lowest of the tied dims)."""
    blocks, sub = _select(0.25)  # 8 of 32 attention units, 16 of 64 MLP units
    assert blocks[0] == ([ALL, []], [ALL, []], list(range(24, 32)))
    # MLP: 32 (block 1 unit 0), then 31..25 in both blocks, then the tie at 24: block 0 first
    assert blocks[1] == ([[], [0]], [[], [0]], list(range(8)))
    assert sub.embed is None


def test_kept_widths_round_up():
    """Catches rounding down (block 1's one dim would become none) or to the nearest: with
    round_to=4 block 1's head 1 keeps its 4 best dims, ties taken in dim order."""
    blocks, _ = _select(0.25, round_to=4)
    assert blocks[0][:2] == ([ALL, []], [ALL, []])
    assert blocks[1][:2] == ([[], [0, 1, 2, 3]], [[], [0, 1, 2, 3]])


@pytest.mark.parametrize('equal_heads', [False, True])
def test_equal_heads_give_every_live_head_the_widest_width(equal_heads):
    """Catches equal_heads ignored, applied to a head with no dims, or filled with other
    dims than the head's best: at keep 0.375 (12 units) block 1 keeps dim 5 of head 0 and
    the tied dims 0, 1, 2 of head 1; with equal heads head 0 grows to its 3 best dims."""
    blocks, _ = _select(0.375, equal_heads=equal_heads)
    head0 = [0, 1, 5] if equal_heads else [5]
    assert blocks[1][:2] == ([head0, [0, 1, 2]], [head0, [0, 1, 2]])
    assert blocks[0][:2] == ([ALL, []], [ALL, []])


def test_min_heads_two_fills_the_second_head_by_its_scores():
    """Catches min_heads counted off by one or filled with the wrong head: with min_heads=2
    block 0's head 1 gets its best dim (7), block 1 both heads' best dims."""
    blocks, _ = _select(0.25, min_heads=2)
    assert blocks[0][:2] == ([ALL, [7]], [ALL, [7]])
    assert blocks[1][:2] == ([[5], [0]], [[5], [0]])


def test_head_uniform_units_take_the_jth_best_dim_of_every_head():
    """Catches head_uniform ranking dims the wrong way or across heads: 4 of its 16 units
    (the best four ranks of block 0) keep dims 0..3 of head 0 and 7..4 of head 1."""
    blocks, _ = _select(0.25, granularity='head_uniform')
    assert blocks[0][:2] == ([[0, 1, 2, 3], [4, 5, 6, 7]], [[0, 1, 2, 3], [4, 5, 6, 7]])
    assert blocks[1][:2] == ([[], [0]], [[], [0]])


def test_head_units_keep_whole_heads_by_their_mean():
    """Catches whole-head units scored by other than their mean, or kept partly: 2 of the 4
    heads, block 0 head 0 (12.5) and block 1 head 1 (0.5, above head 0's 0.3375)."""
    blocks, _ = _select(0.5, granularity='head')
    assert blocks[0][:2] == ([ALL, []], [ALL, []])
    assert blocks[1][:2] == ([[], ALL], [[], ALL])


def test_unscored_kinds_are_kept_whole_and_embedding_scores_select_channels():
    """Catches an unscored MLP cut (or emptied) and embedding scores ignored: without MLP
    scores every unit stays; with embedding scores 0..15 a quarter keeps channels 12..15."""
    blocks, sub = _select(0.25, scores=_scores(embed=torch.arange(16.), mlp=False))
    assert [b[2] for b in blocks] == [list(range(32))] * 2
    assert sub.embed == [12, 13, 14, 15]


def test_scores_that_do_not_fit_are_refused_by_field():
    """Catches a refusal naming the wrong field of the scores, or no field."""
    good = _scores()
    cases = [
        (UnitScores(qk=good.qk[:1], v=good.v[:1], mlp=good.mlp),
         'scores.qk: expected 2 blocks, got 1'),
        (UnitScores(qk=good.qk, v=[good.v[0], good.v[1][:, :4]], mlp=good.mlp),
         'scores.v[1]: expected shape (2, 8), got (2, 4)'),
        (UnitScores(qk=good.qk, v=[], mlp=good.mlp),
         'scores: qk and v must both be given or both be empty'),
        (UnitScores(qk=good.qk, v=good.v, mlp=good.mlp, embed=torch.ones(8)),
         'scores.embed: expected shape (16,), got (8,)'),
        (UnitScores(qk=[], v=[], mlp=[]),
         'scores: no unit to select (no attention, MLP or embedding scores)'),
    ]
    for scores, message in cases:
        with pytest.raises(ValueError) as err:
            select_subnet(_backbone(), keep_ratio=0.5, scores=scores)
        assert str(err.value) == message
    dense = SIDTViT(arch=dict(embed_dims=16, num_layers=2, num_heads=2, mlp_ratio=2.0),
                    patch_size=8, img_size=32, mode='dense')
    with pytest.raises(ValueError) as err:
        select_subnet(dense, keep_ratio=0.5)
    assert str(err.value) == ('backbone has no search masks: build it with mode="search" and '
                              'load the searched checkpoint (mask parameters *_mask), or pass '
                              'scores= (sidt_mmdet.search.criteria)')


def test_defaults_are_recorded_in_the_budget():
    """Catches a changed default of select_subnet (export configs that leave a setting out
    rely on it) or a budget record that does not say what was used."""
    sub = select_subnet(_backbone(), keep_ratio=0.25, scores=_scores())
    assert sub.budget == dict(kind='keep_ratio', value=0.25, granularity='dim', round_to=8,
                              min_heads=1, min_mlp=8, input_size=[32, 32], macs='kept',
                              layout='grouped', equal_heads=False, criterion='mask')
    assert sub.stats['input_size'] == [32, 32] and sub.stats['layout'] == 'grouped'


@pytest.mark.parametrize('kw,message', [
    (dict(), 'give exactly one budget: keep_ratio, params, flops, latency or latency_ms '
             '(got none)'),
    (dict(keep_ratio=0.5, params=10), "give exactly one budget: keep_ratio, params, flops, "
                                      "latency or latency_ms (got ['keep_ratio', 'params'])"),
    (dict(keep_ratio=0.5, granularity='row'),
     "granularity: expected one of ('dim', 'head_uniform', 'head'), got 'row'"),
    (dict(keep_ratio=0.5, round_to=0), 'round_to: expected an integer >= 1, got 0'),
    (dict(keep_ratio=0.5, macs='all'), "macs: expected one of ('kept', 'executed'), got 'all'"),
    (dict(keep_ratio=0.5, min_mlp=0),
     'min_heads and min_mlp must be >= 1: a layer is never emptied'),
    (dict(keep_ratio=True), 'keep_ratio: expected a finite number, got True'),
    (dict(keep_ratio=float('nan')), 'keep_ratio: expected a finite number, got nan'),
    (dict(keep_ratio=1.5), 'keep_ratio: expected a value in (0, 1], got 1.5'),
    (dict(params=-1), 'params: expected a positive target, got -1'),
    (dict(latency=0.5), 'latency_table goes with a latency or latency_ms budget, and they '
                        'need one'),
])
def test_bad_budgets_are_refused_by_name(kw, message):
    """Catches each refusal of select_subnet naming the wrong setting, range or budgets."""
    with pytest.raises(ValueError) as err:
        select_subnet(_backbone(), scores=_scores(), **kw)
    assert str(err.value) == message
