"""``tools/install_env.py`` (``make install``): it installs ``dependencies`` and every optional
group, and finds nothing to do (so calls no pip) when every pin holds. Only its pure
functions are called here: running it would re-point the editable install."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from importlib import metadata

import pytest
from helpers import REPO


@pytest.fixture(scope='module')
def install_env():
    spec = importlib.util.spec_from_file_location('install_env', REPO / 'tools/install_env.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_reads_dependencies_and_every_optional_group(install_env):
    import tomllib

    project = tomllib.loads((REPO / 'pyproject.toml').read_text())['project']
    names = {r.name.lower() for r in install_env.read_requirements()}
    for group, lines in project['optional-dependencies'].items():
        for line in lines:
            name = line.split('=')[0].split('<')[0].split('>')[0].split('[')[0].strip().lower()
            assert name in names, f'{name} of group {group!r} is not installed by make install'
    for line in project['dependencies']:
        assert any(line.lower().startswith(n) for n in names)
    assert {'onnx', 'onnxruntime', 'pytest', 'ruff'} <= names


def test_a_package_named_in_two_groups_must_satisfy_both(install_env, tmp_path):
    pyproject = tmp_path / 'pyproject.toml'
    pyproject.write_text('[project]\nname = "x"\ndependencies = ["numpy>=1.0"]\n'
                         '[project.optional-dependencies]\n'
                         'a = ["numpy<99", "torch-pruning"]\nb = ["Torch_Pruning>=1"]\n')
    reqs = {r.name.lower().replace('_', '-'): r for r in install_env.read_requirements(pyproject)}
    assert sorted(reqs) == ['numpy', 'torch-pruning']
    assert str(reqs['numpy'].specifier) in ('<99,>=1.0', '>=1.0,<99')
    assert str(reqs['torch-pruning'].specifier) == '>=1'


def test_unmet_is_empty_when_pins_hold_and_names_what_does_not(install_env):
    from packaging.requirements import Requirement

    torch_version = metadata.version('torch')
    assert install_env.unmet([Requirement(f'torch=={torch_version}')]) == []
    problems = install_env.unmet([Requirement('torch==0.0.1'),
                                  Requirement('surely-not-installed-pkg==1.0')])
    assert problems == [f'torch==0.0.1 (found {torch_version})',
                        'surely-not-installed-pkg==1.0 (not installed)']


@pytest.mark.slow  # a subprocess
def test_help_runs_without_installing():
    result = subprocess.run([sys.executable, str(REPO / 'tools/install_env.py'), '--help'],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert '--check' in result.stdout and 'optional-dependencies' in result.stdout
