"""Atomic writes: a reader sees the old file (or directory) or the complete new one, never a
partial write, and a failed write leaves nothing behind.

- :func:`atomic_file` yields a temporary path beside the target and renames it into place.
- :func:`write_text_atomic` / :func:`write_json_atomic` are the common cases of it.
- :func:`check_output_dir` refuses an unusable output directory before any work is done.
- :func:`atomic_output_dir` yields a hidden directory beside the target that is renamed into
  place on success; every directory it had to create is removed again on failure, also on
  SIGTERM (turned into an exit with status 143 while the directory is written), and the
  leftovers of a run that was SIGKILLed are removed by the next one
  (:func:`clean_stale_outputs`).

Errors are ``OSError`` subclasses whose message names the path and what was expected, so a
tool can print them as they are.
"""
from __future__ import annotations

import json
import os
import os.path as osp
import re
import shutil
import signal
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ['atomic_file', 'write_text_atomic', 'write_json_atomic', 'replace_marked_block',
           'check_output_dir',
           'atomic_output_dir', 'clean_stale_outputs']


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[str]:
    """Yield a temporary file path beside ``path``; on success it replaces ``path``.

    The parent directory is created if needed. The file gets the usual permissions
    (``0o666`` minus the umask), not the owner-only ones of ``mkstemp``.
    """
    path = osp.abspath(osp.expanduser(os.fspath(path)))
    directory = osp.dirname(path)
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f'.{osp.basename(path)}.', suffix='.tmp', dir=directory)
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        if osp.exists(tmp):
            os.remove(tmp)
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_file(path) as tmp, open(tmp, 'w', encoding='utf-8', newline='') as f:
        f.write(text)


def write_json_atomic(path: str | os.PathLike, data: Any, indent: int | None = 1) -> None:
    """Write ``data`` as JSON (with a final newline) to ``path`` atomically."""
    write_text_atomic(path, json.dumps(data, indent=indent) + '\n')


def replace_marked_block(path: str | os.PathLike, begin: str, end: str,
                         block: str | Callable[[], str], what: str = 'the generated block'
                         ) -> str:
    """Replace the text between the marker lines ``begin`` and ``end`` of the file ``path``
    (a README) by ``block``, atomically (the file is left alone when nothing changes);
    return the block. ``block`` may be a function making it, called only once the markers
    are found.

    Raises:
        ValueError: the markers are missing or in the wrong order (naming file and markers).
    """
    with open(path, encoding='utf-8') as f:
        text = f.read()
    start, stop = text.find(begin), text.find(end)
    if start < 0 or stop < 0 or stop < start:
        raise ValueError(f'{path}: expected a line {begin!r} followed by a line {end!r} '
                         f'around {what}')
    if callable(block):
        block = block()
    new = text[:start] + begin + '\n' + block.rstrip('\n') + '\n' + text[stop:]
    if new != text:
        write_text_atomic(path, new)
    return block


def check_output_dir(out_dir: str | os.PathLike, overwrite: bool) -> str:
    """Return ``out_dir`` as an absolute path once it is known to be writable.

    Raises:
        FileExistsError: ``out_dir`` is a file, or a non-empty directory and ``overwrite``
            is false.
        NotADirectoryError: a parent of ``out_dir`` is a file.
        PermissionError: the nearest existing parent cannot be written.
    """
    out_dir = osp.abspath(osp.expanduser(os.fspath(out_dir)))
    if osp.exists(out_dir):
        if not osp.isdir(out_dir):
            raise FileExistsError(f'output path {out_dir!r} exists and is not a directory')
        if os.listdir(out_dir) and not overwrite:
            raise FileExistsError(_not_empty(out_dir))
    existing = osp.dirname(out_dir)
    while not osp.exists(existing):
        existing = osp.dirname(existing)
    if not osp.isdir(existing):
        raise NotADirectoryError(f'cannot create {out_dir}: {existing} is not a directory')
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PermissionError(f'cannot write to {existing} (permission denied): cannot create '
                              f'{out_dir}')
    return out_dir


def _not_empty(out_dir: str) -> str:
    return (f'output directory {out_dir!r} is not empty; pass --overwrite (overwrite=True) '
            'to replace it')


