"""Build the latency table of a config's backbone on this machine, and check it.

    # ViT-S at 224, batch 8, on 2 CPU threads; the table is what --latency budgets read
    python tools/analysis/latency_table.py CONFIG --input-size 224 224 --batch 8 \\
        --threads 2 --out work_dirs/latency/vit-s_224_b8.json
    # and predicted against measured latency of 10 random held-out subnets
    python tools/analysis/latency_table.py CONFIG --input-size 224 224 --batch 8 \\
        --out work_dirs/latency/vit-s_224_b8.json --check 10

A table at --out with the same key (device, dtype, torch, threads, input size, batch,
architecture) is reused; one with another key is refused, naming what differs. The check
writes OUT with the suffix .check.json: per subnet the predicted and measured milliseconds,
and the median and largest relative error. --budgets 0.8 0.6 0.4 selects at those latency
budgets on random masks and writes OUT with the suffix .budgets.json: measured against
target, open loop (the table's prediction alone) and closed loop (select, measure,
re-select at a corrected budget, up to --loop-rounds selections; 0: open loop only). Then,
for a real budget:

    python tools/export_subnet.py SEARCH_CFG SEARCH.pth --latency 0.6 \\
        --latency-table work_dirs/latency/vit-s_224_b8.json --input-size 224 224 -o OUT
    # met in measured latency on this machine (the table's)
    python tools/export_subnet.py ... --latency 0.6 --latency-table TABLE --latency-measure
"""
from __future__ import annotations

import os.path as osp
import random

import torch

from ..utils.cli import load_config
from ..utils.fileio import write_json_atomic
from ..utils.timing import torch_threads

__all__ = ['held_out_subnets', 'latency_table_from_config']


