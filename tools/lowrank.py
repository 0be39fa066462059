"""Factorize the Linear layers of a trained model's SIDTViT backbone (low rank, issue 7).

    python tools/lowrank.py CONFIG CHECKPOINT --method svd --energy 0.95 -o OUT_DIR

CONFIG/CHECKPOINT: any trained model with a SIDTViT backbone (detector or classifier):
- a dense model, factorized as it is (a dense-width subnet is written);
- a pruned (retrain) model: CONFIG has ``mode='pruned', subnet=...``; its subnet is kept;
- a searched model (``mode='search'``): with ``--subnet SUBNET_JSON`` it is pruned to that
  subnet first, with ``--mlp-keep-ratio K`` to an MLP-only subnet (attention kept whole,
  Kumar's hybrid), otherwise the masks are folded into a dense-width backbone.
  Pruning always comes first (it slices dense weights), factorization second.

One rank rule: ``--energy E`` (per layer, kept fraction of sum sigma^2), ``--params-budget N``
(parameters of the targeted layers after factorization), ``--backbone-ratio F`` (the whole
backbone ends at F x the params of its dense architecture; the targeted layers absorb what
pruning has not removed), ``--rank R`` (every targeted layer) or ``--ranks-from SUBNET_JSON``
(the ranks another run chose: equal params across methods).

Kumar's hybrid, low-rank attention + lighter MLP pruning, 50% of the backbone's params::

    python tools/lowrank.py SEARCH_CONFIG SEARCH_CKPT --mlp-keep-ratio 0.5 \\
        --targets attn.qkv attn.proj --backbone-ratio 0.5 --method svd -o OUT_DIR

OUT_DIR receives, all or nothing: ``subnet.json`` (the subnet with ``lowrank`` ranks),
``lowrank.pth`` (the whole factorized model, ``{'state_dict', 'meta'}``), and a per-layer
table ``lowrank_table.md`` / ``.csv`` (rank, params before/after, ``|W - AB|_F / |W|_F``)
plus ``lowrank_report.json``. A retrain config rebuilds the model from the subnet alone
(``SIDTViT(mode='pruned', subnet=OUT_DIR/subnet.json)``, see configs/lowrank/) and loads
``lowrank.pth`` with no missing or unexpected keys.
"""
from __future__ import annotations

import argparse
import copy
import csv
import json
import math
import os.path as osp
import sys
import time

import torch
from mmengine.config import Config, ConfigDict, DictAction
from mmengine.registry import MODELS, init_default_scope
from torch import nn

import sidt_mmdet
from sidt_mmdet.datasets.generation.common import atomic_output_dir, check_output_dir
from sidt_mmdet.export.lowrank import METHODS, TARGETS, lowrank_model, replaced_ranks
from sidt_mmdet.export.prune import prune_model_state_dict
from sidt_mmdet.models import SIDTViT, Subnet, SubnetError
from sidt_mmdet.search.select import select_subnet
from sidt_mmdet.utils import UnsafeCheckpointError, load_checkpoint_safe, save_checkpoint_atomic
from sidt_mmdet.utils.complexity import backbone_complexity

__all__ = ['parse_args', 'main', 'run', 'load_source_model', 'prepare_subnet',
           'build_pruned_model', 'pruned_model_cfg', 'select_mlp_subnet', 'check_rebuild',
           'choose_rule', 'factorize', 'table_rows', 'write_outputs', 'LowRankToolError']

SUBNET_FILE = 'subnet.json'
CHECKPOINT_FILE = 'lowrank.pth'
TABLE_MD = 'lowrank_table.md'
TABLE_CSV = 'lowrank_table.csv'
REPORT_JSON = 'lowrank_report.json'
TABLE_FIELDS = ('layer', 'in', 'out', 'rank', 'replaced', 'params_before', 'params_after',
                'rel_error')


class LowRankToolError(ValueError):
    """Bad input for this tool; the message names the flag or file at fault."""


def _log(msg: str) -> None:
    print(f'[lowrank] {msg}', flush=True)


