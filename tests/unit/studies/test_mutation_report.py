"""The mutation figures come from mutmut's results as mutmut writes them."""
from __future__ import annotations

import json

import pytest

from sidt_mmdet.studies import mutation


def test_counts_and_figures_from_mutmut_meta_files(tmp_path, monkeypatch):
    """Catches a status read wrong (a timeout or an unchecked mutant counted as killed, a
    survivor left out of the list) and a figure block not regenerated."""
    monkeypatch.setattr(mutation, '_files', lambda: ['pkg/a.py', 'pkg/b.py'])
    monkeypatch.setattr(mutation, '_diffs', lambda keys: {k: f'diff of {k}' for k in keys})
    (tmp_path / 'pkg').mkdir()
    codes = {'pkg/a.py': {'a1': 1, 'a2': 0, 'a3': -24, 'a4': 3},
             'pkg/b.py': {'b1': 1, 'b2': 33, 'b3': None}}
    for path, c in codes.items():
        (tmp_path / f'{path}.meta').write_text(json.dumps({'exit_code_by_key': c}))
    res = mutation.collect(str(tmp_path))
    assert (res['killed'], res['detected'], res['total']) == (3, 4, 7)
    assert res['score'] == pytest.approx(42.9)
    assert res['files']['pkg/a.py'] == {'killed': 2, 'survived': 1, 'timeout': 1, 'total': 4}
    assert res['files']['pkg/b.py'] == {'killed': 1, 'no tests': 1, 'not checked': 1,
                                        'total': 3}
    assert [(s['mutant'], s['status'], s['diff']) for s in res['survivors']] == [
        ('a2', 'survived', 'diff of a2'), ('a3', 'timeout', 'diff of a3'),
        ('b2', 'no tests', 'diff of b2')]
    doc = tmp_path / 'mutation.md'
    doc.write_text(f'intro\n{mutation.BEGIN}\nold\n{mutation.END}\noutro\n')
    mutation.write_doc(res, str(doc))
    text = doc.read_text()
    assert text.startswith('intro\n') and text.endswith('outro\n') and 'old' not in text
    assert '**3 of 7 mutants killed (42.9%)**' in text and '4 detected (57.1%)' in text
    assert '| `pkg/a.py` | 4 | 2 | 1 | 0 | 1 | 0 | 50.0% |' in text
    assert '1 mutants were not checked' in text


def test_missing_results_name_the_file(tmp_path, monkeypatch):
    monkeypatch.setattr(mutation, '_files', lambda: ['pkg/a.py'])
    with pytest.raises(FileNotFoundError, match='pkg/a.py.meta not found: run `make mutation`'):
        mutation.collect(str(tmp_path))


def test_render_shows_the_score_before_and_why_each_survivor_lives():
    """Catches the before column taken from the wrong run or module, a survivor matched to
    another entry's reason (or to none when a pattern fits), and a timed-out mutant listed
    as a survivor."""
    res = dict(killed=3, detected=4, total=6, score=50.0,
               files={'pkg/a.py': {'killed': 3, 'survived': 2, 'timeout': 1, 'total': 6}},
               survivors=[
                   dict(file='pkg/a.py', mutant='pkg.a.x_f__mutmut_1', status='survived',
                        diff='--- a\n+++ b\n-    x = 1\n+    x = 2 | 3\n'),
                   dict(file='pkg/a.py', mutant='pkg.a.x\u01c1C\u01c1g__mutmut_4',
                        status='survived', diff='-    y = f(a)\n'),
                   dict(file='pkg/a.py', mutant='pkg.a.x_h__mutmut_2', status='timeout',
                        diff='')])
    before = dict(killed=1, detected=1, total=6, score=16.7,
                  files={'pkg/a.py': {'killed': 1, 'survived': 5, 'total': 6}})
    reasons = [{'mutants': ['pkg.a.x_f__*'], 'why': 'equivalent: f ignores x'},
               {'mutants': ['*'], 'why': 'a catch-all later in the list'}]
    text = mutation.render(res, before, reasons)
    assert 'Before the tests written against this run\'s first survivors: 1 of 6 killed ' \
           '(16.7%), 1 detected (16.7%).' in text
    assert '| `pkg/a.py` | 6 | 3 | 2 | 0 | 1 | 0 | 50.0% | 16.7% |' in text
    assert '| `a.py` `x_f__mutmut_1` | `x = 2 \\| 3` | equivalent: f ignores x |' in text
    assert '| `a.py` `x.C.g__mutmut_4` | `y = f(a)` | a catch-all later in the list |' in text
    assert 'x_h__mutmut_2' not in text
    assert 'Mutants neither killed nor timed out: 2, of which 2 are explained' in text
    assert 'not analysed |' in mutation.render(res, None, reasons[:1])
    # a stopped run before: its unchecked mutants are said, with the share of the checked
    before['files']['pkg/a.py'] = {'killed': 1, 'survived': 1, 'not checked': 4, 'total': 6}
    assert ('1 detected (16.7%); that run was stopped with 4 not checked, so of the 2 it '
            'checked 1 were killed (50.0%).') in mutation.render(res, before, reasons)
