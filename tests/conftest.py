"""Shared fixtures: generated data sets and one real (tiny) Runner training on CPU (the
helpers they use live in helpers.py)."""
from __future__ import annotations

import contextlib
import fcntl
import json
import multiprocessing.process
import os
import platform
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import pytest
from guarantees import full_session, guard
from helpers import (
    REPO,
    TOY_CIFAR_SIZES,
    TOY_COCO_SIZES,
    TOY_DETECTOR_CFG,
    TRAIN_ITERS,
    cpu_dist_env,
    run_command,
    toy_coco_cfg_options,
)

from sidt_mmdet.datasets.generation import make_toy_cifar100, make_toy_coco

# Every test runs on CPU, the processes it starts too (they inherit this): a 1-process run
# on a GPU against a 2-process one on CPU would compare two devices, not two process counts.
os.environ['CUDA_VISIBLE_DEVICES'] = ''
# platform.processor() runs `uname -p` the first time a process asks (then caches it): ask
# here, so that a test reporting the platform (the latency study) starts no process for it.
platform.processor()
# matplotlib (imported by mmdet's and mmengine's visualisers) builds its font cache the first
# time a machine imports it, running `fc-list`: build it here, outside any test.
import matplotlib.font_manager  # noqa: E402,F401

# Fixtures that train (or run a training chain): a test that uses one is a slow test.
TRAINING_FIXTURES = frozenset({'toy_train_run', 'runner_checkpoint', 'chain', 'search_run',
                               'export_dir', 'exported'})


def pytest_collection_modifyitems(config, items):
    """Refuse to collect a test that trains through a fixture without ``@pytest.mark.slow``,
    so that ``-m "not slow"`` stays fast."""
    unmarked = [item.nodeid for item in items if TRAINING_FIXTURES & set(item.fixturenames)
                and item.get_closest_marker('slow') is None]
    if unmarked:
        raise pytest.UsageError('these tests train through a fixture but are not marked '
                                f'@pytest.mark.slow: {unmarked}')


# Every way a test could start another process. subprocess.run/check_output/Popen and
# os.popen all go through Popen._execute_child; multiprocessing (Process, Pool, torch's spawn,
# DataLoader workers) through BaseProcess.start. (os.system is left alone: the hostile
# checkpoint tests pickle it by name; its one test that runs it is marked slow.)
_PROCESS_STARTS = ((subprocess.Popen, '_execute_child'),
                   (multiprocessing.process.BaseProcess, 'start'),
                   (os, 'fork'), (os, 'forkpty'), (os, 'posix_spawn'), (os, 'posix_spawnp'))


@contextlib.contextmanager
def _no_process_starts(nodeid: str):
    """Within the block, starting a process fails naming the test and what it started."""
    def refuse(what):
        def refused(*args, **kwargs):
            command = args[1] if what == 'subprocess' and len(args) > 1 else args[:1]
            raise AssertionError(f'{nodeid} starts a {what} ({command}) but is not marked '
                                 '@pytest.mark.slow: mark it slow')
        return refused

    saved = [(owner, name, owner.__dict__[name]) for owner, name in _PROCESS_STARTS
             if name in owner.__dict__]
    for owner, name, _ in saved:
        what = {'_execute_child': 'subprocess', 'start': 'multiprocessing process'}.get(
            name, f'process (os.{name})')
        setattr(owner, name, refuse(what))
    try:
        yield
    finally:
        for owner, name, original in saved:
            setattr(owner, name, original)


def _guarded(item):
    """A test not marked slow may start no process in any phase: its setup (fixtures of every
    scope: a module- or session-scoped one is set up in the first test that uses it), its call
    and its teardown."""
    if item.get_closest_marker('slow') is not None:
        return contextlib.nullcontext()
    return _no_process_starts(item.nodeid)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item):
    with _guarded(item):
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    with _guarded(item):
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item, nextitem):
    with _guarded(item):
        return (yield)


class Figures:
    """Counts of the reliability tests (bad-input cases, fuzz examples, kills survived),
    written as JSON to ``$SIDT_RELIABILITY_FIGURES`` when the session ends."""

    def __init__(self):
        self.counts: Counter[str] = Counter()

    def add(self, name: str, n: int = 1) -> None:
        self.counts[name] += n


