"""Do a detector's heads read the pyramid at the strides it has?

mmdet's heads are told their strides in the config (``anchor_generator.strides`` of RPN and
single-stage heads, ``strides`` of point-based heads such as FCOS, ``featmap_strides`` of the
RoI extractors) and never compare them with the maps they are given: a RetinaNet whose
anchors stay at mmdet's P3-P7 (8..128) on ``SIDTSimpleFPN``'s default P2-P6 (4..64) places
every anchor at twice its map position, trains without an error and scores 0 mAP.
:func:`check_pyramid_strides` compares them on the built detector; ``SIDTModel`` runs it
after building, and ``SIDTSimpleFPN`` at its first forward (for a detector not wrapped).
"""
from __future__ import annotations

from torch import nn

__all__ = ['check_pyramid_strides', 'head_strides']

# The stride of the map a backbone without ``patch_size`` hands the simple pyramid (ViTDet).
_DEFAULT_INPUT_STRIDE = 16


def _plain(strides) -> list:
    """mmdet's prior generators keep (w, h) pairs; equal sides read as one number."""
    out = []
    for s in strides:
        if isinstance(s, (tuple, list)):
            s = s[0] if len(s) == 2 and s[0] == s[1] else tuple(s)
        out.append(s)
    return out


def head_strides(model: nn.Module) -> list[tuple[str, list, bool]]:
    """``(config key, strides, every_level)`` for each head of ``model`` that names its
    strides; ``every_level`` is False for RoI extractors, which read the first
    ``len(featmap_strides)`` levels only."""
    found = []
    for name in ('rpn_head', 'bbox_head'):
        generator = getattr(getattr(model, name, None), 'prior_generator', None)
        strides = getattr(generator, 'strides', None)
        if strides is not None:
            # Anchor generators (they have base anchors) are configured as anchor_generator;
            # point generators take the head's own ``strides``.
            key = (f'model.{name}.anchor_generator.strides' if hasattr(generator, 'base_anchors')
                   else f'model.{name}.strides')
            found.append((key, _plain(strides), True))
    roi_head = getattr(model, 'roi_head', None)
    for name in ('bbox_roi_extractor', 'mask_roi_extractor'):
        extractor = getattr(roi_head, name, None)
        stages = list(extractor) if isinstance(extractor, nn.ModuleList) else [extractor]
        for i, stage in enumerate(stages):
            strides = getattr(stage, 'featmap_strides', None)
            if strides is not None:
                key = f'model.roi_head.{name}.featmap_strides'
                if len(stages) > 1:
                    key += f' (stage {i})'
                found.append((key, _plain(strides), False))
    return found


def check_pyramid_strides(model: nn.Module, where: str = 'model') -> None:
    """Refuse a detector whose heads' strides are not those of its ``SIDTSimpleFPN``.

    RPN and single-stage heads must name every pyramid level's stride, in order; RoI
    extractors the strides of the levels they read (the first ones). Does nothing for a
    model without a neck that reports its strides (``out_strides``). Raises ValueError
    naming the head's key and both lists.
    """
    neck = getattr(model, 'neck', None)
    if not hasattr(neck, 'out_strides'):
        return
    backbone = getattr(model, 'backbone', None)
    input_stride = getattr(backbone, 'patch_size', None) or _DEFAULT_INPUT_STRIDE
    pyramid = neck.out_strides(input_stride)
    for key, strides, every_level in head_strides(model):
        expected = pyramid if every_level else pyramid[:len(strides)]
        if strides == expected:
            continue
        if every_level:
            fix = f'{key}={expected}'
            if key.endswith('anchor_generator.strides'):
                fix += ' (anchor sizes scale with the strides)'
            levels = _neck_levels(neck, strides, input_stride)
            if levels:
                fix = f'{levels} (the levels the head is configured for), or {fix}'
        else:
            fix = f'{key}={expected} (an RoI extractor reads the first {len(strides)} levels)'
        raise ValueError(
            f'{where}: {key}={strides} but the neck (model.neck: {type(neck).__name__}, '
            f'start_level={neck.start_level}, num_outs={neck.num_outs}, on the '
            f'stride-{input_stride} backbone map) gives strides {pyramid}; set {fix}')


def _neck_levels(neck, strides: list, input_stride: int) -> str:
    """The neck settings that give ``strides``, when some do (e.g. P3-P7)."""
    for start_level in range(4):
        if neck.out_strides(input_stride, start_level=start_level,
                            num_outs=len(strides)) == strides:
            return f'model.neck.start_level={start_level}, num_outs={len(strides)}'
    return ''
