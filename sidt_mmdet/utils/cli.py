"""What every command-line tool shares: value types, one error type, one exit-code rule.

Exit codes, the same for every tool in ``tools/``:

- ``0``: done;
- ``1``: a :class:`ToolError` (or an ``OSError``/``ValueError``/unpickling error raised by
  the library for a bad file or value), printed as one ``<prog>: error: <message>`` line
  on stderr, no traceback; nothing was written;
- ``2``: the command line itself is wrong (argparse's usage error, which names the flag);
- ``130``: interrupted by Ctrl-C (SIGINT), printed as one ``<prog>: interrupted: ...`` line,
  no traceback; an output directory being written is removed (``utils.fileio``), and the
  line says so.

The argparse ``type=`` functions below raise ``argparse.ArgumentTypeError``, so argparse
names the flag and exits 2 before any work starts.
"""
from __future__ import annotations

import argparse
import math
import pickle
import re
import sys
from collections.abc import Callable
from typing import Any

__all__ = ['ToolError', 'EXIT_OK', 'EXIT_ERROR', 'EXIT_USAGE', 'EXIT_INTERRUPTED', 'ratio',
           'open_ratio', 'count',
           'int_at_least',
           'positive_int', 'run_tool', 'doc_parser', 'load_config']

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2
EXIT_INTERRUPTED = 128 + 2  # the shell's status for a SIGINT

_SUFFIXES = {'': 1, 'K': 10 ** 3, 'M': 10 ** 6, 'G': 10 ** 9, 'T': 10 ** 12}


class ToolError(Exception):
    """Bad input found after parsing (a file, a budget, an output directory); the message
    names the flag or file at fault and what was expected."""


def load_config(config: str, cfg_options: dict | None = None):
    """The mmengine ``Config`` of a tool's CONFIG argument, with its ``--cfg-options``
    merged; a missing file is a :class:`ToolError` naming it."""
    import os.path as osp

    from mmengine.config import Config
    if not osp.isfile(config):
        raise ToolError(f'config {config}: no such file')
    cfg = Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    return cfg


def doc_parser(doc: str, prog: str | None = None) -> argparse.ArgumentParser:
    """The parser of a tool whose module docstring is its help: the first paragraph is the
    description, the rest (usage examples, kept as written) the epilog."""
    paragraphs = doc.split('\n\n')
    return argparse.ArgumentParser(prog=prog, description=paragraphs[0],
                                   formatter_class=argparse.RawDescriptionHelpFormatter,
                                   epilog='\n\n'.join(paragraphs[1:]))


def _fraction(text: str, closed: bool) -> float:
    interval = '(0, 1]' if closed else '(0, 1)'
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected a number in {interval}, got {text!r}') \
            from None
    if not (0 < value <= 1 if closed else 0 < value < 1):  # also rejects nan
        raise argparse.ArgumentTypeError(f'expected a value in {interval}, got {value:g}')
    return value


def ratio(text: str) -> float:
    """A fraction in (0, 1]: a keep ratio, an energy, a backbone ratio."""
    return _fraction(text, closed=True)


def open_ratio(text: str) -> float:
    """A fraction in (0, 1): a share to remove, a compression that must leave something."""
    return _fraction(text, closed=False)


def count(text: str) -> int:
    """A positive count: ``1500000``, ``1.5e6``, ``1.5M``, ``300G`` (K/M/G/T suffixes)."""
    m = re.fullmatch(r'\s*([0-9.eE+-]+)\s*([kKmMgGtT]?)\s*', text)
    try:
        value = float(m.group(1)) * _SUFFIXES[m.group(2).upper()] if m else None
    except ValueError:
        value = None
    if value is None or math.isnan(value):
        raise argparse.ArgumentTypeError(f'expected a count such as 12000000, 1.2e7 or 12M, '
                                         f'got {text!r}')
    if not (value > 0 and math.isfinite(value)) or round(value) < 1:
        raise argparse.ArgumentTypeError(f'expected a positive target, got {text!r}')
    return int(round(value))


def int_at_least(minimum: int) -> Callable[[str], int]:
    """An integer >= ``minimum``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f'expected an integer, got {text!r}') from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f'must be an integer >= {minimum}, got {value}')
        return value
    parse.__name__ = f'int_at_least_{minimum}'
    return parse


def positive_int(text: str) -> int:
    """An integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected a positive integer, got {text!r}') from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f'must be a positive integer, got {value}')
    return value


def run_tool(prog: str, fn: Callable[..., Any], *args, **kwargs) -> int:
    """Call ``fn``; return :data:`EXIT_OK`, or print a refusal and return :data:`EXIT_ERROR`.

    ``ValueError``, ``OSError`` and ``pickle.UnpicklingError`` are the library's own "bad
    file or value" errors (a subnet file that does not fit, a checkpoint not found or
    refused by safe loading, a full disk); anything else is a bug and keeps its traceback.
    Ctrl-C (``KeyboardInterrupt``) prints one ``interrupted`` line, with the notes the
    library added while unwinding (an output directory removed), and returns
    :data:`EXIT_INTERRUPTED`.
    """
    try:
        fn(*args, **kwargs)
    except (ToolError, ValueError, OSError, pickle.UnpicklingError) as e:
        print(f'{prog}: error: {e}', file=sys.stderr, flush=True)
        return EXIT_ERROR
    except KeyboardInterrupt as e:
        notes = '; '.join(getattr(e, '__notes__', ())) or 'stopped before it finished'
        print(f'{prog}: interrupted: Ctrl-C (SIGINT), {notes}', file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    return EXIT_OK
