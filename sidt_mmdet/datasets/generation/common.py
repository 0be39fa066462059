"""What every dataset generator shares: argument checks and an atomic output directory."""
from __future__ import annotations

import argparse
import os
import os.path as osp
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ['atomic_output_dir', 'check_output_dir', 'check_positive', 'generator_arg_parser',
           'int_at_least', 'progress_steps', 'run_generator']


def check_positive(name: str, value: int, minimum: int = 1) -> None:
    """Raise ``ValueError`` naming ``name`` unless ``value`` is an int >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f'{name} must be an integer >= {minimum}, got {value!r}')


def int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse ``type``: an integer >= ``minimum``; argparse names the flag on error."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f'expected an integer, got {text!r}') from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f'must be an integer >= {minimum}, got {value}')
        return value
    return parse


def progress_steps(total: int, steps: int = 4) -> set[int]:
    """The 1-based counts at which to report progress: about ``steps`` of them, and the last."""
    return {max(1, round(total * k / steps)) for k in range(1, steps + 1)} | {total}


def check_output_dir(out_dir: str, overwrite: bool) -> str:
    """Return ``out_dir`` as an absolute path, refusing to clobber data without ``overwrite``.

    Raises:
        FileExistsError: ``out_dir`` is a file, or a non-empty directory and ``overwrite``
            is false.
    """
    out_dir = osp.abspath(osp.expanduser(out_dir))
    if osp.exists(out_dir):
        if not osp.isdir(out_dir):
            raise FileExistsError(f'output path {out_dir!r} exists and is not a directory')
        if os.listdir(out_dir) and not overwrite:
            raise FileExistsError(
                f'output directory {out_dir!r} is not empty; pass --overwrite '
                '(overwrite=True) to replace it')
    return out_dir


@contextmanager
def atomic_output_dir(out_dir: str, overwrite: bool = False) -> Iterator[str]:
    """Yield a temporary directory beside ``out_dir`` that becomes ``out_dir`` on success.

    Readers see either the old dataset or the complete new one, never a partial write; on
    an exception the temporary directory is removed and ``out_dir`` is left untouched.
    """
    out_dir = check_output_dir(out_dir, overwrite)
    parent = osp.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    tmp_dir = tempfile.mkdtemp(prefix=f'.{osp.basename(out_dir)}.', suffix='.tmp', dir=parent)
    try:
        yield tmp_dir
        os.chmod(tmp_dir, 0o755)  # mkdtemp makes it private; a dataset is meant to be shared
        if osp.exists(out_dir):
            old_dir = f'{tmp_dir}.old'
            os.rename(out_dir, old_dir)
            os.rename(tmp_dir, out_dir)
            shutil.rmtree(old_dir)
        else:
            os.rename(tmp_dir, out_dir)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise


def generator_arg_parser(description: str, default_out_dir: str,
                         out_dir_help: str = 'data root to create') -> argparse.ArgumentParser:
    """The flags every generator script has: --out-dir, --seed, --overwrite."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument('--out-dir', default=default_out_dir,
                        help=f'{out_dir_help} (default: %(default)s)')
    parser.add_argument('--seed', type=int, default=0, help='same seed, same files')
    parser.add_argument('--overwrite', action='store_true', help='replace a non-empty --out-dir')
    return parser


def run_generator(make: Callable[..., Any], args: argparse.Namespace) -> None:
    """Call ``make(**vars(args))``; a refused output dir exits 1 with the reason."""
    try:
        make(**vars(args))
    except FileExistsError as exc:
        sys.exit(f'{osp.basename(sys.argv[0])}: error: {exc}')
