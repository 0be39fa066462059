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

import importlib
import inspect
import os
import os.path as osp
import pickle
import weakref
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from mmengine.logging import HistoryBuffer

from .fileio import atomic_file

__all__ = [
    'CheckpointMismatchError',
    'CorruptCheckpointError',
    'UnsafeCheckpointError',
    'checkpoint_safe_globals',
    'checkpoint_source',
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


class CorruptCheckpointError(ValueError):
    """A file that is not a readable PyTorch checkpoint (truncated, or something else)."""


class CheckpointMismatchError(ValueError):
    """A checkpoint that loads only in part into the model it is given to (another
    subnet's export, a search checkpoint for a dense or pruned model)."""


# Tensor -> file it was read from, for errors raised while it is loaded into a model
# (mmengine hands models a state dict, not its file name). Entries vanish with the tensors.
_SOURCES: dict[int, tuple[weakref.ref, str]] = {}


def _remember_source(obj: Any, filename: str) -> None:
    state = obj
    if isinstance(obj, dict):
        for key in ('state_dict', 'model', 'module'):
            if isinstance(obj.get(key), dict):
                state = obj[key]
                break
    if not isinstance(state, dict):
        return
    tensors = [v for v in state.values() if torch.is_tensor(v)]
    # and the optimizer's state (Runner checkpoints), for a refused resume to name the file
    optim = obj.get('optimizer')  # obj is a dict here: only a dict holds a state dict
    if isinstance(optim, dict) and isinstance(optim.get('state'), dict):
        tensors += [v for per_param in optim['state'].values() if isinstance(per_param, dict)
                    for v in per_param.values() if torch.is_tensor(v)]
    for value in tensors:
        key = id(value)
        _SOURCES[key] = (weakref.ref(value, lambda _, k=key: _SOURCES.pop(k, None)), filename)


def checkpoint_source(tensor: Any) -> str | None:
    """The checkpoint file ``tensor`` was loaded from by :func:`load_checkpoint_safe`."""
    entry = _SOURCES.get(id(tensor))
    if entry is not None and entry[0]() is tensor:
        return entry[1]
    return None


def _restricted_getattr(obj: Any, name: str) -> Any:
    """What pickle's protocol 2 emits for a method named by its qualified name
    (``getattr(HistoryBuffer, 'min')``), and nothing else: ``getattr`` on anything
    reachable would hand a pickle builtins, modules and their functions."""
    ok = (any(obj is c for c in _GETATTR_CLASSES) and isinstance(name, str)
          and not name.startswith('_'))
    value = getattr(obj, name, None) if ok else None
    if not (inspect.isfunction(value) and value.__qualname__ == f'{obj.__qualname__}.{name}'):
        raise UnsafeCheckpointError(
            f'refused builtins.getattr({_describe(obj)}, {name!r}): only methods of '
            f'{[c.__qualname__ for c in _GETATTR_CLASSES]} may be named this way')
    return value


def _describe(obj: Any) -> str:
    if obj is _restricted_getattr:
        return 'builtins.getattr'
    if isinstance(obj, type) or callable(obj):
        return f'{getattr(obj, "__module__", "?")}.{getattr(obj, "__qualname__", obj)!s}'
    return type(obj).__name__


_GETATTR_CLASSES = (HistoryBuffer,)
_HISTORY_ATTRS = {'max_length', '_log_history', '_count_history', '_statistics_methods'}


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
            (_restricted_getattr, 'builtins.getattr')]


def _check_loaded(obj: Any, filename: str) -> None:
    """Refuse functions, classes and odd objects planted in allowed containers.

    The unpickler only lets allowed globals be *called*, but an allowed class can be
    rebuilt with any attributes (``HistoryBuffer.__dict__`` is restored as given), and a
    ``HistoryBuffer`` calls what its ``_statistics_methods`` holds when mmengine logs.
    """
    stack, seen = [(obj, 'checkpoint')], set()
    while stack:
        value, where = stack.pop()
        if id(value) in seen or torch.is_tensor(value) or value is None or \
                isinstance(value, (bool, int, float, complex, str, bytes, np.generic,
                                   np.dtype, torch.dtype, torch.device, torch.Size)):
            continue
        seen.add(id(value))
        if isinstance(value, dict):
            stack += [(v, f'{where}[{k!r}]') for k, v in value.items()]
            stack += [(k, f'{where} key') for k in value]
        elif isinstance(value, (list, tuple, set, frozenset)):
            stack += [(v, f'{where}[{i}]') for i, v in enumerate(value)]
        elif isinstance(value, np.ndarray):
            if value.dtype.hasobject:
                raise UnsafeCheckpointError(f'refused {filename!r}: {where} is a numpy array of '
                                            'Python objects')
        elif type(value) is HistoryBuffer:
            _check_history_buffer(value, where, filename)
        else:
            raise UnsafeCheckpointError(
                f'refused {filename!r}: {where} holds an unexpected {_describe(value)} '
                f'(a checkpoint holds tensors, numbers, strings and containers of them)')


