"""The searchable kinds of a SIDTViT, each in one place.

A kind is what one search mask gates and one selection prunes: per-head attention
dims (``attn``), MLP hidden units (``mlp``) and the shared embedding channels
(``embed``). Each :class:`SearchKind` owns

- its masks: their state-dict names (:meth:`~SearchKind.owns`) and values
  (:meth:`~SearchKind.masks`);
- its fold-and-slice: the :class:`Cut` s it makes to the dense tensors for a subnet,
  with the surviving mask values folded into the weights they multiply
  (:meth:`~SearchKind.cuts`; :func:`~sidt_mmdet.models.slicing.slice_vit_state_dict`
  applies every kind's cuts);
- its cost: the MACs one mask entry stands for at an input size
  (:meth:`~SearchKind.mask_costs`; weights the sparsity loss).

The layers outside the backbone that read its output map (a neck, a classifier head)
declare which weight axis holds the backbone's channels with
:func:`reads_backbone_channels`; the embedding kind cuts those axes when a whole model is
pruned. A new kind is one subclass and one :func:`register_kind` call (docs/design.md
shows the diff).

The q/k/v row layout is timm's: row ``s * D + h * d + j`` for s in (q, k, v).
"""
from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import torch

from .subnet import Subnet

__all__ = ['Cut', 'SearchKind', 'AttnHeadDims', 'MLPHidden', 'EmbedChannels', 'KINDS',
           'register_kind', 'kind_of', 'is_mask_key', 'mask_suffixes', 'token_geometry',
           'reads_backbone_channels', 'channel_readers']


@dataclass(frozen=True)
class Cut:
    """Keep ``index`` along ``axis`` of one tensor, then multiply what is kept by ``scale``
    (the folded mask values, one per kept index; ``None``: unscaled)."""

    axis: int
    index: torch.Tensor
    scale: torch.Tensor | None = None

    def apply(self, t: torch.Tensor) -> torch.Tensor:
        axis = self.axis % t.dim()
        out = t.index_select(axis, self.index.to(t.device))
        if self.scale is not None:
            shape = [1] * out.dim()
            shape[axis] = -1
            out = out * self.scale.to(out).view(shape)
        return out


def _index(values) -> torch.Tensor:
    return torch.as_tensor(values, dtype=torch.long)


@dataclass(frozen=True)
class BlockGeometry:
    """Where one block attends: ``groups`` attention groups of ``n`` tokens (windows, or
    one global group), over a ``kh x kw`` grid of relative positions."""

    groups: int
    n: int
    kh: int
    kw: int

    @property
    def tokens(self) -> int:  # T: the tokens the block computes on (padded windows)
        return self.groups * self.n


@dataclass(frozen=True)
class Geometry:
    """The token grid of a backbone at one input size: ``h x w`` patches, ``tokens`` with
    the prefix tokens, and each block's attention groups."""

    h: int
    w: int
    tokens: int
    blocks: tuple[BlockGeometry, ...]


def token_geometry(backbone, input_size: tuple[int, int]) -> Geometry:
    h = math.ceil(input_size[0] / backbone.patch_size)
    w = math.ceil(input_size[1] / backbone.patch_size)
    N = h * w + backbone.num_prefix_tokens
    blocks = []
    for blk in backbone.blocks:
        ws = blk.window_size
        if ws > 0:
            blocks.append(BlockGeometry(math.ceil(h / ws) * math.ceil(w / ws), ws * ws, ws, ws))
        else:
            blocks.append(BlockGeometry(1, N, h, w))
    return Geometry(h, w, N, tuple(blocks))


class SearchKind:
    """One searchable kind (see the module docstring). Subclasses set ``name`` and
    ``suffixes`` (the last names of its mask parameters) and implement the three methods."""

    name: str = ''
    suffixes: tuple[str, ...] = ()

    def owns(self, key: str) -> bool:
        """Whether the state-dict key ``key`` is one of this kind's masks."""
        return key.rsplit('.', 1)[-1] in self.suffixes

    def masks(self, backbone) -> dict[str, torch.Tensor]:
        """This kind's search masks of ``backbone``, by state-dict key (empty when none)."""
        raise NotImplementedError

    def cuts(self, state: Mapping[str, torch.Tensor], subnet: Subnet,
             fold: bool) -> Iterator[tuple[str, Cut]]:
        """``(key, cut)`` for every dense tensor this kind slices for ``subnet``; with
        ``fold``, the cuts scale by the surviving values of the masks found in ``state``."""
        raise NotImplementedError

    def mask_costs(self, backbone, geometry: Geometry) -> dict[str, torch.Tensor]:
        """MACs that one entry of each of this kind's masks costs, shaped like the mask."""
        raise NotImplementedError