@contextmanager
def atomic_output_dir(out_dir: str | os.PathLike, overwrite: bool = False) -> Iterator[str]:
    """Yield a hidden directory beside ``out_dir`` that becomes ``out_dir`` on success.

    :func:`check_output_dir` runs first. Missing parents are created; on an exception the
    temporary directory and those parents are removed and ``out_dir`` is left untouched.
    An existing ``out_dir`` (with ``overwrite``) is replaced only once the new one is
    complete, and put back if the final rename fails.
    """
    out_dir = check_output_dir(out_dir, overwrite)
    clean_stale_outputs(out_dir)
    parent = osp.dirname(out_dir)
    missing = []
    while not osp.isdir(parent):
        missing.append(parent)
        parent = osp.dirname(parent)
    created: list[str] = []
    tmp = None
    try:
        try:
            for d in reversed(missing):
                os.mkdir(d)
                created.append(d)
            tmp = tempfile.mkdtemp(prefix=_hidden_prefix(out_dir, 'tmp'),
                                   dir=osp.dirname(out_dir))
        except OSError as e:
            raise OSError(f'cannot create {out_dir}: {e.strerror or e}') from None
        with _sigterm_exits(out_dir):
            yield tmp
            with _signals_deferred():  # the renames of the commit are not cut in two
                _commit(tmp, out_dir, overwrite)
    except BaseException as e:
        unfinished = tmp is not None and osp.isdir(tmp)
        if unfinished:
            shutil.rmtree(tmp, ignore_errors=True)
        for d in reversed(created):
            try:
                os.rmdir(d)
            except OSError:
                pass
        if isinstance(e, KeyboardInterrupt):  # the tools print it (utils.cli.run_tool)
            e.add_note(f'nothing was written to {out_dir}' if unfinished else
                       f'{out_dir} was written before the interruption')
        raise


def _commit(tmp: str, out_dir: str, overwrite: bool) -> None:
    old = None
    if osp.exists(out_dir):
        if os.listdir(out_dir) and not overwrite:  # appeared while we were writing
            raise FileExistsError(_not_empty(out_dir))
        old = tempfile.mkdtemp(prefix=_hidden_prefix(out_dir, 'old'),
                               dir=osp.dirname(out_dir))
        os.rmdir(old)
        os.rename(out_dir, old)
    # mkstemp/mkdtemp create owner-only entries; give them the usual permissions.
    mask = _umask()
    for name in os.listdir(tmp):
        entry = osp.join(tmp, name)
        if osp.isfile(entry):
            os.chmod(entry, 0o666 & ~mask)
    os.chmod(tmp, 0o777 & ~mask)
    try:
        os.rename(tmp, out_dir)
    except OSError:
        if old is not None:  # put the previous output back
            os.rename(old, out_dir)
        raise
    if old is not None:
        shutil.rmtree(old)


def _hidden_prefix(out_dir: str, kind: str) -> str:
    # The pid tells a later run whether the writer is still alive (see clean_stale_outputs).
    return f'.{osp.basename(out_dir)}.{kind}-{os.getpid()}-'


def _alive(pid: int) -> bool:
    if pid == os.getpid():  # a pid of an earlier boot or container, not this writer
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def clean_stale_outputs(out_dir: str | os.PathLike) -> list[str]:
    """Remove what writers of ``out_dir`` that died (SIGKILL, power loss) left beside it.

    Their hidden ``.NAME.tmp-PID-*`` directories are removed once PID is not alive; a
    ``.NAME.old-PID-*`` directory is a previous output that a commit had moved aside: it is
    put back when ``out_dir`` is missing (so the previous complete output survives a kill
    between the two renames) and removed otherwise. Returns the paths it handled.
    """
    out_dir = osp.abspath(os.fspath(out_dir))
    parent, name = osp.split(out_dir)
    if not osp.isdir(parent):
        return []
    pattern = re.compile(rf'\.{re.escape(name)}\.(tmp|old)-(\d+)-.+')
    handled = []
    for entry in sorted(os.listdir(parent)):
        m = pattern.fullmatch(entry)
        if m is None or _alive(int(m.group(2))):
            continue
        path = osp.join(parent, entry)
        if m.group(1) == 'old' and not osp.exists(out_dir):
            os.rename(path, out_dir)
            print(f'restored {out_dir} from {path} (a previous write was interrupted)',
                  file=sys.stderr, flush=True)
        else:
            shutil.rmtree(path, ignore_errors=True)
        handled.append(path)
    return handled


class _Terminated(SystemExit):
    """SIGTERM while an output directory is written: unwinds (removing the partial output)
    and exits with the shell's status for a SIGTERM."""


@contextmanager
def _sigterm_exits(out_dir: str) -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise _Terminated(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    except _Terminated:
        print(f'terminated (SIGTERM) while writing {out_dir}: nothing was written',
              file=sys.stderr, flush=True)
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def _signals_deferred() -> Iterator[None]:
    """SIGTERM and SIGINT that arrive inside are held and raised again on the way out, so
    the handlers in force outside (``_sigterm_exits``, Ctrl-C's ``KeyboardInterrupt``) run
    once the block is done. A Python-level handler, not a signal mask: a mask holds a signal
    for the calling thread only, and a process-directed signal goes to any thread that does
    not mask it (torch's and the launchers' threads), after which Python raises it in the
    main thread all the same."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    signals = (signal.SIGTERM, signal.SIGINT)
    previous = {s: signal.signal(s, lambda signum, frame: held.append(signum))
                for s in signals}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        for s in dict.fromkeys(held):
            signal.raise_signal(s)