def _check_history_buffer(buf: HistoryBuffer, where: str, filename: str) -> None:
    attrs = vars(buf)
    extra = sorted(set(attrs) - _HISTORY_ATTRS)
    methods = attrs.get('_statistics_methods', {})
    bad = extra and f'unexpected attributes {extra}'
    if not bad and not isinstance(attrs.get('max_length', 0), int):
        bad = f'max_length is a {type(attrs["max_length"]).__name__}'
    for name in ('_log_history', '_count_history'):
        value = attrs.get(name)
        if not bad and value is not None and (not isinstance(value, np.ndarray)
                                               or value.dtype.hasobject):
            bad = f'{name} is a {_describe(value)}, expected a numeric numpy array'
    if not bad and not isinstance(methods, dict):
        bad = f'_statistics_methods is a {_describe(methods)}'
    for name, fn in (methods.items() if not bad else ()):
        own = getattr(HistoryBuffer, name, None) if isinstance(name, str) else None
        if fn is not own or not inspect.isfunction(fn):
            bad = f'_statistics_methods[{name!r}] is {_describe(fn)}, not HistoryBuffer.{name}'
            break
    if bad:
        raise UnsafeCheckpointError(f'refused {filename!r}: the HistoryBuffer at {where} '
                                    f'carries {bad}')


def _unsafe_globals(filename: str) -> list[str]:
    try:
        return torch.serialization.get_unsafe_globals_in_checkpoint(filename)
    except Exception as exc:  # a corrupt file: report why instead of the list
        return [f'<could not list globals: {exc}>']


def load_checkpoint_safe(filename: str | os.PathLike, map_location: Any = 'cpu') -> Any:
    """``torch.load(filename, weights_only=True)`` with the mmengine checkpoint allow-list.

    Raises:
        FileNotFoundError: ``filename`` is not a file.
        CorruptCheckpointError: the file is not a PyTorch checkpoint, or a truncated one.
        UnsafeCheckpointError: the file needs a global outside the allow-list; the message
            names the file and lists every global it holds that torch does not trust.
    """
    filename = osp.expanduser(os.fspath(filename))
    if not osp.isfile(filename):
        raise FileNotFoundError(f'checkpoint {filename!r} does not exist or is not a file')
    with open(filename, 'rb') as f:
        head = f.read(4)
    if head[:4] != b'PK\x03\x04' and head[:1] != b'\x80':
        raise CorruptCheckpointError(
            f'{filename!r} is not a PyTorch checkpoint (a zip archive or a pickle written by '
            f'torch.save); it starts with {head!r}' + (' (empty file)' if not head else ''))
    try:
        with torch.serialization.safe_globals(checkpoint_safe_globals()):
            obj = torch.load(filename, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        foreign = _foreign_globals(filename)
        if not any(word in str(exc) for word in ('global', 'refused', 'reduce')) and \
                all(g.startswith('<') for g in foreign):
            raise CorruptCheckpointError(
                f'cannot read checkpoint {filename!r}: the file is truncated or corrupt '
                f'(torch said: {_first_line(exc)})') from None
        raise UnsafeCheckpointError(
            f'refused to load checkpoint {filename!r} with weights_only=True: it contains '
            f'globals outside the sidt_mmdet allow-list: {foreign}. '
            'Re-save it with plain tensors and Python containers only, or convert it from '
            f'a trusted source. torch said: {exc}') from exc
    except (RuntimeError, EOFError, OSError) as exc:  # a zip or pickle cut short
        raise CorruptCheckpointError(
            f'cannot read checkpoint {filename!r}: the file is truncated or corrupt '
            f'({osp.getsize(filename):,} bytes; torch said: {_first_line(exc)})') from None
    _check_loaded(obj, filename)
    _remember_source(obj, filename)
    return obj


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _foreign_globals(filename: str) -> list[str]:
    """Globals of ``filename`` that are neither torch's defaults nor ours (what to name in
    an error; ``builtins.getattr`` stays listed, as it is allowed only restricted)."""
    ours = {_global_name(g) for g in checkpoint_safe_globals()} - {'builtins.getattr'}
    return [g for g in _unsafe_globals(filename) if g not in ours]


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
    from mmengine.runner.checkpoint import CheckpointLoader  # its runner imports OpenCV
    CheckpointLoader.register_scheme(prefixes='', loader=_load_from_local, force=True)