def _mask(state, key, fold):
    return state.get(key) if fold else None


def _head_scale(mask: torch.Tensor | None, groups: list[list[int]]) -> torch.Tensor | None:
    if mask is None:
        return None
    return torch.cat([mask[h, dims] for h, dims in enumerate(groups)])


class AttnHeadDims(SearchKind):
    """Per-head q/k and v dims: one shared ``(H, d)`` mask (``dim_mask``) or a q/k and a v
    mask (``qk_mask``, ``v_mask``). Kept dims are rows of W_q, W_k, W_v and their biases
    (masks folded: v = W_v x + b_v is linear), columns of the output projection and of the
    relative-position tables (the union of the kept q/k dims)."""

    name = 'attn'
    suffixes = ('dim_mask', 'qk_mask', 'v_mask')

    def masks(self, backbone):
        out = {}
        for i, blk in enumerate(backbone.blocks):
            for suffix in self.suffixes:
                m = getattr(blk.attn, suffix, None)
                if m is not None:
                    out[f'blocks.{i}.attn.{suffix}'] = m
        return out

    def _scales(self, state, p, active, fold):
        if fold and p + 'attn.dim_mask' in state:
            m = state[p + 'attn.dim_mask'][active]
            return m, m
        m_qk, m_v = _mask(state, p + 'attn.qk_mask', fold), _mask(state, p + 'attn.v_mask', fold)
        return (m_qk[active] if m_qk is not None else None,
                m_v[active] if m_v is not None else None)

    def cuts(self, state, subnet, fold):
        D, d = subnet.embed_dims, subnet.head_dim
        for i, blk in enumerate(subnet.blocks):
            p = f'blocks.{i}.'
            qk, v = blk['qk'], blk['v']
            active = subnet.active_heads(i)
            m_qk, m_v = self._scales(state, p, active, fold)
            # Heads re-indexed onto the dense layout for row selection.
            rows_q = [h * d + j for h in active for j in qk[h]]
            rows_v = [2 * D + h * d + j for h in active for j in v[h]]
            s_qk = _head_scale(m_qk, [qk[h] for h in active])
            s_v = _head_scale(m_v, [v[h] for h in active])
            scale = None
            if s_qk is not None or s_v is not None:
                ones_qk, ones_v = torch.ones(len(rows_q)), torch.ones(len(rows_v))
                s_qk = s_qk if s_qk is not None else ones_qk
                scale = torch.cat([s_qk, s_qk, s_v if s_v is not None else ones_v])
            rows = _index(rows_q + [D + r for r in rows_q] + rows_v)
            yield p + 'attn.qkv.weight', Cut(0, rows, scale)
            yield p + 'attn.qkv.bias', Cut(0, rows, scale)
            yield p + 'attn.proj.weight', Cut(1, _index([h * d + j for h in active
                                                         for j in v[h]]))
            union = _index(subnet.qk_union(i))
            for table in ('rel_pos_h', 'rel_pos_w'):
                yield f'{p}attn.{table}', Cut(1, union)

    def mask_costs(self, backbone, geometry):
        D = backbone.embed_dims
        costs = {}
        for i, (blk, g) in enumerate(zip(backbone.blocks, geometry.blocks, strict=True)):
            rel = g.tokens * (g.kh + g.kw) if backbone.use_rel_pos else 0
            qk_cost = 2 * g.tokens * D + g.groups * g.n * g.n + rel
            v_cost = 2 * g.tokens * D + g.groups * g.n * g.n
            qk_m, v_m = blk.attn.masks()
            p = f'blocks.{i}.attn.'
            if blk.attn.mask_kind == 'shared':
                costs[p + 'dim_mask'] = torch.full_like(qk_m, float(qk_cost + v_cost))
            elif blk.attn.mask_kind == 'split':
                costs[p + 'qk_mask'] = torch.full_like(qk_m, float(qk_cost))
                costs[p + 'v_mask'] = torch.full_like(v_m, float(v_cost))
        return costs


class MLPHidden(SearchKind):
    """MLP hidden units (``hidden_mask``): rows of fc1 and its bias, columns of fc2, where
    the mask folds (it multiplies GELU's output, which fc1 cannot absorb)."""

    name = 'mlp'
    suffixes = ('hidden_mask',)

    def masks(self, backbone):
        return {f'blocks.{i}.mlp.hidden_mask': blk.mlp.hidden_mask
                for i, blk in enumerate(backbone.blocks) if blk.mlp.hidden_mask is not None}

    def cuts(self, state, subnet, fold):
        for i, blk in enumerate(subnet.blocks):
            p = f'blocks.{i}.mlp.'
            hid = _index(blk['mlp'])
            m = _mask(state, p + 'hidden_mask', fold)
            yield p + 'fc1.weight', Cut(0, hid)
            yield p + 'fc1.bias', Cut(0, hid)
            yield p + 'fc2.weight', Cut(1, hid, m[hid] if m is not None else None)

    def mask_costs(self, backbone, geometry):
        cost = float(2 * geometry.tokens * backbone.embed_dims)
        return {key: torch.full_like(m, cost) for key, m in self.masks(backbone).items()}


