"""Build (or reuse) the latency table of a config's SIDTViT on this machine and check its
predictions on held-out subnets; the table is what ``export_subnet.py --latency`` reads.

    python tools/analysis/latency_table.py CONFIG --input-size 224 224 --batch 8 \\
        --threads 2 --out work_dirs/latency/vit-s_224_b8.json --check 10

The library call is ``sidt_mmdet.apis.latency_table``; the model is in docs/latency.md.
"""
import sys

from sidt_mmdet.cli.latency_table import main

if __name__ == '__main__':
    sys.exit(main(prog='latency_table.py', doc=__doc__))
