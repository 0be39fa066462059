"""Train a detector: mmdet's tools/train.py with sidt_mmdet imported (same flags: ``--help``).

    python tools/train.py CONFIG [--work-dir DIR] [--resume [CKPT]] [--amp] [--auto-scale-lr]

The call behind it is ``sidt_mmdet.cli.runner_tools.train_main`` (also under torchrun:
tools/dist_train.sh).
"""
import sys

from sidt_mmdet.cli.runner_tools import train_main

if __name__ == '__main__':
    sys.exit(train_main(sys.argv[1:], prog='train.py'))
