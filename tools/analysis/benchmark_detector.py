"""Time a whole detector (mmdet's test_step: preprocessor, backbone, neck, heads, NMS), and
its backbone and backbone + neck, on CPU or CUDA; dense against pruned, interleaved.

    # synthetic images at the config's test size, no dataset
    python tools/analysis/benchmark_detector.py DENSE_CFG DENSE.pth \\
        --compare RETRAIN_CFG RETRAIN.pth --iters 20
    # a pruned model from the dense config and an export directory
    python tools/analysis/benchmark_detector.py DENSE_CFG DENSE.pth \\
        --compare DENSE_CFG EXPORT/pruned.pth --compare-subnet EXPORT/subnet.json
    # the config's test dataloader instead, on the second GPU, figures as JSON
    python tools/analysis/benchmark_detector.py CFG CKPT --dataset --device cuda:1 --out b.json

Prints, per model and row, ms per image and images per second (mmdet's fps) from the median
of the timed rounds, with the IQR, min and max; then a Markdown table with the second/first
ratio per row, marked untrusted when the load average exceeded the cores or the spread
exceeds the difference (the library call is ``sidt_mmdet.apis.benchmark``).
"""
import sys

from sidt_mmdet.cli.benchmark_detector import main

if __name__ == '__main__':
    sys.exit(main(prog='benchmark_detector.py', doc=__doc__))
