"""Export the dense or pruned SIDTViT backbone of a config (optionally with its neck) to ONNX.

    python tools/deploy/export_onnx.py CONFIG CHECKPOINT -o model.onnx --input-size 1024 1024
    python tools/deploy/export_onnx.py CONFIG pruned.pth --subnet subnet.json -o model.onnx \\
        --input-size 1024 1024 --dynamic --with-neck --benchmark

CHECKPOINT is a checkpoint of a model built from CONFIG (``backbone.*`` and, with
--with-neck, ``neck.*`` tensors; every other module is ignored); a pruned checkpoint needs
the subnet it was pruned to (the retrain config names it, or pass --subnet).
After writing, onnxruntime must reproduce PyTorch to --atol at the export size and, with
--dynamic, at a second size that needs window and patch padding; the tool prints the
largest difference and leaves no file when the check fails.
--benchmark also times the exported model against its dense counterpart under
onnxruntime on the CPU (fixed-size graphs at --input-size) and writes the figures as JSON.
"""
from __future__ import annotations

import argparse
import os.path as osp
import sys

from sidt_mmdet.export.onnx import (
    DEFAULT_OPSET,
    SUPPORTED_OPSETS,
    OnnxExportError,
    benchmark_onnx,
    build_export_model,
    dense_counterpart,
    export_onnx,
)

PROG = 'export_onnx.py'


def log(msg: str) -> None:
    print(f'[export_onnx] {msg}', flush=True)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=PROG, description=__doc__.split('\n\n')[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog='\n\n'.join(__doc__.split('\n\n')[1:]))
    parser.add_argument('config', help='model config with a SIDTViT backbone (dense or pruned)')
    parser.add_argument('checkpoint', help='checkpoint of that model')
    parser.add_argument('-o', '--output', required=True, help='the .onnx file to write')
    parser.add_argument('--subnet', help='build the backbone pruned to this subnet file')
    parser.add_argument('--input-size', type=int, nargs=2, metavar=('H', 'W'),
                        help='export (and check) size; default: the backbone img_size')
    parser.add_argument('--batch', type=int, default=1, help='batch size of the graph '
                        '(dynamic with --dynamic; default: %(default)s)')
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
    parser.add_argument('--threads', type=int, help='onnxruntime intra-op threads for '
                        '--benchmark (default: onnxruntime\'s choice)')
    parser.add_argument('--repeats', type=int, default=20,
                        help='timed runs per model for --benchmark (default: %(default)s)')
    args = parser.parse_args(argv)
    if args.input_size and min(args.input_size) <= 0:
        parser.error(f'argument --input-size: expected positive H W, got {args.input_size}')
    if args.batch < 1:
        parser.error(f'argument --batch: expected an integer >= 1, got {args.batch}')
    if args.repeats < 1:
        parser.error(f'argument --repeats: expected an integer >= 1, got {args.repeats}')
    return args


def run(args: argparse.Namespace) -> dict:
    model = build_export_model(args.config, args.checkpoint, subnet=args.subnet,
                               with_neck=args.with_neck)
    size = tuple(args.input_size) if args.input_size else tuple(model.backbone.img_size)
    result = export_onnx(model, args.output, size, dynamic=args.dynamic, opset=args.opset,
                         batch=args.batch, atol=args.atol, log=log)
    log(f'wrote {result.path} (outputs {", ".join(result.output_names)}; max abs diff '
        f'{max(c.max_diff for c in result.checks):.3g})')
    out = dict(export=result.to_dict())
    if args.benchmark:
        models = dict(dense=dense_counterpart(model)) if model.backbone.mode == 'pruned' else {}
        models[model.backbone.mode] = model
        json_path = args.benchmark_json or osp.splitext(args.output)[0] + '.latency.json'
        bench = benchmark_onnx(models, size, batch=args.batch, opset=args.opset,
                               threads=args.threads, repeats=args.repeats, out_json=json_path,
                               log=log)
        for name, entry in bench['models'].items():
            speed = (f', {entry["speedup_vs_dense"]:.2f}x the dense speed'
                     if 'speedup_vs_dense' in entry else '')
            log(f'latency {name}: {entry["median_ms"]:.2f} ms median{speed}')
        log(f'wrote {json_path}')
        out['benchmark'] = bench
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        run(args)
    except (OnnxExportError, ValueError, OSError) as e:  # SubnetError is a ValueError
        print(f'{PROG}: error: {e}', file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
