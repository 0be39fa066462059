"""Export a dense or pruned SIDTViT (optionally with its SIDTSimpleFPN) to ONNX, checked.

The graph is written by ``torch.onnx.export`` with the dynamo exporter (``torch.export``
traces symbolic sizes, so the position-embedding resampling, the window padding and the
relative-position tables of global blocks follow the input size inside one graph; the
TorchScript exporter bakes them in at the example size). After writing, onnxruntime
must reproduce the PyTorch outputs to ``atol`` at the export size and, for a dynamic
graph, at a second size whose token grid needs window padding (and whose pixels need
patch padding); a graph that fails is never left at the output path.

``onnx`` and ``onnxruntime`` (the ``deploy`` dependency group) are imported inside the
functions that need them: ``import sidt_mmdet`` never requires them. The onnxruntime
benchmark and the latency table of docs/deploy.md are in :mod:`.onnx_bench`.
"""
from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import os.path as osp
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from mmdet.registry import MODELS
from mmengine.config import Config
from mmengine.registry import init_default_scope
from torch import nn

from ..models.backbones.sidt_vit import SIDTViT
from ..models.subnet import Subnet
from ..utils import load_checkpoint_safe
from ..utils.config import backbone_cfg as find_backbone_cfg
from ..utils.config import inner_model_cfg, is_type
from ..utils.fileio import write_json_atomic
from ..utils.state_dict import compare_state_dicts, state_dict_of

__all__ = ['OnnxExportError', 'SUPPORTED_OPSETS', 'DEFAULT_OPSET', 'DEPLOY_HINT',
           'ExportModel', 'OnnxCheck', 'OnnxExportResult', 'OnnxRunner',
           'require_deploy', 'build_export_model', 'dense_counterpart', 'export_onnx',
           'check_onnx', 'second_check_size', 'export_onnx_from_config']
# The benchmark and the latency table live in onnx_bench.py; these names still resolve here.
_BENCH_NAMES = frozenset({'onnx_latency', 'benchmark_onnx', 'README_BEGIN', 'README_END',
                          'README_PAGE', 'latency_readme_block', 'update_latency_readme'})

# Opsets the dynamo exporter writes natively (no version conversion) and onnxruntime runs.
SUPPORTED_OPSETS = tuple(range(18, 24))
DEFAULT_OPSET = 18
DEPLOY_HINT = "pip install 'sidt-mmdet[deploy]' (onnx, onnxruntime, onnxscript)"
_META_PREFIX = 'sidt_mmdet.'
# protobuf cannot hold a single file over 2 GiB: larger graphs keep their weights beside it.
_EXTERNAL_DATA_BYTES = 1_500_000_000


class OnnxExportError(ValueError):
    """A bad input or a failed check of the ONNX export, with a message meant for the user."""


def require_deploy():
    """Import and return ``(onnx, onnxruntime)``; a clear error when the group is missing."""
    missing = []
    modules = []
    for name in ('onnx', 'onnxruntime', 'onnxscript'):
        try:
            modules.append(__import__(name))
        except ImportError:
            missing.append(name)
    if missing:
        raise OnnxExportError(f'ONNX export needs {", ".join(missing)} (the deploy dependency '
                              f'group): {DEPLOY_HINT}')
    return modules[0], modules[1]


# ------------------------------------------------------------------------------ the model
class ExportModel(nn.Module):
    """The exported function: image batch -> backbone map, or -> the pyramid levels."""

    def __init__(self, backbone: nn.Module, neck: nn.Module | None = None,
                 neck_cfg: dict | None = None):
        super().__init__()
        self.backbone = backbone
        self.neck = neck
        self.neck_cfg = neck_cfg  # how to rebuild the neck (for the dense baseline)

    @property
    def patch_size(self) -> int:
        return self.backbone.patch_size

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        feats = self.backbone(x)
        if self.neck is not None:
            feats = self.neck(feats)
        return tuple(feats)

    def output_names(self) -> list[str]:
        """``feat`` for the backbone map; ``p2``.. (log2 of the stride) for pyramid levels."""
        if self.neck is None:
            return ['feat']
        p = self.patch_size
        if hasattr(self.neck, 'out_strides'):
            # from the neck's own strides: deep levels of a small probe input all shrink to
            # 1 x 1 and could not be told apart by their shapes
            return [f'p{int(round(math.log2(s)))}' for s in self.neck.out_strides(p)]
        size = 4 * p
        with torch.no_grad():
            outs = self(torch.zeros(1, self.backbone.patch_embed.proj.in_channels, size, size))
        return [f'p{int(round(torch.log2(torch.tensor(size / o.shape[-1])).item()))}'
                for o in outs]


