"""Runner checkpoints load with weights_only=True through our loader, and only through it."""
from __future__ import annotations

import argparse
import pickle

import numpy as np
import pytest
import torch
from mmengine.logging import HistoryBuffer
from mmengine.runner import CheckpointLoader

import sidt_mmdet  # noqa: F401  (what custom_imports does: installs the loader)
from sidt_mmdet.utils import (
    UnsafeCheckpointError,
    checkpoint_safe_globals,
    load_checkpoint_safe,
    save_checkpoint_atomic,
)
from sidt_mmdet.utils.safe_load import _global_name

HISTORY_BUFFER = 'mmengine.logging.history_buffer.HistoryBuffer'


def _runner_like(path, **extra):
    """What a Runner checkpoint holds beyond tensors: HistoryBuffers (one with its statistics
    pickled as getattr(HistoryBuffer, name)), numpy arrays and scalars."""
    buf = HistoryBuffer([1.0, 2.0, 3.0], [1, 1, 1])
    pickled_methods = HistoryBuffer([4.0], [1])
    vars(pickled_methods)['_statistics_methods'] = {'mean': HistoryBuffer.mean,
                                                    'max': HistoryBuffer.max}
    torch.save({'message_hub': {'log_scalars': {'loss': buf, 'lr': pickled_methods},
                                'runtime_info': {'ids': np.arange(3, dtype=np.uint32)}},
                'meta': {'iter': 2, 'seed': np.int64(7), 'lr': np.float64(0.1), **extra},
                'state_dict': {'backbone.w': torch.ones(2)}}, path)
    return path


def _spy_torch_load(monkeypatch) -> list[dict]:
    calls, real = [], torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(torch, 'load', spy)
    return calls


def _assert_nothing_allowed_process_wide(path, load):
    """``load(path)`` succeeds, and afterwards (as before) torch's process-wide allow-list is
    untouched and a bare weights_only load of the same file still fails."""
    before = set(torch.serialization.get_safe_globals())
    with pytest.raises(pickle.UnpicklingError, match='HistoryBuffer'):
        torch.load(path, map_location='cpu', weights_only=True)
    load(path)
    # A set: torch keeps one and rebuilds it on every add/remove, so its order can change
    # while its members do not.
    assert set(torch.serialization.get_safe_globals()) == before
    with pytest.raises(pickle.UnpicklingError, match='HistoryBuffer'):
        torch.load(path, map_location='cpu', weights_only=True)


@pytest.mark.slow
def test_bare_weights_only_load_refuses_runner_checkpoint(runner_checkpoint):
    """The failure our loader exists for, still there for any other torch.load in the process
    right after our loader and mmengine's entry point loaded the file (so nothing was allowed
    globally). Self-contained: catches an ``add_safe_globals`` whatever ran before."""
    _assert_nothing_allowed_process_wide(str(runner_checkpoint), load_checkpoint_safe)
    _assert_nothing_allowed_process_wide(
        str(runner_checkpoint), lambda p: CheckpointLoader.load_checkpoint(p, 'cpu'))


def test_loader_allows_nothing_process_wide(tmp_path):
    """The fast form of the test above, on a file with what a Runner checkpoint holds.
    Catches the allow-list installed with ``add_safe_globals`` instead of inside the load."""
    path = str(_runner_like(tmp_path / 'runner.pth'))
    _assert_nothing_allowed_process_wide(path, load_checkpoint_safe)
    _assert_nothing_allowed_process_wide(path, lambda p: CheckpointLoader.load_checkpoint(p))


def test_runner_like_checkpoint_loads_with_weights_only_on(tmp_path, monkeypatch):
    """Every torch.load our loader makes keeps weights_only=True, and the same kind of file with
    one foreign global is refused. Catches ``weights_only=False`` (everything would load)."""
    path = _runner_like(tmp_path / 'runner.pth')
    calls = _spy_torch_load(monkeypatch)
    ckpt = CheckpointLoader.load_checkpoint(str(path), map_location='cpu')
    assert ckpt['message_hub']['log_scalars']['lr'].statistics('max') == 4.0
    assert calls and all(kw.get('weights_only') is True for kw in calls), calls
    foreign = _runner_like(tmp_path / 'foreign.pth', args=argparse.Namespace(lr=0.1))
    with pytest.raises(UnsafeCheckpointError, match='argparse.Namespace'):
        CheckpointLoader.load_checkpoint(str(foreign), map_location='cpu')


