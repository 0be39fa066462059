"""Older names that still work: one warning per name and process."""
from __future__ import annotations

import warnings

__all__ = ['warn_once']

_WARNED: set[str] = set()


def warn_once(message: str, stacklevel: int = 3) -> None:
    """A ``FutureWarning`` (shown to users, unlike ``DeprecationWarning`` in library code)
    the first time ``message`` is given in this process."""
    if message not in _WARNED:
        _WARNED.add(message)
        warnings.warn(message, FutureWarning, stacklevel=stacklevel)
