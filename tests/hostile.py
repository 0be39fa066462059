"""Hostile checkpoints: pickles that would run code, or plant callables, when loaded.

Two kinds, each shown live by ``tests/unit/utils/test_hostile_checkpoints.py``:

- ``RUNS_ON_LOAD``: loaded with plain pickle (``torch.load(weights_only=False)``) they create
  ``marker``; the refusal tests assert it never appears.
- ``PLANTED``: what torch's own weights_only unpickler lets through given our allow-list
  (only allowed globals, an allowed class rebuilt with any attributes, ``getattr`` left
  unrestricted): a ``HistoryBuffer`` carrying something mmengine would call or trust. Our
  loader's checks are what refuse them; ``PLANTED[name](loaded_payload)`` says whether a
  load handed the planted thing over.

Shared by the unit tests of the loader and the integration tests of the tools.
"""
from __future__ import annotations

import builtins
import os

import numpy as np
import torch
from mmengine.logging import HistoryBuffer

HISTORY_BUFFER = f'{HistoryBuffer.__module__}.{HistoryBuffer.__qualname__}'


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


def _item(container, key):
    """``container[key]`` spelled with getattr and calls only (``getattr(c, 'get')(key)``)."""
    return _Reduce(_Reduce(getattr, container, 'get'), key)


RUNS_ON_LOAD = ('os.system', 'builtins.eval', 'getattr builtins.exec',
                'getattr on an allowed class', 'HistoryBuffer with an object array')

PLANTED = {
    'HistoryBuffer with exec as a statistic':
        lambda buf: vars(buf)['_statistics_methods']['mean'] is builtins.exec,
    'HistoryBuffer with a swapped statistic':  # mmengine would log its max as the mean
        lambda buf: buf.statistics('mean') == 2.0 != HistoryBuffer.mean(buf),
    'HistoryBuffer with an extra attribute': lambda buf: vars(buf).get('hook') is np.ndarray,
}


def payloads(marker: str) -> dict[str, tuple[object, str]]:
    """name -> (object to save, text the refusal must contain)."""
    code = f'open({marker!r}, "w").close()'
    # getattr(getattr, '__self__') is the builtins module; from there exec is one getattr away
    builtins_module = _Reduce(getattr, getattr, '__self__')
    exec_fn = _Reduce(getattr, builtins_module, 'exec')
    # HistoryBuffer.__init__.__globals__['__builtins__']['exec']: a getattr on the allowed
    # class reaches every builtin through the globals of its methods
    init_globals = _Reduce(getattr, _Reduce(getattr, HistoryBuffer, '__init__'), '__globals__')
    module_builtins = HistoryBuffer.__init__.__globals__['__builtins__']
    init_builtins = _item(init_globals, '__builtins__')
    init_exec = (_item(init_builtins, 'exec') if isinstance(module_builtins, dict)
                 else _Reduce(getattr, init_builtins, 'exec'))
    # an object array pickles its elements as they are: here one that runs code
    object_array = np.array([1, None], dtype=object)
    object_array[1] = _Reduce(builtins.eval, code)
    return {
        'os.system': (_Reduce(os.system, f'touch {marker}'), f'{os.system.__module__}.system'),
        'builtins.eval': (_Reduce(builtins.eval, code), 'builtins.eval'),
        'getattr builtins.exec': (_Reduce(exec_fn, code), "builtins.getattr(builtins.getattr"),
        'getattr on an allowed class': (
            _Reduce(init_exec, code), f"builtins.getattr({HISTORY_BUFFER}, '__init__')"),
        'HistoryBuffer with exec as a statistic': (
            _buffer(_statistics_methods={'mean': exec_fn}),
            "refused builtins.getattr(builtins.getattr, '__self__')"),
        'HistoryBuffer with a swapped statistic': (
            _buffer(_statistics_methods={'mean': HistoryBuffer.max}),
            f"_statistics_methods['mean'] is {HISTORY_BUFFER}.max, not HistoryBuffer.mean"),
        'HistoryBuffer with an extra attribute': (
            _buffer(hook=np.ndarray), "unexpected attributes ['hook']"),
        'HistoryBuffer with an object array': (
            _buffer(_log_history=object_array), 'numpy.dtypes.ObjectDType'),
    }


def write_payload(path, obj) -> str:
    """Save ``obj`` as a Runner checkpoint's ``meta['payload']`` (``torch.save`` pickles it)."""
    torch.save(_runner_like(obj), path)
    return str(path)
