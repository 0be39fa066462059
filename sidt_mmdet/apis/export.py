"""Export a searched SIDTViT model: select a subnet for a budget, prune it, write the result.

    python tools/export_subnet.py CONFIG CHECKPOINT --keep-ratio 0.6 -o OUT_DIR
    python tools/export_subnet.py CONFIG CHECKPOINT --params 60M -o OUT_DIR
    python tools/export_subnet.py CONFIG CHECKPOINT --macs 150G --input-size 1024 1024 -o OUT_DIR

CONFIG is the search config the CHECKPOINT was trained with (backbone ``mode='search'``).
Its ``sidt_export`` section, when present, holds the selection it was searched for
(``sidt_export = dict(keep_ratio=0.6, round_to=8)``: a budget and any of the selection
settings below); a budget flag replaces the section's budget, any other flag its setting, so

    python tools/export_subnet.py CONFIG CHECKPOINT -o OUT_DIR

exports at the config's own budget.

OUT_DIR receives, all or nothing (built in a hidden directory beside it, then renamed):

    subnet.json   kept dims per block, budget, params/MACs before and after, source files
    pruned.pth    the whole model's weights sliced to the subnet, masks folded in
                  (``{'state_dict': ..., 'meta': ...}``, loads with weights_only=True)
    widths.md     per-layer table: heads, q/k and v widths, MLP width, params, MACs
    widths.csv    the same table as CSV
    widths.png    kept width per layer

The retrain config of the same name reads them; for another OUT_DIR pass
``--cfg-options model.backbone.subnet=OUT_DIR/subnet.json load_from=OUT_DIR/pruned.pth``.
(:func:`export_subnet` is the library call behind the tool; this text is its ``--help``.)
"""
from __future__ import annotations

import csv
import os
import os.path as osp
import time
from dataclasses import dataclass, field

import torch
from mmengine.config import Config

from ..export import prune_model_state_dict
from ..models import Subnet
from ..models.complexity import ComplexityReport, backbone_complexity
from ..models.slicing import MASK_SUFFIXES, is_mask_key
from ..search.select import select_subnet
from ..utils import load_checkpoint_safe, save_checkpoint_atomic
from ..utils.cli import ToolError
from ..utils.config import backbone_cfg
from ..utils.deprecation import warn_once
from ..utils.fileio import atomic_output_dir, check_output_dir, write_text_atomic
from ..utils.state_dict import (
    compare_state_dicts,
    cpu_state_dict,
    explain_backbone_keys,
    state_dict_of,
)
from .result import SUBNET_FILE, ExportedDir
from .runtime import build_model

__all__ = ['BUDGET_KINDS', 'SUBNET_FILE', 'CHECKPOINT_FILE', 'TABLE_COLUMNS', 'ExportError',
           'ExportResult', 'export_subnet', 'load_search_state', 'width_rows', 'markdown_table',
           'plot_widths', 'config_selection', 'SELECTION_DEFAULTS']

BUDGET_KINDS = ('keep_ratio', 'params', 'macs', 'latency', 'latency_ms', 'subnet')
CHECKPOINT_FILE = ExportedDir.CHECKPOINT_FILE
TABLE_COLUMNS = ('block', 'attention', 'heads', 'qk_width', 'v_width', 'mlp_width',
                 'params_before', 'params_after', 'macs_before', 'macs_after')


class ExportError(ToolError):
    """The inputs of an export do not fit (config, checkpoint, budget, output)."""


