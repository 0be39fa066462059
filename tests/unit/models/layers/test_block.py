"""The block's window partition is timm's (SAM/ViTDet), written so symbolic sizes trace fast."""
import pytest
import torch
from timm.models.vision_transformer_sam import window_partition as timm_partition
from timm.models.vision_transformer_sam import window_unpartition as timm_unpartition

from sidt_mmdet.models.layers.block import window_partition, window_unpartition


@pytest.mark.parametrize('shape, ws', [((2, 10, 11, 5), 3), ((1, 6, 6, 4), 3),
                                       ((3, 7, 4, 2), 4), ((1, 14, 14, 8), 14),
                                       ((1, 3, 5, 2), 7)])
def test_window_partition_equals_timm(shape, ws):
    B, h, w, C = shape
    x = torch.randn(*shape)
    ref, pad_hw = timm_partition(x, ws)
    ours, windows = window_partition(x, ws)
    assert windows == (pad_hw[0] // ws, pad_hw[1] // ws)
    assert torch.equal(ours, ref.view(-1, ws * ws, C))
    back = window_unpartition(ours, ws, B, (h, w), windows)
    assert torch.equal(back, timm_unpartition(ref, ws, (h, w), pad_hw).view(B, h * w, C))
    assert torch.equal(back, x.view(B, h * w, C))
