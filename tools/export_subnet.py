"""Export a searched SIDTViT model: select a subnet for a budget, prune it, write the result.

    python tools/export_subnet.py CONFIG CHECKPOINT --keep-ratio 0.6 -o OUT_DIR

The flags, the budgets and what OUT_DIR receives: ``--help`` (the library call is
``sidt_mmdet.apis.export_subnet``).
"""
import sys

from sidt_mmdet.cli.export_subnet import main

if __name__ == '__main__':
    sys.exit(main(prog='export_subnet.py'))
