"""Patch embedding that accepts any input size (timm ``PatchEmbed`` with dynamic padding)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .linear_ops import call_as

__all__ = ['PatchEmbed']


class PatchEmbed(nn.Module):
    """Conv patchify; sides that are not a multiple of the patch are zero-padded at the
    bottom/right (as timm's ``dynamic_img_pad``) so no pixel is dropped."""

    def __init__(self, in_channels: int, embed_dims: int, patch_size: int):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_channels, embed_dims, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor, out_scale: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, tuple[int, int]]:
        """Returns tokens (B, h*w, C) and the grid (h, w); ``out_scale`` (C,) multiplies the
        output channels on the weight side (the embedding mask of the search mode)."""
        p = self.patch_size
        H, W = x.shape[-2:]
        pad_h, pad_w = (-H) % p, (-W) % p
        # While exporting (torch.export / ONNX) the sizes are symbolic: pad always (a zero pad
        # is a no-op), so the graph pads every size instead of only the traced one's.
        if pad_h or pad_w or torch.compiler.is_exporting():
            x = F.pad(x, (0, pad_w, 0, pad_h))
        if out_scale is None:
            x = self.proj(x)
        else:
            conv = self.proj
            bias = conv.bias * out_scale if conv.bias is not None else None
            weight = conv.weight * out_scale[:, None, None, None]

            def scaled_conv(t):
                return F.conv2d(t, weight, bias, conv.stride, conv.padding, conv.dilation,
                                conv.groups)
            # while tracing, inside a call of the conv (see linear_ops.call_as)
            x = call_as(conv, scaled_conv, x) if torch.jit.is_tracing() else scaled_conv(x)
        hw = (x.shape[2], x.shape[3])
        return x.flatten(2).transpose(1, 2), hw
