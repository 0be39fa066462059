"""ViTDet's simple feature pyramid, under names that never clash with mmdet's projects/ViTDet.

Builds strides 4/8/16/32 from the single stride-16 map of a plain ViT (2 deconvs /
1 deconv / identity / max-pool, then 1x1 and 3x3 convs with norm) and more levels by
stride-2 max-pooling; ``start_level=1`` leaves stride 4 out, giving single-stage heads
the P3-P7 pyramid (8..128) they are usually configured for. When the
backbone's embedding width is pruned, only the layers that read the backbone map
change (``input_channels``); the pyramid's inner widths keep following
``backbone_channel``, so the rest of a trained neck still loads.
"""
from __future__ import annotations

import sys

import torch
import torch.nn.functional as F
from mmcv.cnn import ConvModule, build_norm_layer
from mmdet.registry import MODELS
from mmengine.model import BaseModule
from torch import nn

from ..kinds import reads_backbone_channels
from ..stride_check import check_pyramid_strides

__all__ = ['SIDTSimpleFPN', 'SIDTLN2d']

# Frames between the neck's forward and its caller's (nn.Module's call wrappers, hooks).
_OWNER_FRAMES = 8


@MODELS.register_module()
class SIDTLN2d(nn.Module):
    """LayerNorm over the channels of an NCHW map (ViTDet's LN2d)."""

    _abbr_ = 'ln'

    def __init__(self, normalized_shape: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(normalized_shape))
        self.bias = nn.Parameter(torch.zeros(normalized_shape))
        self.eps = eps
        self.normalized_shape = (normalized_shape,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias,
                         self.eps)
        # Contiguous NCHW again: mmcv's RoIAlign reads its input's memory as contiguous NCHW
        # and silently pools the wrong values from a permuted view.
        return x.permute(0, 3, 1, 2).contiguous()


@MODELS.register_module()
@reads_backbone_channels('neck', {'fpn1.0.weight': 0, 'fpn2.0.weight': 0,  # deconvs, (in, out)
                                  'lateral_convs.2.conv.weight': 1,  # stride 16
                                  'lateral_convs.3.conv.weight': 1})  # stride 32
