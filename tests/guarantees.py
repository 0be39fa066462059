"""The guarantee guard: every test that docs/guarantees.md's table (and docs/status.md and
docs/reliability.md) names as the backing of a claim must be collected, run and pass in a
full-suite session.

tests/conftest.py registers :class:`GuaranteeGuard` for a session that runs the whole suite
(no ``-k``, ``-m``, ``--deselect``, ``--lf``, file or node selection). The guard records the
ids that pytest collected and the outcome of every test (under pytest-xdist the controller
sees every worker's collection and reports), and when the session ends it fails it (exit
status 1, one line per broken backing naming the claim and the test) if a named test was not
collected, was skipped, xfailed or xpassed, failed or errored, or if a row names only a file.
The tests are run once, by the suite itself; the guard only reads their reports.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
GUARANTEES_DOC = REPO / 'docs' / 'guarantees.md'
# Other documents whose claims name their tests as `tests/PATH.py::NAME`.
CLAIM_DOCS = (REPO / 'docs' / 'status.md', REPO / 'docs' / 'reliability.md')
TEST_ID = re.compile(r'`(tests/[\w/.-]+\.py::[\w:\[\]-]+)`')


@dataclass
class Claim:
    """One claim of a document and the pytest node ids (``tests/...::name``) behind it."""
    where: str  # the document and the claim, for messages
    ids: list[str] = field(default_factory=list)
    files_only: list[str] = field(default_factory=list)  # refs naming a file but no test


def parse_guarantees(text: str, doc: str = 'docs/guarantees.md') -> list[Claim]:
    """The table's rows: the claim (first column) and the ids in the last column. A ref
    ``PATH::NAME`` names a test of ``tests/PATH``, ``::NAME`` one of the file named before
    it in the row, ``PATH`` alone (or ``PATH (note)``) a file and no test."""
    start = text.index('# What the tests guarantee')
    end = text.find('\n## ', start + 1)
    section = text[start:end if end >= 0 else len(text)]
    claims = []
    for line in section.splitlines():
        if not line.startswith('| ') or line.startswith('| claim'):
            continue
        claim_text, refs_text = line[2:].rsplit(' | ', 1)
        claim = Claim(f'{doc} row "{claim_text.strip()[:70]}"')
        path = None
        for ref in re.findall(r'`([^`]+)`', refs_text):
            if ref.startswith('::'):
                name = ref[2:]
            elif '::' in ref:
                path, name = ref.split('::', 1)
            else:
                path, name = ref.split(' ')[0], None
            if path is None:
                raise ValueError(f'{claim.where}: {ref!r} names no file before it')
            if name:
                claim.ids.append(f'tests/{path}::{name}')
            else:
                claim.files_only.append(f'tests/{path}')
        claims.append(claim)
    return claims


def parse_claim_doc(text: str, doc: str) -> list[Claim]:
    """Every `tests/PATH.py::NAME` a document names (each line a claim of its own)."""
    return [Claim(f'{doc} line {n} "{line.strip()[:60]}"', TEST_ID.findall(line))
            for n, line in enumerate(text.splitlines(), 1) if TEST_ID.search(line)]


def guard() -> GuaranteeGuard:
    """The guard of this repository's documents; one that cannot be read fails the session
    at its end (with the reason) instead of stopping pytest before any test runs."""
    try:
        return GuaranteeGuard(all_claims())
    except (OSError, ValueError) as e:
        return GuaranteeGuard([], errors=[f'the claims could not be read: {e}'])


def all_claims() -> list[Claim]:
    claims = parse_guarantees(GUARANTEES_DOC.read_text(encoding='utf-8'))
    for doc in CLAIM_DOCS:
        claims += parse_claim_doc(doc.read_text(encoding='utf-8'),
                                  str(doc.relative_to(REPO)))
    return claims


def cases_of(test_id: str, collected) -> list[str]:
    """The collected node ids of a test: itself, or every case of a parametrized one."""
    return [c for c in collected if c == test_id or c.startswith(test_id + '[')]


def _outcome(reports: list) -> str:
    """``passed``, or what went wrong, from a test's setup/call/teardown reports."""
    if not reports:
        return 'not run'
    for r in reports:
        if hasattr(r, 'wasxfail'):
            return 'xpassed' if r.passed else 'xfailed'
        if r.skipped:
            reason = r.longrepr[2] if isinstance(r.longrepr, tuple) else r.longrepr
            return f'skipped ({reason})'
        if r.failed:
            return 'failed' if r.when == 'call' else f'errored in {r.when}'
    if not any(r.when == 'call' for r in reports):
        return 'not run'
    return 'passed'


def failures(claims: list[Claim], collected, reports: dict[str, list]) -> list[str]:
    """One message per claim backing that does not hold: a file named without a test, a
    named test not collected, a case of it not run or not passed."""
    out = []
    for claim in claims:
        for path in claim.files_only:
            out.append(f'{claim.where}: names the file {path} but no test in it')
        if not claim.ids and not claim.files_only:
            out.append(f'{claim.where}: names no test')
        for test_id in claim.ids:
            cases = cases_of(test_id, collected)
            if not cases:
                out.append(f'{claim.where}: {test_id} was not collected')
            for case in cases:
                outcome = _outcome(reports.get(case, []))
                if outcome != 'passed':
                    out.append(f'{claim.where}: {case} {outcome}')
    return out


def full_session(config) -> bool:
    """Whether the session runs the whole suite: no selection by keyword, mark, deselect,
    last-failed or stepwise, and every argument is the tests directory or one above it."""
    opt = config.option
    if (getattr(opt, 'keyword', '') or getattr(opt, 'markexpr', '')
            or getattr(opt, 'deselect', None) or getattr(opt, 'lf', False)
            or getattr(opt, 'stepwise', False) or getattr(opt, 'stepwise_skip', False)
            or getattr(opt, 'ignore', None) or getattr(opt, 'ignore_glob', None)
            or getattr(opt, 'collectonly', False)):
        return False
    if config.args_source == pytest.Config.ArgsSource.TESTPATHS:
        return True  # no argument: pyproject's testpaths, the tests directory
    tests = REPO / 'tests'
    for arg in config.args:
        if '::' in arg:
            return False
        path = (Path(config.invocation_params.dir) / arg).resolve()
        if path != tests and path not in tests.parents:
            return False
    return True


class GuaranteeGuard:
    """pytest plugin: fail the session when a claim's tests did not all run and pass."""

    def __init__(self, claims: list[Claim], errors: list[str] = ()):
        self.claims = claims
        self.errors = list(errors)  # documents that could not be read: the session fails
        self.collected: set[str] = set()
        self.reports: dict[str, list] = {}
        self.messages: list[str] = []

    def pytest_collection_finish(self, session):
        self.collected.update(item.nodeid for item in session.items)

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_node_collection_finished(self, node, ids):
        self.collected.update(ids)

    def pytest_runtest_logreport(self, report):
        self.reports.setdefault(report.nodeid, []).append(report)

    def pytest_sessionfinish(self, session):
        if session.shouldstop or session.shouldfail:
            return  # stopped early (-x, --maxfail, a crash): the failure is already reported
        self.messages = self.errors + failures(self.claims, self.collected, self.reports)
        if self.messages and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter):
        if self.messages:
            terminalreporter.section('claims without a passing test', sep='=', red=True)
            for message in self.messages:
                terminalreporter.line(message, red=True)
            terminalreporter.line(
                'every test a claim names must be collected, run and pass in a full-suite '
                'session (docs/guarantees.md, docs/status.md, docs/reliability.md)', red=True)
