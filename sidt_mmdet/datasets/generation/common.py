"""What every dataset generator shares: argument checks, progress, the command line.

Output directories are written with ``sidt_mmdet.utils.fileio.atomic_output_dir``.
"""
from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from ...utils.cli import run_tool

__all__ = ['check_positive', 'generator_arg_parser', 'progress_steps', 'run_generator']


def check_positive(name: str, value: int, minimum: int = 1) -> None:
    """Raise ``ValueError`` naming ``name`` unless ``value`` is an int >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f'{name} must be an integer >= {minimum}, got {value!r}')


def progress_steps(total: int, steps: int = 4) -> set[int]:
    """The 1-based counts at which to report progress: about ``steps`` of them, and the last."""
    return {max(1, round(total * k / steps)) for k in range(1, steps + 1)} | {total}


def generator_arg_parser(prog: str, description: str, default_out_dir: str,
                         out_dir_help: str = 'data root to create') -> argparse.ArgumentParser:
    """The flags every generator script has: --out-dir, --seed, --overwrite."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument('--out-dir', default=default_out_dir,
                        help=f'{out_dir_help} (default: %(default)s)')
    parser.add_argument('--seed', type=int, default=0, help='same seed, same files')
    parser.add_argument('--overwrite', action='store_true', help='replace a non-empty --out-dir')
    return parser


def run_generator(make: Callable[..., Any], parser: argparse.ArgumentParser,
                  argv=None) -> int:
    """Parse ``argv`` and call ``make(**vars(args))``; the exit code follows
    ``sidt_mmdet.utils.cli`` (a refused output directory: 1, with the reason)."""
    args = parser.parse_args(argv)
    return run_tool(parser.prog, make, **vars(args))
