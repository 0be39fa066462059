"""The simple feature pyramid feeds mmcv's RoIAlign what it can read.

mmcv's RoIAlign (CPU and CUDA kernels) indexes its input's memory as contiguous NCHW and
does not check: a permuted view makes it pool values from the wrong positions, silently.
Two-stage detectors then train on scrambled RoI features (box mAP near zero on the toy
set). The pyramid's LayerNorm permutes internally, so its outputs are checked here.
"""
import pytest
import torch
from mmcv.ops import RoIAlign
from mmengine.registry import DefaultScope
from torchvision.ops import roi_align

from sidt_mmdet.models.necks.simple_fpn import SIDTLN2d, SIDTSimpleFPN


def test_ln2d_is_layer_norm_over_channels_and_contiguous():
    torch.manual_seed(0)
    ln = SIDTLN2d(8)
    with torch.no_grad():
        ln.weight.normal_()
        ln.bias.normal_()
    x = torch.randn(2, 8, 5, 7)
    y = ln(x)
    ref = torch.nn.functional.layer_norm(x.movedim(1, -1), (8,), ln.weight, ln.bias,
                                         ln.eps).movedim(-1, 1)
    assert y.is_contiguous()
    torch.testing.assert_close(y, ref)


@pytest.mark.parametrize('norm', [dict(type='SIDTLN2d'), None])
def test_roi_align_over_the_pyramid_matches_torchvision(norm):
    """Every level, pooled by mmcv's RoIAlign as the RoI heads do, equals torchvision's
    roi_align (which honours strides) on the same level."""
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope('mmdet'):
        neck = SIDTSimpleFPN(64, [16, 32, 64, 64], 32, 5, norm_cfg=norm).eval()
    with torch.no_grad():
        outs = neck((torch.randn(2, 64, 10, 10),))
    rois = torch.tensor([[0, 8., 12., 90., 70.], [1, 30., 5., 150., 140.],
                         [0, 0., 0., 159., 159.]])
    for level, (feat, stride) in enumerate(zip(outs, (4, 8, 16, 32, 64))):
        assert feat.is_contiguous(), f'level {level}'
        ours = RoIAlign(7, 1.0 / stride, sampling_ratio=0, aligned=True)(feat, rois)
        ref = roi_align(feat, rois, 7, 1.0 / stride, sampling_ratio=0, aligned=True)
        torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5, msg=f'level {level}')
