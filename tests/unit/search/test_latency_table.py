"""The latency table of a tiny backbone (windows, a global block, relative positions):
built, cached, reloaded, refused by key; a latency budget through ``select_subnet`` on a
hand-made table picks what a hand calculation picks and never empties a layer."""
from __future__ import annotations

import json
import re

import pytest
import torch

from sidt_mmdet.models import SIDTViT, Subnet
from sidt_mmdet.search import select_subnet
from sidt_mmdet.search.latency import (
    LatencyTable,
    LatencyTableError,
    build_latency_table,
    latency_key,
    load_latency_table,
)

pytestmark = pytest.mark.usefixtures('one_torch_thread')

ARCH = dict(arch=dict(embed_dims=32, num_layers=2, num_heads=4), patch_size=4, img_size=32,
            window_size=4, global_attn_indexes=[1], use_rel_pos=True)
SIZE = (32, 32)


def _quiet(_):
    pass


@pytest.fixture(scope='module')
def built(tmp_path_factory):
    torch.manual_seed(0)
    backbone = SIDTViT(mode='search', search_dims=('attn', 'mlp', 'embed'), **ARCH).eval()
    cache = tmp_path_factory.mktemp('latency') / 'table.json'
    table = build_latency_table(backbone, SIZE, batch=1, threads=1, widths=2, hiddens=2,
                                embeds=2, iters=1, warmup=0, cache=str(cache), log=_quiet)
    return backbone, table, cache


def test_table_is_built_cached_and_reloaded(built):
    """Catches a table that is not written, one that reloads different, a kind missing
    (window and global blocks time differently), and predictions that fall as width grows."""
    backbone, table, cache = built
    assert table.blocks == ['window4-relpos7', 'global-relpos15']
    assert table.key == latency_key(backbone, SIZE, 1, threads=1)
    assert table.measurements > 0 and table.build_seconds >= 0
    logs = []
    again = build_latency_table(backbone, SIZE, batch=1, threads=1, cache=str(cache),
                                log=logs.append)
    assert again.to_dict() == table.to_dict() == json.loads(cache.read_text())
    assert len(logs) == 1 and logs[0].startswith(f'latency table: reusing {cache}')
    for kind in table.kinds.values():  # monotone along every width axis
        for grid in kind['attn']:
            assert all(a <= b for row in grid for a, b in zip(row, row[1:]))
            assert all(a <= b for col in zip(*grid) for a, b in zip(col, col[1:]))
        assert all(a <= b for row in kind['mlp'] for a, b in zip(row, row[1:]))
    dense = table.predict(None)
    half = Subnet(32, 2, 4, 128, blocks=[dict(qk=[list(range(4))] * 4, v=[list(range(4))] * 4,
                                              mlp=list(range(64)))] * 2)
    assert 0 < table.predict(half) <= dense


@pytest.mark.parametrize('change, named', [
    (dict(threads=2), 'threads: table 1, this run 2'),
    (dict(input_size=(48, 48)), 'input_size: table [32, 32], this run [48, 48]'),
    (dict(dtype='bfloat16'), "dtype: table 'float32', this run 'bfloat16'"),
    (dict(batch=2), 'batch: table 1, this run 2'),
])
def test_cached_table_for_another_setting_is_refused_by_key(built, change, named):
    """Also catches a refusal that leaves the process at the other thread count."""
    backbone, _, cache = built
    settings = dict(input_size=SIZE, batch=1, threads=1, dtype='float32')
    settings.update(change)
    threads = torch.get_num_threads()
    with pytest.raises(LatencyTableError, match=f'{re.escape(str(cache))}.*{re.escape(named)}'):
        build_latency_table(backbone, settings.pop('input_size'), cache=str(cache), log=_quiet,
                            **settings)
    assert torch.get_num_threads() == threads


def test_table_of_another_device_or_architecture_is_refused(built, tmp_path):
    backbone, table, _ = built
    data = table.to_dict()
    data['key'] = dict(data['key'], device='cuda: NVIDIA H200')
    path = tmp_path / 'other.json'
    path.write_text(json.dumps(data))
    with pytest.raises(LatencyTableError, match="device: table 'cuda: NVIDIA H200'"):
        load_latency_table(str(path), table.key)
    wider = SIDTViT(mode='search', **dict(ARCH, arch=dict(embed_dims=48, num_layers=2,
                                                          num_heads=4)))
    with pytest.raises(LatencyTableError, match='was built for arch'):
        select_subnet(wider, latency=0.5, latency_table=table)
    (tmp_path / 'bad.json').write_text('{"format": "other"}')
    with pytest.raises(LatencyTableError, match='bad.json: expected "format"'):
        load_latency_table(str(tmp_path / 'bad.json'))