# Layers outside the backbone that read its output map: type name -> (where the layer
# sits in the model, {its key: the weight axis holding the backbone's channels}).
_READERS: dict[str, tuple[str, dict[str, int]]] = {}


def reads_backbone_channels(where: str, axes: Mapping[str, int], name: str | None = None):
    """Declare that a module (a class decorator, or ``name`` for a class defined elsewhere)
    reads the backbone's channels: ``where`` is its attribute on the model (``'neck'``,
    ``'head'``), ``axes`` maps its own state-dict keys to the axis holding them
    (ConvTranspose2d weights are (in, out, k, k): axis 0). A pruned embedding cuts them."""
    def register(cls):
        _READERS[name or cls.__name__] = (where, dict(axes))
        return cls
    return register if name is None else register(None)


def channel_readers() -> dict[str, int]:
    """Every declared reader, as ``{model state-dict key: axis}``."""
    return {f'{where}.{key}': axis for where, axes in _READERS.values()
            for key, axis in axes.items()}


reads_backbone_channels('head', {'fc.weight': 1}, name='LinearClsHead')  # mmpretrain
reads_backbone_channels('head', {'layers.head.weight': 1},
                        name='VisionTransformerClsHead')  # mmpretrain


class EmbedChannels(SearchKind):
    """Embedding channels (``embed_mask``): every write into the residual stream (patch
    embedding, class token, position embedding, attention projection rows, fc2 rows) takes
    the kept channels with the mask folded in, every normalised read (norm1, norm2, norm)
    the kept channels of its affine parameters, the mask folded too; the q/k/v and fc1
    inputs keep the columns unscaled."""

    name = 'embed'
    suffixes = ('embed_mask',)

    def masks(self, backbone):
        return {} if backbone.embed_mask is None else {'embed_mask': backbone.embed_mask}

    def cuts(self, state, subnet, fold):
        E = _index(subnet.kept_embed)
        m = _mask(state, 'embed_mask', fold)
        write = Cut(0, E, m[E] if m is not None else None)
        for key in ('patch_embed.proj.weight', 'patch_embed.proj.bias', 'norm.weight',
                    'norm.bias'):
            yield key, write
        for key in ('cls_token', 'pos_embed'):
            yield key, Cut(-1, E, write.scale)
        for i in range(subnet.num_layers):
            p = f'blocks.{i}.'
            for key in ('norm1.weight', 'norm1.bias', 'norm2.weight', 'norm2.bias',
                        'attn.proj.weight', 'attn.proj.bias', 'mlp.fc2.weight', 'mlp.fc2.bias'):
                yield p + key, write
            yield p + 'attn.qkv.weight', Cut(1, E)
            yield p + 'mlp.fc1.weight', Cut(1, E)

    def mask_costs(self, backbone, geometry):
        if backbone.embed_mask is None:
            return {}
        D = backbone.embed_dims
        in_ch = backbone.patch_embed.proj.in_channels
        cost = geometry.h * geometry.w * in_ch * backbone.patch_size ** 2
        for blk, g in zip(backbone.blocks, geometry.blocks, strict=True):
            cost += g.tokens * (3 * D + D) + 2 * geometry.tokens * blk.mlp.hidden_features
        return {'embed_mask': torch.full_like(backbone.embed_mask, float(cost))}


KINDS: dict[str, SearchKind] = {}


def register_kind(kind: SearchKind) -> SearchKind:
    """Add a kind; the slicer, the mask costs and the sparsity loss then loop over it too."""
    if not kind.name or kind.name in KINDS:
        raise ValueError(f'register_kind: a kind needs a new name, got {kind.name!r}')
    KINDS[kind.name] = kind
    return kind


# Order matters to the slicer only where two kinds scale one tensor (fc2's rows by the
# embedding mask, then its columns by the MLP mask): the embedding's cuts go first.
for _kind in (EmbedChannels(), AttnHeadDims(), MLPHidden()):
    register_kind(_kind)


def mask_suffixes() -> tuple[str, ...]:
    return tuple(s for kind in KINDS.values() for s in kind.suffixes)


def kind_of(key: str) -> str | None:
    """The name of the kind whose mask ``key`` is, or ``None``."""
    return next((kind.name for kind in KINDS.values() if kind.owns(key)), None)


def is_mask_key(key: str) -> bool:
    return kind_of(key) is not None