def _backbone(config: str, cfg_options: dict | None):
    """The config's SIDTViT, in search mode (masks to select with), untrained."""
    from mmengine.registry import init_default_scope

    from ..models.backbones.sidt_vit import SIDTViT
    from ..utils.config import backbone_cfg
    cfg = load_config(config, cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    bb = dict(backbone_cfg(cfg.model, where=config))
    bb.pop('type')
    bb.update(mode='search', init_cfg=None)
    bb.pop('subnet', None)
    bb.setdefault('search_dims', ('attn', 'mlp', 'embed'))
    return SIDTViT(**bb).eval()


def _random_masks_(backbone, generator: torch.Generator) -> None:
    with torch.no_grad():
        for m in backbone.mask_parameters().values():
            m.copy_(torch.rand(m.shape, generator=generator))


def held_out_subnets(backbone, n: int, seed: int = 0, round_to: int = 8) -> list:
    """``n`` subnets unlike the table's probes: random masks, random keep ratios 0.3-0.9,
    unequal heads and per-layer widths, as a search leaves them."""
    from ..search import select_subnet
    rng = random.Random(seed)
    out = []
    for i in range(n):
        _random_masks_(backbone, torch.Generator().manual_seed(seed * 1000 + i))
        out.append(select_subnet(backbone, keep_ratio=rng.uniform(0.3, 0.9),
                                 round_to=round_to))
    return out


def latency_table_from_config(config: str, out: str, input_size=None, batch: int = 1,
                              device: str = 'cpu', dtype: str = 'float32',
                              threads: int | None = None, check: int = 0, seed: int = 0,
                              round_to: int = 8, iters: int = 5, cfg_options: dict | None = None,
                              budgets=(), loop_rounds: int = 4) -> dict:
    from ..search.latency import build_latency_table, check_latency_table
    backbone = _backbone(config, cfg_options)
    size = tuple(input_size) if input_size else tuple(backbone.img_size)
    table = build_latency_table(backbone, size, batch, device=device, dtype=dtype,
                                threads=threads, iters=iters, round_to=round_to, cache=out)
    result = dict(table=out, build_seconds=table.build_seconds,
                  measurements=table.measurements, dense_predicted_ms=table.predict(None))
    if check:
        with torch_threads(table.key['threads']):
            report = check_latency_table(backbone, table, held_out_subnets(
                backbone, check, seed, round_to), iters=iters)
        result.update(check=report)
        path = osp.splitext(out)[0] + '.check.json'
        write_json_atomic(path, dict(key=table.key, **report))
        print(f'predicted vs measured on {check} held-out subnets: median |error| '
              f'{report["median_abs_error"]:.1%}, max {report["max_abs_error"]:.1%} '
              f'(wrote {path})')
    if budgets:
        result.update(budgets=check_budgets(backbone, table, budgets, seed, round_to, iters,
                                            loop_rounds=loop_rounds))
        path = osp.splitext(out)[0] + '.budgets.json'
        write_json_atomic(path, dict(key=table.key, **result['budgets']))
        print(f'wrote {path}')
    return result


def _kept_score(backbone, subnet) -> float:
    """Fraction of the search masks' total |m| that ``subnet`` keeps (attention and MLP):
    what a selection gives up for its speed, on one scale for both queues."""
    kept = total = 0.0
    for blk, b in zip(backbone.blocks, subnet.blocks, strict=True):
        qk_m, v_m = blk.attn.masks()
        if v_m is not None:
            m = v_m.detach().abs()
            total += float(m.sum())
            kept += sum(float(m[h, dims].sum()) for h, dims in enumerate(b['v']) if dims)
        if blk.mlp.hidden_mask is not None:
            m = blk.mlp.hidden_mask.detach().abs()
            total += float(m.sum())
            kept += float(m[b['mlp']].sum())
    return kept / total if total else 1.0


def check_budgets(backbone, table, budgets, seed: int = 0, round_to: int = 8,
                  iters: int = 5, loop_rounds: int = 4, tolerance: float = 0.03) -> dict:
    """Select at each latency budget (a fraction of the dense latency) on random masks, with
    each unit order, and measure the selected backbones against the dense one, all timed
    interleaved on the table's setting. A row's top-level figures are the default order's
    (score per millisecond); ``by_order`` has both, with the share of |m| each keeps.

    With ``loop_rounds`` >= 1 each order is also selected in closed loop
    (:func:`~sidt_mmdet.search.latency_loop.select_subnet_measured`, at most
    ``loop_rounds`` selections, stopping within ``tolerance``): ``by_order[o]
    ['closed_loop']`` has its measured ratio, |error| against the target, rounds and
    history (its own dense measurement, taken once per loop). The goal, a measured latency
    within ``tolerance`` of the target, is printed for each, not asserted."""
    from ..search import select_subnet
    from ..search.latency import measured_latency
    from ..search.latency_loop import select_subnet_measured
    from ..search.select import UNIT_ORDERS
    key = table.key
    with torch_threads(key['threads']):
        _random_masks_(backbone, torch.Generator().manual_seed(seed))
        device = key['device'].split(':')[0]
        rows = []
        for target in budgets:
            try:
                subs = {order: select_subnet(backbone, latency=target, latency_table=table,
                                             input_size=tuple(key['input_size']),
                                             round_to=round_to, unit_order=order)
                        for order in UNIT_ORDERS}
            except ValueError as e:  # below the smallest subnet the minimums allow
                rows.append(dict(target=target, infeasible=str(e)))
                print(f'latency budget {target:g}: infeasible: {e}')
                continue
            # dense and pruned timed interleaved, so a drift of the machine falls on all
            got = measured_latency(backbone, {'dense': None, **subs}, key['input_size'],
                                   key['batch'], device=device, dtype=key['dtype'],
                                   iters=2 * iters)
            dense = got['dense']
            by_order = {}
            for order, sub in subs.items():
                by_order[order] = dict(
                    measured_ratio=round(got[order] / dense, 4),
                    abs_error=round(abs(got[order] / dense / target - 1), 4),
                    predicted_ratio=round(sub.stats['latency_ms_after']
                                          / sub.stats['latency_ms_before'], 4),
                    macs_ratio=round(sub.stats['macs_after'] / sub.stats['macs_before'], 4),
                    kept_score=round(_kept_score(backbone, sub), 4),
                    pruned_ms=round(got[order], 3))
            default = by_order['score_per_ms']
            rows.append(dict(target=target, **{k: default[k] for k in (
                'measured_ratio', 'abs_error', 'predicted_ratio', 'macs_ratio')},
                dense_ms=round(dense, 3), pruned_ms=default['pruned_ms'], by_order=by_order))
            goal = f'goal: measured within {tolerance:.0%} of the target'
            print(f'latency budget {target:g}, open loop ({goal}): ' + '; '.join(
                f'{o}: measured x{r["measured_ratio"]:.3f} of dense, |error| '
                f'{r["abs_error"]:.1%} (predicted x{r["predicted_ratio"]:.3f}; MACs '
                f'x{r["macs_ratio"]:.3f}; kept |m| {r["kept_score"]:.1%})'
                for o, r in by_order.items()))
            if loop_rounds < 1:
                continue
            for order in UNIT_ORDERS:
                sub = select_subnet_measured(
                    backbone, latency=target, latency_table=table, rounds=loop_rounds,
                    tolerance=tolerance, iters=2 * iters, log=_quiet,
                    input_size=tuple(key['input_size']), round_to=round_to, unit_order=order)
                by_order[order]['closed_loop'] = _loop_row(backbone, sub)
            rows[-1]['closed_loop'] = {k: default['closed_loop'][k] for k in (
                'measured_ratio', 'abs_error', 'rounds')}
            print(f'latency budget {target:g}, closed loop ({goal}): ' + '; '.join(
                f'{o}: measured x{r["closed_loop"]["measured_ratio"]:.3f} of dense, |error| '
                f'{r["closed_loop"]["abs_error"]:.1%} in {r["closed_loop"]["rounds"]} '
                f'round(s), {r["closed_loop"]["stopped"]} (kept |m| '
                f'{r["closed_loop"]["kept_score"]:.1%})' for o, r in by_order.items()))
    out = dict(rows=rows, max_abs_error_vs_target=_worst(rows))
    if loop_rounds >= 1:
        out.update(closed_loop_max_abs_error_vs_target=_worst(
            [r['closed_loop'] for r in rows if 'closed_loop' in r]), loop_rounds=loop_rounds,
            tolerance=tolerance)
    return out


def _quiet(_msg: str) -> None:
    pass


def _worst(rows) -> float | None:
    worst = max((r['abs_error'] for r in rows if 'abs_error' in r), default=None)
    return None if worst is None else round(worst, 4)


def _loop_row(backbone, subnet) -> dict:
    """A closed-loop selection's figures in a budgets row."""
    loop = subnet.budget['closed_loop']
    measured = [r for r in loop['history'] if 'measured_ratio' in r]
    return dict(measured_ratio=round(loop['measured_ratio'], 4),
                abs_error=round(abs(loop['measured_ratio'] / loop['target'] - 1), 4),
                rounds=len(measured), converged=loop['converged'], stopped=loop['stopped'],
                budget=round(subnet.budget['value'], 4), dense_ms=loop['dense_ms'],
                predicted_ratio=round(subnet.stats['latency_ms_after']
                                      / subnet.stats['latency_ms_before'], 4),
                kept_score=round(_kept_score(backbone, subnet), 4), history=loop['history'])
