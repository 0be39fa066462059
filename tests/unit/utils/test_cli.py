"""CLI value types: argparse names the flag and exits 2; run_tool gives 1 and one line (130
and one line on Ctrl-C)."""
from __future__ import annotations

import argparse
import os

import pytest

from sidt_mmdet.utils.cli import (
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    ToolError,
    count,
    doc_parser,
    int_at_least,
    open_ratio,
    positive_int,
    ratio,
    run_tool,
)
from sidt_mmdet.utils.fileio import atomic_output_dir


@pytest.mark.parametrize('text, value', [('1500000', 1500000), ('1.5e6', 1500000),
                                         ('1.5M', 1500000), ('300G', 300 * 10 ** 9),
                                         ('2k', 2000), (' 12M ', 12 * 10 ** 6)])
def test_count_suffixes(text, value):
    assert count(text) == value


@pytest.mark.parametrize('text, value', [('1', 1.0), ('0.6', 0.6), ('1e-3', 0.001)])
def test_ratio_accepts_the_interval(text, value):
    assert ratio(text) == value


def test_open_ratio_excludes_both_ends(capsys):
    assert open_ratio('0.4') == 0.4
    parser = argparse.ArgumentParser(prog='t')
    parser.add_argument('--prune', type=open_ratio)
    for bad in ('0', '1', 'nan', '-0.1'):
        with pytest.raises(SystemExit):
            parser.parse_args(['--prune', bad])
        assert 'argument --prune: expected a value in (0, 1)' in capsys.readouterr().err


def _parser():
    parser = argparse.ArgumentParser(prog='t')
    parser.add_argument('--keep-ratio', type=ratio)
    parser.add_argument('--params', type=count)
    parser.add_argument('--round-to', type=int_at_least(1))
    parser.add_argument('--rank', type=positive_int)
    return parser


@pytest.mark.parametrize('flag, value, message', [
    ('--keep-ratio', '0', r'expected a value in (0, 1], got 0'),
    ('--keep-ratio', '1.5', r'expected a value in (0, 1], got 1.5'),
    ('--keep-ratio', 'nan', r'expected a value in (0, 1], got nan'),
    ('--keep-ratio', 'half', "expected a number in (0, 1], got 'half'"),
    ('--params', '0', 'expected a positive target'),
    ('--params', '-5G', 'expected a positive target'),
    ('--params', 'lots', 'expected a count such as'),
    ('--params', '1.5X', 'expected a count such as'),
    ('--round-to', '0', 'must be an integer >= 1, got 0'),
    ('--rank', 'x', 'expected a positive integer'),
])
def test_bad_values_name_the_flag(capsys, flag, value, message):
    with pytest.raises(SystemExit) as exc:
        _parser().parse_args([f'{flag}={value}'])
    assert exc.value.code == EXIT_USAGE
    err = capsys.readouterr().err
    assert f'argument {flag}: {message}' in err, err


def test_run_tool_exit_codes(capsys):
    assert run_tool('t.py', lambda: None) == EXIT_OK

    def refuse(kind):
        raise kind('the file x.json: expected y')

    for kind in (ToolError, ValueError, FileNotFoundError):
        assert run_tool('t.py', refuse, kind) == EXIT_ERROR
        assert capsys.readouterr().err == 't.py: error: the file x.json: expected y\n'
    with pytest.raises(KeyError):  # a bug keeps its traceback
        run_tool('t.py', refuse, KeyError)


def test_ctrl_c_is_one_line_and_exit_130(capsys):
    def interrupted():
        raise KeyboardInterrupt

    assert EXIT_INTERRUPTED == 130
    assert run_tool('t.py', interrupted) == EXIT_INTERRUPTED
    captured = capsys.readouterr()
    assert captured.err == 't.py: interrupted: Ctrl-C (SIGINT), stopped before it finished\n'
    assert captured.out == ''


def test_ctrl_c_while_writing_an_output_leaves_nothing_and_says_so(tmp_path, capsys):
    out = tmp_path / 'export'

    def write():
        with atomic_output_dir(out) as tmp:
            with open(os.path.join(tmp, 'pruned.pth'), 'wb') as f:
                f.write(b'partial')
            raise KeyboardInterrupt

    assert run_tool('t.py', write) == EXIT_INTERRUPTED
    assert capsys.readouterr().err == \
        f't.py: interrupted: Ctrl-C (SIGINT), nothing was written to {out}\n'
    assert os.listdir(tmp_path) == []


def test_doc_parser_takes_its_help_from_the_docstring():
    doc = 'Do one thing.\n\n    python tools/x.py --flag   # an example\n\nMore words.'
    parser = doc_parser(doc, prog='x.py')
    assert parser.prog == 'x.py' and parser.description == 'Do one thing.'
    # the examples keep their layout in --help
    assert parser.epilog == '    python tools/x.py --flag   # an example\n\nMore words.'
    assert '    python tools/x.py --flag   # an example\n' in parser.format_help()
