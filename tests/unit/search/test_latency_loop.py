"""The closed latency loop (``select_subnet_measured``) on a hand-made table and a fake,
deterministic measurement that is the table's prediction times a width-dependent bias (the
narrower the subnet, the more the table under-predicts): the loop meets the target where
the open-loop selection misses, records its rounds, stops cleanly below the minimum widths
and refuses a table of another machine."""
from __future__ import annotations

import pytest
import torch

from sidt_mmdet.models import SIDTViT, Subnet
from sidt_mmdet.search import select_subnet
from sidt_mmdet.search.latency import LatencyTable, LatencyTableError, latency_key
from sidt_mmdet.search.latency_loop import select_subnet_measured

pytestmark = pytest.mark.usefixtures('one_torch_thread')

# 2 blocks of 64 MLP units: a subnet's predicted latency is its number of kept units (128)
ARCH = dict(arch=dict(embed_dims=8, num_layers=2, num_heads=2, mlp_ratio=8), patch_size=4,
            img_size=16)
UNITS = 128
SELECT = dict(round_to=1, min_mlp=1)


def _quiet(_):
    pass


def _backbone():
    backbone = SIDTViT(mode='search', search_dims=('mlp',), **ARCH)
    with torch.no_grad():
        for i, blk in enumerate(backbone.blocks):
            g = torch.Generator().manual_seed(i)
            blk.mlp.hidden_mask.copy_(torch.rand(64, generator=g))
    return backbone


def _table(backbone, **key) -> LatencyTable:
    """1 ms per kept MLP unit; attention and the stem free."""
    kind = dict(width=[1, 4], hidden=[1, 64], attn=[[[64.0, 64.0], [64.0, 64.0]]],
                mlp=[[1.0, 64.0]], base=[64.0], group=[0.0])
    return LatencyTable(key=dict(latency_key(backbone, (16, 16), 1), **key), embed=[8],
                        stem=[0.0], kinds={'k': kind}, blocks=['k', 'k'])


def _units(sub: Subnet | None) -> int:
    return UNITS if sub is None else sum(len(b['mlp']) for b in sub.blocks)


def _biased(bias: float, calls: list | None = None):
    """Measured ms = kept units * (1 + bias * pruned fraction): exact for the dense model,
    ``bias`` too slow per pruned fraction."""
    def measure(sub):
        if calls is not None:
            calls.append(sub)
        n = _units(sub)
        return n * (1 + bias * (1 - n / UNITS))
    return measure


@pytest.mark.parametrize('bias, target', [(0.5, 0.4), (1.0, 0.4), (1.0, 0.6)])
def test_loop_meets_the_measured_target_where_open_loop_misses(bias, target):
    """Catches a loop that never corrects the budget, one that spends more than its round
    limit, one that measures the dense backbone more than once, and a round record that
    does not match what was measured."""
    backbone, calls = _backbone(), []
    table = _table(backbone)
    measure = _biased(bias, calls)
    open_loop = select_subnet(backbone, latency=target, latency_table=table, **SELECT)
    open_ratio = measure(open_loop) / measure(None)
    assert abs(open_ratio / target - 1) > 0.03  # the open loop misses
    calls.clear()
    sub = select_subnet_measured(backbone, latency=target, latency_table=table, measure=measure,
                                 log=_quiet, **SELECT)
    loop = sub.budget['closed_loop']
    history = loop['history']
    assert loop['converged'] and loop['stopped'] == 'converged'
    assert 2 <= len(history) <= loop['rounds'] == 4  # the default round limit
    assert abs(loop['measured_ratio'] / target - 1) <= 0.03
    assert loop['dense_ms'] == UNITS and calls.count(None) == 1
    assert len(calls) == 1 + len(history)  # the dense one once, then one per round
    assert abs(measure(sub) / measure(None) - loop['measured_ratio']) < 1e-6
    first = history[0]
    assert first['budget'] == target and first['measured_ratio'] == pytest.approx(open_ratio)
    for row in history:
        assert set(row) == {'round', 'budget', 'predicted_ms', 'predicted_ratio',
                            'measured_ms', 'measured_ratio', 'error'}
        assert row['predicted_ratio'] <= row['budget'] + 1e-9
        n = row['predicted_ms']  # the table: one ms per unit
        assert row['measured_ms'] == pytest.approx(n * (1 + bias * (1 - n / UNITS)), abs=1e-3)
    assert history[1]['budget'] < history[0]['budget']  # the table under-predicts: ask less
    assert loop['chosen_round'] == len(history)
    # the chosen subnet's own selection record: the predicted budget it was selected at
    assert sub.budget['kind'] == 'latency' and sub.budget['value'] == pytest.approx(
        history[-1]['budget'], abs=1e-6)
    assert sub.stats['latency_ms_after'] == history[-1]['predicted_ms'] == _units(sub)
    again = Subnet.from_dict(sub.to_dict())  # the record survives the subnet file
    assert again.budget['closed_loop'] == loop


