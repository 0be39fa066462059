"""Test (and evaluate) a detector: mmdet's tools/test.py with sidt_mmdet imported (same flags:
``--help``).

    python tools/test.py CONFIG CKPT [--work-dir DIR] [--out preds.pkl] [--show-dir DIR] [--tta]

The call behind it is ``sidt_mmdet.cli.runner_tools.test_main`` (also under torchrun:
tools/dist_test.sh).
"""
import sys

from sidt_mmdet.cli.runner_tools import test_main

if __name__ == '__main__':
    sys.exit(test_main(sys.argv[1:], prog='test.py'))
