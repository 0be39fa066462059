"""Low-rank factorization of a trained model's SIDTViT backbone, as a library call.

:func:`lowrank_export` is what ``tools/lowrank.py`` runs (see its help for the rules and
the hybrid recipe); the rank rules themselves are in ``docs/method.md``. ``out_dir``
receives, all or nothing: ``subnet.json`` (the subnet with ``lowrank`` ranks),
``lowrank.pth`` (the whole factorized model, ``{'state_dict', 'meta'}``), a per-layer table
``lowrank_table.md`` / ``.csv`` and ``lowrank_report.json``. A retrain config rebuilds the
model from the subnet alone and loads ``lowrank.pth`` with no missing or unexpected keys.
"""
from __future__ import annotations

import copy
import csv
import math
import os.path as osp
import time
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from torch import nn

from .. import __version__
from ..export.lowrank import (
    ALL_METHODS,
    CALIBRATED_METHODS,
    TARGETS,
    collect_input_covariances,
    lowrank_model,
    replaced_ranks,
)
from ..export.prune import prune_model_state_dict
from ..models import SIDTViT, Subnet
from ..models.complexity import backbone_complexity
from ..search.select import select_subnet
from ..utils import load_checkpoint_safe, save_checkpoint_atomic
from ..utils.cli import ToolError
from ..utils.config import backbone_cfg
from ..utils.fileio import atomic_output_dir, check_output_dir, write_json_atomic, write_text_atomic
from ..utils.state_dict import cpu_state_dict, load_state_dict_strict, state_dict_of
from .result import SUBNET_FILE, ExportedDir
from .runtime import build_model

__all__ = ['RULES', 'SUBNET_FILE', 'CHECKPOINT_FILE', 'TABLE_MD', 'TABLE_CSV', 'REPORT_JSON',
           'LowRankError', 'LowRankResult', 'lowrank_export', 'load_source_model',
           'prepare_subnet', 'build_pruned_model', 'select_mlp_subnet', 'check_rebuild',
           'RankRule', 'Energy', 'ParamsBudget', 'BackboneRatio', 'Rank', 'RanksFrom',
           'LowRankOptions', 'choose_rule', 'factorize', 'calibration_covariances',
           'table_rows', 'write_outputs']

RULES = ('energy', 'params_budget', 'backbone_ratio', 'rank', 'ranks_from')
CHECKPOINT_FILE = 'lowrank.pth'
TABLE_MD = 'lowrank_table.md'
TABLE_CSV = 'lowrank_table.csv'
REPORT_JSON = 'lowrank_report.json'
TABLE_FIELDS = ('layer', 'in', 'out', 'rank', 'replaced', 'params_before', 'params_after',
                'rel_error')


class LowRankError(ToolError, ValueError):
    """Bad input for a factorization; the message names the flag or file at fault."""


@dataclass
class LowRankResult(ExportedDir):
    """What :func:`lowrank_export` wrote: the factorized subnet (``subnet_file``), the
    checkpoint, the summary of ``lowrank_report.json`` and its per-layer rows."""

    CHECKPOINT_FILE: ClassVar[str] = CHECKPOINT_FILE

    summary: dict = field(default_factory=dict)
    rows: list[dict] = field(default_factory=list)


def _log(msg: str) -> None:
    print(f'[lowrank] {msg}', flush=True)


def _state_dict_of(ckpt, where: str) -> dict[str, torch.Tensor]:
    try:
        return state_dict_of(ckpt, where)
    except ValueError as e:
        raise LowRankError(str(e)) from None


def _load_strict(model: nn.Module, state: dict, where: str, what: str) -> None:
    try:
        load_state_dict_strict(model, state, where, what)
    except ValueError as e:
        raise LowRankError(str(e)) from None


def load_source_model(cfg: Config, checkpoint: str) -> tuple[nn.Module, dict]:
    """The model as CONFIG describes it, with CHECKPOINT loaded strictly; and the checkpoint."""
    try:
        backbone_cfg(cfg.model, cfg.filename or 'config')  # a SIDTViT, or refused
    except ValueError as e:
        raise LowRankError(str(e)) from None
    model = build_model(cfg, where=cfg.filename or 'config')
    ckpt = load_checkpoint_safe(checkpoint)
    _load_strict(model, _state_dict_of(ckpt, checkpoint), checkpoint,
                 f'the model of {cfg.filename}')
    return model.eval(), ckpt


