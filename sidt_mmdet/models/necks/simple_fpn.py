"""ViTDet's simple feature pyramid, under names that never clash with mmdet's projects/ViTDet.

Builds strides 4/8/16/32 from the single stride-16 map of a plain ViT (2 deconvs /
1 deconv / identity / max-pool, then 1x1 and 3x3 convs with norm). When the
backbone's embedding width is pruned, only the layers that read the backbone map
change (``input_channels``); the pyramid's inner widths keep following
``backbone_channel``, so the rest of a trained neck still loads.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from mmcv.cnn import ConvModule, build_norm_layer
from mmdet.registry import MODELS
from mmengine.model import BaseModule
from torch import nn

__all__ = ['SIDTSimpleFPN', 'SIDTLN2d']


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
    """

    def __init__(self,
                 backbone_channel: int,
                 in_channels: list[int],
                 out_channels: int,
                 num_outs: int,
                 input_channels: int | None = None,
                 conv_cfg: dict | None = None,
                 norm_cfg: dict | None = None,
                 act_cfg: dict | None = None,
                 init_cfg: dict | list | None = None):
        super().__init__(init_cfg=init_cfg)
        if len(in_channels) != 4:
            raise ValueError(f'in_channels: expected 4 widths (strides 4/8/16/32), '
                             f'got {in_channels}')
        if num_outs < 4:
            raise ValueError(f'num_outs: expected >= 4, got {num_outs}')
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
        ln = norm_cfg or dict(type='SIDTLN2d')
        self.fpn1 = nn.Sequential(
            nn.ConvTranspose2d(C_in, C // 2, 2, 2), build_norm_layer(ln, C // 2)[1], nn.GELU(),
            nn.ConvTranspose2d(C // 2, C // 4, 2, 2))
        self.fpn2 = nn.Sequential(nn.ConvTranspose2d(C_in, C // 2, 2, 2))
        # a bare Identity: trace-based counters (mmengine's analyzer) take a Sequential
        # around one for a module that was never called
        self.fpn3 = nn.Identity()
        self.fpn4 = nn.Sequential(nn.MaxPool2d(kernel_size=2, stride=2))
        widths = [C // 4, C // 2, C_in, C_in]
        self.lateral_convs = nn.ModuleList()
        self.fpn_convs = nn.ModuleList()
        for i in range(4):
            # The stride-16/32 branches read the backbone map directly (C_in wide).
            self.lateral_convs.append(ConvModule(widths[i], out_channels, 1, conv_cfg=conv_cfg,
                                                 norm_cfg=norm_cfg, act_cfg=act_cfg,
                                                 inplace=False))
            self.fpn_convs.append(ConvModule(out_channels, out_channels, 3, padding=1,
                                             conv_cfg=conv_cfg, norm_cfg=norm_cfg,
                                             act_cfg=act_cfg, inplace=False))

    def forward(self, inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        x = inputs[0]
        if x.shape[1] != self.input_channels:
            raise ValueError(
                f'SIDTSimpleFPN: the backbone gives {x.shape[1]} channels but the neck was built '
                f'for input_channels={self.input_channels}; set the neck\'s input_channels to the '
                "backbone's (pruned) embedding width, or wrap the detector in "
                "dict(type='SIDTModel', model=...) which does it from the subnet")
        feats = [self.fpn1(x), self.fpn2(x), self.fpn3(x), self.fpn4(x)]
        outs = [fpn(lat(f)) for f, lat, fpn in zip(feats, self.lateral_convs, self.fpn_convs)]
        for _ in range(self.num_outs - 4):
            outs.append(F.max_pool2d(outs[-1], 1, stride=2))
        return tuple(outs)