class SIDTSimpleFPN(BaseModule):
    """Simple feature pyramid (ViTDet).

    Args:
        backbone_channel: dense width of the backbone; sets the inner widths
            (C/2 after one deconv, C/4 after two), as in ViTDet.
        in_channels: widths entering the four lateral convs ([C/4, C/2, C, C]).
        out_channels: width of every pyramid level.
        num_outs: number of outputs (extra levels by stride-2 max-pooling).
        input_channels: width of the map the backbone really gives (its pruned
            embedding width); defaults to ``backbone_channel``. ``SIDTModel`` sets
            it from the backbone's subnet.
        start_level: the first of the four built levels (strides 4/8/16/32 on a
            stride-16 map) to output, as in mmdet's ``FPN``: 1 with ``num_outs=5`` gives
            strides 8/16/32/64/128 (P3-P7). The levels below it are not built.

    The heads must be configured for :meth:`out_strides`: the first forward refuses a
    detector whose heads name other strides (``models/stride_check.py``).
    """

    def __init__(self,
                 backbone_channel: int,
                 in_channels: list[int],
                 out_channels: int,
                 num_outs: int,
                 input_channels: int | None = None,
                 start_level: int = 0,
                 conv_cfg: dict | None = None,
                 norm_cfg: dict | None = None,
                 act_cfg: dict | None = None,
                 init_cfg: dict | list | None = None):
        super().__init__(init_cfg=init_cfg)
        if len(in_channels) != 4:
            raise ValueError(f'in_channels: expected 4 widths (strides 4/8/16/32), '
                             f'got {in_channels}')
        if isinstance(start_level, bool) or start_level not in range(4):
            raise ValueError(f'start_level: expected 0..3 (the first of the strides 4/8/16/32 '
                             f'to output), got {start_level!r}')
        if num_outs < 4 - start_level:
            raise ValueError(f'num_outs: expected >= {4 - start_level} with '
                             f'start_level={start_level}, got {num_outs}')
        C = backbone_channel
        C_in = input_channels or C
        if list(in_channels) != [C // 4, C // 2, C, C]:
            raise ValueError(f'in_channels: with backbone_channel={C} the pyramid gives '
                             f'{[C // 4, C // 2, C, C]}, got {list(in_channels)}')
        self.backbone_channel = C
        self.input_channels = C_in
        self.in_channels = list(in_channels)
        self.out_channels = out_channels
        self.num_outs = num_outs
        self.start_level = start_level
        ln = norm_cfg or dict(type='SIDTLN2d')
        branches = [
            lambda: nn.Sequential(
                nn.ConvTranspose2d(C_in, C // 2, 2, 2), build_norm_layer(ln, C // 2)[1],
                nn.GELU(), nn.ConvTranspose2d(C // 2, C // 4, 2, 2)),
            lambda: nn.Sequential(nn.ConvTranspose2d(C_in, C // 2, 2, 2)),
            # a bare Identity: trace-based counters (mmengine's analyzer) take a Sequential
            # around one for a module that was never called
            nn.Identity,
            lambda: nn.Sequential(nn.MaxPool2d(kernel_size=2, stride=2))]
        for level in range(start_level, 4):
            setattr(self, f'fpn{level + 1}', branches[level]())
        widths = [C // 4, C // 2, C_in, C_in]
        self.lateral_convs = nn.ModuleList()
        self.fpn_convs = nn.ModuleList()
        for i in range(4):
            if i < start_level:
                # An empty slot keeps every built level at its index, so its keys are those
                # of the full pyramid (export/prune.py finds the readers of the backbone map
                # by these names).
                self.lateral_convs.append(nn.Identity())
                self.fpn_convs.append(nn.Identity())
                continue
            # The stride-16/32 branches read the backbone map directly (C_in wide).
            self.lateral_convs.append(ConvModule(widths[i], out_channels, 1, conv_cfg=conv_cfg,
                                                 norm_cfg=norm_cfg, act_cfg=act_cfg,
                                                 inplace=False))
            self.fpn_convs.append(ConvModule(out_channels, out_channels, 3, padding=1,
                                             conv_cfg=conv_cfg, norm_cfg=norm_cfg,
                                             act_cfg=act_cfg, inplace=False))
        self._strides_checked = False

    def out_strides(self, input_stride: int = 16, start_level: int | None = None,
                    num_outs: int | None = None) -> list:
        """The outputs' strides in pixels on a backbone map of stride ``input_stride`` (the
        ViT's patch size); ``start_level`` and ``num_outs`` default to this neck's."""
        start = self.start_level if start_level is None else start_level
        n = self.num_outs if num_outs is None else num_outs
        strides = [input_stride * 2.0 ** (level - 2) for level in range(start, start + n)]
        return [int(s) if s.is_integer() else s for s in strides]

    def forward(self, inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        x = inputs[0]
        if x.shape[1] != self.input_channels:
            raise ValueError(
                f'SIDTSimpleFPN: the backbone gives {x.shape[1]} channels but the neck was built '
                f'for input_channels={self.input_channels}; set the neck\'s input_channels to the '
                "backbone's (pruned) embedding width, or wrap the detector in "
                "dict(type='SIDTModel', model=...) which does it from the subnet")
        if not self._strides_checked and not torch.compiler.is_compiling():
            self._check_owner_strides()
        outs = [self.fpn_convs[i](self.lateral_convs[i](getattr(self, f'fpn{i + 1}')(x)))
                for i in range(self.start_level, 4)]
        for _ in range(self.num_outs - len(outs)):
            outs.append(F.max_pool2d(outs[-1], 1, stride=2))
        return tuple(outs)

    def _check_owner_strides(self) -> None:
        """Compare the heads of the detector that owns this neck with its strides, once.

        The neck is built before the heads and never sees them, and a detector not wrapped
        in ``SIDTModel`` (mmdet's own tools/train.py or test.py with only ``custom_imports``,
        the inference APIs) runs no code of ours once built. Its first forward comes from
        that detector (``extract_feat``), so the nearest caller on the stack whose ``self``
        has this neck as a child is the owner.
        """
        frame = sys._getframe(1)
        for _ in range(_OWNER_FRAMES):
            if frame is None:
                break
            owner = frame.f_locals.get('self')
            if isinstance(owner, nn.Module) and owner is not self and \
                    any(child is self for child in owner.children()):
                check_pyramid_strides(owner, where=type(owner).__name__)
                break
            frame = frame.f_back
        self._strides_checked = True
