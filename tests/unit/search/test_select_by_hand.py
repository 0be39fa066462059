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
    assert sub.budget == dict(kind='keep_ratio', value=0.25, granularity='dim',
                              head_widths='free', round_to=8,
                              min_heads=1, min_mlp=8, input_size=[32, 32], macs='kept',
                              layout='grouped', equal_heads=False, criterion='mask')
    assert sub.stats['input_size'] == [32, 32] and sub.stats['layout'] == 'grouped'


@pytest.mark.parametrize('kw,message', [
    (dict(), 'give exactly one budget: keep_ratio, params, macs, latency or latency_ms '
             '(got none)'),
    (dict(keep_ratio=0.5, params=10), "give exactly one budget: keep_ratio, params, macs, "
                                      "latency or latency_ms (got ['keep_ratio', 'params'])"),
    (dict(macs=10, flops=10), 'give macs or its older name flops, not both'),
    (dict(keep_ratio=0.5, head_widths='wide'),
     "head_widths: expected one of ('free', 'uniform', 'equal', 'padded'), got 'wide'"),
    (dict(keep_ratio=0.5, head_widths='free', equal_heads=True),
     "head_widths='free' conflicts with the older spelling of ['equal'] (granularity / "
     "equal_heads / layout): give one"),
    (dict(keep_ratio=0.5, granularity='row'),
     "granularity: expected one of ('dim', 'head_uniform', 'head'), got 'row'"),
    (dict(keep_ratio=0.5, round_to=0), 'round_to: expected an integer >= 1, got 0'),
    (dict(keep_ratio=0.5, macs='all'),
     "macs_count: expected one of ('kept', 'executed'), got 'all'"),
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


def _params(sub):
    return sub.stats['params_after']


def test_a_params_budget_walks_the_same_chain_as_the_keep_ratio():
    """Catches the chain of a params/MACs budget giving units to kinds out of step (the
    kind whose kept fraction is lowest gets the next unit), starting from other than the
    per-layer minimums, or not returning the largest subnet within the budget: the params
    of the keep-0.25 subnet (8 of 32 attention and 16 of 64 MLP units, one step of the
    chain) as a target give that same subnet, and the params of the smallest subnet the
    minimums allow give that one."""
    for ratio in (0.125, 0.25, 0.5, 0.75, 0.001):  # 0.001: the per-layer minimums alone
        _, want = _select(ratio, min_mlp=1)
        _, got = _select(None, params=_params(want), min_mlp=1)
        assert got.blocks == want.blocks, ratio
        assert _params(got) == _params(want)
    _, smallest = _select(0.001, min_mlp=1)
    with pytest.raises(ValueError) as err:
        _select(None, params=_params(smallest) - 1, min_mlp=1)
    assert str(err.value) == (f'params={_params(smallest) - 1:,} is below the smallest subnet '
                              f'the per-layer minimums allow ({_params(smallest):,})')


def test_the_dense_size_is_a_budget_and_above_it_is_refused():
    """Catches the dense model's own size refused (nothing pruned is a valid answer), a
    target above it accepted, and a target of 0 let through to the minimums' refusal."""
    _, full = _select(1.0)
    dense = full.stats['params_before']
    assert _params(full) == dense
    _, got = _select(None, params=dense)
    assert got.blocks == full.blocks
    for value, message in ((dense + 1, f'params={dense + 1:,} is above the dense model '
                                       f'({dense:,}); nothing would be pruned'),
                           (0, 'params: expected a positive target, got 0')):
        with pytest.raises(ValueError) as err:
            _select(None, params=value)
        assert str(err.value) == message


def test_a_macs_target_counts_kept_or_executed_macs_as_asked():
    """Catches ``macs`` ignored: in the padded layout unequal heads execute more MACs than
    they keep, so the same target keeps more under ``'kept'`` than under ``'executed'``,
    each within the target by its own count."""
    full = _select(1.0)[1].stats
    target = int(0.7 * full['macs_before'])
    kept = _select(None, flops=target, layout='padded', macs='kept')[1].stats
    executed = _select(None, flops=target, layout='padded', macs='executed')[1].stats
    assert kept['macs_after'] <= target < kept['macs_executed_after']
    assert executed['macs_executed_after'] <= target
    assert executed['macs_after'] < kept['macs_after']


def test_the_embedding_minimum_defaults_to_the_heads_or_the_rounding():
    """Catches the embedding minimum's default (the larger of round_to and the head count):
    a keep ratio that selects no channel keeps the 2 best (2 heads), or 4 at round_to=4."""
    for round_to, want in ((1, [14, 15]), (4, [12, 13, 14, 15])):
        _, sub = _select(0.001, scores=_scores(embed=torch.arange(16.)), round_to=round_to)
        assert sub.embed == want


def test_split_masks_select_qk_and_v_on_their_own():
    """Catches split q/k and v scores pooled into one kind (or lost under another name):
    with q/k and v scores whose heads of block 0 are swapped, a quarter selects head 0's
    q/k dims and head 1's v dims, and head 0's q/k dims go with it (a head without v dims
    outputs zero); block 1's minimum head gets its best v dim only; whole-head units
    average the two scores (both heads of block 0 tie at 6.27 and come first)."""
    bb = SIDTViT(arch=dict(embed_dims=16, num_layers=2, num_heads=2, mlp_ratio=2.0),
                 patch_size=8, img_size=32, mode='search', split_qkv=True)
    qk = _scores()
    v = [qk.qk[0].flip(0), qk.qk[1]]
    scores = UnitScores(qk=qk.qk, v=v, mlp=qk.mlp)
    sub = select_subnet(bb, keep_ratio=0.25, scores=scores, round_to=1)
    assert (sub.blocks[0]['qk'], sub.blocks[0]['v']) == ([[], []], [[], ALL])
    assert (sub.blocks[1]['qk'], sub.blocks[1]['v']) == ([[], []], [[], [0]])
    heads = select_subnet(bb, keep_ratio=0.5, scores=scores, round_to=1, granularity='head')
    assert (heads.blocks[0]['qk'], heads.blocks[0]['v']) == ([ALL, ALL], [ALL, ALL])
    assert (heads.blocks[1]['qk'], heads.blocks[1]['v']) == ([[], ALL], [[], ALL])


def test_stats_record_the_costs_before_and_after():
    """Catches a missing or misnamed figure of the subnet's stats: the dense and kept
    params (the dense one is the backbone's own parameter count) and MACs, at the size and
    in the layout selected for."""
    bb = _backbone()
    sub = select_subnet(bb, keep_ratio=0.25, scores=_scores(), input_size=(32, 64))
    assert set(sub.stats) == {'params_before', 'params_after', 'macs_before', 'macs_after',
                              'macs_executed_before', 'macs_executed_after', 'layout',
                              'input_size'}
    assert sub.stats['params_before'] == sum(p.numel() for n, p in bb.named_parameters()
                                             if not n.endswith('_mask'))
    assert sub.stats['input_size'] == [32, 64] and sub.stats['layout'] == 'grouped'
    assert sub.stats['macs_executed_before'] == sub.stats['macs_before'] > \
        sub.stats['macs_after'] > 0
    assert sub.source == {}
    assert select_subnet(bb, keep_ratio=0.25, scores=_scores(),
                         source=dict(checkpoint='x.pth')).source == dict(checkpoint='x.pth')


def test_split_masks_with_equal_scores_keep_the_same_qk_and_v_dims():
    """Catches the q/k kind of split masks lost (or its units given to v only): with the
    q/k and v scores equal, a quarter keeps block 0's head 0 whole as q/k and as v; block
    1's minimum head gets its best v dim and no q/k dim (no q/k unit was chosen there)."""
    bb = SIDTViT(arch=dict(embed_dims=16, num_layers=2, num_heads=2, mlp_ratio=2.0),
                 patch_size=8, img_size=32, mode='search', split_qkv=True)
    sub = select_subnet(bb, keep_ratio=0.25, scores=_scores(), round_to=1)
    assert (sub.blocks[0]['qk'], sub.blocks[0]['v']) == ([ALL, []], [ALL, []])
    assert (sub.blocks[1]['qk'], sub.blocks[1]['v']) == ([[], []], [[], [0]])


def test_whole_split_heads_rank_by_the_mean_of_qk_and_v():
    """Catches whole-head units of split masks ranked by another mix of the two scores: in
    block 0 head 0 scores 2 (q/k) and 0 (v), head 1 scores 3 and 3, so their means are 1 and
    3 (their differences 1 and 0 would pick head 0); block 1 ties, its minimum head is 0."""
    bb = SIDTViT(arch=dict(embed_dims=16, num_layers=2, num_heads=2, mlp_ratio=2.0),
                 patch_size=8, img_size=32, mode='search', split_qkv=True)
    qk = [torch.stack([torch.full((8,), 2.), torch.full((8,), 3.)]), torch.full((2, 8), 0.1)]
    v = [torch.stack([torch.zeros(8), torch.full((8,), 3.)]), torch.full((2, 8), 0.1)]
    sub = select_subnet(bb, keep_ratio=0.25, granularity='head', round_to=1,
                        scores=UnitScores(qk=qk, v=v, mlp=[torch.ones(32)] * 2))
    assert (sub.blocks[0]['qk'], sub.blocks[0]['v']) == ([[], ALL], [[], ALL])
    assert (sub.blocks[1]['qk'], sub.blocks[1]['v']) == ([ALL, []], [ALL, []])


def test_min_heads_stops_at_the_minimum():
    """Catches the live-head count not growing as heads are filled (every empty head would be
    filled): one block of 4 heads keeps one dim of head 0; min_heads=3 adds the two best
    empty heads by mean score (head 2, then head 1), not head 3."""
    bb = SIDTViT(arch=dict(embed_dims=16, num_layers=1, num_heads=4, mlp_ratio=2.0),
                 patch_size=8, img_size=32, mode='search')
    m = torch.stack([torch.tensor([9., 0., 0., 0.]), torch.full((4,), 2.),
                     torch.full((4,), 3.), torch.ones(4)])
    sub = select_subnet(bb, keep_ratio=1 / 16, scores=UnitScores(qk=[m], v=[m],
                                                                   mlp=[torch.ones(32)]),
                        min_heads=3, min_mlp=1, round_to=1)
    assert sub.blocks[0]['v'] == [[0], [0], [0], []]


def test_selection_refusals_name_the_argument():
    """Catches the messages of a table given with another budget, an unknown layout and
    diverged masks (which must name the checkpoint as the culprit)."""
    bb = _backbone()
    for kw, message in (
            (dict(params=1000, latency_table='latency.json'),
             "latency_table goes with a latency or latency_ms budget, and they need one "
             "(got ['params'] with a table)"),
            (dict(keep_ratio=0.5, layout='ragged'),
             "layout: expected one of ('grouped', 'padded'), got 'ragged'")):
        with pytest.raises(ValueError) as err:
            select_subnet(bb, **kw)
        assert str(err.value) == message
    with torch.no_grad():
        bb.blocks[0].mlp.hidden_mask[3] = float('nan')
    with pytest.raises(ValueError) as err:
        select_subnet(bb, keep_ratio=0.5)
    assert str(err.value).startswith(
        'SiDT search checkpoint: the masks are no longer finite: '
        'backbone.blocks.0.mlp.hidden_mask (1 NaN, 0 Inf of 32). The search diverged')


def test_an_explicit_embedding_minimum_is_kept():
    """Catches min_embed ignored in favour of its default (2 heads here)."""
    _, sub = _select(0.001, scores=_scores(embed=torch.arange(16.)), min_embed=5)
    assert sub.embed == [11, 12, 13, 14, 15]