# ------------------------------------------------------------------------ arguments
def _energy(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected a number in (0, 1], got {text!r}') from None
    if not 0 < value <= 1:  # also rejects nan
        raise argparse.ArgumentTypeError(f'must be in (0, 1] (kept fraction of sum sigma^2), '
                                         f'got {text}')
    return value


def _ratio(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected a number in (0, 1], got {text!r}') from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f'must be in (0, 1], got {text}')
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected a positive integer, got {text!r}') from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f'must be a positive integer, got {value}')
    return value


def _count(text: str) -> int:
    """A positive parameter count, optionally with a K/M/G suffix (``2.5M``)."""
    scale = {'K': 10 ** 3, 'M': 10 ** 6, 'G': 10 ** 9}.get(text[-1:].upper(), 1)
    try:
        value = float(text[:-1] if scale > 1 else text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected a positive count such as 120000 or 2.5M, '
                                         f'got {text!r}') from None
    if not (math.isfinite(value) and value * scale >= 1):
        raise argparse.ArgumentTypeError(f'must be a positive count, got {text!r}')
    return int(value * scale)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description='Factorize the Linear layers of a SIDTViT backbone into low-rank pairs '
                    'and write subnet.json + a checkpoint a retrain config loads.',
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog='Kumar\'s hybrid (low-rank attention, lighter MLP pruning, 50% of the params):'
               '\n  tools/lowrank.py SEARCH_CFG SEARCH_CKPT --mlp-keep-ratio 0.5 --targets '
               'attn.qkv attn.proj --backbone-ratio 0.5 --method svd -o OUT_DIR')
    parser.add_argument('config', help='config of the trained model (dense, search or pruned)')
    parser.add_argument('checkpoint', help='its checkpoint (loaded with weights_only=True)')
    parser.add_argument('-o', '--out-dir', required=True,
                        help='output directory (created; all files or none)')
    parser.add_argument('--method', required=True, choices=METHODS,
                        help='factorization (SVD is the Frobenius-optimal one)')
    rule = parser.add_mutually_exclusive_group(required=True)
    rule.add_argument('--energy', type=_energy,
                      help='per layer: smallest rank keeping this fraction of sum sigma^2')
    rule.add_argument('--params-budget', type=_count,
                      help='parameters (weights + biases) of the targeted layers after '
                           'factorization; ranks chosen globally by SVD spectra')
    rule.add_argument('--backbone-ratio', type=_ratio,
                      help='the whole backbone ends at this fraction of the params of its '
                           'dense architecture (pruning included); the targeted layers get '
                           'the remaining budget')
    rule.add_argument('--rank', type=_positive_int,
                      help='the same rank for every targeted layer (< min(in, out) of each)')
    rule.add_argument('--ranks-from', metavar='SUBNET_JSON',
                      help='use the lowrank.ranks recorded in another subnet file (compare '
                           'methods at equal params); --targets is ignored')
    parser.add_argument('--targets', nargs='+', choices=TARGETS, default=list(TARGETS),
                        help='Linear layers to factorize, by name suffix (default: all four)')
    source = parser.add_mutually_exclusive_group()
    source.add_argument('--subnet', metavar='SUBNET_JSON',
                        help='prune a dense/searched model to this subnet before factorizing')
    source.add_argument('--mlp-keep-ratio', type=_ratio,
                        help='hybrid: from a searched model (mode="search" with MLP masks), '
                             'keep this fraction of MLP units by mask magnitude and every '
                             'attention dim, then factorize')
    parser.add_argument('--round-to', type=_positive_int, default=8,
                        help='with --mlp-keep-ratio: round kept MLP widths up to a multiple '
                             '(default 8, 1 = off)')
    parser.add_argument('--device', default='cpu',
                        help='device for the decompositions (default cpu; e.g. cuda:0)')
    parser.add_argument('--seed', type=int, default=0,
                        help='seed of the random sketch of qr_randomized (default 0)')
    parser.add_argument('--overwrite', action='store_true', help='replace a non-empty OUT_DIR')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value (mmengine syntax)')
    return parser


def parse_args(argv=None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


# ------------------------------------------------------------------ model building
def _is_type(cfg, name: str) -> bool:
    t = cfg.get('type') if isinstance(cfg, dict) else None
    return isinstance(t, str) and (t == name or t.endswith('.' + name))


def _backbone_cfg(model_cfg: dict, where: str) -> dict:
    """The backbone's config dict (a reference into ``model_cfg``)."""
    inner = model_cfg
    if _is_type(model_cfg, 'SIDTModel') and isinstance(model_cfg.get('model'), dict):
        inner = model_cfg['model']
    backbone = inner.get('backbone')
    if not _is_type(backbone, 'SIDTViT'):
        got = backbone.get('type') if isinstance(backbone, dict) else backbone
        raise LowRankToolError(f'{where}: model.backbone must be a SIDTViT, got {got!r}')
    return backbone


def _build(cfg: Config, model_cfg: dict) -> nn.Module:
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    return MODELS.build(model_cfg)


def pruned_model_cfg(model_cfg: dict, subnet: Subnet, where: str = 'config') -> ConfigDict:
    """``model_cfg`` with its backbone in pruned mode on ``subnet`` (what a retrain config
    builds), wrapped in SIDTModel so the layers reading the backbone follow its width."""
    cfg = copy.deepcopy(model_cfg)
    if _is_type(cfg, 'SIDTModel'):
        cfg.pop('sparsity', None)
    else:
        cfg = ConfigDict(type='mmdet.SIDTModel', model=cfg)
    backbone = _backbone_cfg(cfg, where)
    backbone.update(mode='pruned', subnet=subnet, init_cfg=None)
    return cfg


def _state_dict_of(ckpt, where: str) -> dict[str, torch.Tensor]:
    state = ckpt.get('state_dict', ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict) or not any(isinstance(v, torch.Tensor) for v in state.values()):
        raise LowRankToolError(f'{where}: holds no state dict (expected {{"state_dict": ...}} '
                               'as mmengine writes it)')
    return {k[len('module.'):] if k.startswith('module.') else k: v for k, v in state.items()}


def _load_strict(model: nn.Module, state: dict, where: str, what: str) -> None:
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [f'{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}'
              for k in sorted(set(own) & set(state)) if state[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        def first(items):
            return ', '.join(items[:8]) + (f' ... ({len(items)} in all)' if len(items) > 8 else '')
        parts = [f'missing keys: {first(missing)}' if missing else '',
                 f'unexpected keys: {first(unexpected)}' if unexpected else '',
                 f'shape mismatches: {first(shapes)}' if shapes else '']
        raise LowRankToolError(f'{where} does not fit {what}; '
                               + '; '.join(p for p in parts if p))
    model.load_state_dict(state, strict=True)


def load_source_model(cfg: Config, checkpoint: str) -> tuple[nn.Module, dict]:
    """The model as CONFIG describes it, with CHECKPOINT loaded strictly; and the checkpoint."""
    model_cfg = copy.deepcopy(cfg.model)
    _backbone_cfg(model_cfg, cfg.filename or 'config')['init_cfg'] = None
    model = _build(cfg, model_cfg)
    ckpt = load_checkpoint_safe(checkpoint)
    _load_strict(model, _state_dict_of(ckpt, checkpoint), checkpoint,
                 f'the model of {cfg.filename}')
    return model.eval(), ckpt


def select_mlp_subnet(backbone: SIDTViT, keep_ratio: float, round_to: int = 8,
                      source: dict | None = None) -> Subnet:
    """Hybrid: keep ``keep_ratio`` of the MLP units (by searched mask magnitude, pooled over
    blocks, so widths differ per block) and every attention dim.

    ``select_subnet`` runs on an MLP-only search view of ``backbone`` (same weights and
    masks, attention masks left out), so attention stays whole however it was searched.
    """
    if backbone.mode != 'search' or 'mlp' not in backbone.search_dims:
        raise LowRankToolError('--mlp-keep-ratio needs a searched model: CONFIG\'s backbone '
                               f'must be mode="search" with "mlp" in search_dims (got '
                               f'mode={backbone.mode!r}, search_dims={backbone.search_dims})')
    kwargs = dict(backbone.build_kwargs, mode='search', search_dims=('mlp',), init_cfg=None,
                  subnet=None)
    view = SIDTViT(**kwargs)
    view.load_state_dict({k: v for k, v in backbone.state_dict().items()
                          if k in view.state_dict()}, strict=True)
    return select_subnet(view, keep_ratio=keep_ratio, round_to=round_to,
                         source=dict(source or {}, mlp_keep_ratio=keep_ratio))


def prepare_subnet(model: nn.Module, subnet_path: str | None, mlp_keep_ratio: float | None,
                   round_to: int, config: str, source: dict) -> tuple[Subnet, str]:
    """The subnet to factorize on, and how it was obtained (for the log)."""
    bb = model.backbone
    arch = (bb.embed_dims_dense, bb.num_layers, bb.num_heads, bb.mlp_hidden)
    if bb.mode == 'pruned':
        if subnet_path is not None or mlp_keep_ratio is not None:
            flag = '--subnet' if subnet_path is not None else '--mlp-keep-ratio'
            raise LowRankToolError(f'{flag}: the backbone of {config} is already pruned; give '
                                   'the dense or search config and its checkpoint instead')
        subnet = copy.deepcopy(bb.subnet)
        if subnet.lowrank:
            raise LowRankToolError(f'{config}: the model is already factorized (its subnet '
                                   f'records {len(subnet.lowrank.get("ranks", {}))} low-rank '
                                   'layers); start from the checkpoint before factorization')
        return subnet, 'the subnet of the pruned config'
    if subnet_path is not None:
        try:
            subnet = Subnet.load(subnet_path)
            subnet.check_arch(*arch, where=f'--subnet {subnet_path}')
        except (OSError, ValueError) as e:
            raise LowRankToolError(f'--subnet: {e}') from None
        if subnet.lowrank:
            raise LowRankToolError(f'--subnet {subnet_path}: already records low-rank layers; '
                                   'give the pruning subnet (tools/export_subnet.py)')
        return subnet, f'--subnet {subnet_path}'
    if mlp_keep_ratio is not None:
        subnet = select_mlp_subnet(bb, mlp_keep_ratio, round_to, source)
        kept = sum(len(b['mlp']) for b in subnet.blocks) / (bb.num_layers * bb.mlp_hidden)
        return subnet, (f'MLP-only subnet at --mlp-keep-ratio {mlp_keep_ratio} (kept '
                        f'{kept:.1%} of MLP units, attention whole)')
    subnet = Subnet.dense(*arch)
    subnet.source = dict(source)
    how = 'dense-width subnet'
    if bb.mode == 'search':
        how += ' (search masks folded into the weights)'
    return subnet, how


def build_pruned_model(cfg: Config, subnet: Subnet, state: dict, where: str) -> nn.Module:
    """The retrain-style model on ``subnet`` with ``state`` loaded strictly."""
    model = _build(cfg, pruned_model_cfg(cfg.model, subnet, cfg.filename or 'config'))
    _load_strict(model, state, where, 'the pruned model')
    return model.eval()


def check_rebuild(backbone: SIDTViT, subnet: Subnet) -> None:
    """A retrain config builds the backbone from the subnet file alone: prove that it gives
    exactly the factorized backbone's keys and shapes before anything is written (the rest of
    the model is built from the same config either way)."""
    rebuilt = SIDTViT(**dict(backbone.build_kwargs, subnet=Subnet.from_dict(subnet.to_dict()),
                             init_cfg=None))
    _load_strict(rebuilt, backbone.state_dict(), 'the factorized backbone',
                 'the backbone rebuilt from its subnet file')


# -------------------------------------------------------------------- rank rules
def _targeted(backbone: nn.Module, targets) -> dict[str, nn.Linear]:
    return {name: m for name, m in backbone.named_modules() if isinstance(m, nn.Linear)
            and any(name.endswith('.' + t) for t in targets)}


def _layer_params(layers: dict[str, nn.Linear]) -> int:
    return sum(p.numel() for m in layers.values() for p in m.parameters())


def choose_rule(args, backbone: SIDTViT, dense_params: int) -> tuple[dict, dict]:
    """(keyword arguments for ``lowrank_model``, the rule as recorded in the outputs)."""
    targets = tuple(dict.fromkeys(args.targets))
    layers = _targeted(backbone, targets)
    if not layers and args.ranks_from is None:
        raise LowRankToolError(f'--targets {" ".join(targets)}: no such Linear in the backbone')
    if args.energy is not None:
        return dict(energy=args.energy, targets=targets), dict(energy=args.energy)
    if args.params_budget is not None:
        return (dict(params_budget=args.params_budget, targets=targets),
                dict(params_budget=args.params_budget))
    if args.rank is not None:
        too_big = [f'{n} ({m.out_features}x{m.in_features})' for n, m in layers.items()
                   if args.rank >= min(m.in_features, m.out_features)]
        if too_big:
            raise LowRankToolError(
                f'--rank {args.rank}: must be < min(in, out) of every targeted layer; too big '
                f'for {", ".join(too_big[:6])}' + (' ...' if len(too_big) > 6 else ''))
        return dict(ranks={n: args.rank for n in layers}), dict(rank=args.rank)
    if args.ranks_from is not None:
        try:
            other = Subnet.load(args.ranks_from)
        except (OSError, ValueError) as e:
            raise LowRankToolError(f'--ranks-from: {e}') from None
        if not other.lowrank or not other.lowrank.get('ranks'):
            raise LowRankToolError(f'--ranks-from {args.ranks_from}: records no low-rank layers '
                                   '(lowrank.ranks is empty)')
        ranks = dict(other.lowrank['ranks'])
        modules = dict(backbone.named_modules())
        bad = [n for n, r in ranks.items() if not isinstance(modules.get(n), nn.Linear)
               or r >= min(modules[n].in_features, modules[n].out_features)]
        if bad:
            raise LowRankToolError(f'--ranks-from {args.ranks_from}: does not fit this backbone '
                                   f'(no such Linear, or rank >= min(in, out)): {bad[:6]}')
        return dict(ranks=ranks), dict(ranks_from=osp.abspath(args.ranks_from))
    # --backbone-ratio: what pruning left outside the targeted layers is fixed.
    target = args.backbone_ratio * dense_params
    current = sum(p.numel() for p in backbone.parameters())
    fixed = current - _layer_params(layers)
    budget = math.floor(target - fixed)
    if current <= target:
        raise LowRankToolError(
            f'--backbone-ratio {args.backbone_ratio}: the backbone already has {current:,} '
            f'params <= {target:,.0f} ({args.backbone_ratio} x {dense_params:,} dense); '
            'nothing to factorize')
    if budget <= 0:
        raise LowRankToolError(
            f'--backbone-ratio {args.backbone_ratio}: the layers outside --targets alone have '
            f'{fixed:,} params > the target {target:,.0f}; prune more (--mlp-keep-ratio) or '
            'target more layers')
    return (dict(params_budget=budget, targets=targets),
            dict(backbone_ratio=args.backbone_ratio, params_budget=budget))


def factorize(backbone: SIDTViT, method: str, rule_kwargs: dict, rule: dict,
              seed: int = 0) -> dict:
    """``lowrank_model`` on the backbone (in place); a ValueError names the rule's flag."""
    generator = torch.Generator(device=next(backbone.parameters()).device).manual_seed(seed)
    try:
        return lowrank_model(backbone, method, generator=generator, **rule_kwargs)
    except ValueError as e:
        flag = '--' + next(iter(rule)).replace('_', '-')
        raise LowRankToolError(f'{flag}: {e}') from None


def _params(backbone: nn.Module) -> int:
    return sum(p.numel() for p in backbone.parameters())


# ------------------------------------------------------------------------ outputs
def table_rows(report: dict) -> list[dict]:
    return [dict(layer=name, **{k: e[k] for k in TABLE_FIELDS[1:]}) for name, e in report.items()]


def _markdown(rows: list[dict], summary: dict) -> str:
    lines = [f'# Low-rank factorization: {summary["method"]}, {summary["rule_text"]}', '',
             f'- config: `{summary["config"]}`', f'- checkpoint: `{summary["checkpoint"]}`',
             f'- subnet: {summary["subnet_from"]}',
             f'- backbone params: dense {summary["params_dense"]:,}, before factorization '
             f'{summary["params_before"]:,}, after {summary["params_after"]:,} '
             f'({summary["params_after"] / summary["params_dense"]:.1%} of dense)',
             f'- backbone MACs at {summary["input_size"][0]}x{summary["input_size"][1]}: '
             f'{summary["macs_before"]:,} -> {summary["macs_after"]:,}',
             f'- layers replaced: {summary["replaced"]} of {len(rows)}', '',
             '| layer | in | out | rank | replaced | params before | params after | rel. error |',
             '|---|---:|---:|---:|:-:|---:|---:|---:|']
    for r in rows:
        lines.append(f'| {r["layer"]} | {r["in"]} | {r["out"]} | {r["rank"]} | '
                     f'{"yes" if r["replaced"] else "no"} | {r["params_before"]:,} | '
                     f'{r["params_after"]:,} | {r["rel_error"]:.4f} |')
    before = sum(r['params_before'] for r in rows)
    after = sum(r['params_after'] for r in rows)
    mean_err = sum(r['rel_error'] for r in rows) / max(len(rows), 1)
    lines.append(f'| **total** | | | | {summary["replaced"]} | {before:,} | {after:,} | '
                 f'mean {mean_err:.4f} |')
    lines += ['', 'rel. error = |W - A B|_F / |W|_F of the weight (biases are kept exactly); '
              '0 for layers left dense.', '']
    return '\n'.join(lines)


def write_outputs(out_dir: str, overwrite: bool, subnet: Subnet, state: dict, meta: dict,
                  rows: list[dict], summary: dict) -> None:
    """All files appear together (a temporary directory renamed into place) or not at all."""
    with atomic_output_dir(out_dir, overwrite=overwrite) as tmp:
        subnet.save(osp.join(tmp, SUBNET_FILE))
        save_checkpoint_atomic(dict(state_dict=state, meta=meta), osp.join(tmp, CHECKPOINT_FILE))
        with open(osp.join(tmp, TABLE_CSV), 'w', newline='', encoding='utf-8') as f:
            writer = csv.DictWriter(f, fieldnames=TABLE_FIELDS)
            writer.writeheader()
            writer.writerows(rows)
        with open(osp.join(tmp, TABLE_MD), 'w', encoding='utf-8') as f:
            f.write(_markdown(rows, summary))
        with open(osp.join(tmp, REPORT_JSON), 'w', encoding='utf-8') as f:
            json.dump(dict(summary=summary, layers=rows), f, indent=1)
            f.write('\n')


# --------------------------------------------------------------------------- main
def _rule_text(rule: dict) -> str:
    return ', '.join(f'{k.replace("_", " ")} {v}' for k, v in rule.items())


def _check_files(args) -> None:
    for flag, path in (('CONFIG', args.config), ('CHECKPOINT', args.checkpoint),
                       ('--subnet', args.subnet), ('--ranks-from', args.ranks_from)):
        if path is not None and not osp.isfile(path):
            raise LowRankToolError(f'{flag}: file not found: {path}')


def run(args: argparse.Namespace) -> dict:
    """Everything but argument parsing; returns the summary written to the report."""
    _check_files(args)
    out_dir = check_output_dir(args.out_dir, args.overwrite)  # refuse early, before work
    torch.manual_seed(args.seed)
    t0 = time.time()
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    _log(f'building the model of {args.config} and loading {args.checkpoint}')
    source_model, ckpt = load_source_model(cfg, args.checkpoint)
    source = dict(config=osp.abspath(args.config), checkpoint=osp.abspath(args.checkpoint))
    subnet, subnet_from = prepare_subnet(source_model, args.subnet, args.mlp_keep_ratio,
                                         args.round_to, args.config, source)
    bb = source_model.backbone
    if bb.mode == 'pruned':
        dense_params = subnet.stats.get('params_before')
        if not dense_params:
            dense_bb = SIDTViT(**dict(bb.build_kwargs, mode='dense', subnet=None, init_cfg=None))
            dense_params = _params(dense_bb)
            del dense_bb
        state = source_model.state_dict()
    else:
        dense_params = backbone_complexity(bb, bb.img_size).params  # masks are not params
        state = prune_model_state_dict(source_model.state_dict(), subnet)
    del source_model
    _log(f'subnet: {subnet_from}')
    model = build_pruned_model(cfg, subnet, state, args.checkpoint)
    model.to(args.device)
    backbone = model.backbone
    input_size = tuple(subnet.stats.get('input_size') or backbone.img_size)
    before = backbone_complexity(backbone, input_size)
    rule_kwargs, rule = choose_rule(args, backbone, dense_params)
    n_layers = len(rule_kwargs.get('ranks') or _targeted(backbone, rule_kwargs['targets']))
    _log(f'factorizing {n_layers} Linear layers with {args.method} ({_rule_text(rule)})')
    t1 = time.time()
    report = factorize(backbone, args.method, rule_kwargs, rule, args.seed)
    after = backbone_complexity(backbone, input_size)
    ranks = replaced_ranks(report)
    _log(f'replaced {len(ranks)} of {len(report)} layers in {time.time() - t1:.1f}s; backbone '
         f'params {before.params:,} -> {after.params:,} ({after.params / dense_params:.1%} of '
         f'the dense {dense_params:,})')
    if not ranks:
        _log('warning: no layer was worth factorizing at this rule (rank*(in+out) >= in*out '
             'everywhere); the outputs describe the unfactorized model')

    out = copy.deepcopy(subnet)
    out.lowrank = dict(method=args.method, ranks=ranks,
                       targets=list(rule_kwargs.get('targets', ())), rule=rule)
    out.stats = dict(out.stats, params_before=dense_params, params_after=after.params,
                     macs_after=after.macs, input_size=list(input_size),
                     params_before_lowrank=before.params, macs_before_lowrank=before.macs)
    out.source = dict(out.source, lowrank=source)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    check_rebuild(backbone, out)
    summary = dict(method=args.method, rule=rule, rule_text=_rule_text(rule),
                   targets=list(rule_kwargs.get('targets', ())), config=osp.abspath(args.config),
                   checkpoint=osp.abspath(args.checkpoint), subnet_from=subnet_from,
                   params_dense=int(dense_params), params_before=before.params,
                   params_after=after.params, macs_before=before.macs, macs_after=after.macs,
                   input_size=list(input_size), replaced=len(ranks), seed=args.seed,
                   sidt_mmdet_version=sidt_mmdet.__version__)
    meta = dict(lowrank={k: summary[k] for k in ('method', 'rule', 'targets', 'params_dense',
                                                 'params_before', 'params_after')},
                source=source, sidt_mmdet_version=sidt_mmdet.__version__)
    old_meta = ckpt.get('meta') if isinstance(ckpt, dict) else None
    if isinstance(old_meta, dict) and isinstance(old_meta.get('dataset_meta'), dict):
        meta['dataset_meta'] = old_meta['dataset_meta']  # class names for inference tools
    rows = table_rows(report)
    write_outputs(out_dir, args.overwrite, out, state, meta, rows, summary)
    _log(f'wrote {SUBNET_FILE}, {CHECKPOINT_FILE}, {TABLE_MD}, {TABLE_CSV}, {REPORT_JSON} to '
         f'{out_dir} ({time.time() - t0:.1f}s)')
    return summary


def main(argv=None) -> dict:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return run(args)
    except (LowRankToolError, FileExistsError, FileNotFoundError, SubnetError,
            UnsafeCheckpointError) as e:
        parser.exit(2, f'{parser.prog}: error: {e}\n')


if __name__ == '__main__':
    main(sys.argv[1:])
