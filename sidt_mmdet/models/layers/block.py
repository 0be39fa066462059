"""Pre-norm transformer block with optional window attention (ViTDet) and an embedding mask."""
from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F
from timm.layers import DropPath
from torch import nn

from .attention import SIDTAttention
from .linear_ops import call_as
from .mlp import SIDTMlp

__all__ = ['SIDTBlock', 'masked_norm', 'window_partition', 'window_unpartition']

_LAYER_NORM = partial(nn.LayerNorm, eps=1e-6)


def masked_norm(norm: nn.Module, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """``norm(x) * mask``, with the mask folded into a LayerNorm's affine (exact)."""
    if mask is None:
        return norm(x)
    if isinstance(norm, nn.LayerNorm) and norm.weight is not None:
        bias = norm.bias * mask if norm.bias is not None else None
        if torch.jit.is_tracing():  # scoped to the norm (see linear_ops.call_as)
            return call_as(norm, lambda t: F.layer_norm(t, norm.normalized_shape,
                                                        norm.weight * mask, bias, norm.eps), x)
        return F.layer_norm(x, norm.normalized_shape, norm.weight * mask, bias, norm.eps)
    return norm(x) * mask


def window_partition(x: torch.Tensor, ws: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """(B, h, w, C) -> (B * windows, ws * ws, C), zero-padded at the bottom/right, and the
    number of windows (nh, nw) per side.

    The same tensors as timm's ``window_partition``, with the padded side written as
    ``ceil(h / ws) * ws``: under torch.export (ONNX with dynamic sizes) a symbolic side
    then stays a short expression instead of nested modulos, which traces ~7x faster.
    """
    B, h, w, C = x.shape
    nh, nw = (h + ws - 1) // ws, (w + ws - 1) // ws
    x = F.pad(x, (0, 0, 0, nw * ws - w, 0, nh * ws - h))
    x = x.view(B, nh, ws, nw, ws, C).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(B * nh * nw, ws * ws, C), (nh, nw)


def window_unpartition(y: torch.Tensor, ws: int, batch: int, hw: tuple[int, int],
                       windows: tuple[int, int]) -> torch.Tensor:
    """Inverse of :func:`window_partition`, padding dropped: (B, h * w, C)."""
    (nh, nw), (h, w) = windows, hw
    C = y.shape[-1]
    y = y.view(batch, nh, nw, ws, ws, C).permute(0, 1, 3, 2, 4, 5)
    y = y.reshape(batch, nh * ws, nw * ws, C)[:, :h, :w]
    return y.reshape(batch, h * w, C)


class TraceableDropPath(DropPath):
    """timm's ``DropPath``, which in eval returns its input untouched: a jit trace then holds
    no op of it, and trace-based counters (mmengine's analyzer) warn that it was never called.
    While tracing in eval it records one no-op (``aten::dropout`` with p=0, which they
    ignore)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training and torch.jit.is_tracing():
            return F.dropout(x, 0., False)
        return super().forward(x)


class SIDTBlock(nn.Module):
    """norm1 -> attention (global or windowed) -> residual; norm2 -> MLP -> residual.

    ``embed_mask`` (search mode) multiplies every write into the residual stream and
    every normalised read from it, so a zeroed channel is zero everywhere except in the
    LayerNorm statistics (which is why embedding pruning is not exact). It is applied
    on the weight side: the norms' affine parameters and the rows of ``attn.proj``
    and ``mlp.fc2``, so it costs O(weights) and stores no activation.

    ``norm_layer(dim)`` builds each norm (timm's convention; the backbone passes mmcv's
    ``build_norm_layer`` for its ``norm_cfg``, so this module stays pure torch + timm).
    """

    def __init__(self, dim: int, attn: SIDTAttention, mlp: SIDTMlp, window_size: int = 0,
                 drop_path: float = 0.,
                 norm_layer: Callable[[int], nn.Module] = _LAYER_NORM):
        super().__init__()
        self.window_size = window_size
        self.norm1 = norm_layer(dim)
        self.attn = attn
        self.drop_path = TraceableDropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = mlp

    def forward(self, x: torch.Tensor, hw: tuple[int, int],
                embed_mask: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, P + h*w, C) with P prefix tokens (class token) before the patch grid."""
        y = masked_norm(self.norm1, x, embed_mask)
        if self.window_size > 0:
            B, _, C = y.shape
            ws = self.window_size
            y, windows = window_partition(y.view(B, *hw, C), ws)
            y = self.attn(y, (ws, ws), out_scale=embed_mask)
            y = window_unpartition(y, ws, B, hw, windows)
        else:
            y = self.attn(y, hw, out_scale=embed_mask)
        x = x + self.drop_path(y)
        y = self.mlp(masked_norm(self.norm2, x, embed_mask), out_scale=embed_mask)
        return x + self.drop_path(y)