def select_mlp_subnet(backbone: SIDTViT, keep_ratio: float, round_to: int = 8,
                      source: dict | None = None) -> Subnet:
    """Hybrid: keep ``keep_ratio`` of the MLP units (by searched mask magnitude, pooled over
    blocks, so widths differ per block) and every attention dim.

    ``select_subnet(kinds=('mlp',))`` selects the MLP units alone, so attention (and the
    embedding) stays whole however it was searched.
    """
    if backbone.mode != 'search' or 'mlp' not in backbone.search_dims:
        raise LowRankError('--mlp-keep-ratio needs a searched model: CONFIG\'s backbone '
                               f'must be mode="search" with "mlp" in search_dims (got '
                               f'mode={backbone.mode!r}, search_dims={backbone.search_dims})')
    return select_subnet(backbone, keep_ratio=keep_ratio, round_to=round_to, kinds=('mlp',),
                         source=dict(source or {}, mlp_keep_ratio=keep_ratio))


def prepare_subnet(model: nn.Module, subnet_path: str | None, mlp_keep_ratio: float | None,
                   round_to: int, config: str, source: dict) -> tuple[Subnet, str]:
    """The subnet to factorize on, and how it was obtained (for the log)."""
    bb = model.backbone
    arch = (bb.embed_dims_dense, bb.num_layers, bb.num_heads, bb.mlp_hidden)
    if bb.mode == 'pruned':
        if subnet_path is not None or mlp_keep_ratio is not None:
            flag = '--subnet' if subnet_path is not None else '--mlp-keep-ratio'
            raise LowRankError(f'{flag}: the backbone of {config} is already pruned; give '
                                   'the dense or search config and its checkpoint instead')
        subnet = copy.deepcopy(bb.subnet)
        if subnet.lowrank:
            raise LowRankError(f'{config}: the model is already factorized (its subnet '
                                   f'records {len(subnet.lowrank.get("ranks", {}))} low-rank '
                                   'layers); start from the checkpoint before factorization')
        return subnet, 'the subnet of the pruned config'
    if subnet_path is not None:
        try:
            subnet = Subnet.load(subnet_path)
            subnet.check_arch(*arch, where=f'--subnet {subnet_path}')
        except (OSError, ValueError) as e:
            raise LowRankError(f'--subnet: {e}') from None
        if subnet.lowrank:
            raise LowRankError(f'--subnet {subnet_path}: already records low-rank layers; '
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
    model = build_model(cfg, subnet=subnet, where=cfg.filename or 'config')
    _load_strict(model, state, where, 'the pruned model')
    return model.eval()


def check_rebuild(backbone: SIDTViT, subnet: Subnet) -> None:
    """A retrain config builds the backbone from the subnet file alone: prove that it gives
    exactly the factorized backbone's keys and shapes before anything is written (the rest of
    the model is built from the same config either way)."""
    rebuilt = backbone.to_pruned(Subnet.from_dict(subnet.to_dict()),
                                 layout=backbone.spec.pruned_layout)
    _load_strict(rebuilt, backbone.state_dict(), 'the factorized backbone',
                 'the backbone rebuilt from its subnet file')


# -------------------------------------------------------------------- rank rules
def _targeted(backbone: nn.Module, targets) -> dict[str, nn.Linear]:
    return {name: m for name, m in backbone.named_modules() if isinstance(m, nn.Linear)
            and any(name.endswith('.' + t) for t in targets)}


def _layer_params(layers: dict[str, nn.Linear]) -> int:
    return sum(p.numel() for m in layers.values() for p in m.parameters())


@dataclass(frozen=True)
class RankRule:
    """One rank rule of a factorization (see ``docs/method.md``), typed: a subclass per rule,
    each with its ``value``; :meth:`of` picks one from the keyword form."""

    name: ClassVar[str] = ''
    value: float | int | str

    @property
    def flag(self) -> str:
        return '--' + self.name.replace('_', '-')

    @staticmethod
    def of(**given) -> RankRule:
        """The one rule given as ``energy=``, ``params_budget=``, ``backbone_ratio=``,
        ``rank=`` or ``ranks_from=`` (the others ``None``)."""
        unknown = sorted(set(given) - set(RULES))
        if unknown:
            raise LowRankError(f'unknown rank rule {unknown}; expected one of {", ".join(RULES)}')
        named = [r for r in RULES if given.get(r) is not None]
        if len(named) != 1:
            raise LowRankError(f'give exactly one rank rule of {", ".join(RULES)}, got '
                               f'{", ".join(named) or "none"}')
        return _RULE_TYPES[named[0]](given[named[0]])

    def resolve(self, backbone: SIDTViT, layers: dict[str, nn.Linear], targets: tuple,
                dense_params: int) -> tuple[dict, dict]:
        """(keyword arguments for ``lowrank_model``, the rule as the outputs record it)."""
        raise NotImplementedError


class Energy(RankRule):
    """Per layer, the smallest rank keeping this fraction of sum sigma^2."""

    name = 'energy'

    def resolve(self, backbone, layers, targets, dense_params):
        return dict(energy=self.value, targets=targets), dict(energy=self.value)


class ParamsBudget(RankRule):
    """Parameters of the targeted layers after factorization, ranks chosen globally."""

    name = 'params_budget'

    def resolve(self, backbone, layers, targets, dense_params):
        return dict(params_budget=self.value, targets=targets), dict(params_budget=self.value)


class Rank(RankRule):
    """The same rank for every targeted layer (< min(in, out) of each)."""

    name = 'rank'

    def resolve(self, backbone, layers, targets, dense_params):
        too_big = [f'{n} ({m.out_features}x{m.in_features})' for n, m in layers.items()
                   if self.value >= min(m.in_features, m.out_features)]
        if too_big:
            raise LowRankError(
                f'--rank {self.value}: must be < min(in, out) of every targeted layer; too big '
                f'for {", ".join(too_big[:6])}' + (' ...' if len(too_big) > 6 else ''))
        return dict(ranks={n: self.value for n in layers}), dict(rank=self.value)


class RanksFrom(RankRule):
    """The ranks recorded in another subnet file (methods compared at equal params)."""

    name = 'ranks_from'

    def resolve(self, backbone, layers, targets, dense_params):
        try:
            other = Subnet.load(self.value)
        except (OSError, ValueError) as e:
            raise LowRankError(f'--ranks-from: {e}') from None
        if not other.lowrank or not other.lowrank.get('ranks'):
            raise LowRankError(f'--ranks-from {self.value}: records no low-rank layers '
                               '(lowrank.ranks is empty)')
        ranks = dict(other.lowrank['ranks'])
        modules = dict(backbone.named_modules())
        bad = [n for n, r in ranks.items() if not isinstance(modules.get(n), nn.Linear)
               or r >= min(modules[n].in_features, modules[n].out_features)]
        if bad:
            raise LowRankError(f'--ranks-from {self.value}: does not fit this backbone '
                               f'(no such Linear, or rank >= min(in, out)): {bad[:6]}')
        return dict(ranks=ranks), dict(ranks_from=osp.abspath(self.value))


class BackboneRatio(RankRule):
    """The whole backbone ends at this fraction of its dense architecture's params: what
    pruning left outside the targeted layers is fixed, the targeted layers get the rest."""

    name = 'backbone_ratio'

    def resolve(self, backbone, layers, targets, dense_params):
        target = self.value * dense_params
        current = sum(p.numel() for p in backbone.parameters())
        fixed = current - _layer_params(layers)
        budget = math.floor(target - fixed)
        if current <= target:
            raise LowRankError(
                f'--backbone-ratio {self.value}: the backbone already has {current:,} '
                f'params <= {target:,.0f} ({self.value} x {dense_params:,} dense); '
                'nothing to factorize')
        if budget <= 0:
            raise LowRankError(
                f'--backbone-ratio {self.value}: the layers outside --targets alone have '
                f'{fixed:,} params > the target {target:,.0f}; prune more (--mlp-keep-ratio) '
                'or target more layers')
        return (dict(params_budget=budget, targets=targets),
                dict(backbone_ratio=self.value, params_budget=budget))


_RULE_TYPES = {c.name: c for c in (Energy, ParamsBudget, BackboneRatio, Rank, RanksFrom)}


def choose_rule(rule: RankRule, backbone: SIDTViT, dense_params: int,
                targets=TARGETS) -> tuple[dict, dict]:
    """(keyword arguments for ``lowrank_model``, the rule as recorded in the outputs)."""
    targets = tuple(dict.fromkeys(targets))
    layers = _targeted(backbone, targets)
    if not layers and not isinstance(rule, RanksFrom):
        raise LowRankError(f'--targets {" ".join(targets)}: no such Linear in the backbone')
    return rule.resolve(backbone, layers, targets, dense_params)


def factorize(backbone: SIDTViT, method: str, rule_kwargs: dict, rule: dict,
              seed: int = 0, input_covs: dict | None = None) -> dict:
    """``lowrank_model`` on the backbone (in place); a ValueError names the rule's flag."""
    generator = torch.Generator(device=next(backbone.parameters()).device).manual_seed(seed)
    try:
        return lowrank_model(backbone, method, generator=generator, input_covs=input_covs,
                             **rule_kwargs)
    except ValueError as e:
        flag = '--' + next(iter(rule)).replace('_', '-')
        raise LowRankError(f'{flag}: {e}') from None


def calibration_covariances(cfg: Config, model: nn.Module, names: list[str],
                            num_batches: int) -> dict[str, torch.Tensor]:
    """Input covariances of the backbone layers ``names`` over ``num_batches`` batches of the
    config's ``train_dataloader`` (the training distribution, through the model's own data
    preprocessor), for ``svd_whitened``.

    Raises:
        LowRankError: the config has no ``train_dataloader`` or it yields no batch.
    """
    from mmengine.runner import Runner
    if not cfg.get('train_dataloader'):
        raise LowRankError('--calibration-batches: svd_whitened needs calibration data, and '
                           'the config has no train_dataloader to draw it from')
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    loader = Runner.build_dataloader(copy.deepcopy(cfg.train_dataloader), seed=0)
    model.eval()

    def run():
        used = 0
        for batch in loader:
            data = model.data_preprocessor(batch, False)
            model(data['inputs'], data.get('data_samples'), mode='tensor')
            used += 1
            if used >= num_batches:
                break
        if used == 0:
            raise LowRankError('--calibration-batches: the train_dataloader yielded no batch')

    return collect_input_covariances(model.backbone, names, run)


def _params(backbone: nn.Module) -> int:
    return sum(p.numel() for p in backbone.parameters())


# ------------------------------------------------------------------------ outputs
def table_rows(report: dict) -> list[dict]:
    """Per layer: the table's fields, and ``out_rel_error`` (the error on the calibration
    outputs) when the method was calibrated (it goes to the JSON report only)."""
    return [dict(layer=name, **{k: e[k] for k in TABLE_FIELDS[1:]},
                 **({'out_rel_error': e['out_rel_error']} if 'out_rel_error' in e else {}))
            for name, e in report.items()]


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
            writer = csv.DictWriter(f, fieldnames=TABLE_FIELDS, extrasaction='ignore')
            writer.writeheader()
            writer.writerows(rows)
        write_text_atomic(osp.join(tmp, TABLE_MD), _markdown(rows, summary))
        write_json_atomic(osp.join(tmp, REPORT_JSON), dict(summary=summary, layers=rows))


# --------------------------------------------------------------------------- main
def _rule_text(rule: dict) -> str:
    return ', '.join(f'{k.replace("_", " ")} {v}' for k, v in rule.items())


@dataclass(frozen=True)
class LowRankOptions:
    """Everything one :func:`lowrank_export` does, typed (see its docstring)."""

    config: str
    checkpoint: str
    out_dir: str
    method: str
    rule: RankRule
    targets: tuple[str, ...] = TARGETS
    subnet: str | None = None
    mlp_keep_ratio: float | None = None
    round_to: int = 8
    device: str = 'cpu'
    seed: int = 0
    overwrite: bool = False
    cfg_options: dict | None = None
    calibration_batches: int = 8


def _check_files(args: LowRankOptions) -> None:
    ranks_from = args.rule.value if isinstance(args.rule, RanksFrom) else None
    for flag, path in (('CONFIG', args.config), ('CHECKPOINT', args.checkpoint),
                       ('--subnet', args.subnet), ('--ranks-from', ranks_from)):
        if path is not None and not osp.isfile(path):
            raise LowRankError(f'{flag}: file not found: {path}')


def _run(args: LowRankOptions) -> LowRankResult:
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
            dense_bb = bb.to_dense()
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
    rule_kwargs, rule = choose_rule(args.rule, backbone, dense_params, args.targets)
    layer_names = list(rule_kwargs.get('ranks') or _targeted(backbone, rule_kwargs['targets']))
    n_layers = len(layer_names)
    input_covs = None
    if args.method in CALIBRATED_METHODS:
        _log(f'calibration: input covariances of {n_layers} layers over '
             f'{args.calibration_batches} train batches')
        input_covs = calibration_covariances(cfg, model, layer_names, args.calibration_batches)
    _log(f'factorizing {n_layers} Linear layers with {args.method} ({_rule_text(rule)})')
    t1 = time.time()
    report = factorize(backbone, args.method, rule_kwargs, rule, args.seed, input_covs)
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
    state = cpu_state_dict(model, subnet_file=osp.join(out_dir, SUBNET_FILE))
    check_rebuild(backbone, out)
    summary = dict(method=args.method, rule=rule, rule_text=_rule_text(rule),
                   targets=list(rule_kwargs.get('targets', ())), config=osp.abspath(args.config),
                   checkpoint=osp.abspath(args.checkpoint), subnet_from=subnet_from,
                   params_dense=int(dense_params), params_before=before.params,
                   params_after=after.params, macs_before=before.macs, macs_after=after.macs,
                   input_size=list(input_size), replaced=len(ranks), seed=args.seed,
                   sidt_mmdet_version=__version__)
    meta = dict(lowrank={k: summary[k] for k in ('method', 'rule', 'targets', 'params_dense',
                                                 'params_before', 'params_after')},
                source=source, sidt_mmdet_version=__version__)
    old_meta = ckpt.get('meta') if isinstance(ckpt, dict) else None
    if isinstance(old_meta, dict) and isinstance(old_meta.get('dataset_meta'), dict):
        meta['dataset_meta'] = old_meta['dataset_meta']  # class names for inference tools
    rows = table_rows(report)
    write_outputs(out_dir, args.overwrite, out, state, meta, rows, summary)
    _log(f'wrote {SUBNET_FILE}, {CHECKPOINT_FILE}, {TABLE_MD}, {TABLE_CSV}, {REPORT_JSON} to '
         f'{out_dir} ({time.time() - t0:.1f}s)')
    return LowRankResult(out_dir=out_dir, subnet=out, summary=summary, rows=rows)


def lowrank_export(config: str, checkpoint: str, out_dir: str, *, method: str,
                   energy: float | None = None, params_budget: int | None = None,
                   backbone_ratio: float | None = None, rank: int | None = None,
                   ranks_from: str | None = None, targets=TARGETS, subnet: str | None = None,
                   mlp_keep_ratio: float | None = None, round_to: int = 8, device: str = 'cpu',
                   seed: int = 0, overwrite: bool = False,
                   cfg_options: dict | None = None, calibration_batches: int = 8,
                   rule: RankRule | None = None) -> LowRankResult:
    """Factorize the backbone of ``config`` + ``checkpoint`` and write ``out_dir``.

    One rank rule: ``energy`` (per layer, kept fraction of sum sigma^2), ``params_budget``
    (parameters of the targeted layers after factorization), ``backbone_ratio`` (the whole
    backbone ends at this fraction of its dense architecture's params), ``rank`` (every
    targeted layer) or ``ranks_from`` (the ranks recorded in another subnet file), or the
    same as a typed ``rule`` (:class:`Energy`, :class:`ParamsBudget`, :class:`BackboneRatio`,
    :class:`Rank`, :class:`RanksFrom`; ``RankRule.of(energy=0.9)``). A
    searched model is first pruned to ``subnet`` or, with ``mlp_keep_ratio``, to an
    MLP-only subnet (the hybrid); a pruned model keeps its subnet. ``svd_whitened`` draws
    ``calibration_batches`` batches of the config's ``train_dataloader``
    (:func:`calibration_covariances`).

    Raises:
        LowRankError: the inputs do not fit; the message names the flag or file.
    """
    keyword = dict(energy=energy, params_budget=params_budget, backbone_ratio=backbone_ratio,
                   rank=rank, ranks_from=ranks_from)
    if rule is not None and any(v is not None for v in keyword.values()):
        raise LowRankError('give the rank rule as rule= or as its keyword, not both')
    rule = rule if rule is not None else RankRule.of(**keyword)
    if not isinstance(rule, RankRule):
        raise LowRankError(f'rule: expected a RankRule (Energy, ParamsBudget, BackboneRatio, '
                           f'Rank or RanksFrom), got {rule!r}')
    if method not in ALL_METHODS:
        raise LowRankError(f'method must be one of {", ".join(ALL_METHODS)}, got {method!r}')
    if method in CALIBRATED_METHODS and (isinstance(calibration_batches, bool) or not
                                         isinstance(calibration_batches, int)
                                         or calibration_batches < 1):
        raise LowRankError(f'--calibration-batches: {method} needs calibration data (at least '
                           f'one batch of the train set), got {calibration_batches!r}')
    if subnet is not None and mlp_keep_ratio is not None:
        raise LowRankError('subnet and mlp_keep_ratio exclude each other')
    return _run(LowRankOptions(
        config=config, checkpoint=checkpoint, out_dir=out_dir, method=method, rule=rule,
        targets=tuple(targets), subnet=subnet, mlp_keep_ratio=mlp_keep_ratio,
        round_to=round_to, device=device, seed=seed, overwrite=overwrite,
        cfg_options=cfg_options, calibration_batches=calibration_batches))
