"""Export a searched SIDTViT model: select a subnet for a budget, prune it, write the result.

    python tools/export_subnet.py CONFIG CHECKPOINT --keep-ratio 0.6 -o OUT_DIR
    python tools/export_subnet.py CONFIG CHECKPOINT --params 60M -o OUT_DIR
    python tools/export_subnet.py CONFIG CHECKPOINT --flops 150G --input-size 1024 1024 -o OUT_DIR

CONFIG is the search config the CHECKPOINT was trained with (backbone ``mode='search'``).
OUT_DIR receives, all or nothing (built in a hidden directory beside it, then renamed):

    subnet.json   kept dims per block, budget, params/MACs before and after, source files
    pruned.pth    the whole model's weights sliced to the subnet, masks folded in
                  (``{'state_dict': ..., 'meta': ...}``, loads with weights_only=True)
    widths.md     per-layer table: heads, q/k and v widths, MLP width, params, MACs
    widths.csv    the same table as CSV
    widths.png    kept width per layer

The retrain config of the same name reads them; for another OUT_DIR pass
``--cfg-options model.backbone.subnet=OUT_DIR/subnet.json load_from=OUT_DIR/pruned.pth``.
"""
from __future__ import annotations

import argparse
import copy
import csv
import os
import os.path as osp
import re
import shutil
import sys
import tempfile

import torch
from mmengine.config import Config, DictAction
from mmengine.registry import MODELS, init_default_scope

import sidt_mmdet  # noqa: F401  (registers our components, installs safe checkpoint loading)
from sidt_mmdet.export import prune_model_state_dict
from sidt_mmdet.models import Subnet
from sidt_mmdet.models.slicing import MASK_SUFFIXES, is_mask_key
from sidt_mmdet.search.select import GRANULARITIES, select_subnet
from sidt_mmdet.utils import load_checkpoint_safe, save_checkpoint_atomic
from sidt_mmdet.utils.complexity import backbone_complexity

PROG = 'export_subnet.py'
SUBNET_FILE = 'subnet.json'
CHECKPOINT_FILE = 'pruned.pth'
TABLE_COLUMNS = ('block', 'attention', 'heads', 'qk_width', 'v_width', 'mlp_width',
                 'params_before', 'params_after', 'macs_before', 'macs_after')
_SUFFIXES = {'': 1, 'K': 10 ** 3, 'M': 10 ** 6, 'G': 10 ** 9, 'T': 10 ** 12}


class ExportError(Exception):
    """A user-facing failure: printed as one ``error:`` line, no traceback."""


def log(msg: str) -> None:
    print(f'[export] {msg}', flush=True)


