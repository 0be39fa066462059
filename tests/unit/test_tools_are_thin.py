"""The shape of ``tools/``: argument parsing plus one library call. No tool or test loads a
script by its path or edits ``sys.path`` (what a tool offers lives in the package)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest
from helpers import REPO

TOOLS = sorted((REPO / 'tools').rglob('*.py'))
TESTS = sorted((REPO / 'tests').rglob('*.py'))
MAX_TOOL_LINES = 200
LONG_TOOLS_ALLOWED = {'tools/install_env.py'}  # bootstraps the venv before the package exists
# install_env.py runs before sidt_mmdet is installed, so its logic cannot live in the package;
# its tests may load it by path (and nothing else).
LOADABLE_BY_PATH = 'install_env.py'


def _loads_by_path_or_edits_sys_path(path: Path) -> list[str]:
    found = []
    tree = ast.parse(path.read_text(encoding='utf-8'))
    allowed = {id(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)
               and LOADABLE_BY_PATH in ast.unparse(n)}
    for node in ast.walk(tree):
        if id(node) in allowed:
            continue
        if isinstance(node, ast.Attribute):
            name = ast.unparse(node)
            if name.endswith(('spec_from_file_location', 'SourceFileLoader', 'run_path')) or \
                    name.startswith('sys.path.'):
                found.append(f'line {node.lineno}: {name}')
        elif isinstance(node, ast.Name) and node.id in ('spec_from_file_location', 'run_path'):
            found.append(f'line {node.lineno}: {node.id}')
        elif isinstance(node, (ast.Assign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(ast.unparse(t) == 'sys.path' for t in targets):
                found.append(f'line {node.lineno}: sys.path assignment')
    return found


def _rel(p: Path) -> str:
    return str(p.relative_to(REPO))


@pytest.mark.parametrize('path', TOOLS + TESTS, ids=_rel)
def test_no_script_loaded_by_path(path):
    if path == Path(__file__).resolve():
        return  # this file names what it looks for
    assert not _loads_by_path_or_edits_sys_path(path), _loads_by_path_or_edits_sys_path(path)


@pytest.mark.parametrize('path', TOOLS, ids=_rel)
def test_tools_are_short(path):
    lines = len(path.read_text(encoding='utf-8').splitlines())
    if _rel(path) not in LONG_TOOLS_ALLOWED:
        assert lines < MAX_TOOL_LINES, f'{_rel(path)} has {lines} lines: move logic to the package'


def test_the_check_sees_each_form(tmp_path):
    probe = tmp_path / 'probe.py'
    probe.write_text('import importlib.util, sys, runpy\n'
                     "spec = importlib.util.spec_from_file_location('x', 'tools/x.py')\n"
                     "ok = importlib.util.spec_from_file_location('i', 'tools/install_env.py')\n"
                     "sys.path.insert(0, 'tools')\n"
                     "runpy.run_path('tools/x.py')\n"
                     'sys.path = []\n')
    assert len(_loads_by_path_or_edits_sys_path(probe)) == 4
