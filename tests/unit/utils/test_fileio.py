"""Atomic files and directories: all or nothing, usual permissions, clear refusals."""
from __future__ import annotations

import json
import os

import pytest

from sidt_mmdet.utils.fileio import (
    atomic_file,
    atomic_output_dir,
    check_output_dir,
    write_json_atomic,
    write_text_atomic,
)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_atomic_file_replaces_on_success_only(tmp_path):
    path = tmp_path / 'deep' / 'f.txt'
    write_text_atomic(path, 'one')
    assert path.read_text() == 'one'
    assert path.stat().st_mode & 0o777 == 0o666 & ~_umask()
    with pytest.raises(RuntimeError, match='boom'):
        with atomic_file(path) as tmp:
            with open(tmp, 'w') as f:
                f.write('half')
            raise RuntimeError('boom')
    assert path.read_text() == 'one'
    assert sorted(p.name for p in path.parent.iterdir()) == ['f.txt']


def test_write_json_atomic_round_trip(tmp_path):
    write_json_atomic(tmp_path / 'a.json', {'x': [1, 2]})
    text = (tmp_path / 'a.json').read_text()
    assert json.loads(text) == {'x': [1, 2]} and text.endswith('\n')


def test_atomic_output_dir_all_or_nothing(tmp_path):
    out = tmp_path / 'a' / 'b' / 'out'
    with pytest.raises(OSError, match='disk full'):
        with atomic_output_dir(out) as tmp:
            open(os.path.join(tmp, 'part'), 'w').close()
            raise OSError('disk full')
    assert list(tmp_path.iterdir()) == []  # the parents it created are gone too
    with atomic_output_dir(out) as tmp:
        with open(os.path.join(tmp, 'x.txt'), 'w') as f:
            f.write('new')
    assert (out / 'x.txt').read_text() == 'new'
    assert out.stat().st_mode & 0o777 == 0o777 & ~_umask()
    assert sorted(p.name for p in out.parent.iterdir()) == ['out']


def test_atomic_output_dir_overwrite_keeps_old_until_done(tmp_path):
    out = tmp_path / 'out'
    out.mkdir()
    (out / 'old.txt').write_text('old')
    with pytest.raises(FileExistsError, match=r"is not empty; pass --overwrite"):
        with atomic_output_dir(out):
            pass
    with pytest.raises(RuntimeError):
        with atomic_output_dir(out, overwrite=True) as tmp:
            open(os.path.join(tmp, 'new.txt'), 'w').close()
            raise RuntimeError
    assert [p.name for p in out.iterdir()] == ['old.txt']
    with atomic_output_dir(out, overwrite=True) as tmp:
        open(os.path.join(tmp, 'new.txt'), 'w').close()
    assert [p.name for p in out.iterdir()] == ['new.txt']
    assert sorted(p.name for p in tmp_path.iterdir()) == ['out']


def test_check_output_dir_refusals(tmp_path):
    blocker = tmp_path / 'file'
    blocker.write_text('')
    with pytest.raises(FileExistsError, match='exists and is not a directory'):
        check_output_dir(blocker, overwrite=True)
    with pytest.raises(NotADirectoryError, match=f'cannot create {blocker}/x: {blocker} is not'):
        check_output_dir(blocker / 'x', overwrite=False)
    assert check_output_dir(tmp_path / 'new' / 'dir', False) == str(tmp_path / 'new' / 'dir')
    assert not (tmp_path / 'new').exists()