# ----------------------------------------------------------------------------- arguments
def _keep_ratio(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected a number in (0, 1], got {text!r}') from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f'expected a value in (0, 1], got {value:g}')
    return value


def _count(text: str) -> int:
    """A positive count: 1500000, 1.5e6, 1.5M, 300G."""
    m = re.fullmatch(r'\s*([0-9.eE+-]+)\s*([kKmMgGtT]?)\s*', text)
    try:
        value = float(m.group(1)) * _SUFFIXES[m.group(2).upper()] if m else None
    except ValueError:
        value = None
    if value is None:
        raise argparse.ArgumentTypeError(f'expected a count such as 12000000, 1.2e7 or 12M, '
                                         f'got {text!r}')
    if not value > 0:
        raise argparse.ArgumentTypeError(f'expected a positive target, got {text!r}')
    return int(round(value))


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=PROG, description=__doc__.split('\n\n')[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog='\n\n'.join(__doc__.split('\n\n')[1:]))
    parser.add_argument('config', help='the search config the checkpoint was trained with')
    parser.add_argument('checkpoint', help='checkpoint of the search run (with *_mask tensors)')
    budget = parser.add_mutually_exclusive_group(required=True)
    budget.add_argument('--keep-ratio', type=_keep_ratio,
                        help='fraction of each searched kind of dims to keep, in (0, 1]')
    budget.add_argument('--params', type=_count,
                        help='target backbone parameters (e.g. 60M), at most the dense count')
    budget.add_argument('--flops', type=_count,
                        help='target backbone MACs per image at --input-size (e.g. 150G)')
    budget.add_argument('--subnet', help='prune to this subnet file instead of selecting one')
    parser.add_argument('-o', '--out-dir', required=True, help='directory to create')
    parser.add_argument('--granularity', choices=GRANULARITIES, default='dim',
                        help='single dims, one width per head within a block, or whole heads '
                             '(default: %(default)s)')
    parser.add_argument('--round-to', type=int, default=8,
                        help='round kept widths up to a multiple of this; 1: off '
                             '(default: %(default)s)')
    parser.add_argument('--min-heads', type=int, default=1, help='heads kept per block, at least')
    parser.add_argument('--min-mlp', type=int, default=8, help='MLP units kept per block, at least')
    parser.add_argument('--input-size', type=int, nargs=2, metavar=('H', 'W'),
                        help='image size for MACs (default: the backbone img_size)')
    parser.add_argument('--device', default='cpu', help='device to load the model on')
    parser.add_argument('--overwrite', action='store_true',
                        help='replace OUT_DIR if it exists and is not empty')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, as in tools/train.py')
    args = parser.parse_args(argv)
    if args.round_to < 1:
        parser.error(f'argument --round-to: expected an integer >= 1, got {args.round_to}')
    if args.input_size and min(args.input_size) <= 0:
        parser.error(f'argument --input-size: expected positive H W, got {args.input_size}')
    return args


# ------------------------------------------------------------------------ output directory
def check_out_dir(out_dir: str, overwrite: bool) -> str:
    """Fail before any work when OUT_DIR cannot be written; return its absolute path."""
    out_dir = osp.abspath(osp.expanduser(out_dir))
    if osp.exists(out_dir):
        if not osp.isdir(out_dir):
            raise ExportError(f'output {out_dir} exists and is not a directory')
        if os.listdir(out_dir) and not overwrite:
            raise ExportError(f'output directory {out_dir} exists and is not empty '
                              '(pass --overwrite to replace it)')
    parent = osp.dirname(out_dir)
    existing = parent
    while not osp.exists(existing):
        existing = osp.dirname(existing)
    if not osp.isdir(existing):
        raise ExportError(f'cannot create {out_dir}: {existing} is not a directory')
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ExportError(f'cannot write to {existing} (permission denied): cannot create '
                          f'{out_dir}')
    return out_dir


class AtomicDir:
    """Write into a hidden directory beside ``out_dir``; rename it into place on success.

    On failure, everything this run created (the temporary directory and any parent
    directories it had to make) is removed.
    """

    def __init__(self, out_dir: str, overwrite: bool):
        self.out_dir, self.overwrite = out_dir, overwrite
        self.created: list[str] = []
        self.tmp: str | None = None

    def __enter__(self) -> str:
        parent = osp.dirname(self.out_dir)
        missing = []
        while not osp.isdir(parent):
            missing.append(parent)
            parent = osp.dirname(parent)
        try:
            for d in reversed(missing):
                os.mkdir(d)
                self.created.append(d)
            self.tmp = tempfile.mkdtemp(prefix=f'.{osp.basename(self.out_dir)}.tmp-',
                                        dir=osp.dirname(self.out_dir))
        except OSError as e:
            self._cleanup()
            raise ExportError(f'cannot create {self.out_dir}: {e.strerror or e}') from None
        return self.tmp

    def commit(self) -> None:
        old = None
        if osp.exists(self.out_dir):
            if os.listdir(self.out_dir) and not self.overwrite:  # appeared meanwhile
                raise ExportError(f'output directory {self.out_dir} exists and is not empty '
                                  '(pass --overwrite to replace it)')
            old = tempfile.mkdtemp(prefix=f'.{osp.basename(self.out_dir)}.old-',
                                   dir=osp.dirname(self.out_dir))
            os.rmdir(old)
            os.rename(self.out_dir, old)
        # mkstemp/mkdtemp create owner-only files; give them the usual permissions.
        mask = _umask()
        for name in os.listdir(self.tmp):
            os.chmod(osp.join(self.tmp, name), 0o666 & ~mask)
        os.chmod(self.tmp, 0o777 & ~mask)
        try:
            os.rename(self.tmp, self.out_dir)
        except OSError:
            if old is not None:  # put the previous output back
                os.rename(old, self.out_dir)
            raise
        self.tmp = None
        if old is not None:
            shutil.rmtree(old)

    def _cleanup(self) -> None:
        if self.tmp is not None and osp.isdir(self.tmp):
            shutil.rmtree(self.tmp, ignore_errors=True)
        for d in reversed(self.created):
            try:
                os.rmdir(d)
            except OSError:
                pass

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None or self.tmp is not None:
            self._cleanup()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# ---------------------------------------------------------------------------- the model
def _search_model_cfg(cfg: Config, config_path: str) -> dict:
    """The model config to build (flat or nested SIDTModel), checked to be a search model."""
    model_cfg = copy.deepcopy(cfg.model)
    inner = model_cfg.get('model') if isinstance(model_cfg.get('model'), dict) else model_cfg
    backbone = inner.get('backbone')
    if not isinstance(backbone, dict) or not str(backbone.get('type', '')).endswith('SIDTViT'):
        raise ExportError(f'{config_path}: model.backbone must be a SIDTViT, got '
                          f'{backbone.get("type") if isinstance(backbone, dict) else backbone!r}')
    if backbone.get('mode', 'dense') != 'search':
        raise ExportError(f'{config_path}: model.backbone.mode is '
                          f'{backbone.get("mode", "dense")!r}; export needs the search config '
                          "the checkpoint was trained with (mode='search')")
    backbone['init_cfg'] = None  # every weight comes from the checkpoint
    return model_cfg


def _retrain_cfg(model_cfg: dict, subnet: Subnet) -> dict:
    """The model of the retrain stage: same config, pruned backbone, no sparsity loss."""
    cfg = copy.deepcopy(model_cfg)
    cfg.pop('sparsity', None)
    inner = cfg.get('model') if isinstance(cfg.get('model'), dict) else cfg
    inner['backbone'].update(mode='pruned', subnet=subnet.to_dict(), init_cfg=None)
    return cfg


def load_search_state(path: str, model: torch.nn.Module) -> dict:
    """The checkpoint's state dict, checked against the model; refuses one without masks."""
    try:
        ckpt = load_checkpoint_safe(path, map_location='cpu')
    except FileNotFoundError:
        raise ExportError(f'checkpoint not found: {path}') from None
    state = ckpt.get('state_dict', ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise ExportError(f'{path}: expected a checkpoint with a state dict of tensors')
    state = {k[len('module.'):] if k.startswith('module.') else k: v for k, v in state.items()}
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
    shapes = [f'{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}'
              for k, v in state.items() if k in own and own[k].shape != v.shape]
    if shapes:
        raise ExportError(f'{path} does not fit the config\'s model; shape mismatches:\n  '
                          + '\n  '.join(shapes[:20]))
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys:
        raise ExportError(f'{path} lacks {len(result.missing_keys)} tensors of the config\'s '
                          f'model, e.g. {result.missing_keys[:5]}')
    if result.unexpected_keys:
        log(f'warning: ignoring {len(result.unexpected_keys)} tensors the model does not have, '
            f'e.g. {result.unexpected_keys[:5]}')
    meta = ckpt.get('meta') if isinstance(ckpt, dict) else None
    return dict(state=state, masks=masks, meta=meta if isinstance(meta, dict) else {})


def _to_cpu(state: dict) -> dict:
    # Checkpoints load on any machine: tensors are stored on the CPU, as mmengine stores them.
    return {k: v.detach().to('cpu') for k, v in state.items()}


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


def write_csv(rows: list[dict], path: str) -> None:
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
def export(args: argparse.Namespace) -> str:
    out_dir = check_out_dir(args.out_dir, args.overwrite)
    config_path, ckpt_path = osp.abspath(args.config), osp.abspath(args.checkpoint)
    if not osp.isfile(config_path):
        raise ExportError(f'config not found: {args.config}')
    if not osp.isfile(ckpt_path):
        raise ExportError(f'checkpoint not found: {args.checkpoint}')
    given_subnet = None
    if args.subnet is not None:  # validated before the model is built
        given_subnet = Subnet.load(args.subnet)

    log(f'building the model of {args.config}')
    cfg = Config.fromfile(config_path)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    model_cfg = _search_model_cfg(cfg, args.config)
    model = MODELS.build(model_cfg).to(args.device).eval()
    backbone = model.backbone

    log(f'loading {args.checkpoint}')
    loaded = load_search_state(ckpt_path, model)
    log(f'{len(loaded["masks"])} mask tensors loaded')

    input_size = tuple(args.input_size) if args.input_size else tuple(backbone.img_size)
    source = dict(config=config_path, checkpoint=ckpt_path)
    if given_subnet is not None:
        given_subnet.check_arch(backbone.embed_dims_dense, backbone.num_layers,
                                backbone.num_heads, backbone.mlp_hidden, where=args.subnet)
        subnet = given_subnet
        subnet.source = dict(source, subnet=osp.abspath(args.subnet))
        log(f'using the subnet of {args.subnet}')
    else:
        kind = next(k for k in ('keep_ratio', 'params', 'flops') if getattr(args, k) is not None)
        log(f'selecting a subnet: {kind}={getattr(args, kind)}, granularity={args.granularity}, '
            f'round_to={args.round_to}, input size {input_size[0]}x{input_size[1]}')
        subnet = select_subnet(backbone, keep_ratio=args.keep_ratio, params=args.params,
                               flops=args.flops, input_size=input_size,
                               granularity=args.granularity, round_to=args.round_to,
                               min_heads=args.min_heads, min_mlp=args.min_mlp, source=source)

    log('pruning the model state dict and rebuilding the pruned model from config + subnet')
    pruned_state = prune_model_state_dict(model.state_dict(), subnet)
    retrain = MODELS.build(_retrain_cfg(model_cfg, subnet))
    result = retrain.load_state_dict(pruned_state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ExportError('the pruned state dict does not fit the pruned model: missing '
                          f'{result.missing_keys[:5]}, unexpected {result.unexpected_keys[:5]}')
    before = backbone_complexity(backbone, input_size)
    after = backbone_complexity(retrain.backbone, input_size)
    real_params = sum(p.numel() for p in retrain.backbone.parameters())
    if given_subnet is not None or not subnet.stats:
        subnet.stats = dict(params_before=before.params, params_after=after.params,
                            macs_before=before.macs, macs_after=after.macs,
                            input_size=list(input_size))
    log(f'backbone params {before.params:,} -> {after.params:,} '
        f'({after.params / before.params:.1%}; counted in the pruned model: {real_params:,})')
    log(f'backbone MACs at {input_size[0]}x{input_size[1]}: {before.macs:,} -> {after.macs:,} '
        f'({after.macs / before.macs:.1%})')
    if real_params != after.params:
        log(f'warning: analytic params {after.params:,} differ from the model\'s {real_params:,}')

    title = (f'{osp.basename(args.config)}: params {after.params / before.params:.1%}, '
             f'MACs {after.macs / before.macs:.1%} of dense, '
             f'embed {retrain.backbone.embed_dims}/{backbone.embed_dims_dense}')
    rows = width_rows(before, after, backbone, retrain.backbone)
    table = markdown_table(rows, title)
    meta = dict(sidt_export=dict(config=config_path, checkpoint=ckpt_path, subnet=SUBNET_FILE,
                                 budget=_plain(subnet.budget), stats=_plain(subnet.stats)))
    for key in ('dataset_meta', 'mmengine_version', 'seed', 'experiment_name'):
        value = _plain(loaded['meta'].get(key))
        if value is not None:
            meta[key] = value

    print(table, flush=True)
    atomic = AtomicDir(out_dir, args.overwrite)
    with atomic as tmp:
        log(f'writing {out_dir}')
        subnet.save(osp.join(tmp, SUBNET_FILE))
        save_checkpoint_atomic(dict(state_dict=_to_cpu(pruned_state), meta=meta),
                               osp.join(tmp, CHECKPOINT_FILE))
        with open(osp.join(tmp, 'widths.md'), 'w', encoding='utf-8') as f:
            f.write(table)
        write_csv(rows, osp.join(tmp, 'widths.csv'))
        plot_widths(subnet, backbone, osp.join(tmp, 'widths.png'), title)
        atomic.commit()
    return out_dir


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        out_dir = export(args)
    except (ExportError, ValueError, OSError) as e:  # SubnetError is a ValueError
        print(f'{PROG}: error: {e}', file=sys.stderr, flush=True)
        return 1
    log(f'done: {out_dir}/{{{SUBNET_FILE}, {CHECKPOINT_FILE}, widths.md, widths.csv, '
        'widths.png}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
