"""Export the dense or pruned SIDTViT backbone of a config (optionally with its neck) to ONNX.

    python tools/deploy/export_onnx.py CONFIG CHECKPOINT -o model.onnx --input-size 1024 1024
    python tools/deploy/export_onnx.py CONFIG pruned.pth --subnet subnet.json -o model.onnx \\
        --input-size 1024 1024 --dynamic --with-neck --benchmark

CHECKPOINT is a checkpoint of a model built from CONFIG (``backbone.*`` and, with
--with-neck, ``neck.*`` tensors; every other module is ignored); a pruned checkpoint needs
the subnet it was pruned to (the retrain config names it, or pass --subnet).

After writing, onnxruntime must reproduce PyTorch to --atol at the export size and, with
--dynamic, at a second size that needs window and patch padding; the tool prints the
largest difference and leaves no file when the check fails. A fixed-size graph takes only
--input-size (a multiple of the patch size); a --dynamic one takes any batch and size.

--benchmark also times the exported model against its dense counterpart under onnxruntime
on the CPU (fixed-size graphs at --input-size) and writes the figures as JSON.
Needs the deploy dependency group: pip install 'sidt-mmdet[deploy]'.
"""
from __future__ import annotations

import argparse
import sys

from sidt_mmdet.export.onnx import DEFAULT_OPSET, SUPPORTED_OPSETS, export_onnx_from_config
from sidt_mmdet.utils.cli import doc_parser, positive_int, run_tool

PROG = 'export_onnx.py'


def log(msg: str) -> None:
    print(f'[export_onnx] {msg}', flush=True)


def parse_args(argv=None) -> argparse.Namespace:
    parser = doc_parser(__doc__, PROG)
    parser.add_argument('config', help='model config with a SIDTViT backbone (dense or pruned)')
    parser.add_argument('checkpoint', help='checkpoint of that model')
    parser.add_argument('-o', '--output', required=True, help='the .onnx file to write')
    parser.add_argument('--subnet', help='build the backbone pruned to this subnet file')
    parser.add_argument('--input-size', type=positive_int, nargs=2, metavar=('H', 'W'),
                        help='export (and check) size; default: the backbone img_size')
    parser.add_argument('--batch', type=positive_int, default=1,
                        help='batch size to export and check at (default: %(default)s)')
    parser.add_argument('--dynamic', action='store_true',
                        help='dynamic batch, height and width (one graph for any size)')
    parser.add_argument('--opset', type=int, default=DEFAULT_OPSET,
                        help=f'ONNX opset, {SUPPORTED_OPSETS[0]}..{SUPPORTED_OPSETS[-1]} '
                             '(default: %(default)s)')
    parser.add_argument('--with-neck', action='store_true',
                        help='export backbone + neck (the pyramid levels) instead of the '
                             'backbone map')
    parser.add_argument('--atol', type=float, default=1e-4,
                        help='largest onnxruntime-vs-PyTorch difference accepted '
                             '(default: %(default)g)')
    parser.add_argument('--benchmark', action='store_true',
                        help='time the model against its dense counterpart (onnxruntime CPU)')
    parser.add_argument('--benchmark-json',
                        help='where --benchmark writes its figures (default: OUTPUT with '
                             '.latency.json)')
    parser.add_argument('--threads', type=positive_int,
                        help="onnxruntime intra-op threads for --benchmark (default: "
                             "onnxruntime's choice)")
    parser.add_argument('--repeats', type=positive_int, default=20,
                        help='timed runs per model for --benchmark (default: %(default)s)')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    return run_tool(PROG, export_onnx_from_config, args.config, args.checkpoint, args.output,
                    subnet=args.subnet, input_size=args.input_size, dynamic=args.dynamic,
                    opset=args.opset, with_neck=args.with_neck, batch=args.batch,
                    atol=args.atol, benchmark=args.benchmark,
                    benchmark_json=args.benchmark_json, threads=args.threads,
                    repeats=args.repeats, log=log)


if __name__ == '__main__':
    sys.exit(main())