@dataclass
class ExportResult(ExportedDir):
    """What :func:`export_subnet` wrote (``subnet_file``, ``checkpoint``) and measured."""

    before: ComplexityReport | None = None
    after: ComplexityReport | None = None
    rows: list[dict] = field(default_factory=list)
    # with overwrite, what out_dir held before (see _previous_export), else None
    replaced: dict | None = None

    def __repr__(self) -> str:
        """One line: where, for which budget, the kept widths in total and the ratios (the
        kept indices are in ``subnet``)."""
        s = self.subnet
        budget = dict(s.budget)
        kind, value = budget.pop('kind', None), budget.pop('value', None)
        head = [f'{kind}={value}'] if kind is not None else []
        budget_text = ', '.join(head + [f'{k}={budget[k]}' for k in ('granularity', 'round_to')
                                        if k in budget])
        w = s.widths()
        mlp = [b['mlp'] for b in w]
        heads = sum(len(s.active_heads(i)) for i in range(s.num_layers))
        n = s.num_layers
        widths = (f'heads {heads}/{n * s.num_heads}, '
                  f'q/k {sum(map(sum, (b["qk"] for b in w)))}/{n * s.embed_dims}, '
                  f'v {sum(map(sum, (b["v"] for b in w)))}/{n * s.embed_dims}, '
                  f'MLP {sum(mlp)}/{n * s.mlp_hidden} ({min(mlp)}-{max(mlp)} per block), '
                  f'embed {len(s.kept_embed)}/{s.embed_dims}')
        stats = s.stats or {}
        params = _ratio(self.after.params if self.after else stats.get('params_after'),
                        self.before.params if self.before else stats.get('params_before'))
        macs = _ratio(self.after.macs if self.after else stats.get('macs_after'),
                      self.before.macs if self.before else stats.get('macs_before'))
        return (f'ExportResult(out_dir={self.out_dir!r}, budget={budget_text!r}, '
                f'widths={widths!r}, params={params}, MACs={macs})')


def _ratio(after, before) -> str:
    """``after / before`` to three places, or ``'?'`` when either is unknown."""
    return f'x{after / before:.3f}' if after and before else '?'


def _previous_export(out_dir: str) -> dict | None:
    """What an export with ``overwrite`` replaces in ``out_dir`` (None: nothing there)."""
    if not osp.isdir(out_dir) or not os.listdir(out_dir):
        return None
    subnet_file, ckpt = osp.join(out_dir, SUBNET_FILE), osp.join(out_dir, CHECKPOINT_FILE)
    try:
        digest = Subnet.load(subnet_file).digest()
    except (OSError, ValueError):  # no subnet.json, or not one
        digest = None
    written = (time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(osp.getmtime(ckpt)))
               if osp.isfile(ckpt) else None)
    return dict(subnet_file=subnet_file, digest=digest, written=written,
                checkpoint=ckpt if written else None, entries=sorted(os.listdir(out_dir)))


def _replaced_message(old: dict, subnet: Subnet, out_dir: str) -> str:
    """The warning of an export that replaced ``old`` (from :func:`_previous_export`)."""
    if old['digest'] is None:
        shown = ', '.join(old['entries'][:5]) + (', ...' if len(old['entries']) > 5 else '')
        return (f'warning: --overwrite replaced {out_dir}, which held no readable '
                f'{SUBNET_FILE} ({shown})')
    ckpt = osp.join(out_dir, CHECKPOINT_FILE)
    old_ckpt = (f'{ckpt} (written {old["written"]})' if old['checkpoint'] else
                f'no {CHECKPOINT_FILE}')
    if old['digest'] == subnet.digest():
        return (f'warning: --overwrite replaced the export in {out_dir}: the same subnet '
                f'(digest {old["digest"]}) and {old_ckpt}; retrains that loaded the old '
                f'{CHECKPOINT_FILE} still load with {SUBNET_FILE}, but started from the old '
                'weights')
    return (f'warning: --overwrite replaced the export in {out_dir}: {old["subnet_file"]} '
            f'(digest {old["digest"]}, now {subnet.digest()}) and {old_ckpt}. Earlier '
            f'retrains loaded the old {CHECKPOINT_FILE}: their checkpoints were made for the '
            f'old subnet and are refused with the new {SUBNET_FILE} (export to a new '
            'directory to keep both)')


def log(msg: str) -> None:
    print(f'[export] {msg}', flush=True)


# ---------------------------------------------------------------------------- the model
def _check_search_config(cfg: Config, config_path: str) -> None:
    """Refuse a config whose model (flat or nested SIDTModel) is not a search model."""
    try:
        backbone = backbone_cfg(cfg.model, config_path)
    except ValueError as e:
        raise ExportError(str(e)) from None
    if backbone.get('mode', 'dense') != 'search':
        raise ExportError(f'{config_path}: model.backbone.mode is '
                          f'{backbone.get("mode", "dense")!r}; export needs the search config '
                          "the checkpoint was trained with (mode='search')")


