"""The README and docs/*.md: every relative link resolves, every generated block is where
its tool writes it."""
import re
from pathlib import Path

import pytest
from helpers import REPO

PAGES = [REPO / 'README.md', *sorted((REPO / 'docs').glob('*.md'))]

_FENCE = re.compile(r'^\s*(```|~~~)')
_LINK = re.compile(r'!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)')
_HEADING = re.compile(r'^(#{1,6})\s+(.*?)\s*#*\s*$')


def _prose_lines(text: str):
    """The lines outside fenced code blocks, with inline code spans blanked out."""
    fenced = False
    for number, line in enumerate(text.splitlines(), 1):
        if _FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            yield number, re.sub(r'`[^`]*`', '``', line)


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: the rendered text (code marks and link targets
    dropped) lower-cased, everything but letters, digits, spaces, '-' and '_' removed,
    spaces turned into '-'."""
    text = re.sub(r'!?\[([^\]]*)\]\([^)]*\)', r'\1', heading)
    text = re.sub(r'<[^>]+>', '', text).replace('`', '').lower()
    return re.sub(r'[^\w\- ]', '', text).replace(' ', '-')


def anchors(path: Path) -> set[str]:
    """Every heading anchor of a Markdown file (repeated slugs get -1, -2, ... as on
    GitHub)."""
    seen: dict[str, int] = {}
    out = set()
    fenced = False
    for line in path.read_text(encoding='utf-8').splitlines():
        if _FENCE.match(line):
            fenced = not fenced
            continue
        m = None if fenced else _HEADING.match(line)
        if m:
            slug = github_slug(m.group(2))
            n = seen.get(slug, 0)
            seen[slug] = n + 1
            out.add(slug if n == 0 else f'{slug}-{n}')
    return out


def relative_links(path: Path):
    for number, line in _prose_lines(path.read_text(encoding='utf-8')):
        for target in _LINK.findall(line):
            if not re.match(r'^[a-z][a-z0-9+.-]*:', target, re.I):  # http:, mailto:, ...
                yield number, target


def test_github_slugs():
    assert github_slug('Checkpoints on torch >= 2.6') == 'checkpoints-on-torch--26'
    assert github_slug('Deploy (ONNX)') == 'deploy-onnx'
    assert github_slug('Pipeline (search → select → export → retrain)') == \
        'pipeline-search--select--export--retrain'
    assert github_slug('`SIDTViT` and the [pyramid](x.md)') == 'sidtvit-and-the-pyramid'


def test_the_link_finder_skips_code():
    page = 'a [x](one.md) `[y](two.md)`\n```\n[z](three.md)\n```\n![p](four.png#f)\n'
    lines = list(_prose_lines(page))
    found = [t for _, line in lines for t in _LINK.findall(line)]
    assert found == ['one.md', 'four.png#f']


@pytest.mark.parametrize('page', PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_resolves(page):
    """A link to a file that was moved or renamed, or to a heading that was reworded, fails
    here with the page, the line and the target."""
    broken = []
    for number, target in relative_links(page):
        file, _, anchor = target.partition('#')
        dest = (page.parent / file).resolve() if file else page
        where = f'{page.relative_to(REPO)}:{number}: {target}'
        if not dest.exists():
            broken.append(f'{where} (no such file)')
        elif anchor and dest.suffix == '.md' and anchor not in anchors(dest):
            broken.append(f'{where} (no heading with that anchor in {dest.name})')
    assert not broken, '\n'.join(broken)


def test_every_page_is_linked_from_the_readme():
    readme = REPO / 'README.md'
    linked = {(readme.parent / t.partition('#')[0]).resolve()
              for _, t in relative_links(readme) if t.partition('#')[0]}
    orphans = [p.name for p in PAGES[1:] if p.resolve() not in linked]
    assert not orphans, f'docs pages the README does not link to: {orphans}'



def test_generated_blocks_live_where_their_tools_write():
    """Each generated block is on exactly one page: the one its tool writes by default, or,
    for a tool whose target is a flag without a default, the one its commands name."""
    from sidt_mmdet.apis import demo
    from sidt_mmdet.export import onnx_bench
    from sidt_mmdet.studies import latency, results

    blocks = {
        'results': (results.BEGIN, results.END, results.README_PAGE),
        'onnx-latency': (onnx_bench.README_BEGIN, onnx_bench.README_END,
                         onnx_bench.README_PAGE),
        # --readme README.md in the commands of docs/benchmarks.md
        'latency-study': (latency.README_BEGIN, latency.README_END, 'README.md'),
        'latency-scaling': (latency.SCALING_BEGIN, latency.SCALING_END, 'README.md'),
        # --readme docs/cifar100.md, in the block's own first line
        'demo-cifar': (demo.CIFAR_README_BEGIN, demo.CIFAR_README_END, 'docs/cifar100.md'),
    }
    assert blocks['results'][2] == 'README.md'
    assert blocks['onnx-latency'][2] == 'docs/deploy.md'
    assert '--readme docs/cifar100.md' in demo.CIFAR_README_BEGIN
    for name, (begin, end, target) in blocks.items():
        holders = [p.relative_to(REPO).as_posix() for p in PAGES
                   if begin in p.read_text(encoding='utf-8')]
        assert holders == [target], f'{name} block on {holders}, its tool writes {target}'
        text = (REPO / target).read_text(encoding='utf-8')
        assert text.count(begin) == 1 and text.count(end) == 1, name
        assert text.index(begin) < text.index(end), name
