"""The claims of docs/guarantees.md (its table), docs/status.md and docs/reliability.md name
tests that exist; the guard of tests/guarantees.py (registered by conftest for a full-suite
session) fails the session when one of them is not collected, skipped, xfailed or failed."""
import re
from types import SimpleNamespace

import pytest
from guarantees import (
    CLAIM_DOCS,
    GUARANTEES_DOC,
    Claim,
    GuaranteeGuard,
    all_claims,
    failures,
    parse_guarantees,
)
from helpers import REPO


def _defined(test_id: str) -> bool:
    path, name = test_id.split('::', 1)
    name = name.split('[')[0].split('::')[-1]
    file = REPO / path
    return file.is_file() and bool(re.search(rf'^\s*def {name}\(', file.read_text(), re.M))


def test_every_claim_names_existing_tests():
    """Catches a claim whose test was renamed, moved or deleted (the claim would stand with
    nothing behind it), a claim line that names no test at all, and a row that names only
    a file (deleting one of the file's tests would leave it standing)."""
    claims = parse_guarantees(GUARANTEES_DOC.read_text())
    assert len(claims) >= 20
    for claim in claims:
        assert claim.ids, f'claim without a test: {claim.where}'
        assert not claim.files_only, f'{claim.where} names only the file {claim.files_only}'
    for claim in all_claims():
        for test_id in claim.ids:
            assert _defined(test_id), f'{test_id} (named in {claim.where}) does not exist'


def test_status_and_reliability_claims_name_their_tests():
    """Catches docs/status.md or docs/reliability.md losing the test names of their claims
    (the guard would then have nothing of theirs to check)."""
    for doc in CLAIM_DOCS:
        named = [c for c in all_claims() if c.where.startswith(str(doc.relative_to(REPO)))]
        assert len(named) >= 5, f'{doc.name}: claims no longer name their tests'


def _report(nodeid, when='call', outcome='passed', **extra):
    longrepr = ('file', 1, 'Skipped: no onnx') if outcome == 'skipped' else None
    return SimpleNamespace(nodeid=nodeid, when=when, outcome=outcome, longrepr=longrepr,
                           passed=outcome == 'passed', skipped=outcome == 'skipped',
                           failed=outcome == 'failed', **extra)


def _ran(nodeid, call='passed', **extra):
    return [_report(nodeid, 'setup'), _report(nodeid, 'call', call, **extra),
            _report(nodeid, 'teardown')]


def test_guard_flags_every_backing_that_did_not_pass():
    """Catches a guard that accepts a skipped, xfailed, xpassed, failed, uncollected or
    never-run test, a parametrized test with one bad case, or a row naming only a file."""
    t = 'tests/unit/test_x.py::'
    claims = [Claim('ok', [t + 'good', t + 'param']), Claim('skip', [t + 'skipped']),
              Claim('xfail', [t + 'xfailed']), Claim('xpass', [t + 'xpassed']),
              Claim('fail', [t + 'failed']), Claim('gone', [t + 'renamed']),
              Claim('unrun', [t + 'unrun']), Claim('case', [t + 'cases']),
              Claim('file', files_only=['tests/unit/test_x.py']), Claim('nothing')]
    collected = [t + n for n in ('good', 'param[a]', 'param[b]', 'skipped', 'xfailed',
                                 'xpassed', 'failed', 'unrun', 'cases[1]', 'cases[2]')]
    reports = {t + 'good': _ran(t + 'good'), t + 'param[a]': _ran(t + 'param[a]'),
               t + 'param[b]': _ran(t + 'param[b]'),
               t + 'skipped': [_report(t + 'skipped', 'setup', 'skipped'),
                               _report(t + 'skipped', 'teardown')],
               t + 'xfailed': _ran(t + 'xfailed', 'skipped', wasxfail=''),
               t + 'xpassed': _ran(t + 'xpassed', 'passed', wasxfail=''),
               t + 'failed': _ran(t + 'failed', 'failed'),
               t + 'cases[1]': _ran(t + 'cases[1]'),
               t + 'cases[2]': _ran(t + 'cases[2]', 'skipped')}
    got = failures(claims, collected, reports)
    assert got == [f'skip: {t}skipped skipped (Skipped: no onnx)',
                   f'xfail: {t}xfailed xfailed', f'xpass: {t}xpassed xpassed',
                   f'fail: {t}failed failed', f'gone: {t}renamed was not collected',
                   f'unrun: {t}unrun not run', f'case: {t}cases[2] skipped (Skipped: no onnx)',
                   'file: names the file tests/unit/test_x.py but no test in it',
                   'nothing: names no test']
    assert failures(claims[:1], collected, reports) == []


