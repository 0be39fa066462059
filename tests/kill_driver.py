"""Kill ``tools/export_subnet.py`` at chosen points of its writing; report what is left.

Run by tests/integration/test_interruption.py as ``python tests/kill_driver.py ARGS_JSON``.
The tool is imported once; each attempt runs in a forked child that sends itself SIGKILL
(or SIGTERM) at the N-th file-system write (open for writing, mkdir/mkdtemp/mkstemp,
rename/replace, chmod, fsync, rmtree), so the chosen points (spread over the writing, and
every write of the final commit) are hit exactly, without timing races. After each death
the parent lists the output's parent directory, checks what a reader would see, runs the
next export's stale-output cleanup and lists again. One JSON report goes to stdout.
"""
from __future__ import annotations

import builtins
import hashlib
import json
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent


def _digest(directory: Path) -> dict[str, str] | None:
    if not directory.is_dir():
        return None
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()[:12]
            for p in sorted(directory.iterdir())}


def _run_child(argv: list[str], kill_at: int, sig: int, count_file: str) -> int:
    """Fork; the child exports with ``sig`` sent to itself at write number ``kill_at``."""
    pid = os.fork()
    if pid:
        _, status = os.waitpid(pid, 0)
        return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
    code = 99
    try:
        real_open = builtins.open
        count = [0]

        def tick():
            count[0] += 1
            if count[0] == kill_at:
                os.kill(os.getpid(), sig)

        def wrap(fn):
            def wrapper(*args, **kwargs):
                tick()
                return fn(*args, **kwargs)
            return wrapper

        def open_(file, mode='r', *args, **kwargs):
            if any(c in mode for c in 'wax+'):
                tick()
            return real_open(file, mode, *args, **kwargs)

        for module, name in ((os, 'rename'), (os, 'replace'), (os, 'mkdir'), (os, 'chmod'),
                             (os, 'fsync'), (tempfile, 'mkdtemp'), (tempfile, 'mkstemp'),
                             (shutil, 'rmtree')):
            setattr(module, name, wrap(getattr(module, name)))
        builtins.open = open_
        sys.stdout = real_open(os.devnull, 'w')
        try:
            code = TOOL.main(argv)
        except SystemExit as e:  # SIGTERM while writing: unwound, exit status 143
            code = e.code
        with real_open(count_file, 'w') as f:
            f.write(str(count[0]))
    finally:
        os._exit(code)


def main() -> None:
    args = json.loads(sys.argv[1])
    out = Path(args['out_dir'])
    base = [args['config'], args['checkpoint'], '-o', str(out), '--round-to', '1']
    count_file = str(out.parent.parent / 'count.txt')
    report = dict(attempts=[])
    assert _run_child(base + ['--keep-ratio', '0.6'], 0, 0, count_file) == 0
    previous = _digest(out)
    keep = out.parent.parent / 'previous'
    shutil.copytree(out, keep)
    new_argv = base + ['--keep-ratio', '0.5', '--overwrite']
    assert _run_child(new_argv, 0, 0, count_file) == 0  # a clean run: count the writes
    new = _digest(out)
    n_writes = int(Path(count_file).read_text())
    report.update(previous=previous, new=new, writes=n_writes)
    spread = {1 + round(i * (n_writes - 1) / (args['kills'] - 1)) for i in range(args['kills'])}
    # the last writes are the commit (renames, removal of the previous output): all of them
    kill_points = sorted(spread | set(range(max(1, n_writes - 3), n_writes + 1)))
    term_points = sorted({2, n_writes // 2, n_writes - 1})
    report.update(kill_points=kill_points, term_points=term_points)
    for sig_name, points in (('SIGKILL', kill_points), ('SIGTERM', term_points)):
        for k in points:
            shutil.rmtree(out)
            shutil.copytree(keep, out)
            status = _run_child(new_argv, k, getattr(signal, sig_name), count_file)
            listing = sorted(os.listdir(out.parent))
            seen = _digest(out)
            cleaned = TOOL_FILEIO.clean_stale_outputs(out)
            report['attempts'].append(dict(
                signal=sig_name, at_write=k, status=status, listing=listing,
                state=('previous' if seen == previous else 'new' if seen == new else
                       'none' if seen is None else 'partial'),
                cleaned=[os.path.basename(p) for p in cleaned],
                listing_after_cleanup=sorted(os.listdir(out.parent)),
                state_after_cleanup=('previous' if _digest(out) == previous else
                                     'new' if _digest(out) == new else 'lost')))
    print(json.dumps(report))


if __name__ == '__main__':
    torch.set_num_threads(1)
    from sidt_mmdet.cli import export_subnet as TOOL  # noqa: N812  (what tools/export_subnet.py runs)
    from sidt_mmdet.utils import fileio as TOOL_FILEIO  # noqa: N812
    main()