def load_search_state(path: str, model: torch.nn.Module) -> dict:
    """The checkpoint's state dict, checked against the model; refuses one without masks."""
    try:
        ckpt = load_checkpoint_safe(path, map_location='cpu')
    except FileNotFoundError:
        raise ExportError(f'checkpoint not found: {path}') from None
    try:
        state = state_dict_of(ckpt, path)
    except ValueError as e:
        raise ExportError(str(e)) from None
    masks = sorted(k for k in state if is_mask_key(k))
    if not masks:
        raise ExportError(f'{path} has no search mask parameters (no key ends in '
                          f'{", ".join(MASK_SUFFIXES)}): it is a dense or already pruned '
                          'checkpoint. Export needs the checkpoint of a search run '
                          "(backbone mode='search', configs/sidt/search/).")
    own = model.state_dict()
    want = sorted(k for k in own if is_mask_key(k))
    if masks != want:
        raise ExportError(f'{path}: its masks {masks[:4]}... do not match the masks of the '
                          f'config\'s model {want[:4]}... (different search_dims/split_qkv?)')
    mismatch = compare_state_dicts(own, state)
    if mismatch.shapes:
        raise ExportError(f'{path} does not fit the config\'s model; shape mismatches:\n  '
                          + '\n  '.join(mismatch.shapes[:20]))
    if mismatch.missing:
        raise ExportError(f'{path} lacks {len(mismatch.missing)} tensors of the config\'s '
                          f'model, e.g. {mismatch.missing[:5]}')
    extra = [k for k in mismatch.unexpected if k.startswith('backbone.')]
    if extra:  # the pruned.pth would silently lose them (rel-pos tables, a class token...)
        backbone = model.backbone
        raise ExportError(f'{path} does not fit the config\'s backbone: ' + explain_backbone_keys(
            [], [k[len('backbone.'):] for k in extra],
            backbone.spec.settings(), 'backbone.'))
    if mismatch.unexpected:
        log(f'warning: ignoring {len(mismatch.unexpected)} tensors the model does not have, '
            f'e.g. {mismatch.unexpected[:5]}')
    model.load_state_dict({k: v for k, v in state.items() if k in own}, strict=True)
    meta = ckpt.get('meta') if isinstance(ckpt, dict) else None
    return dict(state=state, masks=masks, meta=meta if isinstance(meta, dict) else {})


