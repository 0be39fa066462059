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


# ------------------------------------------------------------------ levels and strides
def _neck(**kw) -> SIDTSimpleFPN:
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope('mmdet'):
        return SIDTSimpleFPN(64, [16, 32, 64, 64], 32, kw.pop('num_outs', 5), **kw).eval()


def test_default_pyramid_is_p2_p6():
    neck = _neck()
    assert neck.out_strides(16) == [4, 8, 16, 32, 64]
    assert neck.out_strides(4) == [1, 2, 4, 8, 16]
    with torch.no_grad():
        outs = neck((torch.randn(2, 64, 6, 8),))
    assert [tuple(o.shape) for o in outs] == [(2, 32, 24, 32), (2, 32, 12, 16), (2, 32, 6, 8),
                                              (2, 32, 3, 4), (2, 32, 2, 2)]


def test_start_level_1_gives_p3_p7_with_the_full_pyramids_keys():
    full, p3 = _neck(), _neck(start_level=1)
    assert p3.out_strides(16) == [8, 16, 32, 64, 128]
    with torch.no_grad():
        outs = p3((torch.randn(2, 64, 6, 8),))
    assert [tuple(o.shape) for o in outs] == [(2, 32, 12, 16), (2, 32, 6, 8), (2, 32, 3, 4),
                                              (2, 32, 2, 2), (2, 32, 1, 1)]
    # the stride-4 branch is not built; every other level keeps the full pyramid's names
    theirs = {k: v.shape for k, v in full.state_dict().items()}
    ours = {k: v.shape for k, v in p3.state_dict().items()}
    assert not hasattr(p3, 'fpn1')
    assert ours == {k: s for k, s in theirs.items()
                    if not k.startswith(('fpn1.', 'lateral_convs.0.', 'fpn_convs.0.'))}
    # and compute what the full pyramid computes at those levels
    p3.load_state_dict({k: v for k, v in full.state_dict().items() if k in ours})
    x = torch.randn(1, 64, 6, 8)
    with torch.no_grad():
        for a, b in zip(p3((x,)), full((x,))[1:]):
            torch.testing.assert_close(a, b)


@pytest.mark.parametrize('kw, message', [
    (dict(start_level=4), r'start_level: expected 0\.\.3'),
    (dict(start_level=True), r'start_level: expected 0\.\.3'),
    (dict(start_level=1, num_outs=2), r'num_outs: expected >= 3 with start_level=1, got 2'),
])
def test_bad_levels(kw, message):
    with pytest.raises(ValueError, match=message):
        _neck(**kw)


def test_p3_p7_follows_a_pruned_embedding():
    """The export slices the layers that read the backbone map by name: with start_level=1
    the pruned pyramid loads the sliced dense one strictly and reads the kept width."""
    from helpers import perturb_, random_masks_

    from sidt_mmdet.export import prune_model_state_dict
    from sidt_mmdet.models import SIDTViT
    from sidt_mmdet.search.select import select_subnet

    torch.manual_seed(0)
    search = SIDTViT(arch=dict(embed_dims=64, num_layers=2, num_heads=4), patch_size=16,
                     img_size=64, mode='search', search_dims=('attn', 'mlp', 'embed'))
    random_masks_(perturb_(search))
    subnet = select_subnet(search, keep_ratio=0.6, round_to=1, min_mlp=1)
    kept = len(subnet.kept_embed)
    assert kept < 64
    state = {f'neck.{k}': v for k, v in perturb_(_neck(start_level=1)).state_dict().items()}
    state.update({f'backbone.{k}': v for k, v in search.state_dict().items()})
    pruned_state = prune_model_state_dict(state, subnet)
    neck = _neck(start_level=1, input_channels=kept)
    neck.load_state_dict({k[5:]: v for k, v in pruned_state.items() if k.startswith('neck.')})
    assert neck.fpn2[0].in_channels == neck.lateral_convs[2].conv.in_channels == kept
    with torch.no_grad():
        outs = neck((torch.randn(1, kept, 4, 4),))
    assert [tuple(o.shape[-2:]) for o in outs] == [(8, 8), (4, 4), (2, 2), (1, 1), (1, 1)]