def test_loop_stops_cleanly_below_the_minimum_widths():
    """A target whose corrected budget falls below the smallest subnet the minimums allow
    stops with that said, keeps the best measured round and empties no layer."""
    backbone = _backbone()
    table = _table(backbone)
    logs = []
    sub = select_subnet_measured(backbone, latency=0.02, latency_table=table,
                                 measure=_biased(1.0), log=logs.append, **SELECT)
    loop = sub.budget['closed_loop']
    assert not loop['converged'] and loop['stopped'].startswith('infeasible')
    assert 'below the smallest subnet' in loop['stopped']
    assert [set(r) >= {'infeasible'} for r in loop['history']] == [False, True]
    assert loop['chosen_round'] == 1
    assert all(len(b['mlp']) >= 1 for b in sub.blocks)
    assert any('stopped, infeasible' in line for line in logs)
    with pytest.raises(ValueError, match='below the smallest subnet'):  # round 1 already
        select_subnet_measured(backbone, latency=0.001, latency_table=table,
                               measure=_biased(1.0), log=_quiet, **SELECT)


def test_loop_stops_at_its_round_limit_with_the_closest_not_above():
    """With one round the loop is the open-loop selection, measured and recorded; it never
    converges on this bias, and says it ran out of rounds."""
    backbone = _backbone()
    sub = select_subnet_measured(backbone, latency=0.4, latency_table=_table(backbone),
                                 measure=_biased(1.0), rounds=1, log=_quiet, **SELECT)
    loop = sub.budget['closed_loop']
    assert len(loop['history']) == 1 and not loop['converged']
    assert loop['stopped'] == 'round limit (1) reached'
    assert sub.budget['value'] == 0.4


def test_a_target_in_measured_milliseconds():
    """``latency_ms`` is a measured target: its ratio is taken against the measured dense
    latency (here 128 ms), not the predicted one."""
    backbone = _backbone()
    sub = select_subnet_measured(backbone, latency_ms=64, latency_table=_table(backbone),
                                 measure=lambda s: 2 * _biased(0.5)(s), log=_quiet, **SELECT)
    loop = sub.budget['closed_loop']
    assert loop['dense_ms'] == 2 * UNITS and loop['target'] == 0.25
    assert loop['target_ms'] == 64 and loop['converged']
    with pytest.raises(ValueError, match='expected a fraction of the dense latency'):
        select_subnet_measured(backbone, latency_ms=300, latency_table=_table(backbone),
                               measure=_biased(0.5), log=_quiet, **SELECT)
    with pytest.raises(ValueError, match='give exactly one target'):
        select_subnet_measured(backbone, latency_table=_table(backbone), measure=_biased(0.5))


def test_a_table_of_another_machine_is_refused_naming_the_key():
    """The default measurement runs here: a table of another CPU or torch is refused before
    anything is measured, each differing key named."""
    backbone = _backbone()
    other = _table(backbone, device='cpu: Some other CPU', torch='0.0')
    with pytest.raises(LatencyTableError) as err:
        select_subnet_measured(backbone, latency=0.5, latency_table=other, log=_quiet, **SELECT)
    text = str(err.value)
    assert "device: table 'cpu: Some other CPU'" in text and "torch: table '0.0'" in text
    gpu = _table(backbone, device='cuda: NVIDIA H200')
    if not torch.cuda.is_available():
        with pytest.raises(LatencyTableError, match="device 'cuda: NVIDIA H200'"):
            select_subnet_measured(backbone, latency=0.5, latency_table=gpu, log=_quiet)


def test_default_measurement_on_this_machine_records_real_timings():
    """A table keyed to this machine is measured for real (the tiny backbone, one call per
    point): every round has positive milliseconds and the dense ones are recorded."""
    backbone = _backbone()
    sub = select_subnet_measured(backbone, latency=0.5, latency_table=_table(backbone),
                                 iters=1, warmup=0, log=_quiet, **SELECT)
    loop = sub.budget['closed_loop']
    assert loop['dense_ms'] > 0 and 1 <= len(loop['history']) <= loop['rounds']
    assert all(r['measured_ms'] > 0 for r in loop['history'] if 'measured_ms' in r)
