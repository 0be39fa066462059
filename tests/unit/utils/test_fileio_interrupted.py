"""What killed writers leave beside an output directory is cleaned (or put back) by the next
writer; SIGTERM while writing unwinds. (Kills at every write of a real export:
tests/integration/test_interruption.py.)"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading

import pytest

from sidt_mmdet.utils import fileio
from sidt_mmdet.utils.fileio import atomic_output_dir, clean_stale_outputs

DEAD = 2 ** 22 + 12345  # above the default pid_max: no such process


def test_dead_writers_tmp_dir_is_removed_live_ones_kept(tmp_path):
    out = tmp_path / 'export'
    dead = tmp_path / f'.export.tmp-{DEAD}-abcd'
    live = tmp_path / f'.export.tmp-{os.getppid()}-efgh'
    other = tmp_path / f'.other.tmp-{DEAD}-ijkl'
    for d in (dead, live, other):
        d.mkdir()
        (d / 'pruned.pth').write_bytes(b'partial')
    assert clean_stale_outputs(out) == [str(dead)]
    assert not dead.exists() and live.exists() and other.exists()


def test_previous_output_moved_aside_is_put_back(tmp_path):
    out = tmp_path / 'export'
    old = tmp_path / f'.export.old-{DEAD}-abcd'
    old.mkdir()
    (old / 'subnet.json').write_text('{}')
    clean_stale_outputs(out)
    assert (out / 'subnet.json').read_text() == '{}' and not old.exists()


def test_next_write_cleans_before_it_starts(tmp_path):
    out = tmp_path / 'export'
    (tmp_path / f'.export.tmp-{DEAD}-abcd').mkdir()
    with atomic_output_dir(out) as tmp, open(os.path.join(tmp, 'a.txt'), 'w') as f:
        f.write('a')
    assert sorted(os.listdir(tmp_path)) == ['export']


def test_ctrl_c_during_the_commit_waits_for_its_renames(tmp_path, monkeypatch):
    """SIGINT between the renames of the commit would leave the previous output moved aside
    and the new one removed; it is held until the renames are done. Another thread is alive
    meanwhile, as in any process that ran torch: a signal mask of the main thread alone let
    the kernel hand the signal to that thread, and Python raised it inside the commit."""
    idle = threading.Event()
    other = threading.Thread(target=idle.wait, daemon=True)
    other.start()
    out = tmp_path / 'export'
    out.mkdir()
    (out / 'old.txt').write_text('old')
    real_commit = fileio._commit

    def commit_interrupted(*args):
        os.kill(os.getpid(), signal.SIGINT)  # held while the commit runs
        real_commit(*args)

    monkeypatch.setattr(fileio, '_commit', commit_interrupted)
    with pytest.raises(KeyboardInterrupt) as err:
        with atomic_output_dir(out, overwrite=True) as tmp, \
                open(os.path.join(tmp, 'new.txt'), 'w') as f:
            f.write('new')
    assert os.listdir(out) == ['new.txt'] and os.listdir(tmp_path) == ['export']
    assert err.value.__notes__ == [f'{out} was written before the interruption']
    idle.set()
    other.join(timeout=10)


@pytest.mark.slow
def test_sigterm_while_writing_leaves_nothing(tmp_path):
    out = tmp_path / 'export'
    code = (
        'import os, signal, sys\n'
        'from sidt_mmdet.utils.fileio import atomic_output_dir\n'
        f'with atomic_output_dir({str(out)!r}) as tmp:\n'
        '    open(os.path.join(tmp, "part.bin"), "wb").write(b"x")\n'
        '    os.kill(os.getpid(), signal.SIGTERM)\n'
        '    open(os.path.join(tmp, "never"), "w").close()\n')
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 128 + signal.SIGTERM, result.stderr
    assert 'terminated (SIGTERM)' in result.stderr
    assert os.listdir(tmp_path) == []