def _plain(value):
    """JSON-like copy (tuples -> lists, numpy scalars -> Python); None for anything else."""
    if isinstance(value, dict):
        out = {str(k): _plain(v) for k, v in value.items()}
        return {k: v for k, v in out.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    if hasattr(value, 'item') and getattr(value, 'ndim', 1) == 0:
        return value.item()
    return None


# ---------------------------------------------------------------------------- the tables
def width_rows(before, after, backbone, pruned) -> list[dict]:
    rows = []
    for b, a, blk in zip(before.blocks, after.blocks, backbone.blocks):
        rows.append(dict(
            block=b['block'],
            attention=f'window {blk.window_size}' if blk.window_size > 0 else 'global',
            heads=f'{a["heads"]}/{b["heads"]}', qk_width=f'{a["s_qk"]}/{b["s_qk"]}',
            v_width=f'{a["s_v"]}/{b["s_v"]}', mlp_width=f'{a["mlp"]}/{b["mlp"]}',
            params_before=b['params'], params_after=a['params'],
            macs_before=b['macs'], macs_after=a['macs']))
    embed = f'{pruned.embed_dims}/{backbone.embed_dims_dense}'
    rows.append(dict(block='stem', attention='', heads='', qk_width='', v_width='',
                     mlp_width=f'embed {embed}', params_before=before.stem['params'],
                     params_after=after.stem['params'], macs_before=before.stem['macs'],
                     macs_after=after.stem['macs']))
    rows.append(dict(block='total', attention='', heads='', qk_width='', v_width='',
                     mlp_width='', params_before=before.params, params_after=after.params,
                     macs_before=before.macs, macs_after=after.macs))
    return rows


def _fmt(n) -> str:
    if not isinstance(n, int):
        return str(n)
    for unit, scale in (('G', 10 ** 9), ('M', 10 ** 6), ('K', 10 ** 3)):
        if abs(n) >= scale:
            return f'{n / scale:.3f}{unit}'
    return str(n)


def markdown_table(rows: list[dict], title: str) -> str:
    lines = [f'# {title}', '', '| ' + ' | '.join(TABLE_COLUMNS) + ' |',
             '|' + '---|' * len(TABLE_COLUMNS)]
    lines += ['| ' + ' | '.join(_fmt(r[c]) for c in TABLE_COLUMNS) + ' |' for r in rows]
    return '\n'.join(lines) + '\n'


def _write_csv(rows: list[dict], path: str) -> None:
    with open(path, 'w', newline='', encoding='utf-8') as f:
        writer = csv.DictWriter(f, fieldnames=TABLE_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def plot_widths(subnet: Subnet, backbone, path: str, title: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    widths = subnet.widths()
    blocks = list(range(len(widths)))
    qk = [sum(w['qk']) for w in widths]
    v = [sum(w['v']) for w in widths]
    mlp = [w['mlp'] for w in widths]
    labels = [f'{i}{"*" if blk.window_size == 0 else ""}' for i, blk in enumerate(backbone.blocks)]
    fig, (ax_attn, ax_mlp) = plt.subplots(1, 2, figsize=(max(8, 0.5 * len(blocks) + 6), 3.6))
    step = 0.4
    ax_attn.bar([b - step / 2 for b in blocks], qk, width=step, label='q/k dims')
    ax_attn.bar([b + step / 2 for b in blocks], v, width=step, label='v dims')
    ax_attn.axhline(backbone.embed_dims_dense, color='gray', ls='--', lw=1, label='dense')
    ax_attn.set_title('attention: kept dims (sum over heads)')
    ax_mlp.bar(blocks, mlp, width=0.6, color='tab:green', label='hidden units')
    ax_mlp.axhline(backbone.mlp_hidden, color='gray', ls='--', lw=1, label='dense')
    ax_mlp.set_title('MLP: kept hidden units')
    for ax in (ax_attn, ax_mlp):
        ax.set_xticks(blocks, labels)
        ax.set_xlabel('block (* = global attention)')
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ------------------------------------------------------------------------------- export
def _budget_kind(budget: dict) -> str:
    if 'flops' in budget:  # the older name of the MACs budget
        if budget.get('macs') is not None:
            raise ExportError('budget: give macs or its older name flops, not both')
        warn_once('export_subnet: the flops budget is deprecated, use macs (the budget was '
                  'always in MACs)', stacklevel=4)
        budget['macs'] = budget.pop('flops')
    given = [k for k in BUDGET_KINDS if budget.get(k) is not None]
    unknown = sorted(set(budget) - set(BUDGET_KINDS))
    if unknown or len(given) != 1:
        raise ExportError(f'budget: expected exactly one of {", ".join(BUDGET_KINDS)}, got '
                          f'{dict(budget)!r}')
    return given[0]


def export_subnet(cfg: str | Config, checkpoint: str, budget: dict | None, out_dir: str, *,
                  granularity: str | None = None, round_to: int | None = None,
                  min_heads: int | None = None, min_mlp: int | None = None,
                  head_widths: str | None = None, macs_count: str | None = None,
                  equal_heads: bool = False, macs: str | None = None,
                  input_size: tuple[int, int] | None = None, device: str = 'cpu',
                  overwrite: bool = False, cfg_options: dict | None = None,
                  latency_table: str | None = None,
                  unit_order: str | None = None,
                  latency_measure: bool | None = None) -> ExportResult:
    """Select a subnet of the searched model ``cfg`` + ``checkpoint`` and write it.

    Args:
        cfg: the search config (path, or a ``Config`` read from one) the checkpoint was
            trained with (backbone ``mode='search'``).
        budget: exactly one of ``keep_ratio`` (fraction of each searched kind of dims),
            ``params`` (backbone parameters), ``macs`` (backbone MACs per image at
            ``input_size``; ``flops`` is its older name), ``latency`` / ``latency_ms``
            (predicted backbone latency, a fraction of the dense one or milliseconds, by
            ``latency_table``: the JSON that ``tools/analysis/latency_table.py`` writes for
            this model at ``input_size``) or
            ``subnet`` (a subnet file to prune to instead of selecting); empty or ``None``:
            the budget of the config's ``sidt_export`` section.
        out_dir: created with all the files or none (see the module doc).
        latency_measure: meet a latency budget in *measured* latency on this machine
            (:func:`~sidt_mmdet.search.latency_loop.select_subnet_measured`: select,
            measure, re-select at a corrected budget); needs a latency budget and a table
            whose key is this machine's (device, dtype, torch, threads), refused otherwise
            naming the key. ``latency_ms`` is then measured milliseconds.
        granularity, head_widths, round_to, min_heads, min_mlp, macs_count, unit_order:
            passed to ``select_subnet`` (``head_widths``: ``'free'``, ``'uniform'``, ``'equal'`` or
            ``'padded'``; ``equal_heads=True`` and ``macs='kept'``/``'executed'`` are the
            older spellings of ``head_widths='equal'`` and ``macs_count``).
        input_size: image size for MACs (default: the backbone's ``img_size``).
        A setting left ``None`` takes the config's ``sidt_export`` value, else the default
        (``granularity='dim'``, ``round_to=8``, ``min_heads=1``, ``min_mlp=8``).

    Raises:
        ExportError: the inputs do not fit; ``OSError``/``SubnetError`` from the files.
    """
    budget = dict(budget or {})
    if budget:
        _budget_kind(dict(budget))  # a bad budget is refused before any file is read
    out_dir = check_output_dir(out_dir, overwrite)
    config_path, config_name, ckpt_path = _input_paths(cfg, checkpoint)
    cfg = cfg if isinstance(cfg, Config) else Config.fromfile(config_path)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    budget, settings = config_selection(cfg, config_name, budget, dict(
        granularity=granularity, round_to=round_to, min_heads=min_heads, min_mlp=min_mlp,
        head_widths=head_widths, macs_count=macs_count, input_size=input_size,
        latency_table=latency_table, unit_order=unit_order, latency_measure=latency_measure))
    granularity, round_to, min_heads, min_mlp, head_widths, macs_count, input_size, \
        latency_table, unit_order, latency_measure = settings.values()
    kind = _budget_kind(budget)
    latency_table = _latency_settings(kind, latency_table, latency_measure)
    # validated before the model is built
    given_subnet = Subnet.load(budget['subnet']) if kind == 'subnet' else None

    log(f'building the model of {config_name}')
    _check_search_config(cfg, config_name)
    model = build_model(cfg, device=device, where=config_name)
    log(f'loading {checkpoint}')
    loaded = load_search_state(ckpt_path, model)
    log(f'{len(loaded["masks"])} mask tensors loaded')

    backbone = model.backbone
    input_size = tuple(input_size) if input_size else tuple(backbone.img_size)
    source = dict(config=config_path, checkpoint=ckpt_path)
    if given_subnet is not None:
        subnet = _given_subnet(given_subnet, backbone, budget['subnet'], checkpoint, source)
    else:
        log(f'selecting a subnet: {kind}={budget[kind]}, granularity={granularity}, '
            f'round_to={round_to}, input size {input_size[0]}x{input_size[1]}')
        legacy = dict(macs=macs) if macs is not None else {}  # select_subnet warns once
        # the closed loop checks the table's key against this machine before timing
        select = _select_measured if latency_measure else select_subnet
        subnet = select(backbone, **{kind: budget[kind]}, input_size=input_size,
                        granularity=granularity, head_widths=head_widths, round_to=round_to,
                        min_heads=min_heads, min_mlp=min_mlp, equal_heads=equal_heads,
                        macs_count=macs_count, source=source, latency_table=latency_table,
                        unit_order=unit_order, **legacy)
    retrain = _rebuild(cfg, model, subnet, config_name)
    before, after = _log_cost(backbone, retrain.backbone, subnet, input_size,
                              given=given_subnet is not None)
    title = (f'{osp.basename(config_name)}: params {after.params / before.params:.1%}, '
             f'MACs {after.macs / before.macs:.1%} of dense, '
             f'embed {retrain.backbone.embed_dims}/{backbone.embed_dims_dense}')
    rows = width_rows(before, after, backbone, retrain.backbone)
    table = markdown_table(rows, title)
    print(table, flush=True)
    replaced = _previous_export(out_dir) if overwrite else None
    meta = _checkpoint_meta(config_path, ckpt_path, subnet, loaded['meta'])
    _write_export(out_dir, overwrite, subnet, retrain, meta, table, rows, backbone, title)
    if replaced is not None:
        log(_replaced_message(replaced, subnet, out_dir))
    return ExportResult(out_dir=out_dir, subnet=subnet, before=before, after=after, rows=rows,
                        replaced=replaced)


def _latency_settings(kind: str, latency_table, latency_measure):
    """The latency table of a latency budget, loaded (``None`` for another budget); a table
    without a latency budget, a latency budget without one and ``latency_measure`` without
    a latency budget are refused before the model is built."""
    latency = kind in ('latency', 'latency_ms')
    if latency != (latency_table is not None):
        raise ExportError('a latency budget needs --latency-table (and the table goes with a '
                          f'latency budget; got {kind})')
    if latency_measure and not latency:
        raise ExportError('--latency-measure (sidt_export.latency_measure) measures a latency '
                          'budget on this machine: it needs --latency or --latency-ms (got '
                          f'{kind})')
    if latency_table is None:
        return None
    from ..search.latency import load_latency_table
    return load_latency_table(latency_table)


def _select_measured(backbone, **kw):
    """``select_subnet`` in closed loop: the budget met in measured latency here."""
    from ..search.latency_loop import select_subnet_measured
    return select_subnet_measured(backbone, log=log, **kw)


SELECTION_DEFAULTS = dict(granularity='dim', round_to=8, min_heads=1, min_mlp=8,
                          head_widths=None, macs_count=None, input_size=None,
                          latency_table=None, unit_order=None, latency_measure=False)


def config_selection(cfg: Config, config_name: str, budget: dict, given: dict
                     ) -> tuple[dict, dict]:
    """The budget and selection settings of an export: ``budget`` and the ``given``
    settings that are not ``None``, else the config's ``sidt_export`` section, else
    :data:`SELECTION_DEFAULTS`. Returns ``(budget, settings)``, settings in ``given``'s
    order. An unknown key of the section is refused by name."""
    section = cfg.get('sidt_export') or {}
    if not isinstance(section, dict):
        raise ExportError(f'{config_name}: sidt_export must be a dict (a budget such as '
                          f'keep_ratio=0.6 and selection settings), got {section!r}')
    known = set(BUDGET_KINDS) | set(SELECTION_DEFAULTS)
    unknown = sorted(set(section) - known)
    if unknown:
        raise ExportError(f'{config_name}: sidt_export.{unknown[0]} is not an export setting; '
                          f'expected a budget ({", ".join(BUDGET_KINDS)}) or one of '
                          f'{", ".join(SELECTION_DEFAULTS)}')
    if not budget:
        budget = {k: section[k] for k in BUDGET_KINDS if section.get(k) is not None}
        if not budget:
            raise ExportError(f'no budget: give one (--keep-ratio, --params, --macs, --latency, '
                              f'--latency-ms or --subnet), or set sidt_export = dict('
                              f'keep_ratio=...) in {config_name}')
    settings = {k: v if v is not None else section.get(k, SELECTION_DEFAULTS[k])
                for k, v in given.items()}
    if settings['input_size'] is not None:
        settings['input_size'] = tuple(settings['input_size'])
    return budget, settings


def _input_paths(cfg: str | Config, checkpoint: str) -> tuple[str, str, str]:
    """(the config's absolute path, its name in messages, the checkpoint's absolute path),
    each refused when the file is missing."""
    if isinstance(cfg, Config):
        config_path, config_name = osp.abspath(cfg.filename), cfg.filename
    else:
        config_path, config_name = osp.abspath(cfg), cfg
        if not osp.isfile(config_path):
            raise ExportError(f'config not found: {cfg}')
    ckpt_path = osp.abspath(checkpoint)
    if not osp.isfile(ckpt_path):
        raise ExportError(f'checkpoint not found: {checkpoint}')
    return config_path, config_name, ckpt_path


def _given_subnet(subnet: Subnet, backbone, path: str, checkpoint: str, source: dict) -> Subnet:
    """A subnet file to prune to, checked against the searched backbone."""
    subnet.check_arch(backbone.embed_dims_dense, backbone.num_layers, backbone.num_heads,
                      backbone.mlp_hidden, where=path)
    if subnet.embed is not None and backbone.embed_mask is None:
        raise ExportError(
            f'{path} prunes the embedding ({len(subnet.embed)} of '
            f'{backbone.embed_dims_dense} channels kept) but {checkpoint} was searched '
            f'without the embedding mask (search_dims={list(backbone.search_dims)}): '
            "nothing ranked those channels; search with 'embed' in search_dims, or use a "
            'subnet whose "embed" is null')
    subnet.source = dict(source, subnet=osp.abspath(path))
    log(f'using the subnet of {path}')
    return subnet


def _rebuild(cfg: Config, model, subnet: Subnet, config_name: str):
    """The retrain model built from config + subnet, with the sliced weights loaded strictly."""
    log('pruning the model state dict and rebuilding the pruned model from config + subnet')
    pruned_state = prune_model_state_dict(model.state_dict(), subnet)
    retrain = build_model(cfg, subnet=subnet.to_dict(), where=config_name)
    mismatch = compare_state_dicts(retrain.state_dict(), pruned_state)
    if mismatch:
        raise ExportError(f'the pruned state dict does not fit the pruned model; '
                          f'{mismatch.describe()}')
    retrain.load_state_dict(pruned_state, strict=True)
    return retrain


def _log_cost(backbone, pruned, subnet: Subnet, input_size, given: bool):
    """Dense and pruned complexity, logged; a given subnet file (or one without figures)
    gets its ``stats`` filled."""
    before = backbone_complexity(backbone, input_size)
    after = backbone_complexity(pruned, input_size)
    real_params = sum(p.numel() for p in pruned.parameters())
    if given or not subnet.stats:
        subnet.stats = dict(params_before=before.params, params_after=after.params,
                            macs_before=before.macs, macs_after=after.macs,
                            input_size=list(input_size))
    log(f'backbone params {before.params:,} -> {after.params:,} '
        f'({after.params / before.params:.1%}; counted in the pruned model: {real_params:,})')
    log(f'backbone MACs at {input_size[0]}x{input_size[1]}: {before.macs:,} -> {after.macs:,} '
        f'({after.macs / before.macs:.1%})')
    if real_params != after.params:
        log(f'warning: analytic params {after.params:,} differ from the model\'s {real_params:,}')
    return before, after


def _checkpoint_meta(config_path: str, ckpt_path: str, subnet: Subnet, source_meta: dict) -> dict:
    meta = dict(sidt_export=dict(config=config_path, checkpoint=ckpt_path, subnet=SUBNET_FILE,
                                 budget=_plain(subnet.budget), stats=_plain(subnet.stats)))
    for key in ('dataset_meta', 'mmengine_version', 'seed', 'experiment_name'):
        value = _plain(source_meta.get(key))
        if value is not None:
            meta[key] = value
    return meta


def _write_export(out_dir, overwrite, subnet, retrain, meta, table, rows, backbone, title):
    """subnet.json, pruned.pth and the width tables and plot, all or none."""
    with atomic_output_dir(out_dir, overwrite) as tmp:
        log(f'writing {out_dir}')
        subnet.save(osp.join(tmp, SUBNET_FILE))
        # the model's own state dict: it records the subnet's digest for later loads
        save_checkpoint_atomic(dict(state_dict=cpu_state_dict(
            retrain, subnet_file=osp.join(out_dir, SUBNET_FILE)), meta=meta),
            osp.join(tmp, CHECKPOINT_FILE))
        write_text_atomic(osp.join(tmp, 'widths.md'), table)
        _write_csv(rows, osp.join(tmp, 'widths.csv'))
        plot_widths(subnet, backbone, osp.join(tmp, 'widths.png'), title)
    log(f'done: {out_dir}/{{{SUBNET_FILE}, {CHECKPOINT_FILE}, widths.md, widths.csv, '
        'widths.png}')
