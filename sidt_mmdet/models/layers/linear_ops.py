"""Weight-side operations on a projection: select, pad and scale its rows or columns.

The attention and MLP layers use these instead of gathering or scaling activations:

- a pruned attention packs the compact q/k/v rows (and the projection's columns) into
  its per-head-group layout, so a forward is one matmul per projection;
- search masks scale the rows (or columns) they multiply, which is exact because the
  projection is linear: ``(W x + b) * m == (m * W) x + m * b``.

The cost is O(weights) per forward while training, and nothing in eval / no-grad mode,
where the packed weights are cached and rebuilt only when a parameter changes (its
storage or its version counter: optimizer steps, ``load_state_dict``, ``.to()``).
Writes through ``param.data`` bypass the version counter: the layers drop their
caches on ``train()`` / ``eval()``, which follows such writes (EMA parameter swaps).
The cache holds one packed copy of a pruned attention's qkv and projection weights
(about a third of a ViT's parameters) next to the compact ones.

A projection is an ``nn.Linear`` or a factorized ``up(down(x))`` (the low-rank
layers: ``down`` without bias, ``up`` with it); input columns live on the first
weight, output rows and the bias on the last.

While ``torch.jit`` traces (mmengine's FLOP analyzer, mmdet's ``get_flops.py``), a
weight-side operation runs inside a call of its module
(:func:`call_as`): trace-based counters attribute ops to the module whose ``__call__``
ran them, and would otherwise report ``qkv``, ``proj``, ``fc2`` as never called and give
them zero. Eager forwards keep the direct functional form (no parameter swap).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ['Stages', 'linear_stages', 'run_stages', 'scaled_linear', 'call_as', 'WeightCache']

# One (weight, bias) pair per matmul; a factorized projection has two.
Stages = list[tuple[torch.Tensor, torch.Tensor | None]]


def _take(t: torch.Tensor, dim: int, index: torch.Tensor | None, padded: bool) -> torch.Tensor:
    """``t.index_select(dim, index)``; with ``padded``, index ``t.shape[dim]`` is a zero."""
    if index is None:
        return t
    if padded:
        pad = [0, 0] * (t.dim() - 1 - dim) + [0, 1]
        t = F.pad(t, pad)
    return t.index_select(dim, index)


def _scale(t: torch.Tensor | None, dim: int, scale: torch.Tensor | None):
    if t is None or scale is None:
        return t
    shape = [1] * t.dim()
    shape[dim] = -1
    return t * scale.to(t.dtype).view(shape)


def linear_stages(module: nn.Module, *, in_index: torch.Tensor | None = None,
                  in_padded: bool = False, out_index: torch.Tensor | None = None,
                  out_padded: bool = False, out_scale: torch.Tensor | None = None) -> Stages:
    """The (weight, bias) matmuls of ``module`` with its inputs re-indexed by ``in_index``,
    its outputs by ``out_index`` (then multiplied by ``out_scale``)."""
    if isinstance(module, nn.Linear):
        w = _take(_take(module.weight, 1, in_index, in_padded), 0, out_index, out_padded)
        b = _take(module.bias, 0, out_index, out_padded) if module.bias is not None else None
        return [(_scale(w, 0, out_scale), _scale(b, 0, out_scale))]
    if hasattr(module, 'down') and hasattr(module, 'up'):
        down = _take(module.down.weight, 1, in_index, in_padded)
        up = _take(module.up.weight, 0, out_index, out_padded)
        b = module.up.bias
        b = _take(b, 0, out_index, out_padded) if b is not None else None
        return [(down, None), (_scale(up, 0, out_scale), _scale(b, 0, out_scale))]
    raise TypeError(f'expected an nn.Linear or a factorized (down, up) projection, got '
                    f'{type(module).__name__}')


class _ScaledLinear(torch.autograd.Function):
    """``F.linear(x, row[:, None] * weight * col[None, :], row * bias)`` that saves only
    its input and the parameters: the scaled weight is rebuilt in backward, so a
    masked projection stores nothing weight-sized between forward and backward."""

    @staticmethod
    def forward(ctx, x, weight, bias, row, col):
        w = _scaled(weight, row, col)
        b = bias * row if bias is not None and row is not None else bias
        out = F.linear(x, w, b)
        ctx.dtype = out.dtype  # the dtype autocast (if any) ran the matmul in
        ctx.save_for_backward(x, weight, bias, row, col)
        return out

    @staticmethod
    def backward(ctx, grad):
        x, weight, bias, row, col = ctx.saved_tensors
        need_x, need_w, need_b, need_row, need_col = ctx.needs_input_grad
        dt = ctx.dtype
        w = _scaled(weight, row, col)
        g = grad.to(dt)
        gx = gw = gb = grow = gcol = None
        if need_x:
            gx = (g @ w.to(dt)).to(x.dtype)
        g2 = g.reshape(-1, g.shape[-1])
        if need_w or need_row or need_col:
            gw_eff = (g2.t() @ x.reshape(-1, x.shape[-1]).to(dt)).to(weight.dtype)
            if need_w:
                gw = _scaled(gw_eff, row, col)
            if need_row:
                grow = (gw_eff * _scaled(weight, None, col)).sum(1)
            if need_col:
                gcol = (gw_eff * _scaled(weight, row, None)).sum(0)
        if bias is not None and (need_b or need_row):
            gb_eff = g2.sum(0).to(bias.dtype)
            if need_b:
                gb = gb_eff * row if row is not None else gb_eff
            if need_row:
                grow = grow + gb_eff * bias if grow is not None else gb_eff * bias
        if grow is not None:
            grow = grow.to(row.dtype)
        if gcol is not None:
            gcol = gcol.to(col.dtype)
        return gx, gw, gb, grow, gcol


def _scaled(w: torch.Tensor, row: torch.Tensor | None, col: torch.Tensor | None):
    if row is not None:
        w = w * row.to(w.dtype)[:, None]
    if col is not None:
        w = w * col.to(w.dtype)[None, :]
    return w


def scaled_linear(module: nn.Module, x: torch.Tensor, row: torch.Tensor | None = None,
                  col: torch.Tensor | None = None) -> torch.Tensor:
    """``module(x)`` with its output rows scaled by ``row`` and its input columns by
    ``col`` (search masks), for an ``nn.Linear``; a factorized projection scales its
    ``up`` rows and ``down`` columns the same way."""
    if row is None and col is None:
        return module(x)
    if torch.jit.is_tracing():  # a call of the module, as trace-based counters expect
        stages = linear_stages(module)
        w, b = stages[0]
        stages[0] = (_scaled(w, None, col), b)
        w, b = stages[-1]
        stages[-1] = (_scaled(w, row, None), _scale(b, 0, row))
        return run_stages(x, stages, module)
    if isinstance(module, nn.Linear):
        return _ScaledLinear.apply(x, module.weight, module.bias, row, col)
    if hasattr(module, 'down') and hasattr(module, 'up'):
        h = _ScaledLinear.apply(x, module.down.weight, None, None, col)
        return _ScaledLinear.apply(h, module.up.weight, module.up.bias, row, None)
    raise TypeError(f'expected an nn.Linear or a factorized (down, up) projection, got '
                    f'{type(module).__name__}')


def run_stages(x: torch.Tensor, stages: Stages, module: nn.Module | None = None
               ) -> torch.Tensor:
    """The stages' matmuls on ``x``; ``module`` (the projection they were derived from) is
    called with them in its place while tracing."""
    if module is not None and torch.jit.is_tracing():
        return call_as(module, lambda t: run_stages(t, stages), x)
    for w, b in stages:
        x = F.linear(x, w, b)
    return x


def call_as(module: nn.Module, fn, *args) -> torch.Tensor:
    """``module(*args)`` running ``fn`` in place of ``module.forward``: the module's hooks run
    around it, so a jit trace scopes ``fn``'s ops to the module. (``torch.func.functional_call``
    would swap parameters instead, but refuses to run while tracing.) The layers use it only
    while tracing."""
    own = module.__dict__.get('forward')
    module.forward = fn
    try:
        return module(*args)
    finally:
        if own is None:
            del module.forward
        else:
            module.forward = own


def _tracing() -> bool:
    exporting = getattr(torch.compiler, 'is_exporting', lambda: False)
    return (torch.jit.is_tracing() or torch.compiler.is_compiling() or exporting()
            or torch.onnx.is_in_onnx_export())


class WeightCache:
    """Remembers values derived from some parameters until one of them changes.

    Used only when no gradient can flow (eval / ``no_grad`` / ``inference_mode``); while
    training, derived weights are rebuilt every forward so gradients reach the compact
    parameters. Not used while tracing or compiling (the graph must show the indexing).
    """

    def __init__(self):
        self._store: dict = {}

    @staticmethod
    def usable(params: list[torch.Tensor]) -> bool:
        if _tracing():
            return False
        return not (torch.is_grad_enabled() and any(p.requires_grad for p in params))

    @staticmethod
    def _stamp(params: list[torch.Tensor]) -> tuple:
        return tuple((p.data_ptr(), p._version, p.dtype, p.device) for p in params)

    def get(self, key, params: list[torch.Tensor], build):
        """``build()``, or its cached value for ``key`` if ``params`` did not change."""
        if not self.usable(params):
            return build()
        # Tensors made under inference_mode may not enter autograd later: keep them apart.
        key = (key, torch.is_inference_mode_enabled())
        ids, stamp = tuple(id(p) for p in params), self._stamp(params)
        hit = self._store.get(key)
        if hit is not None and hit[1] == stamp:
            return hit[2]
        value = build()
        # Entries derived from the same parameters before they changed are stale.
        self._store = {k: v for k, v in self._store.items() if v[0] != ids or v[1] == stamp}
        self._store[key] = (ids, stamp, value)
        return value

    def clear(self) -> None:
        self._store = {}
