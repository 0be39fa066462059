"""The test harness itself (tests/conftest.py, tests/helpers.py): a test not marked slow can
start no process in any phase, every test runs on CPU, and torchrun ports never collide."""
from __future__ import annotations

import fcntl
import multiprocessing
import os
import socket
import subprocess

import helpers
import pytest
import torch


def _process_starts_refused() -> bool:
    return subprocess.Popen.__dict__['_execute_child'].__name__ == 'refused'


@pytest.fixture(scope='module')
def guarded_in_module_setup() -> bool:
    return _process_starts_refused()


@pytest.fixture(scope='session')
def guarded_in_session_setup() -> bool:
    return _process_starts_refused()


def test_fixtures_of_every_scope_are_guarded(guarded_in_module_setup, guarded_in_session_setup):
    """Catches a guard that covers the test's call and its function-scoped fixtures only (a
    module- or session-scoped fixture could start a training unnoticed)."""
    assert guarded_in_module_setup and guarded_in_session_setup
    assert _process_starts_refused()


def test_every_way_to_start_a_process_is_refused(request):
    """Catches a subprocess, a multiprocessing process or a fork that a fast test could start
    (only the refusal is exercised: with a working guard nothing is started)."""
    with pytest.raises(AssertionError, match=f'{request.node.name}.*starts a subprocess'
                                             r".*\['true'\].*mark it slow"):
        subprocess.run(['true'], check=False)
    with pytest.raises(AssertionError, match='starts a multiprocessing process'):
        multiprocessing.get_context('spawn').Process(target=int).start()
    for name in ('fork', 'posix_spawn', 'posix_spawnp'):
        assert getattr(os, name).__name__ == 'refused', name


@pytest.mark.slow
def test_slow_tests_may_start_processes():
    """Catches a guard that refuses the slow tests too (they would all fail)."""
    assert not _process_starts_refused()
    assert subprocess.run(['true'], check=False).returncode == 0


def test_every_test_and_its_subprocesses_run_on_cpu():
    """Catches a GPU left visible (a 1-process run on it against a 2-process run on CPU
    would compare two devices)."""
    assert os.environ['CUDA_VISIBLE_DEVICES'] == ''
    assert torch.cuda.device_count() == 0
    assert helpers.cpu_dist_env()['CUDA_VISIBLE_DEVICES'] == ''


def test_ports_are_held_and_never_handed_out_twice(monkeypatch):
    """Catches bind-and-release port picking: a port another worker (a lock) or another
    process (a bound socket) holds must be skipped, and no port is given twice."""
    first, second = helpers.free_port(), helpers.free_port()
    assert first != second
    assert all(p in helpers.PORT_RANGE for p in (first, second))
    assert all(p < 32768 for p in helpers.PORT_RANGE)  # below Linux's ephemeral ports
    # another worker's lock on the lock file of `first` (flock: per open file description)
    with open(helpers._PORT_LOCK_DIR / f'{first}.lock', 'a') as lock:
        with pytest.raises(OSError):
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    start = next(p for p in range(first + 1, first + 50) if p != second)
    with socket.socket() as busy:
        busy.bind(('127.0.0.1', start))  # another process's port, not locked by us
        monkeypatch.setattr(helpers, 'PORT_RANGE', range(first, start + 2))
        got = helpers.free_port()
    assert got not in (first, second, start) and got in range(first, start + 2)
