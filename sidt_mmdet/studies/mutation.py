"""The mutation score of the core modules, from mutmut's results (``make mutation``).

:func:`collect` reads mutmut's per-file results under ``mutants/`` for the files of
pyproject.toml's ``[tool.mutmut] only_mutate``: the counts per file and every mutant not
killed with its diff; :func:`write_doc` regenerates the figures block of docs/mutation.md.
"""
from __future__ import annotations

import collections
import fnmatch
import json
import os.path as osp
import subprocess
import sys
import tomllib

from ..utils.fileio import replace_marked_block
from .common import REPO

__all__ = ['collect', 'render', 'reason_for', 'write_doc', 'BEGIN', 'END']

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


def _changed_line(diff: str) -> str:
    """The first line the mutant adds (or, for a deletion, the first it removes)."""
    lines = [ln for ln in diff.splitlines() if ln[:1] in '+-' and ln[:3] not in ('+++', '---')]
    added = [ln for ln in lines if ln.startswith('+')] or lines or ['?']
    text = ' '.join(added[0][1:].split())
    return (text[:90] + '...' if len(text) > 90 else text).replace('|', '\\|')


def reason_for(mutant: str, reasons: list[dict]) -> str | None:
    """The reason of the first entry of ``reasons`` whose patterns match ``mutant``."""
    for entry in reasons:
        if any(fnmatch.fnmatchcase(mutant, pat) for pat in entry['mutants']):
            return entry['why']
    return None


def _unchecked(res: dict) -> int:
    return sum(f.get('not checked', 0) for f in res['files'].values())


def _unchecked_note(res: dict) -> str:
    """For a stopped run: how many mutants it left unchecked, and the killed share of the
    ones it checked."""
    unchecked = _unchecked(res)
    if not unchecked:
        return ''
    checked = res['total'] - unchecked
    return (f'; that run was stopped with {unchecked} not checked, so of the {checked} it '
            f'checked {res["killed"]} were killed ({100 * res["killed"] / checked:.1f}%)')


def render(res: dict, before: dict | None = None, reasons: list[dict] | None = None) -> str:
    """The figures block of docs/mutation.md: ``res`` per module beside ``before`` (an
    earlier run's :func:`collect`, the same modules), and every mutant of ``res`` not
    detected with the reason of ``reasons`` that matches it (``mutants``: fnmatch patterns,
    ``why``: the text), or "not analysed"."""
    def pct(n, total):
        return f'{100 * n / max(total, 1):.1f}%'

    lines = ['',
             f'**{res["killed"]} of {res["total"]} mutants killed ({res["score"]}%)**; '
             f'with the timed-out ones, {res["detected"]} detected '
             f'({pct(res["detected"], res["total"])}).', '']
    if before is not None:
        lines += [f'Before the tests written against this run\'s first survivors: '
                  f'{before["killed"]} of {before["total"]} killed ({before["score"]}%), '
                  f'{before["detected"]} detected ({pct(before["detected"], before["total"])})'
                  + _unchecked_note(before) + '.', '']
    head = ('| module | mutants | killed | survived | no tests | timeout | not checked | score |'
            + (' score before |' if before is not None else ''))
    lines += [head, '|---|' + '---:|' * (head.count('|') - 2)]
    for path, f in res['files'].items():
        row = (f'| `{path}` | {f["total"]} | {f.get("killed", 0)} | '
               f'{f.get("survived", 0)} | {f.get("no tests", 0)} | '
               f'{f.get("timeout", 0)} | {f.get("not checked", 0)} | '
               f'{pct(f.get("killed", 0), f["total"])} |')
        if before is not None:
            b = before['files'].get(path)
            row += f' {pct(b.get("killed", 0), b["total"]) if b else "-"} |'
        lines.append(row)
    unchecked = _unchecked(res)
    if unchecked:
        lines += ['', f'**A partial run**: {unchecked} mutants were not checked (the run was '
                  'stopped); their share counts as not killed.']
    left = [s for s in res['survivors'] if s['status'] != 'timeout']
    why = [reason_for(s['mutant'], reasons or []) for s in left]
    lines += ['', f'Mutants neither killed nor timed out: {len(left)}, of which '
              f'{sum(w is not None for w in why)} are explained below and '
              f'{sum(w is None for w in why)} are not analysed (every diff is in '
              '`docs/mutation.json`).', '']
    if left:
        lines += ['| mutant | what it changes | why it survives |', '|---|---|---|']
        for s, w in zip(left, why):
            name = s['mutant'].split('.')[-1].replace('\u01c1', '.')
            module = s['file'].split('/')[-1]
            lines.append(f'| `{module}` `{name}` | `{_changed_line(s.get("diff", ""))}` | '
                         f'{w or "not analysed"} |')
        lines.append('')
    return '\n'.join(lines)


def write_doc(res: dict, doc: str, before: dict | None = None,
              reasons: list[dict] | None = None) -> None:
    """Regenerate the figures block of ``doc`` from ``res`` (see :func:`render`)."""
    replace_marked_block(doc, BEGIN, END, render(res, before, reasons),
                         what='the mutation figures')