INNER_TESTS = '''
import pytest

def test_good():
    pass

@pytest.mark.parametrize('n', [1, 2])
def test_param(n):
    assert n in (1, 2)

def test_skipped():
    pytest.skip('not here')

@pytest.mark.xfail(reason='known')
def test_xfailed():
    assert False
'''


def _inner_session(tmp_path, names) -> tuple[int, str]:
    """A pytest session in this process over INNER_TESTS with the guard of a claim naming
    ``names``: (exit status, the guard's messages)."""
    (tmp_path / 'tests').mkdir(exist_ok=True)
    (tmp_path / 'tests' / 'test_inner_guarded.py').write_text(INNER_TESTS)
    (tmp_path / 'pytest.ini').write_text('[pytest]\n')
    guard = GuaranteeGuard([Claim('inner row', [f'tests/test_inner_guarded.py::{n}'
                                                for n in names])])
    status = pytest.main([str(tmp_path / 'tests'), '-q', '-p', 'no:cacheprovider',
                          '-p', 'no:xdist', '-p', 'no:randomly', '--rootdir', str(tmp_path),
                          '-c', str(tmp_path / 'pytest.ini'), '--import-mode=importlib'],
                         plugins=[guard])
    return int(status), '\n'.join(guard.messages)


def test_guard_fails_a_real_session_on_a_skip_or_xfail(tmp_path):
    """The hooks themselves (collection, reports, exit status): catches a guard whose
    session still exits 0 when a named test skips or xfails, or one that fails a session
    whose named tests (every case of a parametrized one) all passed."""
    status, messages = _inner_session(tmp_path, ['test_good', 'test_param'])
    assert (status, messages) == (0, '')
    status, messages = _inner_session(tmp_path, ['test_good', 'test_skipped', 'test_xfailed',
                                                 'test_missing'])
    assert status == 1
    assert messages.splitlines() == [
        'inner row: tests/test_inner_guarded.py::test_skipped skipped (Skipped: not here)',
        'inner row: tests/test_inner_guarded.py::test_xfailed xfailed',
        'inner row: tests/test_inner_guarded.py::test_missing was not collected']


def test_unreadable_claims_fail_the_session_at_its_end(tmp_path, monkeypatch):
    """Catches a guard that passes when the table cannot be read (moved, renamed, its title
    changed): the claims would go unchecked with the session green."""
    import guarantees

    assert guarantees.guard().errors == []
    monkeypatch.setattr(guarantees, 'GUARANTEES_DOC', tmp_path / 'moved.md')
    assert 'moved.md' in guarantees.guard().errors[0]
    (tmp_path / 'moved.md').write_text('# Another title\n')
    assert guarantees.guard().errors[0].startswith('the claims could not be read')


def _config(*args, source=pytest.Config.ArgsSource.ARGS, **options):
    option = SimpleNamespace(**{'keyword': '', 'markexpr': '', 'deselect': None, 'lf': False,
                                'stepwise': False, 'ignore': None, 'collectonly': False,
                                **options})
    return SimpleNamespace(option=option, args=list(args), args_source=source,
                           invocation_params=SimpleNamespace(dir=REPO))


def test_the_guard_runs_for_the_whole_suite_only():
    """Catches a guard that fails a selected run (every unselected claim would be 'not
    collected') and one that skips the full run of ``make test`` / ``.ci/run``."""
    from guarantees import full_session

    assert full_session(_config('tests', source=pytest.Config.ArgsSource.TESTPATHS))
    assert full_session(_config('tests')) and full_session(_config('.'))
    assert full_session(_config(str(REPO / 'tests')))
    for selected in (_config('tests/unit'), _config('tests/unit/test_harness.py'),
                     _config('tests/unit/test_harness.py::test_ports_are_held_and_never_'
                             'handed_out_twice'), _config('tests', keyword='guard'),
                     _config('tests', markexpr='not slow'), _config('tests', lf=True),
                     _config('tests', deselect=['tests/unit']), _config('tests', collectonly=True),
                     _config('tests', ignore=['tests/integration'])):
        assert not full_session(selected), selected
