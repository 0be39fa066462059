"""SIDTViT: a plain ViT whose per-head, MLP and embedding widths are searchable.

Three modes share one set of layers and timm's parameter names:

- ``dense``: a plain ViT (optionally ViTDet-style: window attention with a few
  global blocks, decomposed relative positions), no masks;
- ``search``: learnable masks (initialised to 1.0) on the searched dimensions;
- ``pruned``: built from a subnet file; widths differ per layer and per head.
"""
from __future__ import annotations

import difflib
import math
import os
from collections import OrderedDict
from collections.abc import Sequence

import torch
from mmcv.cnn import build_norm_layer
from mmdet.registry import MODELS
from mmengine.logging import print_log
from mmengine.model import BaseModule
from mmengine.runner.checkpoint import CheckpointLoader
from timm.layers import resample_abs_pos_embed
from torch import nn
from torch.utils.checkpoint import checkpoint

from ...utils.ckpt_convert import convert_vit_state_dict
from ...utils.safe_load import CheckpointMismatchError, checkpoint_source
from ...utils.state_dict import compare_state_dicts, explain_backbone_keys
from ..layers import PatchEmbed, SIDTAttention, SIDTBlock, SIDTMlp, apply_lowrank_structure
from ..layers.block import masked_norm
from ..slicing import is_mask_key, rel_pos_columns, slice_vit_state_dict
from ..subnet import Subnet

__all__ = ['SIDTViT']

_MODES = ('dense', 'search', 'pruned')
_ARCH_KEYS = ('embed_dims', 'num_layers', 'num_heads', 'mlp_ratio')
_SEARCH_DIMS = ('attn', 'mlp', 'embed')
_OUT_TYPES = ('featmap', 'cls_token', 'avg')


def _pair(x) -> tuple[int, int]:
    return (x, x) if isinstance(x, int) else tuple(x)


def _same_path(a, b) -> bool:
    """Whether a recorded subnet path names the file ``b`` (relative ones from here)."""
    if not isinstance(a, str) or not isinstance(b, str) or not os.path.isfile(b):
        return False
    return a == b or os.path.realpath(a) == os.path.realpath(b)


