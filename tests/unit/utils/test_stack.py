"""The backbone-only fallbacks of sidt_mmdet.utils.stack, checked against mmcv here (where
the detection stack is installed); the backbone-only import itself runs in the GPU wheel
installer's test (tests/integration/test_gpu_wheels.py)."""
from __future__ import annotations

import pytest
import torch
from mmcv.cnn import build_norm_layer

from sidt_mmdet.utils import stack


def test_detection_stack_here():
    assert stack.DETECTION_STACK
    from mmdet.registry import MODELS
    assert stack.MODELS is MODELS


@pytest.mark.parametrize('cfg', [dict(type='LN'), dict(type='LN', eps=1e-6),
                                 dict(type='LN', requires_grad=False)])
def test_build_norm_without_mmcv_matches_mmcv(monkeypatch, cfg):
    want = build_norm_layer(dict(cfg), 24)[1]
    monkeypatch.setattr(stack, 'DETECTION_STACK', False)
    got = stack.build_norm(dict(cfg), 24)
    assert type(got) is type(want) and got.eps == want.eps
    assert got.normalized_shape == want.normalized_shape
    assert [p.requires_grad for p in got.parameters()] == [
        p.requires_grad for p in want.parameters()]
    x = torch.randn(3, 24)
    torch.testing.assert_close(got(x), want(x), rtol=0, atol=0)


def test_build_norm_without_mmcv_refuses_other_types(monkeypatch):
    monkeypatch.setattr(stack, 'DETECTION_STACK', False)
    with pytest.raises(ValueError, match=r"only type='LN' is built, got 'BN'"):
        stack.build_norm(dict(type='BN'), 8)


def test_left_out_component_names_why():
    err = stack.needs_detection_stack('sidt_mmdet.models', 'SIDTSimpleFPN')
    assert isinstance(err, ImportError)
    assert 'sidt_mmdet.models.SIDTSimpleFPN needs mmdet' in str(err)
