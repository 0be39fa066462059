"""Hostile checkpoints: pickles that would run code, or plant callables, when loaded.

Each payload, if it ever ran, creates ``marker``; the tests assert it never appears.
Shared by the unit tests of the loader and the integration tests of the tools.
"""
from __future__ import annotations

import builtins
import os

import numpy as np
import torch
from mmengine.logging import HistoryBuffer


class _Reduce:
    """Pickles as ``func(*args)`` (and is callable, so it may itself be a pickled func)."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args

    def __call__(self, *args):  # pragma: no cover - never called, only pickled
        raise AssertionError


def _runner_like(payload) -> dict:
    state = {'backbone.patch_embed.proj.weight': torch.zeros(1)}
    return {'meta': {'iter': 1, 'payload': payload}, 'state_dict': state}


def _buffer(**attrs) -> HistoryBuffer:
    buf = HistoryBuffer([1.0, 2.0], [1, 1])
    vars(buf).update(attrs)
    return buf


def payloads(marker: str) -> dict[str, tuple[object, str]]:
    """name -> (object to save, text the refusal must contain)."""
    code = f'open({marker!r}, "w").close()'
    # getattr(getattr, '__self__') is the builtins module; from there exec is one getattr away
    builtins_module = _Reduce(getattr, getattr, '__self__')
    exec_fn = _Reduce(getattr, builtins_module, 'exec')
    init_globals = _Reduce(getattr, _Reduce(getattr, HistoryBuffer, '__init__'), '__globals__')
    return {
        'os.system': (_Reduce(os.system, f'touch {marker}'), 'system'),
        'builtins.eval': (_Reduce(builtins.eval, code), 'builtins.eval'),
        'getattr builtins.exec': (_Reduce(exec_fn, code), "builtins.getattr(builtins.getattr"),
        'getattr on an allowed class': (_Reduce(getattr, init_globals, 'get'),
                                        "'__init__'"),
        'HistoryBuffer with exec as a statistic': (
            _buffer(_statistics_methods={'mean': exec_fn}), 'builtins.getattr'),
        'HistoryBuffer with a swapped statistic': (
            _buffer(_statistics_methods={'mean': HistoryBuffer.max}),
            "_statistics_methods['mean']"),
        'HistoryBuffer with an extra attribute': (
            _buffer(hook=np.ndarray), "unexpected attributes ['hook']"),
        'HistoryBuffer with an object array': (
            _buffer(_log_history=np.array([1, 'x'], dtype=object)), 'numpy'),
    }


def write_payload(path, obj) -> str:
    """Save ``obj`` as a Runner checkpoint's ``meta['payload']`` (``torch.save`` pickles it)."""
    torch.save(_runner_like(obj), path)
    return str(path)
