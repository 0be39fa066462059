"""What a SIDTViT is, resolved once from its constructor's arguments.

:class:`ViTSpec` is a frozen record of every setting a :class:`SIDTViT` is built from,
in one spelling: ViTDet's names (``embed_dim``, ``depth``, ``window_block_indexes``,
``pretrain_img_size``, ...) are translated by :meth:`ViTSpec.resolve`, sizes become ``(H, W)``
pairs, the global blocks an explicit tuple and a pruned backbone's subnet a
:class:`~sidt_mmdet.models.subnet.Subnet` with the file it came from. Every check of the
arguments happens here, so the backbone's constructor only builds layers, and a backbone
of the same architecture in another mode is built from :meth:`ViTSpec.kwargs`
(:meth:`SIDTViT.to_dense`, :meth:`SIDTViT.to_search`, :meth:`SIDTViT.to_pruned`).
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import os
from dataclasses import dataclass, field

from ..layers.head_layout import LAYOUTS
from ..subnet import Subnet

__all__ = ['ARCH_ZOO', 'MODES', 'SEARCH_DIMS', 'OUT_TYPES', 'ViTSpec', 'resolve_arch']

MODES = ('dense', 'search', 'pruned')
SEARCH_DIMS = ('attn', 'mlp', 'embed')
OUT_TYPES = ('featmap', 'cls_token', 'avg')
ARCH_KEYS = ('embed_dims', 'num_layers', 'num_heads', 'mlp_ratio')
ARCH_ZOO = {
    'tiny': dict(embed_dims=192, num_layers=12, num_heads=3),
    'small': dict(embed_dims=384, num_layers=12, num_heads=6),
    'base': dict(embed_dims=768, num_layers=12, num_heads=12),
    'large': dict(embed_dims=1024, num_layers=24, num_heads=16),
    'huge': dict(embed_dims=1280, num_layers=32, num_heads=16),
}
# ViTDet's spelling -> ours (the architecture keys; the others are translated one by one)
_VITDET_ARCH = {'embed_dim': 'embed_dims', 'depth': 'num_layers', 'num_heads': 'num_heads',
                'mlp_ratio': 'mlp_ratio'}


def _pair(x) -> tuple[int, int]:
    return (x, x) if isinstance(x, int) else tuple(x)


def _check_size(name: str, value):
    if value is None:
        return None
    sides = [value] if isinstance(value, int) else value
    if not isinstance(sides, (list, tuple)) or len(sides) not in (1, 2) or (
            not isinstance(value, int) and len(sides) != 2) or any(
            isinstance(v, bool) or not isinstance(v, int) or v <= 0 for v in sides):
        raise ValueError(f'{name}: expected a positive integer or (H, W), got {value!r}')
    return value if isinstance(value, int) else tuple(value)


def _arch_dict(arch) -> dict:
    if arch is None:
        return dict(ARCH_ZOO['base'])
    if isinstance(arch, str):
        if arch.lower() not in ARCH_ZOO:
            raise ValueError(f'arch: unknown {arch!r}; expected one of {sorted(ARCH_ZOO)} or a '
                             'dict')
        return dict(ARCH_ZOO[arch.lower()])
    if not isinstance(arch, dict):
        raise ValueError(f'arch: expected a name or a dict, got {type(arch).__name__}')
    unknown = sorted(map(str, set(arch) - set(ARCH_KEYS)))
    if unknown:
        close = {k: difflib.get_close_matches(k, ARCH_KEYS, n=1) for k in unknown}
        hints = ''.join(f" ('{k}': did you mean '{c[0]}'?)" for k, c in close.items() if c)
        raise ValueError(f'arch: unknown keys {unknown}{hints}; valid keys are '
                         f'{list(ARCH_KEYS)}')
    missing = {'embed_dims', 'num_layers', 'num_heads'} - set(arch)
    if missing:
        raise ValueError(f'arch: the dict is missing {sorted(missing)}')
    return dict(arch)


def resolve_arch(arch=None, embed_dim=None, depth=None, num_heads=None,
                 mlp_ratio=None) -> dict:
    """``embed_dims``, ``num_layers``, ``num_heads``, ``mlp_ratio`` of an ``arch`` name or
    dict, with ViTDet's ``embed_dim``/``depth``/``num_heads``/``mlp_ratio`` agreeing with it
    (or alone, over the ``'base'`` defaults)."""
    given = {alias: v for alias, v in (('embed_dim', embed_dim), ('depth', depth),
                                       ('num_heads', num_heads), ('mlp_ratio', mlp_ratio))
             if v is not None}
    spec = _arch_dict(arch)
    spec.setdefault('mlp_ratio', 4.0)
    for alias, value in given.items():
        key = _VITDET_ARCH[alias]
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


def _resolve_global(n: int, window_size: int, global_attn_indexes,
                    window_block_indexes) -> tuple[int, ...]:
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


@dataclass(frozen=True)
class ViTSpec:
    """Every setting of a SIDTViT, checked and in one spelling (see the module docstring).

    ``img_size`` is the input size (rel-pos tables of global blocks, the default MACs size),
    ``pos_size`` the size the absolute position embedding is made for (ViTDet's
    ``pretrain_img_size``); ``pruned_layout`` is the layout a pruned backbone runs its heads
    in: the one given, else the one its subnet file records, else ``'grouped'``.
    """

    embed_dims: int
    num_layers: int
    num_heads: int
    mlp_ratio: float
    patch_size: int = 16
    img_size: tuple[int, int] = (224, 224)
    pos_size: tuple[int, int] = (224, 224)
    in_channels: int = 3
    qkv_bias: bool = True
    drop_path_rate: float = 0.
    norm_cfg: dict = field(default_factory=lambda: dict(type='LN', eps=1e-6))
    with_cls_token: bool = False
    final_norm: bool = False
    out_type: str = 'featmap'
    window_size: int = 0
    global_attn_indexes: tuple[int, ...] = ()
    use_abs_pos: bool = True
    use_rel_pos: bool = False
    rel_pos_zero_init: bool = True
    mode: str = 'dense'
    subnet: Subnet | None = None
    subnet_file: str = 'subnet'
    search_dims: tuple[str, ...] = ()
    split_qkv: bool = False
    pruned_layout: str = 'grouped'
    with_cp: bool = False
    frozen_stages: int = -1

    # ------------------------------------------------------------ derived
    @property
    def head_dim(self) -> int:
        return self.embed_dims // self.num_heads

    @property
    def mlp_hidden(self) -> int:
        return int(self.embed_dims * self.mlp_ratio)

    @property
    def pretrain_grid(self) -> tuple[int, int]:
        return (self.pos_size[0] // self.patch_size, self.pos_size[1] // self.patch_size)

    @property
    def input_grid(self) -> tuple[int, int]:
        return (self.img_size[0] // self.patch_size, self.img_size[1] // self.patch_size)

    @property
    def width(self) -> int:
        """The embedding width the backbone runs at (the subnet's in pruned mode)."""
        return len(self.subnet.kept_embed) if self.subnet is not None else self.embed_dims

    def window_of(self, block: int) -> int:
        """Block ``block``'s window side (0: global attention)."""
        return 0 if block in self.global_attn_indexes else self.window_size

    # ------------------------------------------------------------ building
    @classmethod
    def resolve(cls, arch=None, *, patch_size=16, img_size=None, pretrain_img_size=None,
                embed_dim=None, depth=None, num_heads=None, mlp_ratio=None,
                window_size=0, global_attn_indexes=None, window_block_indexes=None,
                pretrain_use_cls_token=None, mode='dense', subnet=None,
                search_dims=('attn', 'mlp'), pruned_layout=None, norm_cfg=None,
                **settings) -> ViTSpec:
        """Check the constructor's arguments and resolve them (see :class:`SIDTViT`).

        ViTDet's names are translated here: ``embed_dim``/``depth``/``num_heads``/``mlp_ratio``
        must agree with ``arch`` (:func:`resolve_arch`), ``window_block_indexes`` with
        ``global_attn_indexes``; ``pretrain_img_size`` is the position embedding's size.
        ``pretrain_use_cls_token`` (whether the pretrained checkpoint has a class token) is
        accepted for ViTDet's configs and not kept: the weight converter reads that from the
        checkpoint itself.
        """
        unknown = sorted(set(settings) - _SETTINGS)
        if unknown:
            close = {k: difflib.get_close_matches(k, sorted(_ARGS), n=1) for k in unknown}
            hints = ''.join(f" ('{k}': did you mean '{c[0]}'?)" for k, c in close.items() if c)
            raise TypeError(f'SIDTViT: unknown arguments {unknown}{hints}')
        a = resolve_arch(arch, embed_dim, depth, num_heads, mlp_ratio)
        if mode not in MODES:
            raise ValueError(f'mode: expected one of {MODES}, got {mode!r}')
        out_type = settings.get('out_type', 'featmap')
        if out_type not in OUT_TYPES:
            raise ValueError(f'out_type: expected one of {OUT_TYPES}, got {out_type!r}')
        # (an unknown pruned_layout is refused by the attention layers, which run it)
        patch_size = _check_size('patch_size', patch_size)
        img_size = _check_size('img_size', img_size)
        pretrain_img_size = _check_size('pretrain_img_size', pretrain_img_size)
        size = _pair(img_size or pretrain_img_size or 224)
        pos = _pair(pretrain_img_size) if pretrain_img_size else size
        if min(pos[0] // patch_size, pos[1] // patch_size, size[0] // patch_size,
               size[1] // patch_size) < 1:
            raise ValueError(f'img_size {size} / pretrain_img_size {pos}: expected at least '
                             f'one patch of {patch_size} per side')
        with_cls = settings.get('with_cls_token', False)
        if out_type == 'cls_token' and not with_cls:
            raise ValueError("out_type='cls_token' needs with_cls_token=True")
        n = a['num_layers']
        global_idx = _resolve_global(n, window_size, global_attn_indexes, window_block_indexes)
        windowed = window_size > 0 and len(global_idx) < n
        if with_cls and (windowed or settings.get('use_rel_pos', False)):
            raise ValueError('with_cls_token=True cannot be combined with window attention or '
                             'relative positions (the class token has no grid position)')
        dims = tuple(search_dims) if mode == 'search' else ()
        unknown = set(dims) - set(SEARCH_DIMS)
        if unknown:
            raise ValueError(f'search_dims: unknown {sorted(unknown)}; expected a subset of '
                             f'{SEARCH_DIMS}')
        subnet, subnet_file, layout = cls._resolve_subnet(a, mode, subnet, pruned_layout)
        return cls(**a, patch_size=patch_size, img_size=size, pos_size=pos,
                   norm_cfg=dict(norm_cfg or dict(type='LN', eps=1e-6)),
                   window_size=window_size, global_attn_indexes=global_idx, mode=mode,
                   subnet=subnet, subnet_file=subnet_file, search_dims=dims,
                   pruned_layout=layout, **settings)

    @staticmethod
    def _resolve_subnet(arch: dict, mode: str, subnet, pruned_layout):
        name = os.fspath(subnet) if isinstance(subnet, (str, os.PathLike)) else 'subnet'
        if mode != 'pruned':
            if subnet is not None:
                raise ValueError(f"subnet is only used with mode='pruned' (mode={mode!r})")
            return None, name, pruned_layout or 'grouped'
        if subnet is None:
            raise ValueError("mode='pruned' needs subnet (a Subnet, dict or path to JSON)")
        subnet = Subnet.coerce(subnet)
        subnet.check_arch(arch['embed_dims'], arch['num_layers'], arch['num_heads'],
                          int(arch['embed_dims'] * arch['mlp_ratio']), where=name)
        recorded = (subnet.budget or {}).get('layout')
        layout = pruned_layout or (recorded if recorded in LAYOUTS else 'grouped')
        return subnet, name, layout

    def kwargs(self) -> dict:
        """Constructor arguments that build a SIDTViT of exactly this spec."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
               if f.name not in ('embed_dims', 'num_layers', 'num_heads', 'mlp_ratio',
                                 'pos_size', 'subnet_file', 'search_dims')}
        out.update(arch=dict(embed_dims=self.embed_dims, num_layers=self.num_layers,
                             num_heads=self.num_heads, mlp_ratio=self.mlp_ratio),
                   pretrain_img_size=self.pos_size, norm_cfg=dict(self.norm_cfg),
                   global_attn_indexes=list(self.global_attn_indexes),
                   search_dims=self.search_dims or ('attn', 'mlp'))
        return out

    def settings(self) -> dict:
        """The settings that add or remove backbone tensors, for explaining a checkpoint's
        missing or unexpected keys (:func:`~sidt_mmdet.utils.state_dict.explain_backbone_keys`)."""
        return dict(num_layers=self.num_layers, use_rel_pos=self.use_rel_pos,
                    with_cls_token=self.with_cls_token, use_abs_pos=self.use_abs_pos,
                    final_norm=self.final_norm, qkv_bias=self.qkv_bias,
                    search_dims=self.search_dims, split_qkv=self.split_qkv,
                    subnet=self.subnet_file if self.mode == 'pruned' else None)


# the settings resolve() passes through unchanged, and every argument it takes
_SETTINGS = frozenset(('in_channels', 'qkv_bias', 'drop_path_rate', 'with_cls_token',
                       'final_norm', 'out_type', 'use_abs_pos', 'use_rel_pos',
                       'rel_pos_zero_init', 'split_qkv', 'with_cp', 'frozen_stages'))
_ARGS = _SETTINGS | frozenset((
    'arch', 'patch_size', 'img_size', 'pretrain_img_size', 'embed_dim', 'depth', 'num_heads',
    'mlp_ratio', 'window_size', 'global_attn_indexes', 'window_block_indexes',
    'pretrain_use_cls_token', 'mode', 'subnet', 'search_dims', 'pruned_layout', 'norm_cfg',
    'init_cfg'))