# ------------------------------------------------------------------ hand-made table
MLP_ARCH = dict(arch=dict(embed_dims=8, num_layers=2, num_heads=2, mlp_ratio=2), patch_size=4,
                img_size=16)


def _mlp_only_table(backbone) -> LatencyTable:
    """1 ms per kept MLP unit, attention and stem free: a subnet's predicted latency is its
    number of kept MLP units."""
    kind = dict(width=[1, 4], hidden=[1, 16], attn=[[[16.0, 16.0], [16.0, 16.0]]],
                mlp=[[1.0, 16.0]], base=[16.0], group=[0.0])
    key = latency_key(backbone, (16, 16), 1)
    return LatencyTable(key=key, embed=[8], stem=[0.0], kinds={'global': kind},
                        blocks=['global', 'global'])


def test_latency_budget_picks_the_hand_counted_subnet(tmp_path):
    """Catches a budget that stops at the wrong point of the chain (the 20 best MLP units
    pooled over both blocks, by hand), a budget read as a MACs target, and a subnet file
    without the table it was predicted with."""
    backbone = SIDTViT(mode='search', search_dims=('mlp',), **MLP_ARCH)
    scores = torch.arange(32, dtype=torch.float32).flip(0)  # unit j of the pool: 32 - j
    perm = torch.randperm(32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for i, blk in enumerate(backbone.blocks):
            blk.mlp.hidden_mask.copy_(scores[perm][16 * i:16 * (i + 1)])
    table = _mlp_only_table(backbone)
    path = tmp_path / 'table.json'
    table.save(str(path))
    sub = select_subnet(backbone, latency_ms=20, latency_table=str(path), round_to=1,
                        min_mlp=1)
    masks = torch.cat([blk.mlp.hidden_mask.detach() for blk in backbone.blocks])
    best = sorted(range(32), key=lambda j: -float(masks[j]))[:20]  # by hand
    hand = [sorted(j for j in best if j < 16), sorted(j - 16 for j in best if j >= 16)]
    assert [b['mlp'] for b in sub.blocks] == hand
    assert sub.stats['latency_ms_after'] == 20 and sub.stats['latency_ms_before'] == 32
    assert sub.budget['kind'] == 'latency_ms' and sub.budget['value'] == 20
    assert sub.budget['latency_table']['digest'] == table.digest()
    ratio = select_subnet(backbone, latency=0.5, latency_table=table, round_to=1, min_mlp=1)
    assert sum(len(b['mlp']) for b in ratio.blocks) == 16
    assert ratio.budget['kind'] == 'latency' and ratio.budget['latency_ms'] == 16


def test_latency_budget_never_empties_a_layer():
    """Block 1 scores below every unit of block 0: at a budget of 16 units the chain keeps
    15 of block 0 and the minimum (its best unit) of block 1, never 16 and 0."""
    backbone = SIDTViT(mode='search', search_dims=('mlp',), **MLP_ARCH)
    with torch.no_grad():
        backbone.blocks[0].mlp.hidden_mask.copy_(torch.linspace(2, 3, 16))
        backbone.blocks[1].mlp.hidden_mask.copy_(torch.linspace(0.1, 0.2, 16))
    sub = select_subnet(backbone, latency_ms=16, latency_table=_mlp_only_table(backbone),
                        round_to=1, min_mlp=1)
    assert [len(b['mlp']) for b in sub.blocks] == [15, 1]
    assert sub.blocks[1]['mlp'] == [15]  # its best unit
    with pytest.raises(ValueError, match='below the smallest subnet'):
        select_subnet(backbone, latency_ms=1.5, latency_table=_mlp_only_table(backbone),
                      round_to=1, min_mlp=1)
    with pytest.raises(ValueError, match='latency_table goes with a latency'):
        select_subnet(backbone, latency=0.5)


def test_held_out_check_and_budget_report(built):
    """The tool's check and budget rows: each held-out subnet measured and predicted; on a
    hand-made table each budget's predicted latency is its target, and one below the
    smallest subnet is recorded as infeasible instead of ending the report."""
    from sidt_mmdet.apis.latency_table import check_budgets, held_out_subnets
    from sidt_mmdet.search.latency import check_latency_table

    backbone, table, _ = built
    subnets = held_out_subnets(backbone, 2, seed=1, round_to=1)
    assert subnets[0].to_dict() != subnets[1].to_dict()
    report = check_latency_table(backbone, table, subnets, iters=1, warmup=0, log=_quiet)
    assert len(report['subnets']) == 2
    for row in report['subnets']:
        assert row['measured_ms'] > 0
        assert row['predicted_ms'] == pytest.approx(row['measured_ms'] * (1 + row['rel_error']),
                                                    rel=1e-3)
    mlp_only = SIDTViT(mode='search', search_dims=('mlp',), **MLP_ARCH)
    budgets = check_budgets(mlp_only, _mlp_only_table(mlp_only), (0.5, 1e-3), round_to=1,
                            iters=1)
    feasible, infeasible = budgets['rows']
    assert feasible['predicted_ratio'] == 0.5 and feasible['measured_ratio'] > 0
    orders = feasible['by_order']
    assert set(orders) == {'score', 'score_per_ms'}  # one table: both queues agree
    assert orders['score']['predicted_ratio'] == orders['score_per_ms']['predicted_ratio']
    assert 0 < orders['score']['kept_score'] == orders['score_per_ms']['kept_score'] < 1
    assert 'below the smallest subnet' in infeasible['infeasible']
    for order in orders.values():  # the closed loop measured for real, at least one round
        loop = order['closed_loop']
        assert 1 <= loop['rounds'] <= budgets['loop_rounds'] == 4
        assert loop['dense_ms'] > 0 and len(loop['history']) >= loop['rounds']
    assert feasible['closed_loop']['rounds'] == orders['score_per_ms']['closed_loop']['rounds']
    assert 'closed_loop' not in infeasible


def test_budget_report_gives_open_and_closed_loop_figures(monkeypatch, capsys):
    """With a deterministic timing (the table's prediction, up to 1.5x slower the narrower
    the subnet) each budget row has the open-loop miss and the closed loop's measured ratio
    within 3% of the target, its rounds and the goal printed; ``loop_rounds=0`` leaves the
    closed loop out."""
    from sidt_mmdet.apis.latency_table import check_budgets
    from sidt_mmdet.search import latency, latency_loop

    backbone = SIDTViT(mode='search', search_dims=('mlp',), **dict(
        MLP_ARCH, arch=dict(embed_dims=8, num_layers=2, num_heads=2, mlp_ratio=8)))
    kind = dict(width=[1, 4], hidden=[1, 64], attn=[[[64.0] * 2] * 2], mlp=[[1.0, 64.0]],
                base=[64.0], group=[0.0])
    table = LatencyTable(key=latency_key(backbone, (16, 16), 1), embed=[8], stem=[0.0],
                         kinds={'k': kind}, blocks=['k', 'k'])
    dense = table.predict(None)

    def ms(sub):
        p = table.predict(sub)
        return p * (1.5 - 0.5 * p / dense)

    def fake_measured(backbone, subnets, *args, **kw):
        return {n: ms(s) for n, s in subnets.items()}
    monkeypatch.setattr(latency, 'measured_latency', fake_measured)
    monkeypatch.setattr(latency_loop, 'table_measure', lambda *a, **kw: ms)
    report = check_budgets(backbone, table, (0.4,), round_to=1, iters=1)
    row = report['rows'][0]
    for name, order in row['by_order'].items():
        assert order['abs_error'] > 0.03, name  # the open loop misses
        loop = order['closed_loop']
        assert loop['abs_error'] <= 0.03 and loop['converged'] and 2 <= loop['rounds'] <= 4
        assert loop['abs_error'] == round(abs(loop['measured_ratio'] / 0.4 - 1), 4)
        assert loop['budget'] < 0.4 and loop['history'][0]['budget'] == 0.4
    assert row['closed_loop']['abs_error'] == row['by_order']['score_per_ms']['closed_loop'][
        'abs_error'] == report['closed_loop_max_abs_error_vs_target']
    assert report['max_abs_error_vs_target'] == row['abs_error'] > 0.03
    out = capsys.readouterr().out
    assert out.count('goal: measured within 3% of the target') == 2
    assert 'closed loop (goal' in out and 'round(s), converged' in out
    open_only = check_budgets(backbone, table, (0.4,), round_to=1, iters=1, loop_rounds=0)
    assert 'closed_loop' not in open_only['rows'][0]
    assert 'closed_loop_max_abs_error_vs_target' not in open_only


def test_a_latency_fraction_outside_zero_one_is_refused(built):
    """Catches the latency fraction's range off at either end: 1 (the dense latency) is a
    budget, 0 and 1.5 are refused with the range."""
    backbone, table, _ = built
    sub = select_subnet(backbone, latency=1, latency_table=table)
    assert sub.budget['kind'] == 'latency' and sub.budget['value'] == 1
    # the record: the table used, and the predictions rounded to 0.1 us
    dense_ms = table.predict(None)
    assert sub.budget['latency_ms'] == dense_ms
    assert sub.budget['latency_table'] == dict(path=table.path, digest=table.digest(),
                                               key=table.key)
    assert sub.stats['latency_ms_before'] == round(dense_ms, 4) != dense_ms
    assert sub.stats['latency_ms_after'] == round(table.predict(sub), 4)
    for value in (0, 1.5):
        with pytest.raises(ValueError) as err:
            select_subnet(backbone, latency=value, latency_table=table)
        assert str(err.value) == ('latency: expected a fraction of the dense latency in (0, 1], '
                                  f'got {value}')


def _two_kind_table(backbone) -> LatencyTable:
    """Block 0 ('cheap') costs 1 ms per kept MLP unit, block 1 ('dear') 3 ms; attention and
    the stem are free."""
    def kind(ms):
        return dict(width=[1, 4], hidden=[1, 16], attn=[[[16.0 * ms] * 2] * 2],
                    mlp=[[ms, 16.0 * ms]], base=[16.0 * ms], group=[0.0])
    return LatencyTable(key=latency_key(backbone, (16, 16), 1), embed=[8], stem=[0.0],
                        kinds={'cheap': kind(1.0), 'dear': kind(3.0)}, blocks=['cheap', 'dear'])


def test_latency_budget_ranks_units_by_score_per_millisecond():
    """Catches a latency budget that queues units by score alone: with the same scores in
    both blocks, a unit of the block that costs 3 ms must score 3x higher to stay, so the
    cheap block keeps more units and the subnet keeps more of them in all within the same
    milliseconds; the order is recorded. Where every block costs the same, the two orders
    pick the same subnet."""
    backbone = SIDTViT(mode='search', search_dims=('mlp',), **MLP_ARCH)
    with torch.no_grad():
        for blk in backbone.blocks:
            blk.mlp.hidden_mask.copy_(torch.linspace(0.1, 1.0, 16))
    table = _two_kind_table(backbone)
    kw = dict(latency_ms=32, latency_table=table, round_to=1, min_mlp=1)
    per_ms = select_subnet(backbone, **kw)
    by_score = select_subnet(backbone, unit_order='score', **kw)
    n_ms = [len(b['mlp']) for b in per_ms.blocks]
    n_score = [len(b['mlp']) for b in by_score.blocks]
    assert n_score == [8, 8]  # alternating: 8 x 1 ms + 8 x 3 ms
    assert n_ms[0] > n_ms[1] and sum(n_ms) > sum(n_score)
    assert n_ms[0] + 3 * n_ms[1] <= 32 and per_ms.stats['latency_ms_after'] <= 32
    assert per_ms.budget['unit_order'] == 'score_per_ms'
    assert by_score.budget['unit_order'] == 'score'
    # kept units of the dear block are its best ones (a prefix of its ranking)
    assert per_ms.blocks[1]['mlp'] == list(range(16 - n_ms[1], 16))
    flat = _mlp_only_table(backbone)
    same = [select_subnet(backbone, latency_ms=20, latency_table=flat, round_to=1, min_mlp=1,
                          unit_order=order).blocks for order in ('score', 'score_per_ms')]
    assert same[0] == same[1]
    with pytest.raises(ValueError, match='needs a latency budget'):
        select_subnet(backbone, keep_ratio=0.5, unit_order='score_per_ms')
    with pytest.raises(ValueError, match='unit_order: expected one of'):
        select_subnet(backbone, unit_order='fastest', **kw)


def test_the_tool_passes_the_loop_rounds_to_the_budget_check(monkeypatch):
    """``--loop-rounds`` reaches the library call (4 by default, 0 for open loop only) and
    a negative count is refused by the parser."""
    from sidt_mmdet.cli import latency_table as cli

    calls = []
    monkeypatch.setattr(cli, 'latency_table_from_config',
                        lambda *args, **kw: calls.append((args, kw)))
    argv = ['CFG', '--out', 'T.json', '--budgets', '0.8', '0.6']
    assert cli.main(argv) == 0 and cli.main([*argv, '--loop-rounds', '0']) == 0
    assert [kw['loop_rounds'] for _, kw in calls] == [4, 0]
    assert calls[0][0] == ('CFG', 'T.json') and calls[0][1]['budgets'] == [0.8, 0.6]
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args([*argv, '--loop-rounds', '-1'])
