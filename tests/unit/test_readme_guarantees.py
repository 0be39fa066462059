"""The "What the tests guarantee" table (docs/guarantees.md) names tests that exist."""
import re

from helpers import REPO


def test_every_claim_names_existing_tests():
    """Catches a claim whose test was renamed, moved or deleted (the claim would stand with
    nothing behind it), and a claim line that names no test at all."""
    text = (REPO / 'docs' / 'guarantees.md').read_text()
    start = text.index('# What the tests guarantee')
    end = text.find('\n## ', start + 1)
    section = text[start:end if end >= 0 else len(text)]
    rows = [line for line in section.splitlines()
            if line.startswith('| ') and not line.startswith('| claim')]
    assert len(rows) >= 20
    for row in rows:
        refs = re.findall(r'`([^`]+)`', row.rsplit(' | ', 1)[-1])
        assert refs, f'claim without a test: {row}'
        path = None
        for ref in refs:
            if ref.startswith('::'):
                name = ref[2:]
            elif '::' in ref:
                path, name = ref.split('::')
            else:
                path, name = ref.split(' ')[0], None
            assert path is not None, row
            file = REPO / 'tests' / path
            assert file.is_file(), f'{file} (named in docs/guarantees.md) does not exist'
            if name:
                assert re.search(rf'^def {name}\(', file.read_text(), re.M), \
                    f'{path}::{name} (named in docs/guarantees.md) does not exist'
