"""Regenerate the README's results table from the studies' JSON.

    python tools/analysis/results_table.py [--work-dir work_dirs/studies] [--readme README.md]
    python tools/analysis/results_table.py --publish work_dirs/studies --work-dir docs/studies
    python tools/analysis/results_table.py --publish-study work_dirs/studies/W/X.json \
        --work-dir docs/studies

Reads selection_*.json, search_cost_*.json and lowrank_*.json under --work-dir (the largest
preset of each), times the backbone latency ratio of each selected subnet (--no-latency to
skip), and rewrites the block between <!-- results:begin --> and <!-- results:end -->.
--publish first copies the studies found under its directory (JSON, Markdown, plot and the
subnet files the JSON names, paths made relative to the checkout) into --work-dir.
--publish-study copies one study JSON so (also one the table does not read: a task check,
the accuracy-latency study) and leaves the README alone.
"""
import sys

import torch

from sidt_mmdet.studies.results import README_PAGE, publish, publish_study, update_readme
from sidt_mmdet.utils.cli import doc_parser, run_tool


def parse_args(argv=None):
    parser = doc_parser(__doc__)
    parser.add_argument('--work-dir', default='work_dirs/studies')
    parser.add_argument('--readme', default=README_PAGE)
    parser.add_argument('--no-latency', action='store_true', help='leave the latency column out')
    parser.add_argument('--threads', type=int, default=1, help='torch threads for the timing')
    parser.add_argument('--publish', metavar='SRC_WORK_DIR',
                        help='copy the studies under this work dir into --work-dir first')
    parser.add_argument('--publish-study', metavar='JSON', nargs='+',
                        help='only copy these study JSON files into --work-dir')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)

    def run():
        if args.publish_study:
            for src in args.publish_study:
                print(f'published {publish_study(src, args.work_dir)}')
            return
        if args.publish:
            for path in publish(args.publish, args.work_dir):
                print(f'published {path}')
        print(update_readme(args.work_dir, args.readme, latency=not args.no_latency))
    return run_tool('results_table.py', run)


if __name__ == '__main__':
    sys.exit(main())
