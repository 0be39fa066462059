"""Install the pinned stack of pyproject.toml and this checkout (editable) into this venv.

The stack is ``[project] dependencies`` plus every group of
``[project.optional-dependencies]`` (dev: tests and lint; bench: the Torch-Pruning
baseline; deploy: ONNX export and onnxruntime), so that ``make test`` runs every test.
Run by ``make install`` with the venv's own python. When every pin is already satisfied,
``import mmcv.ops`` works and the editable install points at this checkout, it runs no pip
at all and returns in seconds. mmcv is compiled (8-10 min on 2 cores; pip caches the wheel
afterwards) only when ``import mmcv.ops`` fails.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
import tomllib
from importlib import metadata
from pathlib import Path

try:
    from packaging.requirements import Requirement
except ImportError:  # a brand-new venv: pip always carries a copy
    from pip._vendor.packaging.requirements import Requirement

REPO = Path(__file__).resolve().parent.parent
DIST_NAME = 'sidt-mmdet'
# Installed first and separately: mmcv's setup.py needs them (and torch) in the venv
# because it is built without build isolation, so that it compiles against our torch.
BUILD_TOOLS = ('setuptools', 'wheel', 'ninja')
TORCH = ('torch', 'torchvision')
MMCV_BUILD_ENV = {'MMCV_WITH_OPS': '1', 'MAX_JOBS': '2'}


def read_requirements(pyproject: Path = REPO / 'pyproject.toml') -> list[Requirement]:
    """``dependencies`` and every optional group, in file order (groups sorted by name).

    A package named twice (in two groups) keeps every specifier: pip and :func:`unmet`
    must satisfy all of them.
    """
    with open(pyproject, 'rb') as f:
        project = tomllib.load(f)['project']
    groups = project.get('optional-dependencies', {})
    lines = list(project.get('dependencies', []))
    for name in sorted(groups):
        lines += groups[name]
    merged: dict[str, Requirement] = {}
    for line in lines:
        req = Requirement(line)
        key = re.sub(r'[-_.]+', '-', req.name).lower()  # PEP 503 names
        if key in merged:
            merged[key].specifier &= req.specifier
        else:
            merged[key] = req
    return list(merged.values())


def unmet(requirements: list[Requirement]) -> list[str]:
    """Human-readable reasons, one per requirement the venv does not satisfy."""
    problems = []
    for req in requirements:
        try:
            version = metadata.version(req.name)
        except metadata.PackageNotFoundError:
            problems.append(f'{req} (not installed)')
            continue
        if not req.specifier.contains(version, prereleases=True):
            problems.append(f'{req} (found {version})')
    return problems


def mmcv_ops_importable() -> bool:
    # A subprocess: a failed import of compiled ops must not poison this process.
    result = subprocess.run([sys.executable, '-c', 'import mmcv.ops'], capture_output=True)
    return result.returncode == 0


def editable_install_of_this_checkout() -> bool:
    try:
        dist = metadata.distribution(DIST_NAME)
    except metadata.PackageNotFoundError:
        return False
    text = dist.read_text('direct_url.json')
    if not text:
        return False
    direct_url = json.loads(text)
    return (direct_url.get('dir_info', {}).get('editable', False)
            and direct_url.get('url') == REPO.as_uri())


def pip(*args: str, env: dict | None = None) -> None:
    command = [sys.executable, '-m', 'pip', *args]
    print('+', ' '.join(command), flush=True)
    subprocess.run(command, check=True, env={**os.environ, **(env or {})},
                   stdin=subprocess.DEVNULL)


def state(requirements: list[Requirement]) -> dict[str, list[str]]:
    problems = unmet(requirements)
    mmcv_ok = not any(p.startswith('mmcv') for p in problems) and mmcv_ops_importable()
    return {
        'requirements': problems,
        'mmcv_ops': [] if mmcv_ok else ['import mmcv.ops fails (mmcv must be compiled)'],
        'editable': ([] if editable_install_of_this_checkout()
                     else [f'{DIST_NAME} is not installed in editable mode from {REPO}']),
    }


def mmcv_has_compiled_ops() -> bool:
    """Whether the installed mmcv ships ``mmcv/_ext*.so`` (checked without importing it)."""
    try:
        files = metadata.distribution('mmcv').files or []
    except metadata.PackageNotFoundError:
        return False
    return any(str(f).startswith('mmcv/_ext') for f in files)


def compile_mmcv(requirement: str, *extra: str) -> None:
    print('Compiling mmcv with ops (8-10 min on 2 cores the first time; pip caches the '
          'wheel)...', flush=True)
    # No build isolation: an isolated build cannot see torch and silently skips the ops.
    # No deps: they come with the rest of the stack, in one resolve that respects our pins.
    pip('install', '--no-build-isolation', '--no-deps', *extra, requirement, env=MMCV_BUILD_ENV)


def install(requirements: list[Requirement], current: dict[str, list[str]]) -> None:
    by_name = {req.name: str(req) for req in requirements}
    if current['requirements'] or current['mmcv_ops']:
        pip('install', *(by_name[name] for name in BUILD_TOOLS if name in by_name),
            *(name for name in BUILD_TOOLS if name not in by_name))
        pip('install', *(by_name[name] for name in TORCH))
        mmcv_at_pin = not unmet([req for req in requirements if req.name == 'mmcv'])
        if not (mmcv_at_pin and mmcv_has_compiled_ops()):
            compile_mmcv(by_name['mmcv'], '--force-reinstall')
        if unmet(requirements):
            pip('install', *by_name.values())
        if not mmcv_ops_importable():
            # Ops present but unusable, e.g. a cached wheel built against another torch.
            compile_mmcv(by_name['mmcv'], '--force-reinstall', '--no-cache-dir')
            if not mmcv_ops_importable():
                sys.exit('make install: mmcv installed but `import mmcv.ops` still fails: '
                         'check that torch imports in this venv and that setuptools < 81 is '
                         'installed, then rerun.')
    if not editable_install_of_this_checkout():
        # No build isolation: the venv's own setuptools < 81 builds it, offline and fast.
        pip('install', '--no-build-isolation', '--no-deps', '-e', str(REPO))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--check', action='store_true',
                        help='only report what is missing; exit 1 if anything is')
    args = parser.parse_args()
    start = time.monotonic()
    requirements = read_requirements()
    current = state(requirements)
    problems = [p for group in current.values() for p in group]
    if not problems:
        print(f'make install: {sys.prefix} is up to date '
              f'({time.monotonic() - start:.1f} s)')
        return 0
    print('make install: to do:\n  ' + '\n  '.join(problems), flush=True)
    if args.check:
        return 1
    install(requirements, current)
    left = [p for group in state(requirements).values() for p in group]
    if left:
        print('make install: still unmet after installing:\n  ' + '\n  '.join(left),
              file=sys.stderr)
        return 1
    print(f'make install: done in {time.monotonic() - start:.0f} s')
    return 0


if __name__ == '__main__':
    sys.exit(main())
