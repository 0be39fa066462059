"""Checkpoint loading that keeps ``torch.load(weights_only=True)`` on, for torch >= 2.6.

mmengine 0.10.7 loads local checkpoints with a bare ``torch.load``; since torch 2.6 that
means ``weights_only=True``, which refuses the ``HistoryBuffer`` and numpy objects a Runner
checkpoint carries (``Runner.resume``, ``load_from``, ``tools/test.py --checkpoint``,
``init_cfg=dict(type='Pretrained')``). Turning ``weights_only`` off would let any pickle run
code, so instead :func:`install_safe_checkpoint_loader` re-registers mmengine's local-file
loader with one that allows exactly the globals those checkpoints need, and only inside
its own ``torch.load`` call (no process-wide ``add_safe_globals``).
"""
from __future__ import annotations

import builtins
import importlib
import os
import os.path as osp
import pickle
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from mmengine.logging import HistoryBuffer
from mmengine.runner.checkpoint import CheckpointLoader

from .fileio import atomic_file

__all__ = [
    'UnsafeCheckpointError',
    'checkpoint_safe_globals',
    'install_safe_checkpoint_loader',
    'load_checkpoint_safe',
    'save_checkpoint_atomic',
]

# dtypes of the numpy arrays and scalars mmengine puts into a checkpoint's `message_hub`
# (log values, iteration counters, dataset meta); each becomes a `numpy.dtypes.*DType` global.
_NUMPY_DTYPES = (np.bool_, np.uint8, np.int8, np.int16, np.int32, np.int64, np.uint32,
                 np.uint64, np.float16, np.float32, np.float64)


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A checkpoint holds globals outside the allow-list; raised instead of loading it."""


def _numpy_reconstructors() -> list[tuple[Callable, str]]:
    """``_reconstruct`` and ``scalar`` under the module names both numpy majors pickle.

    A checkpoint written under numpy 1.x names ``numpy.core.multiarray``, one written under
    numpy 2.x names ``numpy._core.multiarray``; whichever numpy is installed, both names map
    to its own functions (given as ``(function, name)`` pairs, so no deprecated
    ``numpy.core`` import is needed on numpy 2).
    """
    for module_name in ('numpy._core.multiarray', 'numpy.core.multiarray'):
        try:
            multiarray = importlib.import_module(module_name)
        except ImportError:
            continue
        break
    else:  # pragma: no cover - every numpy has one of the two
        raise ImportError('numpy has neither numpy._core.multiarray nor numpy.core.multiarray')
    return [(getattr(multiarray, name), f'{prefix}.{name}')
            for prefix in ('numpy.core.multiarray', 'numpy._core.multiarray')
            for name in ('_reconstruct', 'scalar')]


def checkpoint_safe_globals() -> list[Any]:
    """The globals an mmengine Runner checkpoint needs, in ``safe_globals`` form.

    Checked with ``torch.serialization.get_unsafe_globals_in_checkpoint`` on a Runner
    checkpoint (mmengine 0.10.7, numpy 2.4). ``builtins.getattr`` is needed because the
    ``MessageHub`` state pickles ``HistoryBuffer``'s statistics methods as
    ``getattr(HistoryBuffer, 'min')``; torch's unpickler still refuses to *call* anything
    outside the list, but getattr widens what a pickle can reach, which is why the list is
    only ever active inside :func:`load_checkpoint_safe`. The dtype classes are not listed by
    that function yet are needed to rebuild numpy scalars (``numpy.dtypes.Float64DType``).
    """
    dtype_classes = [type(np.dtype(t)) for t in _NUMPY_DTYPES]
    return [HistoryBuffer, np.ndarray, np.dtype, *dtype_classes, *_numpy_reconstructors(),
            builtins.getattr]


def _unsafe_globals(filename: str) -> list[str]:
    try:
        return torch.serialization.get_unsafe_globals_in_checkpoint(filename)
    except Exception as exc:  # a corrupt file: report why instead of the list
        return [f'<could not list globals: {exc}>']


def load_checkpoint_safe(filename: str | os.PathLike, map_location: Any = 'cpu') -> Any:
    """``torch.load(filename, weights_only=True)`` with the mmengine checkpoint allow-list.

    Raises:
        FileNotFoundError: ``filename`` is not a file.
        UnsafeCheckpointError: the file needs a global outside the allow-list; the message
            names the file and lists every global it holds that torch does not trust.
    """
    filename = osp.expanduser(os.fspath(filename))
    if not osp.isfile(filename):
        raise FileNotFoundError(f'checkpoint {filename!r} does not exist or is not a file')
    try:
        with torch.serialization.safe_globals(checkpoint_safe_globals()):
            return torch.load(filename, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise UnsafeCheckpointError(
            f'refused to load checkpoint {filename!r} with weights_only=True: it contains '
            f'globals outside the sidt_mmdet allow-list: {_unsafe_globals(filename)}. '
            'Re-save it with plain tensors and Python containers only, or convert it from '
            f'a trusted source. torch said: {exc}') from exc


def save_checkpoint_atomic(obj: Any, filename: str | os.PathLike) -> None:
    """``torch.save`` to a temporary file beside ``filename``, then rename it into place.

    Readers never see a half-written checkpoint, and the file is checked to load with
    :func:`load_checkpoint_safe` before it replaces anything: a stray numpy scalar or custom
    class in ``obj`` raises :class:`UnsafeCheckpointError` here, not in a user's reader.
    """
    filename = osp.abspath(osp.expanduser(os.fspath(filename)))
    with atomic_file(filename) as tmp_name:
        with open(tmp_name, 'wb') as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        allowed = {_global_name(g) for g in checkpoint_safe_globals()}
        extra = [g for g in _unsafe_globals(tmp_name) if g not in allowed]
        if extra:
            raise UnsafeCheckpointError(
                f'not writing checkpoint {filename!r}: it would need globals outside the '
                f'sidt_mmdet allow-list, so safe loading would refuse it: {extra}. '
                'Store plain Python values (e.g. float(x) instead of numpy scalars).')


def _global_name(entry: Any) -> str:
    if isinstance(entry, tuple):
        return entry[1]
    return f'{entry.__module__}.{entry.__qualname__}'


def _load_from_local(filename: str, map_location: Any) -> Any:
    # Same contract as mmengine's own `load_from_local`, with safe loading kept on.
    return load_checkpoint_safe(filename, map_location=map_location)


def install_safe_checkpoint_loader() -> None:
    """Make every mmengine local-file checkpoint load go through :func:`load_checkpoint_safe`.

    Idempotent; ``import sidt_mmdet`` calls it, so ``custom_imports`` in a config is enough.
    """
    CheckpointLoader.register_scheme(prefixes='', loader=_load_from_local, force=True)
