"""The mutation score of the core modules, from mutmut's results (``make mutation``).

:func:`collect` reads mutmut's per-file results under ``mutants/`` for the files of
pyproject.toml's ``[tool.mutmut] only_mutate``: the counts per file and every mutant not
killed with its diff; :func:`write_doc` regenerates the figures block of docs/mutation.md.
"""
from __future__ import annotations

import collections
import json
import os.path as osp
import subprocess
import sys
import tomllib

from ..utils.fileio import replace_marked_block
from .common import REPO

__all__ = ['collect', 'render', 'write_doc', 'BEGIN', 'END']

# mutmut's exit-code meaning (mutmut.stats.status_by_exit_code)
STATUS = {1: 'killed', 3: 'killed', 0: 'survived', 5: 'no tests', 33: 'no tests',
          34: 'skipped', 36: 'timeout', 24: 'timeout', -24: 'timeout', 152: 'timeout',
          255: 'timeout', 37: 'caught by type check', -11: 'segfault', -9: 'segfault',
          None: 'not checked'}
BEGIN, END = '<!-- mutation figures: begin -->', '<!-- mutation figures: end -->'


def _files() -> list[str]:
    with open(osp.join(REPO, 'pyproject.toml'), 'rb') as f:
        return list(tomllib.load(f)['tool']['mutmut']['only_mutate'])


# mutmut's own diff of each mutant (what `mutmut show NAME` prints), all in one process;
# mutmut (the dev group) is imported there, never by the package
_DIFFS = '''
import json, sys
from mutmut.__main__ import find_mutant, get_diff_for_mutant
print(json.dumps({k: get_diff_for_mutant(k, path=find_mutant(k).path)
                  for k in json.loads(sys.stdin.read())}))
'''


def _diffs(keys: list[str]) -> dict[str, str]:
    out = subprocess.run([sys.executable, '-c', _DIFFS], cwd=REPO, input=json.dumps(keys),
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def collect(mutants: str) -> dict:
    """Counts per file of ``[tool.mutmut] only_mutate`` and every mutant not killed (with
    ``mutmut show``'s diff), from mutmut's results under ``mutants``."""
    files, survivors = {}, []
    for path in _files():
        meta = osp.join(mutants, f'{path}.meta')
        if not osp.isfile(meta):
            raise FileNotFoundError(f'{meta} not found: run `make mutation` (mutmut run) first')
        with open(meta) as f:
            codes = json.load(f)['exit_code_by_key']
        counts = collections.Counter(STATUS.get(c, 'suspicious') for c in codes.values())
        files[path] = dict(sorted(counts.items()), total=len(codes))
        survivors += [dict(file=path, mutant=key, status=STATUS.get(code, 'suspicious'))
                      for key, code in sorted(codes.items())
                      if STATUS.get(code, 'suspicious') not in ('killed', 'not checked')]
    diffs = _diffs([s['mutant'] for s in survivors]) if survivors else {}
    for s in survivors:
        s['diff'] = diffs.get(s['mutant'], '')
    killed = sum(f.get('killed', 0) for f in files.values())
    total = sum(f['total'] for f in files.values())
    detected = killed + sum(f.get('timeout', 0) for f in files.values())
    return dict(killed=killed, detected=detected, total=total,
                score=round(100 * killed / max(total, 1), 1),
                files=files, survivors=survivors)


def render(res: dict) -> str:
    """The figures block of docs/mutation.md."""
    lines = ['',
             f'**{res["killed"]} of {res["total"]} mutants killed ({res["score"]}%)**; '
             f'with the timed-out ones, {res["detected"]} detected '
             f'({100 * res["detected"] / max(res["total"], 1):.1f}%).', '',
             '| module | mutants | killed | survived | no tests | timeout | not checked | score |',
             '|---|---:|---:|---:|---:|---:|---:|---:|']
    for path, f in res['files'].items():
        score = 100 * f.get('killed', 0) / max(f['total'], 1)
        lines.append(f'| `{path}` | {f["total"]} | {f.get("killed", 0)} | '
                     f'{f.get("survived", 0)} | {f.get("no tests", 0)} | '
                     f'{f.get("timeout", 0)} | {f.get("not checked", 0)} | {score:.1f}% |')
    unchecked = sum(f.get('not checked', 0) for f in res['files'].values())
    if unchecked:
        lines += ['', f'**A partial run**: {unchecked} mutants were not checked (the run was '
                  'stopped); their share counts as not killed.']
    lines += ['', f'Mutants checked and not killed: {len(res["survivors"])} (each with its '
              'diff in `docs/mutation.json`).', '']
    return '\n'.join(lines)


def write_doc(res: dict, doc: str) -> None:
    """Regenerate the figures block of ``doc`` from ``res``."""
    replace_marked_block(doc, BEGIN, END, render(res), what='the mutation figures')
