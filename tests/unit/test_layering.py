"""The import direction of the package, read from the source (every import, also those inside
functions): layers below backbones below stages; ``models/`` never reaches into the search,
export or pipeline code, so a pruned model builds from its config and subnet file alone; the
command lines (``cli/``) sit above the library calls (``apis/``), which parse none."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / 'sidt_mmdet'

# package -> what it must not import (prefixes of absolute module names)
FORBIDDEN = {
    'sidt_mmdet.models': ('sidt_mmdet.search', 'sidt_mmdet.export', 'sidt_mmdet.apis',
                          'sidt_mmdet.studies', 'sidt_mmdet.cli'),
    # pure torch + timm: no registry, no config system
    'sidt_mmdet.models.layers': ('mmcv', 'mmdet', 'mmengine', 'mmpretrain',
                                 'sidt_mmdet.models.backbones', 'sidt_mmdet.models.necks'),
    # utils serve every stage and so import none of them (the MACs counter is in models/)
    'sidt_mmdet.utils': ('sidt_mmdet.models', 'sidt_mmdet.search', 'sidt_mmdet.export',
                         'sidt_mmdet.apis', 'sidt_mmdet.studies', 'sidt_mmdet.cli'),
    'sidt_mmdet.search': ('sidt_mmdet.export', 'sidt_mmdet.apis', 'sidt_mmdet.studies',
                          'sidt_mmdet.cli'),
    'sidt_mmdet.export': ('sidt_mmdet.search', 'sidt_mmdet.apis', 'sidt_mmdet.studies',
                          'sidt_mmdet.cli'),
    # the studies run the apis; what both need (the interleaved timer) lives in utils
    'sidt_mmdet.apis': ('sidt_mmdet.studies', 'sidt_mmdet.cli'),
    # the command lines (argparse + one call each) sit on top: only tools/ import them
    'sidt_mmdet.studies': ('sidt_mmdet.cli',),
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix('').parts
    return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


def imports_in(source: str, name: str, is_package: bool = False) -> set[str]:
    """Absolute names of every module the source of module ``name`` imports, also inside
    functions (``from x import y`` gives ``x`` and ``x.y``, since ``y`` may be a module)."""
    package = name if is_package else name.rpartition('.')[0]
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split('.')
                base = base[:len(base) - node.level + 1]
                mod = '.'.join(base + ([node.module] if node.module else []))
            else:
                mod = node.module
            found.add(mod)
            found.update(f'{mod}.{alias.name}' for alias in node.names)
    return found


def imports_of(path: Path) -> set[str]:
    return imports_in(path.read_text(encoding='utf-8'), module_name(path),
                      path.name == '__init__.py')


def _hits(imported: set[str], prefixes: tuple[str, ...]) -> list[str]:
    return sorted(m for m in imported for p in prefixes if m == p or m.startswith(p + '.'))


SOURCES = sorted(PACKAGE.rglob('*.py'))


def test_the_walk_sees_relative_and_lazy_imports():
    imported = imports_of(PACKAGE / 'models' / 'backbones' / 'sidt_vit.py')
    assert 'sidt_mmdet.models.layers' in imported  # from ..layers import ...
    assert 'sidt_mmdet.utils.ckpt_convert' in imported  # from ...utils.ckpt_convert import ...
    lazy = 'def f():\n    from ...export.lowrank import lowrank_model\n'
    found = imports_in(lazy, 'sidt_mmdet.models.backbones.sidt_vit')
    assert _hits(found, FORBIDDEN['sidt_mmdet.models']) == ['sidt_mmdet.export.lowrank',
                                                             'sidt_mmdet.export.lowrank.'
                                                             'lowrank_model']
    assert imports_in('from . import utils\n', 'sidt_mmdet', is_package=True) == {
        'sidt_mmdet', 'sidt_mmdet.utils'}


@pytest.mark.parametrize('path', SOURCES, ids=lambda p: str(p.relative_to(PACKAGE.parent)))
def test_import_direction(path):
    name = module_name(path)
    imported = imports_of(path)
    for package, prefixes in FORBIDDEN.items():
        if name == package or name.startswith(package + '.'):
            bad = _hits(imported, prefixes)
            assert not bad, f'{path}: {name} must not import {bad}'


APIS = sorted((PACKAGE / 'apis').rglob('*.py'))


@pytest.mark.parametrize('path', APIS, ids=lambda p: str(p.relative_to(PACKAGE.parent)))
def test_apis_parse_no_command_line(path):
    """The library calls take typed arguments; their flags live in ``sidt_mmdet/cli/``."""
    bad = _hits(imports_of(path), ('argparse',))
    assert not bad, f'{path}: parse the command line in sidt_mmdet/cli/, not here ({bad})'


def eager_imports(path: Path) -> set[str]:
    """What importing ``path`` imports right away: imports outside function bodies."""
    name = module_name(path)
    tree = ast.parse(path.read_text(encoding='utf-8'))
    stack, found = list(tree.body), set()
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found |= imports_in(ast.unparse(node), name, path.name == '__init__.py')
        else:
            stack.extend(ast.iter_child_nodes(node))
    return found


def import_closure(root: str) -> set[str]:
    """Every module that ``import root`` loads, as far as our source tells."""
    files = {module_name(p): p for p in SOURCES}
    seen, todo = set(), [root]
    while todo:
        mod = todo.pop()
        if mod in seen:
            continue
        seen.add(mod)
        parts = mod.split('.')
        todo += ['.'.join(parts[:i]) for i in range(1, len(parts))]  # parents run first
        if mod in files:
            todo += [m for m in eager_imports(files[mod]) if m not in seen]
    return seen


def test_import_sidt_mmdet_leaves_mmpretrain_out():
    closure = import_closure('sidt_mmdet')
    assert 'sidt_mmdet.models.backbones.sidt_vit' in closure  # the walk follows the package
    assert not _hits(closure, ('mmpretrain',)), sorted(_hits(closure, ('mmpretrain',)))
    assert _hits(import_closure('sidt_mmdet.datasets.toy_cifar100'), ('mmpretrain',))


# Functions of more than MAX_LINES lines of code (their docstring not counted) that are not
# split yet, each with what it does in one piece; a new long function fails, and so does an
# entry here that has been split (the list only ever shrinks).
MAX_LINES = 80
LONG_FUNCTIONS = {
    'sidt_mmdet/apis/benchmark.py::benchmark_detectors': 'builds and times both detectors in '
                                                         'one interleaved loop',
    'sidt_mmdet/models/layers/attention.py::__init__': 'checks and packs the three layouts of '
                                                       'one attention (dense, grouped, padded)',
    'sidt_mmdet/search/latency.py::_build': 'times every block kind on its grid in one pass',
    'sidt_mmdet/studies/selection.py::selection_markdown': 'renders the table and its goals',
}


def code_lines(node: ast.AST) -> int:
    lines = node.end_lineno - node.lineno + 1
    first = node.body[0]
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and \
            isinstance(first.value.value, str):
        lines -= first.end_lineno - first.lineno + 1
    return lines


def functions(path: Path):
    for node in ast.walk(ast.parse(path.read_text(encoding='utf-8'))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node


def test_no_long_function_outside_the_listed_ones():
    long = {f'{p.relative_to(PACKAGE.parent)}::{f.name}'
            for p in SOURCES for f in functions(p) if code_lines(f) > MAX_LINES}
    assert long - set(LONG_FUNCTIONS) == set(), 'split these (or list them with why)'
    assert set(LONG_FUNCTIONS) - long == set(), 'these are short now: drop them from the list'


def test_backbone_constructor_is_short():
    path = PACKAGE / 'models' / 'backbones' / 'sidt_vit.py'
    init = next(f for f in functions(path) if f.name == '__init__')
    assert init.end_lineno - init.lineno + 1 < 60
