"""Run several ``tools/train.py`` / ``tools/test.py`` invocations in one process, so that a
table of Runner cases pays the interpreter and import start-up once.

Run by the integration tests as ``python tests/tool_driver.py CASES_JSON OUT_JSON`` where
CASES_JSON is a list of ``[tool, argv]`` (tool ``train`` or ``test``). No script is loaded
(tests/unit/test_tools_are_thin.py): the tools are argparse plus the library calls of
``sidt_mmdet.utils.launch``, and each case makes those calls as the tool's ``main`` does,
for the flags the tests use (``--work-dir``, ``--cfg-options``; ``--resume CKPT`` of
train.py; the checkpoint and ``--out`` of test.py). :func:`check_tools` fails the run if a
tool no longer makes them. Each case records what the process would have shown: its exit
status (1 for an uncaught exception) and the traceback Python would have printed last on
stderr. The results go to OUT_JSON (stdout carries the Runner's logs), in order.

The tests keep at least one case of each table as a real ``python tools/<tool>.py``
process, which proves the exit status and that nothing is printed after the traceback.
"""
from __future__ import annotations

import argparse
import json
import sys
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# What each tool's main does with the flags the tests use, as the lines of its source.
TOOL_LINES = {
    'train': ('cfg = load_tool_config(args)', 'cfg.resume = True',
              'cfg.load_from = args.resume', 'build_runner(cfg).train()',
              'close_process_group()'),
    'test': ('cfg = load_tool_config(args)', 'cfg.load_from = args.checkpoint',
             'runner = build_runner(cfg)',
             'runner.test_evaluator.metrics.append(DumpDetResults(out_file_path=args.out))',
             'runner.test()', 'close_process_group()'),
}


def check_tools() -> None:
    for tool, lines in TOOL_LINES.items():
        source = (REPO / 'tools' / f'{tool}.py').read_text(encoding='utf-8')
        missing = [line for line in lines if line not in source]
        if missing:
            sys.exit(f'tools/{tool}.py no longer does {missing}: update tests/tool_driver.py')


def _parse(tool: str, argv: list[str]) -> argparse.Namespace:
    from sidt_mmdet.utils.launch import add_runner_args

    parser = argparse.ArgumentParser(prog=f'{tool}.py')
    parser.add_argument('config')
    if tool == 'test':
        parser.add_argument('checkpoint')
        parser.add_argument('--out')
    else:
        parser.add_argument('--resume')
    add_runner_args(parser)
    return parser.parse_args(argv)


def _run(tool: str, argv: list[str]) -> None:
    from sidt_mmdet.utils.launch import build_runner, close_process_group, load_tool_config

    args = _parse(tool, argv)
    cfg = load_tool_config(args)
    try:
        if tool == 'train':
            if args.resume is not None:
                cfg.resume = True
                cfg.load_from = args.resume
            build_runner(cfg).train()
        else:
            from mmdet.evaluation import DumpDetResults

            cfg.load_from = args.checkpoint
            runner = build_runner(cfg)
            if args.out is not None:
                runner.test_evaluator.metrics.append(DumpDetResults(out_file_path=args.out))
            runner.test()
    finally:
        close_process_group()


def run_case(tool: str, argv: list[str]) -> dict:
    try:
        _run(tool, argv)
    except SystemExit as e:
        return dict(returncode=e.code if isinstance(e.code, int) else 1,
                    stderr='' if e.code is None or isinstance(e.code, int) else f'{e.code}\n')
    except BaseException as e:  # noqa: BLE001 - what the interpreter would print
        return dict(returncode=1, stderr=''.join(traceback.format_exception(e)))
    return dict(returncode=0, stderr='')


def main() -> None:
    check_tools()
    import sidt_mmdet  # noqa: F401  (as the tools import it: components, safe loading)

    cases = json.loads(sys.argv[1])
    results = []
    for tool, argv in cases:
        results.append(run_case(tool, argv))
        sys.stdout.flush()
    Path(sys.argv[2]).write_text(json.dumps(results))


if __name__ == '__main__':
    main()