def _model_cfg_parts(model_cfg: dict, where: str) -> tuple[dict, dict | None]:
    """The backbone and neck dicts of a (flat or SIDTModel-wrapped) model config."""
    try:
        backbone = find_backbone_cfg(model_cfg, where)
    except ValueError as e:
        raise OnnxExportError(str(e)) from None
    neck = inner_model_cfg(model_cfg).get('neck')
    return backbone, neck if isinstance(neck, dict) else None


def _strip(state: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def _load_strict(module: nn.Module, state: dict, where: str, what: str) -> None:
    """Load ``state`` into ``module``, or raise naming every missing, unexpected and
    misshapen key, with a hint at the usual cause."""
    mismatch = compare_state_dicts(module.state_dict(), state)
    if mismatch:
        hint = ''
        if any(k.endswith('_mask') for k in mismatch.unexpected):
            hint = ('; this is a search checkpoint: export a subnet first with '
                    'tools/export_subnet.py, then export its pruned.pth with --subnet')
        elif mismatch.shapes:
            hint = ('; a pruned checkpoint needs the config (or --subnet) of the subnet it was '
                    'pruned to')
        raise OnnxExportError(f'{where} does not fit the {what} of the config; '
                              f'{mismatch.describe()}{hint}')
    module.load_state_dict(state, strict=True)


def build_export_model(config, checkpoint: str | None, subnet: str | None = None,
                       with_neck: bool = False, cfg_options: dict | None = None) -> ExportModel:
    """Build the backbone (and neck) of ``config``, pruned by ``subnet`` if given, and load
    ``checkpoint`` (a detector/classifier checkpoint with ``backbone.``/``neck.`` keys) strictly.

    ``config`` is a path or an mmengine ``Config``. ``checkpoint=None`` keeps the initial
    weights (benchmarks). Raises :class:`OnnxExportError` when the config has no SIDTViT,
    the backbone is in search mode, or the checkpoint does not fit.
    """
    where = config if isinstance(config, str) else 'config'
    if isinstance(config, str):
        if not osp.isfile(config):
            raise OnnxExportError(f'config not found: {config}')
        cfg = Config.fromfile(config)
    else:
        cfg = copy.deepcopy(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    backbone_cfg, neck_cfg = _model_cfg_parts(copy.deepcopy(cfg.model.to_dict()
                                                            if hasattr(cfg.model, 'to_dict')
                                                            else cfg.model), where)
    if subnet is not None:
        if not osp.isfile(subnet):
            raise OnnxExportError(f'subnet file not found: {subnet}')
        Subnet.load(subnet)  # validated before anything is built
        backbone_cfg.update(mode='pruned', subnet=subnet)
    mode = backbone_cfg.get('mode', 'dense')
    if mode == 'search':
        raise OnnxExportError(f"{where}: model.backbone.mode is 'search'; export a dense or "
                              'pruned backbone (the retrain config, or this config with '
                              '--subnet SUBNET.json and the pruned checkpoint)')
    backbone_cfg['init_cfg'] = None  # every weight comes from the checkpoint
    try:
        backbone = MODELS.build(backbone_cfg)
    except ValueError as e:  # SubnetError included: it names the field
        raise OnnxExportError(f'{where}: cannot build the backbone: {e}') from None
    neck = None
    if with_neck:
        if neck_cfg is None:
            raise OnnxExportError(f'{where}: --with-neck but model.neck is not set')
        neck_cfg = dict(neck_cfg, init_cfg=None)
        if is_type(neck_cfg, 'SIDTSimpleFPN'):
            neck_cfg['input_channels'] = SIDTViT.out_channels_from_cfg(backbone_cfg)
        neck = MODELS.build(neck_cfg)

    if checkpoint is not None:
        if not osp.isfile(checkpoint):
            raise OnnxExportError(f'checkpoint not found: {checkpoint}')
        state = state_dict_of(load_checkpoint_safe(checkpoint, map_location='cpu'), checkpoint)
        backbone_state = _strip(state, 'backbone.')
        if not backbone_state:
            raise OnnxExportError(f'{checkpoint}: no backbone.* tensors (expected the checkpoint '
                                  'of a model built from this config)')
        _load_strict(backbone, backbone_state, checkpoint, 'backbone')
        if neck is not None:
            neck_state = _strip(state, 'neck.')
            if not neck_state:
                raise OnnxExportError(f'{checkpoint}: --with-neck but the checkpoint has no '
                                      'neck.* tensors')
            _load_strict(neck, neck_state, checkpoint, 'neck')
    return ExportModel(backbone, neck, neck_cfg if with_neck else None).eval()


def dense_counterpart(model: ExportModel) -> ExportModel:
    """The same architecture with every width dense (initial weights): the latency baseline."""
    backbone = model.backbone.to_dense()
    neck = None
    if model.neck is not None:
        if model.neck_cfg is None:
            raise OnnxExportError('dense_counterpart: the model has a neck but no neck_cfg to '
                                  'rebuild it dense from')
        neck_cfg = dict(model.neck_cfg)
        if 'input_channels' in neck_cfg:
            neck_cfg['input_channels'] = backbone.embed_dims
        neck = MODELS.build(neck_cfg)
    return ExportModel(backbone, neck, model.neck_cfg).eval()


# ------------------------------------------------------------------------------- checking
def _check_opset(opset: int) -> None:
    if isinstance(opset, bool) or not isinstance(opset, int) or opset not in SUPPORTED_OPSETS:
        raise OnnxExportError(f'opset {opset!r} is not supported: expected one of '
                              f'{SUPPORTED_OPSETS[0]}..{SUPPORTED_OPSETS[-1]} (the dynamo '
                              'exporter writes opset >= 18)')


def _check_size(size: Sequence[int], patch: int, dynamic: bool) -> tuple[int, int]:
    if len(size) != 2 or any(isinstance(s, bool) or not isinstance(s, int) or s <= 0
                             for s in size):
        raise OnnxExportError(f'input size: expected two positive integers H W, got {size}')
    h, w = int(size[0]), int(size[1])
    if not dynamic and (h % patch or w % patch):
        raise OnnxExportError(
            f'input size {h}x{w} is not a multiple of the patch size {patch}: a fixed-size '
            f'graph takes exactly this size (try {-(-h // patch) * patch} '
            f'{-(-w // patch) * patch}, or --dynamic for a graph that pads any size)')
    if min(h, w) < patch:
        raise OnnxExportError(f'input size {h}x{w} is smaller than one patch ({patch})')
    return h, w


def second_check_size(model: ExportModel, size: tuple[int, int]) -> tuple[int, int]:
    """A second size for a dynamic graph: another grid in each direction, not a multiple of
    the window (so windowed blocks pad) and not a multiple of the patch in pixels (so the
    patch embedding pads)."""
    p = model.patch_size
    ws = max((blk.window_size for blk in model.backbone.blocks), default=0)
    out = []
    for step, side in ((1, size[0]), (2, size[1])):  # another aspect ratio too
        g = -(-side // p) + step
        while ws > 1 and g % ws == 0:
            g += 1
        out.append(g * p - p // 2)
    return out[0], out[1]


@dataclass
class OnnxCheck:
    """onnxruntime against PyTorch at one input shape."""

    input_shape: list[int]
    max_abs_diff: dict[str, float]
    atol: float

    @property
    def max_diff(self) -> float:
        return max(self.max_abs_diff.values())

    @property
    def ok(self) -> bool:
        return self.max_diff <= self.atol


@dataclass
class OnnxExportResult:
    path: str
    input_size: list[int]
    dynamic: bool
    opset: int
    exporter: str
    output_names: list[str]
    checks: list[OnnxCheck] = field(default_factory=list)

    def to_dict(self) -> dict:
        out = asdict(self)
        for c, check in zip(out['checks'], self.checks):
            c['max_diff'] = check.max_diff
        return out


class OnnxRunner:
    """An onnxruntime CPU session on an exported file that refuses inputs the graph was not
    exported for with a clear error (onnxruntime's own message does not say why)."""

    def __init__(self, path: str, threads: int | None = None):
        _, ort = require_deploy()
        if not osp.isfile(path):
            raise OnnxExportError(f'ONNX file not found: {path}')
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self.path = path
        self.session = ort.InferenceSession(path, options, providers=['CPUExecutionProvider'])
        (inp,) = self.session.get_inputs()
        self.input_name = inp.name
        self.input_shape = list(inp.shape)  # ints for fixed dims, names for dynamic ones
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)

    @property
    def fixed_shape(self) -> bool:
        return all(isinstance(d, int) for d in self.input_shape)

    def check_input(self, shape: Sequence[int]) -> None:
        shape = list(shape)
        fixed = [d if isinstance(d, int) else None for d in self.input_shape]
        bad = len(shape) != len(fixed) or any(f is not None and f != s
                                              for f, s in zip(fixed, shape))
        if bad:
            hint = ''
            if len(shape) == 4 and len(fixed) == 4:
                hint = self._reexport_hint(shape, fixed)
            expected = 'x'.join(str(d) if d is not None else '?' for d in fixed)
            raise OnnxExportError(f'{self.path} is a fixed-size graph for input {expected}; '
                                  f'got {"x".join(map(str, shape))}{hint}')

    def _reexport_hint(self, shape: list[int], fixed: list[int | None]) -> str:
        """The export that takes ``shape``: a fixed size must be a multiple of the patch
        (export_onnx refuses any other), so a side that is not is rounded up and the input
        zero-padded to it, which is what the model does to it itself."""
        flags = []
        if fixed[0] is not None and fixed[0] != shape[0]:
            flags.append(f'--batch {shape[0]}')
        pad = ''
        if fixed[2:] != shape[2:]:
            p = int(self.metadata.get(_META_PREFIX + 'patch_size', '1'))
            h, w = (-(-s // p) * p for s in shape[2:])
            flags.append(f'--input-size {h} {w}')
            if (h, w) != tuple(shape[2:]):
                pad = (f' and zero-pad the input at the bottom and right to {h}x{w} (a fixed '
                       f'size is a multiple of the patch size {p}; the model pads so itself)')
        if not flags:
            return ''
        return (f': re-export with {" ".join(flags)}{pad}, or with --dynamic for a graph that '
                'takes any batch and size')

    def __call__(self, x) -> list:
        import numpy as np

        array = x.detach().cpu().numpy() if torch.is_tensor(x) else np.asarray(x)
        self.check_input(array.shape)
        return self.session.run(None, {self.input_name: array.astype(np.float32, copy=False)})


def check_onnx(path: str, model: ExportModel, shapes: Sequence[Sequence[int]],
               atol: float = 1e-4, seed: int = 0) -> list[OnnxCheck]:
    """Run ``path`` under onnxruntime and ``model`` in PyTorch on the same random inputs."""
    runner = OnnxRunner(path)
    g = torch.Generator().manual_seed(seed)
    checks = []
    for shape in shapes:
        x = torch.randn(*shape, generator=g)
        with torch.no_grad():
            expected = model(x)
        try:
            got = runner(x)
        except OnnxExportError:
            raise
        except Exception as e:  # onnxruntime's own failure (e.g. an index out of range)
            raise OnnxExportError(f'onnxruntime cannot run the exported graph at input '
                                  f'{"x".join(map(str, shape))}: {str(e).splitlines()[0]}') from e
        if len(got) != len(expected):
            raise OnnxExportError(f'{path}: {len(got)} outputs, PyTorch gives {len(expected)}')
        diffs = {}
        for name, e, o in zip(runner.output_names, expected, got):
            if tuple(o.shape) != tuple(e.shape):
                raise OnnxExportError(f'{path}: output {name} has shape {tuple(o.shape)} at '
                                      f'input {tuple(shape)}; PyTorch gives {tuple(e.shape)}')
            diffs[name] = float((torch.from_numpy(o) - e).abs().max())
        checks.append(OnnxCheck(list(shape), diffs, atol))
    return checks


# ------------------------------------------------------------------------------- exporting
def _dynamic_shapes(dynamic: bool):
    if not dynamic:
        return None
    dim = torch.export.Dim
    return {'x': {0: dim('batch', min=1, max=1024), 2: dim.DYNAMIC, 3: dim.DYNAMIC}}


def _metadata(model: ExportModel, size, dynamic: bool, opset: int) -> dict[str, str]:
    bb = model.backbone
    meta = dict(input_size='dynamic' if dynamic else f'{size[0]}x{size[1]}',
                export_size=f'{size[0]}x{size[1]}', patch_size=str(bb.patch_size),
                mode=bb.mode, embed_dims=str(bb.embed_dims), opset=str(opset),
                with_neck=str(model.neck is not None).lower())
    if bb.subnet is not None:
        meta['subnet_widths'] = json.dumps(bb.subnet.widths())
    return {_META_PREFIX + k: v for k, v in meta.items()}


def _sdpa_math(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
               enable_gqa=False):
    """``scaled_dot_product_attention`` written out (eval mode: no dropout)."""
    if is_causal or enable_gqa or dropout_p:
        raise OnnxExportError('ONNX export supports attention without causal masking, grouped '
                              'heads or dropout (eval mode)')
    scale = query.shape[-1] ** -0.5 if scale is None else scale
    logits = (query * scale) @ key.transpose(-2, -1)
    if attn_mask is not None:
        logits = logits + attn_mask
    return logits.softmax(dim=-1) @ value


@contextlib.contextmanager
def _traceable_attention():
    """Trace attention in its math form.

    On torch 2.12 the dynamo exporter fails to re-trace ``F.scaled_dot_product_attention``
    followed by ``transpose(1, 2).reshape(...)`` (SIDTAttention, timm's Attention): while
    decomposing for ONNX the kernel's output strides change and the reshape, recorded as a
    view, raises "Cannot view a tensor with shape ...". The math form exports to the same
    MatMul/Softmax nodes and matches the kernel to float rounding.
    """
    original = F.scaled_dot_product_attention
    F.scaled_dot_product_attention = _sdpa_math
    try:
        yield
    finally:
        F.scaled_dot_product_attention = original


def _strict_program(model: ExportModel, example: torch.Tensor):
    """The dynamic-shape ``torch.export`` program of ``model``, captured strictly (dynamo);
    ``None`` if that fails (``torch.onnx.export`` then tries all its capture strategies).

    ``torch.onnx.export`` tries the non-strict capture first; for a dynamic SIDTViT that one
    fails on torch 2.12, after tracing the whole model (several seconds), in its runtime-assert
    pass (timm's ``get_rel_pos`` divides the grid size by itself: sympy cannot evaluate the
    symbolic truth value), then falls back to the strict capture. This is that capture,
    called as ``torch.onnx.export``'s strict strategy calls it. (Non-strict with guards
    instead of runtime asserts traces, but its graph indexes past the tables at other sizes.)
    """
    from torch.fx.experimental import _config as fx_config

    try:
        # as torch.onnx's strategy: a dimension of size 0 or 1 stays dynamic
        with fx_config.patch(backed_size_oblivious=True):
            return torch.export.export(model, (example,),
                                       dynamic_shapes=_dynamic_shapes(True), strict=True,
                                       prefer_deferred_runtime_asserts_over_guards=True)
    except Exception:  # noqa: BLE001 - torch.onnx.export's own strategies decide and report
        return None


def _trace_size(model: ExportModel, size: tuple[int, int], dynamic: bool) -> tuple[int, int]:
    """The example size a graph is traced at.

    A dynamic graph keeps the branches the trace takes: timm's ``get_rel_pos`` resamples a
    global block's table only when the grid differs from the one it was made for, so at that
    grid the resampling would be left out and every other size would index past the table.
    Tracing one patch off that grid keeps the resampling (an identity at the table's own
    size) in the graph.
    """
    if not dynamic:
        return size
    p = model.patch_size
    tables = {blk.attn.rel_pos_size for blk in model.backbone.blocks
              if blk.window_size == 0 and blk.attn.use_rel_pos}
    out = []
    for axis, side in enumerate(size):
        while -(-side // p) in {t[axis] for t in tables}:
            side += p
        out.append(side)
    return tuple(out)


def _keep_resize(node) -> bool | None:
    """``should_fold`` of the graph optimizer: never fold a ``Resize``, default rules else."""
    return False if node.op_type == 'Resize' else None


def _optimize(model) -> None:
    """What ``torch.onnx.export(optimize=True)`` runs (onnxscript's optimizer, then its ONNX
    fusions), except that no ``Resize`` is constant-folded.

    The optimizer folds a node whose inputs are all constants by running onnx's reference
    implementation of it. In a fixed-size graph the position-embedding resampling and the
    global blocks' relative-position tables are such nodes (weights in, sizes known), and
    onnx 1.23's reference ``Resize`` picks its neighbour window one pixel to the left when a
    source coordinate lands, up to float rounding, on an integer (cubic 10 -> 14 or 20 -> 28,
    linear 15 -> 21 or 31 -> 25, ...): a 160 px pretraining grid exported at 224 px came out
    0.1-0.7 off. onnxruntime's own kernel is exact, so the node stays in the graph and runs
    there (once per inference, on the small table).
    """
    import onnxscript.optimizer
    from onnxscript.rewriter import onnx_fusions

    onnxscript.optimizer.optimize_ir(model, should_fold=_keep_resize)
    onnx_fusions.fuse(model)


def _write_graph(model: ExportModel, tmp_path: str, size, dynamic: bool, opset: int,
                 batch: int) -> list[str]:
    """torch.onnx.export (dynamo) into ``tmp_path``; returns the output names."""
    import warnings

    onnx, _ = require_deploy()
    names = model.output_names()
    in_ch = model.backbone.patch_embed.proj.in_channels
    # torch.export treats sizes 0 and 1 as static: a dynamic batch is traced at 2.
    example = torch.randn(max(batch, 2) if dynamic else batch, in_ch,
                          *_trace_size(model, size, dynamic))
    n_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    with warnings.catch_warnings(), _traceable_attention():
        warnings.simplefilter('ignore')
        captured = _strict_program(model, example) if dynamic else None
        program = torch.onnx.export(
            model if captured is None else captured, (example,), None, dynamo=True,
            input_names=['x'], output_names=names,
            # (with a captured program: only names its axes, the batch axis 'batch')
            dynamic_shapes=_dynamic_shapes(dynamic),
            opset_version=opset, optimize=False, verbose=False, verify=False, report=False)
        _optimize(program.model)
    for key, value in _metadata(model, size, dynamic, opset).items():
        entry = program.model.metadata_props
        entry[key] = value
    program.save(tmp_path, external_data=n_bytes > _EXTERNAL_DATA_BYTES)
    onnx.checker.check_model(tmp_path)
    return names


def export_onnx(model: ExportModel, path: str, input_size: Sequence[int],
                dynamic: bool = False, opset: int = DEFAULT_OPSET, batch: int = 1,
                atol: float = 1e-4, check_sizes: Sequence[Sequence[int]] | None = None,
                overwrite: bool = True, log=print) -> OnnxExportResult:
    """Export ``model`` to ``path`` and check it under onnxruntime; all or nothing.

    The graph is written beside ``path`` under a hidden temporary name, checked at
    ``input_size`` (and, when ``dynamic``, at :func:`second_check_size` with another batch
    size), and renamed into place only when every output matches PyTorch to ``atol``.
    Otherwise :class:`OnnxExportError` says by how much it differed and no file is left.
    """
    _check_opset(opset)
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise OnnxExportError(f'batch: expected a positive integer, got {batch!r}')
    size = _check_size(input_size, model.patch_size, dynamic)
    require_deploy()
    path = osp.abspath(path)
    if osp.isdir(path):
        raise OnnxExportError(f'output {path} is a directory')
    if osp.exists(path) and not overwrite:
        raise OnnxExportError(f'output {path} exists (pass overwrite to replace it)')
    parent = osp.dirname(path)
    if not osp.isdir(parent):
        raise OnnxExportError(f'cannot write {path}: {parent} is not a directory')
    in_ch = model.backbone.patch_embed.proj.in_channels
    shapes = [[batch, in_ch, *size]]
    if dynamic:
        shapes.append([batch + 1, in_ch, *second_check_size(model, size)])
    shapes += [[batch, in_ch, *s] for s in (check_sizes or ())]

    model = model.eval()
    tmp_dir = tempfile.mkdtemp(prefix=f'.{osp.basename(path)}.tmp-', dir=parent)
    try:
        tmp_path = osp.join(tmp_dir, osp.basename(path))
        log(f'exporting ({"dynamic batch and size" if dynamic else "fixed size"} '
            f'{size[0]}x{size[1]}, opset {opset}, dynamo exporter)')
        try:
            names = _write_graph(model, tmp_path, size, dynamic, opset, batch)
        except OnnxExportError:
            raise
        except Exception as e:  # the exporter's own failure: say where, keep its message
            raise OnnxExportError(f'torch.onnx.export failed: {type(e).__name__}: '
                                  f'{str(e).splitlines()[0] if str(e) else ""}') from e
        checks = check_onnx(tmp_path, model, shapes, atol=atol)
        for c in checks:
            log(f'onnxruntime vs PyTorch at input {"x".join(map(str, c.input_shape))}: '
                f'max abs diff {c.max_diff:.3g} (tolerance {atol:g})')
        failed = [c for c in checks if not c.ok]
        if failed:
            raise OnnxExportError(
                'onnxruntime does not reproduce PyTorch: ' + '; '.join(
                    f'input {"x".join(map(str, c.input_shape))}: max abs diff {c.max_diff:.3g} '
                    f'> {atol:g} ({c.max_abs_diff})' for c in failed) + f'; {path} not written')
        mask = os.umask(0)
        os.umask(mask)
        # Weights beside the graph (large models) go first, the graph last: a reader that
        # finds the graph finds its weights.
        for name in sorted(os.listdir(tmp_dir), key=lambda n: n == osp.basename(path)):
            src = osp.join(tmp_dir, name)
            os.chmod(src, 0o666 & ~mask)
            os.replace(src, osp.join(parent, name))
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return OnnxExportResult(path=path, input_size=list(size), dynamic=dynamic, opset=opset,
                            exporter='dynamo', output_names=names, checks=checks)


def export_onnx_from_config(config: str, checkpoint: str, output: str,
                            subnet: str | None = None, input_size: Sequence[int] | None = None,
                            dynamic: bool = False, opset: int = DEFAULT_OPSET,
                            with_neck: bool = False, batch: int = 1, atol: float = 1e-4,
                            benchmark: bool = False, benchmark_json: str | None = None,
                            threads: int | None = None, repeats: int = 20,
                            log=print) -> dict:
    """What ``tools/deploy/export_onnx.py`` does: build and load, export and check, and with
    ``benchmark`` time the result against its dense counterpart (written as JSON to
    ``benchmark_json``, default ``OUTPUT`` with ``.latency.json``).

    The cheap checks (opset, input size, deploy group installed) run before the model is
    built, so a bad value fails in seconds and nothing is written.
    """
    _check_opset(opset)
    if input_size is not None:
        _check_size(input_size, 1, dynamic)
    require_deploy()
    model = build_export_model(config, checkpoint, subnet=subnet, with_neck=with_neck)
    size = tuple(input_size) if input_size else tuple(model.backbone.img_size)
    result = export_onnx(model, output, size, dynamic=dynamic, opset=opset, batch=batch,
                         atol=atol, log=log)
    log(f'wrote {result.path} (outputs {", ".join(result.output_names)}; max abs diff '
        f'{max(c.max_diff for c in result.checks):.3g})')
    out = dict(export=result.to_dict())
    if benchmark:
        from .onnx_bench import benchmark_onnx

        models = {}
        if model.backbone.mode == 'pruned':
            models['dense'] = dense_counterpart(model)
        models[model.backbone.mode] = model
        json_path = benchmark_json or osp.splitext(output)[0] + '.latency.json'
        bench = benchmark_onnx(models, size, batch=batch, opset=opset, threads=threads,
                               repeats=repeats, exported={model.backbone.mode: result},
                               log=log)
        bench['source'] = dict(config=osp.abspath(config), checkpoint=osp.abspath(checkpoint),
                               subnet=osp.abspath(subnet) if subnet else None,
                               with_neck=with_neck)
        write_json_atomic(json_path, bench)
        for name, entry in bench['models'].items():
            speed = (f', {entry["speedup_vs_dense"]:.2f}x the dense speed at '
                     f'{entry["macs_ratio_vs_dense"]:.2f}x its backbone MACs'
                     if 'speedup_vs_dense' in entry else '')
            log(f'latency {name}: {entry["median_ms"]:.2f} ms median{speed}')
        log(f'wrote {json_path}')
        out['benchmark'] = bench
    return out


def __getattr__(name: str):
    """The names that moved to :mod:`.onnx_bench`, imported from there on first use."""
    if name in _BENCH_NAMES:
        from . import onnx_bench
        return getattr(onnx_bench, name)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