_FIGURES = Figures()


@pytest.fixture(scope='session')
def figures() -> Figures:
    return _FIGURES


def _xdist_worker(config) -> bool:
    return hasattr(config, 'workerinput')


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    """Under pytest-xdist (``make test`` runs ``-n 2``): add a worker's counts to ours."""
    _FIGURES.counts.update(getattr(node, 'workeroutput', {}).get('sidt_figures', {}))


def pytest_configure(config):
    if not _xdist_worker(config) and full_session(config):
        # The whole suite: every test a documented claim names must run and pass in it
        # (tests/guarantees.py; under xdist the controller sees every worker's reports).
        config.pluginmanager.register(guard(), 'sidt_guarantees')
    if _xdist_worker(config):
        # Two workers share the two cores: one torch thread each (the subprocesses the
        # tests start already get OMP_NUM_THREADS=1 from run_command).
        import torch

        torch.set_num_threads(1)


def pytest_sessionfinish(session, exitstatus):
    if _xdist_worker(session.config):  # the controller writes the file
        session.config.workeroutput['sidt_figures'] = dict(_FIGURES.counts)
        return
    out = os.environ.get('SIDT_RELIABILITY_FIGURES')
    if out and _FIGURES.counts:
        with open(out, 'w', encoding='utf-8') as f:
            json.dump(dict(sorted(_FIGURES.counts.items()), pytest_exit_status=int(exitstatus),
                           failed=session.testsfailed), f, indent=1)
            f.write('\n')


@pytest.fixture
def one_torch_thread():
    """Tiny matmuls and decompositions stall on extra OpenMP threads on a busy 2-core machine;
    use with ``pytestmark = pytest.mark.usefixtures('one_torch_thread')``."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _quiet(_: str) -> None:
    pass


@pytest.fixture(scope='session')
def repo() -> Path:
    return REPO


@pytest.fixture(scope='session')
def toy_coco_dir(tmp_path_factory) -> Path:
    return Path(make_toy_coco(str(tmp_path_factory.mktemp('data') / 'toy_coco'),
                              **TOY_COCO_SIZES, progress=_quiet))


@pytest.fixture(scope='session')
def toy_cifar_dir(tmp_path_factory) -> Path:
    return Path(make_toy_cifar100(str(tmp_path_factory.mktemp('data') / 'toy_cifar100'),
                                  **TOY_CIFAR_SIZES, progress=_quiet))


@contextlib.contextmanager
def _once_per_session(tmp_path_factory, name: str):
    """Yield the directory ``name`` shared by the whole session, and whether it is still to
    be made. Under pytest-xdist every worker has its own session fixtures: the first one to
    get here makes the directory while the others wait, then they all use it."""
    if 'PYTEST_XDIST_WORKER' not in os.environ:
        yield tmp_path_factory.mktemp(name), True
        return
    shared = tmp_path_factory.getbasetemp().parent / name  # the session's, not the worker's
    with open(f'{shared}.lock', 'w') as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        done = shared.with_name(f'{name}.done')
        if done.exists():
            yield shared, False
            return
        shutil.rmtree(shared, ignore_errors=True)  # a worker that failed making it
        shared.mkdir()
        yield shared, True
        done.touch()


@pytest.fixture(scope='session')
def toy_train_run(tmp_path_factory, toy_coco_dir) -> Path:
    """Work dir of a real training: ``tools/dist_train.sh CFG 2`` on CPU (gloo), TRAIN_ITERS
    iterations and a validation at the end. One run serves every checkpoint test (of every
    xdist worker)."""
    with _once_per_session(tmp_path_factory, 'toy_train') as (work_dir, todo):
        if todo:
            run_command(['bash', 'tools/dist_train.sh', str(TOY_DETECTOR_CFG), '2',
                         '--work-dir', str(work_dir), *toy_coco_cfg_options(toy_coco_dir)],
                        env=cpu_dist_env())
    return work_dir


@pytest.fixture(scope='session')
def runner_checkpoint(toy_train_run) -> Path:
    ckpt = toy_train_run / f'iter_{TRAIN_ITERS}.pth'
    assert ckpt.is_file(), sorted(p.name for p in toy_train_run.iterdir())
    return ckpt
