"""Run several ``tools/train.py`` / ``tools/test.py`` invocations in one process, so that a
table of Runner cases pays the interpreter and import start-up once.

Run by the integration tests as ``python tests/tool_driver.py CASES_JSON OUT_JSON`` where
CASES_JSON is a list of ``[tool, argv]`` (tool ``train`` or ``test``). Each case calls what
the tool calls, ``sidt_mmdet.cli.runner_tools.train_main`` / ``test_main`` with its argv
(no script is loaded: tests/unit/test_tools_are_thin.py), and records what the process would
have shown: its exit status (1 for an uncaught exception, argparse's 2 for a wrong command
line) and the traceback Python would have printed last on stderr. The results go to
OUT_JSON (stdout carries the Runner's logs), in order.

The tests keep at least one case of each table as a real ``python tools/<tool>.py``
process, which proves the exit status and that nothing is printed after the traceback.
"""
from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path


def run_case(tool: str, argv: list[str]) -> dict:
    from sidt_mmdet.cli.runner_tools import test_main, train_main

    main = {'train': train_main, 'test': test_main}[tool]
    try:
        code = main(argv, prog=f'{tool}.py')
    except SystemExit as e:
        return dict(returncode=e.code if isinstance(e.code, int) else 1,
                    stderr='' if e.code is None or isinstance(e.code, int) else f'{e.code}\n')
    except BaseException as e:  # noqa: BLE001 - what the interpreter would print
        return dict(returncode=1, stderr=''.join(traceback.format_exception(e)))
    return dict(returncode=code, stderr='')


def main() -> None:
    cases = json.loads(sys.argv[1])
    results = []
    for tool, argv in cases:
        results.append(run_case(tool, argv))
        sys.stdout.flush()
    Path(sys.argv[2]).write_text(json.dumps(results))


if __name__ == '__main__':
    main()