@MODELS.register_module()
class SIDTViT(BaseModule):
    """Vision Transformer with searchable intrinsic dimensions (SiDT).

    Args:
        arch: ``'tiny'`` (192/12/3), ``'small'`` (384/12/6), ``'base'`` (768/12/12),
            ``'large'`` (1024/24/16), ``'huge'`` (1280/32/16), or a dict with
            ``embed_dims``, ``num_layers``, ``num_heads`` and optionally ``mlp_ratio``.
        patch_size: patch side; inputs of any size are padded to a multiple of it.
        img_size: image size; sets the grid of ``pos_embed`` (interpolated, bicubic, to
            the input's grid at run time), of the global blocks' relative-position
            tables, and the default size of MACs counts.
        pretrain_img_size: ViTDet's name: with ``img_size`` also given, the size the
            position embedding is made for (e.g. 224 with ``img_size=1024``) while
            ``img_size`` stays the input size; alone, the same as ``img_size``.
        with_cls_token: prepend a class token (classification; not with windows).
        final_norm: apply a final LayerNorm.
        out_type: ``'featmap'`` (one stride-``patch_size`` NCHW map, detection),
            ``'cls_token'`` or ``'avg'`` (B, C) for classification.
        window_size: window attention side (0: all blocks global).
        global_attn_indexes: blocks that stay global when ``window_size > 0``.
        use_abs_pos / use_rel_pos / rel_pos_zero_init: position encodings (ViTDet).
        mode: ``'dense'``, ``'search'`` or ``'pruned'``.
        subnet: pruned mode: a :class:`Subnet`, its dict, or a path to its JSON.
        search_dims: search mode: which of ``'attn'``, ``'mlp'``, ``'embed'`` get masks.
        split_qkv: search mode: separate q/k and v masks instead of one per head dim.
        pruned_layout: pruned mode: how heads of unequal widths run, ``'grouped'``
            (equal widths share an attention call; no padding, the default) or
            ``'padded'`` (one call, heads zero-padded to the widest).
        with_cp: activation checkpointing per block while training.
        frozen_stages: freeze the embeddings (0) and the first N blocks (N).

    ViTDet's argument names are accepted too: ``embed_dim, depth, num_heads,
    mlp_ratio, window_block_indexes, pretrain_img_size, pretrain_use_cls_token``.
    """

    arch_zoo = {
        'tiny': dict(embed_dims=192, num_layers=12, num_heads=3),
        'small': dict(embed_dims=384, num_layers=12, num_heads=6),
        'base': dict(embed_dims=768, num_layers=12, num_heads=12),
        'large': dict(embed_dims=1024, num_layers=24, num_heads=16),
        'huge': dict(embed_dims=1280, num_layers=32, num_heads=16),
    }

    def __init__(self,
                 arch: str | dict | None = None,
                 patch_size: int = 16,
                 img_size: int | Sequence[int] | None = None,
                 in_channels: int = 3,
                 qkv_bias: bool = True,
                 drop_path_rate: float = 0.,
                 norm_cfg: dict | None = None,
                 with_cls_token: bool = False,
                 final_norm: bool = False,
                 out_type: str = 'featmap',
                 window_size: int = 0,
                 global_attn_indexes: Sequence[int] | None = None,
                 use_abs_pos: bool = True,
                 use_rel_pos: bool = False,
                 rel_pos_zero_init: bool = True,
                 mode: str = 'dense',
                 subnet: Subnet | dict | str | None = None,
                 search_dims: Sequence[str] = ('attn', 'mlp'),
                 split_qkv: bool = False,
                 pruned_layout: str = 'grouped',
                 with_cp: bool = False,
                 frozen_stages: int = -1,
                 init_cfg: dict | None = None,
                 # ViTDet's spelling of the same arguments
                 embed_dim: int | None = None,
                 depth: int | None = None,
                 num_heads: int | None = None,
                 mlp_ratio: float | None = None,
                 window_block_indexes: Sequence[int] | None = None,
                 pretrain_img_size: int | None = None,
                 pretrain_use_cls_token: bool | None = None):
        # Kept so export can rebuild the same backbone in another mode.
        self_kwargs = {k: v for k, v in locals().items() if k not in ('self', '__class__')}
        super().__init__(init_cfg=init_cfg)
        self.build_kwargs = self_kwargs
        arch = self._resolve_arch(arch, embed_dim, depth, num_heads, mlp_ratio)
        self.embed_dims_dense = arch['embed_dims']
        self.num_layers = arch['num_layers']
        self.num_heads = arch['num_heads']
        self.head_dim = self.embed_dims_dense // self.num_heads
        self.mlp_hidden = int(self.embed_dims_dense * arch['mlp_ratio'])

        if mode not in _MODES:
            raise ValueError(f'mode: expected one of {_MODES}, got {mode!r}')
        if out_type not in _OUT_TYPES:
            raise ValueError(f'out_type: expected one of {_OUT_TYPES}, got {out_type!r}')
        # ViTDet's meaning when both are given: img_size is the input size (global blocks'
        # rel-pos tables, default MACs size), pretrain_img_size the position embedding's.
        # Either one alone sets both, as timm's img_size does.
        self.patch_size = patch_size = self._check_size('patch_size', patch_size)
        img_size = self._check_size('img_size', img_size)
        pretrain_img_size = self._check_size('pretrain_img_size', pretrain_img_size)
        self.mode = mode
        self.img_size = _pair(img_size or pretrain_img_size or 224)
        pos_size = _pair(pretrain_img_size) if pretrain_img_size else self.img_size
        self.pretrain_grid = (pos_size[0] // patch_size, pos_size[1] // patch_size)
        self.input_grid = (self.img_size[0] // patch_size, self.img_size[1] // patch_size)
        if min(self.pretrain_grid + self.input_grid) < 1:
            raise ValueError(f'img_size {self.img_size} / pretrain_img_size {pos_size}: '
                             f'expected at least one patch of {patch_size} per side')
        self.with_cls_token = with_cls_token
        self.num_prefix_tokens = int(with_cls_token)
        self.pretrain_use_cls_token = pretrain_use_cls_token
        self.final_norm = final_norm
        self.out_type = out_type
        self.use_abs_pos = use_abs_pos
        self.use_rel_pos = use_rel_pos
        self.window_size = window_size
        self.with_cp = with_cp
        self.frozen_stages = frozen_stages
        norm_cfg = norm_cfg or dict(type='LN', eps=1e-6)

        def norm_layer(dim: int) -> nn.Module:
            return build_norm_layer(norm_cfg, dim)[1]
        if out_type == 'cls_token' and not with_cls_token:
            raise ValueError("out_type='cls_token' needs with_cls_token=True")

        self.global_attn_indexes = self._resolve_global(window_size, global_attn_indexes,
                                                        window_block_indexes)
        windowed = window_size > 0 and len(self.global_attn_indexes) < self.num_layers
        if with_cls_token and (windowed or use_rel_pos):
            raise ValueError('with_cls_token=True cannot be combined with window attention or '
                             'relative positions (the class token has no grid position)')

        # ---- widths per mode
        self.subnet = None
        search_dims = tuple(search_dims) if mode == 'search' else ()
        unknown = set(search_dims) - set(_SEARCH_DIMS)
        if unknown:
            raise ValueError(f'search_dims: unknown {sorted(unknown)}; expected a subset of '
                             f'{_SEARCH_DIMS}')
        self.search_dims = search_dims
        self.split_qkv = split_qkv
        if mode == 'pruned':
            if subnet is None:
                raise ValueError("mode='pruned' needs subnet (a Subnet, dict or path to JSON)")
            self.subnet = Subnet.coerce(subnet)
            self.subnet.check_arch(self.embed_dims_dense, self.num_layers, self.num_heads,
                                   self.mlp_hidden, where=self._subnet_name(subnet))
            self.embed_dims = len(self.subnet.kept_embed)
        else:
            if subnet is not None:
                raise ValueError(f"subnet is only used with mode='pruned' (mode={mode!r})")
            self.embed_dims = self.embed_dims_dense
        D = self.embed_dims

        # ---- layers (timm names)
        self.patch_embed = PatchEmbed(in_channels, D, patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, D)) if with_cls_token else None
        if use_abs_pos:
            n_pos = self.num_prefix_tokens + self.pretrain_grid[0] * self.pretrain_grid[1]
            self.pos_embed = nn.Parameter(torch.zeros(1, n_pos, D))
        else:
            self.pos_embed = None
        self.embed_mask = (nn.Parameter(torch.ones(D)) if 'embed' in search_dims else None)

        dpr = torch.linspace(0, drop_path_rate, self.num_layers).tolist()
        attn_mask = None
        if 'attn' in search_dims:
            attn_mask = 'split' if split_qkv else 'shared'
        blocks = []
        for i in range(self.num_layers):
            ws = 0 if i in self.global_attn_indexes else window_size
            rel_size = (ws, ws) if ws > 0 else self.input_grid
            if self.subnet is not None:
                b = self.subnet.blocks[i]
                active = self.subnet.active_heads(i)
                qk_dims = [len(b['qk'][h]) for h in active]
                v_dims = [len(b['v'][h]) for h in active]
                rel_index = rel_pos_columns(self.subnet, i) if use_rel_pos else None
                hidden = len(b['mlp'])
            else:
                qk_dims = v_dims = rel_index = None
                hidden = self.mlp_hidden
            attn = SIDTAttention(D, self.num_heads, head_dim=self.head_dim, qkv_bias=qkv_bias,
                                 qk_dims=qk_dims, v_dims=v_dims, mask=attn_mask,
                                 use_rel_pos=use_rel_pos, rel_pos_size=rel_size,
                                 rel_pos_index=rel_index, rel_pos_zero_init=rel_pos_zero_init,
                                 layout=pruned_layout)
            mlp = SIDTMlp(D, hidden, mask='mlp' in search_dims)
            blocks.append(SIDTBlock(D, attn, mlp, window_size=ws, drop_path=dpr[i],
                                    norm_layer=norm_layer))
        self.blocks = nn.ModuleList(blocks)
        self.norm = norm_layer(D) if final_norm else None
        if self.subnet is not None and self.subnet.lowrank:
            self._apply_lowrank(self.subnet.lowrank, self._subnet_name(subnet))
        self._init_default()
        self._freeze_stages()
        self._register_state_dict_hook(SIDTViT._record_subnet)
        self._register_load_state_dict_pre_hook(self._check_incoming_state)

    # ------------------------------------------------------------ arguments
    @classmethod
    def _resolve_arch(cls, arch, embed_dim, depth, num_heads, mlp_ratio) -> dict:
        aliases = {'embed_dim': ('embed_dims', embed_dim), 'depth': ('num_layers', depth),
                   'num_heads': ('num_heads', num_heads), 'mlp_ratio': ('mlp_ratio', mlp_ratio)}
        given = {alias: v for alias, (_, v) in aliases.items() if v is not None}
        if arch is None:
            spec = dict(cls.arch_zoo['base'])
        elif isinstance(arch, str):
            if arch.lower() not in cls.arch_zoo:
                raise ValueError(f'arch: unknown {arch!r}; expected one of '
                                 f'{sorted(cls.arch_zoo)} or a dict')
            spec = dict(cls.arch_zoo[arch.lower()])
        elif isinstance(arch, dict):
            unknown = sorted(map(str, set(arch) - set(_ARCH_KEYS)))
            if unknown:
                close = {k: difflib.get_close_matches(k, _ARCH_KEYS, n=1) for k in unknown}
                hints = ''.join(f" ('{k}': did you mean '{c[0]}'?)" for k, c in close.items()
                                if c)
                raise ValueError(f'arch: unknown keys {unknown}{hints}; valid keys are '
                                 f'{list(_ARCH_KEYS)}')
            missing = {'embed_dims', 'num_layers', 'num_heads'} - set(arch)
            if missing:
                raise ValueError(f'arch: the dict is missing {sorted(missing)}')
            spec = dict(arch)
        else:
            raise ValueError(f'arch: expected a name or a dict, got {type(arch).__name__}')
        spec.setdefault('mlp_ratio', 4.0)
        for alias, value in given.items():
            key = aliases[alias][0]
            if arch is not None and spec[key] != value:
                raise ValueError(f'conflicting values: {alias}={value} but arch gives '
                                 f'{key}={spec[key]}')
            spec[key] = value
        for key in ('embed_dims', 'num_layers', 'num_heads'):
            if isinstance(spec[key], bool) or not isinstance(spec[key], int) or spec[key] <= 0:
                raise ValueError(f'arch: {key} must be a positive integer, got {spec[key]!r}')
        ratio = spec['mlp_ratio']
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or \
                not math.isfinite(ratio) or int(spec['embed_dims'] * ratio) <= 0:
            raise ValueError(f'arch: mlp_ratio must be a positive number giving at least one '
                             f'MLP unit, got {ratio!r}')
        if spec['embed_dims'] % spec['num_heads']:
            raise ValueError(f'arch: num_heads={spec["num_heads"]} does not divide '
                             f'embed_dims={spec["embed_dims"]}')
        return spec

    @staticmethod
    def _check_size(name: str, value):
        if value is None:
            return None
        sides = [value] if isinstance(value, int) else value
        if not isinstance(sides, (list, tuple)) or len(sides) not in (1, 2) or (
                not isinstance(value, int) and len(sides) != 2) or any(
                isinstance(v, bool) or not isinstance(v, int) or v <= 0 for v in sides):
            raise ValueError(f'{name}: expected a positive integer or (H, W), got {value!r}')
        return value if isinstance(value, int) else tuple(value)

    def _resolve_global(self, window_size, global_attn_indexes, window_block_indexes):
        n = self.num_layers
        for name, idx in (('global_attn_indexes', global_attn_indexes),
                          ('window_block_indexes', window_block_indexes)):
            bad = [i for i in (idx or ()) if not isinstance(i, int) or not 0 <= i < n]
            if bad:
                raise ValueError(f'{name}: {bad} out of range for {n} blocks (expected 0..{n - 1})')
        from_window = None
        if window_block_indexes is not None:
            from_window = sorted(set(range(n)) - set(window_block_indexes))
        if global_attn_indexes is not None and from_window is not None and \
                sorted(set(global_attn_indexes)) != from_window:
            raise ValueError(f'conflicting values: global_attn_indexes={list(global_attn_indexes)}'
                             f' but window_block_indexes={list(window_block_indexes)} makes '
                             f'blocks {from_window} global')
        if window_size <= 0:
            return tuple(range(n))
        chosen = global_attn_indexes if global_attn_indexes is not None else from_window
        return tuple(sorted(set(chosen or ())))

    @classmethod
    def out_channels_from_cfg(cls, cfg: dict) -> int:
        """Width of the output map of a SIDTViT config, without building it."""
        if cfg.get('mode', 'dense') == 'pruned':
            if cfg.get('subnet') is None:
                raise ValueError("mode='pruned' needs subnet (a Subnet, dict or path to JSON)")
            return len(Subnet.coerce(cfg['subnet']).kept_embed)
        return cls._resolve_arch(cfg.get('arch'), cfg.get('embed_dim'), cfg.get('depth'),
                                 cfg.get('num_heads'), cfg.get('mlp_ratio'))['embed_dims']

    def _apply_lowrank(self, lowrank: dict, where: str) -> None:
        """Rebuild the factorized Linears a subnet file records (``lowrank.ranks``).

        Done before init and freezing so the new layers are initialised and frozen like
        the rest.
        """
        try:
            apply_lowrank_structure(self, lowrank['ranks'])
        except ValueError as e:
            raise ValueError(f'{where}: lowrank.ranks does not fit this backbone: {e}') from None

    @staticmethod
    def _subnet_name(subnet) -> str:
        return os.fspath(subnet) if isinstance(subnet, (str, os.PathLike)) else 'subnet'

    # ------------------------------------------------------------- weights
    def _init_default(self):
        # timm's init (init_weights_vit_timm) so dense training starts where timm's does.
        if self.pos_embed is not None:
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
        if self.cls_token is not None:
            nn.init.normal_(self.cls_token, std=1e-6)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def init_weights(self):
        cfg = self.init_cfg
        if isinstance(cfg, dict) and cfg.get('type') == 'Pretrained':
            self.load_pretrained(cfg['checkpoint'])
            self._is_init = True
        else:
            super().init_weights()

    def rel_pos_lengths(self) -> dict[str, int]:
        return {f'blocks.{i}.attn.{k}': getattr(blk.attn, k).shape[0]
                for i, blk in enumerate(self.blocks) if blk.attn.use_rel_pos
                for k in ('rel_pos_h', 'rel_pos_w')}

    def load_pretrained(self, checkpoint: str | dict) -> None:
        """Load timm / DeiT / MAE / SAM / ViTDet / our own weights into any mode.

        Dense weights are sliced by the subnet in pruned mode; weights that already
        have the pruned shapes load as they are. Shape mismatches raise a
        ValueError listing them; missing and unexpected keys are logged.
        """
        where = checkpoint if isinstance(checkpoint, str) else 'checkpoint'
        ckpt = checkpoint
        if isinstance(checkpoint, str):
            ckpt = CheckpointLoader.load_checkpoint(checkpoint, map_location='cpu')
        try:
            state, notes = convert_vit_state_dict(
                ckpt, patch_size=self.patch_size, grid=self.pretrain_grid,
                num_prefix_tokens=self.num_prefix_tokens, rel_pos_lengths=self.rel_pos_lengths())
        except ValueError as e:
            raise ValueError(f'{where}: {e}') from None
        if self.subnet is not None and self._is_dense_layout(state):
            state = slice_vit_state_dict(state, self.subnet)
            notes.append('sliced dense weights to the subnet (masks folded where present)')
        own = self.state_dict()
        mismatch = compare_state_dicts(own, state).shapes
        if mismatch:
            raise ValueError(f'{where}: checkpoint does not fit this SIDTViT '
                             f'(embed_dims={self.embed_dims}, heads={self.num_heads}, '
                             f'layers={self.num_layers}); shape mismatches:\n  '
                             + '\n  '.join(mismatch))
        # Converted pretrained weights may lack tensors on purpose (MAE has no rel-pos
        # tables): they are reported below, not refused as in a load_from or --resume.
        self._partial_load_ok = True
        try:
            result = self.load_state_dict(state, strict=False)
        finally:
            self._partial_load_ok = False
        missing = [k for k in result.missing_keys if not k.endswith('_mask')]
        for note in notes:
            print_log(f'SIDTViT: {note}', logger='current')
        print_log(f'SIDTViT: loaded {len(state) - len(result.unexpected_keys)} tensors from '
                  f'{where}; missing {missing or "none"}; unexpected '
                  f'{result.unexpected_keys or "none"}', logger='current')

    @staticmethod
    def _record_subnet(module, state_dict, prefix, local_metadata) -> None:
        # Every checkpoint of a pruned backbone (pruned.pth, retrain iter_N.pth) carries the
        # structure it was built from, so loading it into another one is caught by name.
        if module.subnet is not None:
            local_metadata['sidt_subnet'] = dict(digest=module.subnet.digest(),
                                                 file=module.subnet_file)

    def _check_incoming_state(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs) -> None:
        """Refuse a state dict that would load only in part, whatever loader calls it.

        mmengine's ``load_from`` / ``--resume`` / ``tools/test.py`` load with ``strict=False``
        and only log shape mismatches and dropped keys, so a search checkpoint or another
        export's ``pruned.pth`` would leave layers randomly initialised (or masks silently
        dropped) and the run would go on. This pre-hook runs inside every such load.
        """
        keys = [k for k in state_dict if k.startswith(prefix)]
        if not keys:
            return
        source = checkpoint_source(state_dict[keys[0]]) or 'the checkpoint'
        masks = [k for k in keys if is_mask_key(k)]
        built = (f'this SIDTViT is pruned to {self.subnet_file}' if self.mode == 'pruned'
                 else f'this SIDTViT is {self.mode}')
        if masks and self.mode != 'search':
            hint = ('evaluate the search itself with its search config, or export it first '
                    '(tools/export_subnet.py SEARCH_CONFIG CHECKPOINT --keep-ratio R -o DIR) and '
                    'use the retrain config with model.backbone.subnet=DIR/subnet.json '
                    'load_from=DIR/pruned.pth')
            effect = ('the masks would be dropped and the unmasked weights used'
                      if self.mode == 'dense' else 'its dense weights do not fit')
            raise CheckpointMismatchError(
                f'{source} is a SiDT search checkpoint ({len(masks)} mask tensors such as '
                f'{masks[0]!r}) but {built}: {effect}. To use it, {hint}.')
        theirs = local_metadata.get('sidt_subnet') if isinstance(local_metadata, dict) else None
        if self.mode == 'pruned' and isinstance(theirs, dict) and \
                theirs.get('digest') != self.subnet.digest():
            if _same_path(theirs.get('file'), self.subnet_file):
                # one path, two subnets: the export was written again over the old one
                raise CheckpointMismatchError(
                    f'{source} was made with the subnet that {self.subnet_file} held then '
                    f'(digest {theirs.get("digest")}), but that export was overwritten after '
                    f'{source} was made: a later export (tools/export_subnet.py --overwrite) '
                    f'replaced its subnet.json (digest now {self.subnet.digest()}) and '
                    f'pruned.pth. {source} belongs to the earlier export: retrain from the new '
                    f'pruned.pth beside {self.subnet_file}, or set model.backbone.subnet to a '
                    'copy of the earlier subnet.json')
            raise CheckpointMismatchError(
                f'{source} was exported for the subnet {theirs.get("file")!r} (digest '
                f'{theirs.get("digest")}) but the model was built from {self.subnet_file} '
                f'(digest {self.subnet.digest()}): set model.backbone.subnet to the subnet.json '
                f'of the export that wrote {source}, or load the pruned.pth exported with '
                f'{self.subnet_file}')
        own = {prefix + n: t.shape for n, t in self.state_dict().items()}
        bad = [f'{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(own[k])}'
               for k in keys if k in own and torch.is_tensor(state_dict[k])
               and state_dict[k].shape != own[k]]
        if bad:
            hint = (f'; it is not the export of {self.subnet_file} (load the pruned.pth written '
                    'beside that subnet file)' if self.mode == 'pruned' else
                    "; for pretrained weights of another size use init_cfg=dict(type='Pretrained'"
                    ', checkpoint=...), which resamples them')
            if all(b.split(':')[0].endswith(('rel_pos_h', 'rel_pos_w')) for b in bad):
                hint = ('; only relative-position tables differ: the checkpoint was trained with '
                        'another window_size, global_attn_indexes or img_size (the config has '
                        f'window_size={self.window_size}, global_attn_indexes='
                        f'{list(self.global_attn_indexes)}, img_size={self.img_size})' + hint)
            raise CheckpointMismatchError(
                f'{source} does not fit the backbone ({built}): {len(bad)} tensors of another '
                'shape, e.g.\n  ' + '\n  '.join(bad[:5]) + hint)
        if getattr(self, '_partial_load_ok', False):
            return
        # mmengine would only log these keys and go on with some tensors left at their
        # initial values. A search started from a dense checkpoint lacks its masks on purpose.
        given = {k[len(prefix):] for k in keys}
        missing = sorted(k for k in set(own) - {prefix + g for g in given}
                         if not (self.mode == 'search' and is_mask_key(k)))
        unexpected = sorted(g for g in given if prefix + g not in own)
        if missing or unexpected:
            settings = dict(self.build_kwargs, num_layers=self.num_layers,
                            search_dims=self.search_dims)
            raise CheckpointMismatchError(
                f'{source} does not fit the backbone ({built}): ' + explain_backbone_keys(
                    [k[len(prefix):] for k in missing], unexpected, settings, prefix)
                + ". (Backbone-only pretrained weights go in model.backbone.init_cfg=dict("
                "type='Pretrained', checkpoint=...), which converts them.)")

    @property
    def subnet_file(self) -> str:
        """Where the subnet came from: its path, or ``'subnet'`` when given as an object."""
        return self._subnet_name(self.build_kwargs.get('subnet'))

    def _is_dense_layout(self, state) -> bool:
        w = state.get('blocks.0.attn.qkv.weight')
        return w is not None and tuple(w.shape) == (3 * self.embed_dims_dense,
                                                    self.embed_dims_dense)

    # --------------------------------------------------------------- search
    def mask_parameters(self) -> OrderedDict[str, nn.Parameter]:
        """The search masks by name (empty unless ``mode='search'``)."""
        return OrderedDict((n, p) for n, p in self.named_parameters() if n.endswith('_mask'))

    @property
    def out_channels(self) -> int:
        return self.embed_dims

    # -------------------------------------------------------------- forward
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        B = x.shape[0]
        # The embedding mask (search) scales weights, not tokens: every write into the
        # residual stream and every normalised read (see SIDTBlock).
        m = self.embed_mask
        x, hw = self.patch_embed(x, out_scale=m)
        if self.cls_token is not None:
            cls = self.cls_token if m is None else self.cls_token * m
            x = torch.cat([cls.expand(B, -1, -1), x], dim=1)
        if self.pos_embed is not None:
            pos = resample_abs_pos_embed(self.pos_embed, list(hw), old_size=self.pretrain_grid,
                                         num_prefix_tokens=self.num_prefix_tokens)
            x = x + (pos if m is None else pos * m)
        for blk in self.blocks:
            if self.with_cp and self.training and x.requires_grad:
                x = checkpoint(blk, x, hw, m, use_reentrant=False)
            else:
                x = blk(x, hw, m)
        if self.norm is not None:
            x = masked_norm(self.norm, x, m)
        if self.out_type == 'cls_token':
            return (x[:, 0],)
        patches = x[:, self.num_prefix_tokens:]
        if self.out_type == 'avg':
            return (patches.mean(dim=1),)
        return (patches.transpose(1, 2).reshape(B, -1, *hw),)

    # ---------------------------------------------------------- fine-tuning
    def get_layer_depth(self, param_name: str, prefix: str = '') -> tuple[int, int]:
        """Layer id for layer-wise lr decay (mmpretrain's constructor calls this)."""
        num_layers = self.num_layers + 2
        if not param_name.startswith(prefix):
            return num_layers - 1, num_layers
        name = param_name[len(prefix):]
        if name in ('cls_token', 'pos_embed', 'embed_mask') or name.startswith('patch_embed'):
            return 0, num_layers
        if name.startswith('blocks.'):
            return int(name.split('.')[1]) + 1, num_layers
        return num_layers - 1, num_layers

    def _freeze_stages(self):
        if self.frozen_stages < 0:
            return
        frozen = [self.patch_embed]
        frozen += list(self.blocks[:self.frozen_stages])
        for module in frozen:
            module.eval()
            for p in module.parameters():
                p.requires_grad = False
        for p in (self.pos_embed, self.cls_token):
            if p is not None:
                p.requires_grad = False

    def train(self, mode: bool = True):
        super().train(mode)
        self._freeze_stages()
        return self

    def extra_repr(self) -> str:
        return (f'mode={self.mode}, embed_dims={self.embed_dims}, layers={self.num_layers}, '
                f'heads={self.num_heads}, window={self.window_size}, '
                f'global={list(self.global_attn_indexes)}, rel_pos={self.use_rel_pos}')
