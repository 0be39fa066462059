"""Operator handles that make mmengine's FLOP analyzer count SIDTViT's attention.

mmengine's ``FlopAnalyzer`` (behind ``get_model_complexity_info`` and so behind mmdet's
``tools/analysis_tools/get_flops.py``) traces the model with ``torch.jit`` and counts the
operators it has a handle for. It has handles for ``aten::linear``, ``aten::matmul``,
``aten::bmm``, ``aten::einsum`` and convolutions, but none for
``aten::scaled_dot_product_attention``: it skipped ``q k^T`` and ``attn @ v`` of every
block with an "Unsupported operator" warning. The relative-position terms are einsums,
which it already counts.

Importing ``sidt_mmdet`` (as ``custom_imports`` does while a config is parsed) adds the
handle below to the analyzer's default handles, so the stock tools count attention without
being edited. Like mmengine's own handles it counts MACs (one multiply-add is one "flop"),
the unit of :mod:`sidt_mmdet.models.complexity`. A handle mmengine itself defines for the same
operator is kept.
"""
from __future__ import annotations

import logging
from math import prod
from typing import Any

__all__ = ['sdpa_flop_jit', 'sdpa_activation_jit', 'register_flop_handles']

SDPA = 'aten::scaled_dot_product_attention'


def _shape(value) -> list[int]:
    return value.type().sizes()


def sdpa_flop_jit(inputs: list[Any], outputs: list[Any]) -> int:
    """MACs of ``scaled_dot_product_attention(q, k, v, ...)``: ``q k^T`` and ``attn @ v``.

    q is (..., L, E), k (..., S, E), v (..., S, Ev): ``L * S * (E + Ev)`` per batch-and-head
    entry of q. The mask, scale and softmax are elementwise and, like mmengine's other
    handles, not counted.
    """
    q, k, v = (_shape(t) for t in inputs[:3])
    L, E = q[-2:]
    return prod(q[:-2]) * L * k[-2] * (E + v[-1])


def sdpa_activation_jit(inputs: list[Any], outputs: list[Any]) -> int:
    """Activations of the attention call: its output's elements (mmengine's convention for
    matmuls)."""
    return prod(_shape(outputs[0]))


def register_flop_handles() -> bool:
    """Add the handles to mmengine's default FLOP and activation handles (idempotent).

    Returns False, with one warning, when this mmengine has no such defaults (the analyzer
    then reports what it did before).
    """
    try:
        from mmengine.analysis import complexity_analysis as ca
        flop_ops, act_ops = ca._DEFAULT_SUPPORTED_FLOP_OPS, ca._DEFAULT_SUPPORTED_ACT_OPS
    except (ImportError, AttributeError):
        logging.getLogger(__name__).warning(
            'mmengine.analysis has no default operator handles to extend: its FLOP counts '
            'will miss the attention matmuls (%s)', SDPA)
        return False
    flop_ops.setdefault(SDPA, sdpa_flop_jit)
    act_ops.setdefault(SDPA, sdpa_activation_jit)
    return True