@pytest.mark.slow
def test_runner_checkpoint_loads_with_weights_only(runner_checkpoint, tmp_path, monkeypatch):
    """A real Runner checkpoint loads with weights_only=True kept on (every torch.load call
    spied), and the same file with one foreign global added is refused: catches a loader that
    turns weights_only off, which would load both."""
    calls = _spy_torch_load(monkeypatch)
    ckpt = load_checkpoint_safe(runner_checkpoint)
    assert calls and all(kw.get('weights_only') is True for kw in calls), calls
    assert {'meta', 'state_dict', 'message_hub', 'optimizer', 'param_schedulers'} <= set(ckpt)
    assert ckpt['meta']['iter'] == 2
    assert all(isinstance(v, torch.Tensor) for v in ckpt['state_dict'].values())
    assert any(k.startswith('backbone.') for k in ckpt['state_dict'])
    ckpt['meta']['args'] = argparse.Namespace(lr=0.1)  # our own file, as a user might re-save
    torch.save(ckpt, tmp_path / 'foreign.pth')
    with pytest.raises(UnsafeCheckpointError, match=r'foreign\.pth.*argparse\.Namespace'):
        load_checkpoint_safe(tmp_path / 'foreign.pth')


@pytest.mark.slow
def test_mmengine_local_loader_is_ours(runner_checkpoint):
    ckpt = CheckpointLoader.load_checkpoint(str(runner_checkpoint), map_location='cpu')
    assert 'state_dict' in ckpt


@pytest.mark.slow
def test_allow_list_covers_exactly_what_runner_checkpoints_hold(runner_checkpoint):
    unsafe = set(torch.serialization.get_unsafe_globals_in_checkpoint(str(runner_checkpoint)))
    allowed = {_global_name(g) for g in checkpoint_safe_globals()}
    assert HISTORY_BUFFER in unsafe
    assert unsafe <= allowed, unsafe - allowed
    # both numpy majors' module names, whichever numpy wrote the file
    for prefix in ('numpy.core.multiarray', 'numpy._core.multiarray'):
        assert {f'{prefix}._reconstruct', f'{prefix}.scalar'} <= allowed


def test_foreign_global_is_refused_with_its_name_and_file(tmp_path):
    path = tmp_path / 'foreign.pth'
    torch.save({'args': argparse.Namespace(lr=0.1), 'w': torch.ones(2)}, path)
    with pytest.raises(UnsafeCheckpointError, match=r'foreign\.pth.*argparse\.Namespace'):
        load_checkpoint_safe(path)
    # mmengine's entry points (load_from, resume, init_cfg) hit the same refusal
    with pytest.raises(UnsafeCheckpointError, match='argparse.Namespace'):
        CheckpointLoader.load_checkpoint(str(path), map_location='cpu')


def test_missing_checkpoint_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match='nope.pth'):
        load_checkpoint_safe(tmp_path / 'nope.pth')


def test_save_checkpoint_atomic_round_trip(tmp_path):
    path = tmp_path / 'sub' / 'ckpt.pth'
    obj = {'state_dict': {'w': torch.arange(4.0)}, 'meta': {'score': np.float64(0.5),
                                                             'names': ['a', 'b']}}
    save_checkpoint_atomic(obj, path)
    loaded = load_checkpoint_safe(path)
    assert torch.equal(loaded['state_dict']['w'], obj['state_dict']['w'])
    assert loaded['meta'] == obj['meta']
    assert [p.name for p in path.parent.iterdir()] == ['ckpt.pth']


def test_save_checkpoint_atomic_refuses_unloadable_content(tmp_path):
    path = tmp_path / 'ckpt.pth'
    save_checkpoint_atomic({'v': 1}, path)
    with pytest.raises(UnsafeCheckpointError) as err:
        save_checkpoint_atomic({'v': 2, 'args': argparse.Namespace()}, path)
    assert str(err.value) == (
        f"not writing checkpoint {str(path)!r}: it would need globals outside the sidt_mmdet "
        "allow-list, so safe loading would refuse it: ['argparse.Namespace']. Store plain "
        "Python values (e.g. float(x) instead of numpy scalars).")
    assert load_checkpoint_safe(path) == {'v': 1}  # the old file is intact
    assert [p.name for p in tmp_path.iterdir()] == ['ckpt.pth']  # no temp file left
