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

A projection is an ``nn.Linear`` or a factorized ``up(down(x))`` (the low-rank
layers: ``down`` without bias, ``up`` with it); input columns live on the first
weight, output rows and the bias on the last.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ['Stages', 'linear_stages', 'run_stages', 'WeightCache']

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


def run_stages(x: torch.Tensor, stages: Stages) -> torch.Tensor:
    for w, b in stages:
        x = F.linear(x, w, b)
    return x


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
