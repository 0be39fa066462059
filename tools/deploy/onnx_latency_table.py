"""Regenerate the ONNX latency table of docs/deploy.md from a benchmark JSON.

    python tools/deploy/onnx_latency_table.py \\
        work_dirs/onnx-bench/vitdet-b-kr0.6_512.latency.json [--readme docs/deploy.md]

The JSON is what `tools/deploy/export_onnx.py ... --benchmark` writes; the block between
<!-- onnx-latency:begin ... --> and <!-- onnx-latency:end --> is rewritten from it.
"""
import sys

from sidt_mmdet.export.onnx_bench import README_PAGE, update_latency_readme
from sidt_mmdet.utils.cli import doc_parser, run_tool


def parse_args(argv=None):
    parser = doc_parser(__doc__)
    parser.add_argument('latency_json', help='the .latency.json of export_onnx.py --benchmark')
    parser.add_argument('--readme', default=README_PAGE,
                        help='the Markdown file whose onnx-latency block is rewritten (the '
                             'table lives in docs/deploy.md; default: %(default)s)')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    return run_tool('onnx_latency_table.py', lambda: print(
        update_latency_readme(args.latency_json, args.readme)))


if __name__ == '__main__':
    sys.exit(main())
