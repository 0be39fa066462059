"""Latency study: pruned SIDTViT vs its dense model, beside Torch-Pruning and timm.

Writes OUT_DIR/latency.json, latency.md and latency.png in one run (models of a group
timed interleaved, median per model; see sidt_mmdet/studies/latency/). No dataset.

    # the README's figures (10-20 min on 2 idle CPU cores, estimate), README table updated
    python tools/analysis/benchmark_latency.py --preset readme --out-dir docs/benchmarks \\
        --readme README.md
    # re-render the Markdown, the PNG and the README table from a JSON, without timing
    python tools/analysis/benchmark_latency.py --render docs/benchmarks/latency.json \\
        --readme README.md
    python tools/analysis/benchmark_latency.py --preset tiny --out-dir /tmp/latency  # seconds
    # ViTDet-B at 512 / 768 / 1024 and batch 1 / 2 / 4: latency, peak memory, search step
    python tools/analysis/benchmark_latency.py --preset scaling --threads 2 \
        --out-dir docs/studies/latency/scaling --readme README.md
    # a CUDA machine's check (8 min at most on one H100): fp16/bf16 rows, latency budgets;
    # refused without CUDA. gpu-tiny runs its code path on a CPU in seconds.
    python tools/analysis/benchmark_latency.py --preset gpu --out-dir work_dirs/latency/gpu
"""
from __future__ import annotations

import argparse
import os
import sys

from sidt_mmdet.studies.latency import (
    CUDA_GOAL,
    PRESETS,
    CudaRequiredError,
    cuda_goal_lines,
    load_study,
    run_latency_study,
    update_readme,
    write_study,
)
from sidt_mmdet.utils.cli import EXIT_ERROR


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--preset', choices=sorted(PRESETS), default='readme',
                        help='tiny: seconds (tests); readme: the README figures; scaling: '
                             'ViTDet-B by input size and batch; gpu: a CUDA machine\'s check '
                             '(gpu-tiny: its code path on a CPU); full: hours')
    parser.add_argument('--out-dir', default='work_dirs/latency',
                        help='where latency.json/.md/.png go (default: %(default)s)')
    parser.add_argument('--render', metavar='JSON', default=None,
                        help='do not time: re-render .md/.png (next to JSON) and the README '
                             'table from this study JSON')
    parser.add_argument('--readme', default=None,
                        help='Markdown file whose latency-study markers get the table')
    parser.add_argument('--iters', type=int, default=None,
                        help="timed rounds per group (default: the preset's)")
    parser.add_argument('--threads', type=int, default=None, help='torch threads')
    parser.add_argument('--no-torch-pruning', action='store_true',
                        help='skip the Torch-Pruning rows even when it is installed')
    parser.add_argument('--no-search-cost', action='store_true',
                        help='skip the search-step time/memory rows')
    args = parser.parse_args(argv)
    if args.iters is not None and args.iters < 1:
        parser.error('--iters must be >= 1')
    if args.render:
        study = load_study(args.render)
        out_dir = os.path.dirname(os.path.abspath(args.render))
    else:
        try:
            study = run_latency_study(args.preset, iters=args.iters, threads=args.threads,
                                      torch_pruning=not args.no_torch_pruning,
                                      search_cost=not args.no_search_cost,
                                      log=lambda m: print(m, file=sys.stderr, flush=True))
        except CudaRequiredError as e:
            print(f'benchmark_latency.py: error: {e}', file=sys.stderr)
            return EXIT_ERROR
        out_dir = args.out_dir
    preset = study['meta']['preset']
    files = write_study(study, out_dir, plot=PRESETS.get(preset, {}).get('plot', True))
    print('wrote ' + ', '.join(p for p in (files.json, files.markdown, files.png) if p))
    if preset.startswith('gpu') and not study['meta'].get('not_run'):
        print('goal (printed, not asserted): ' + CUDA_GOAL, *cuda_goal_lines(study), sep='\n')
    if args.readme:
        image = (os.path.relpath(files.png, os.path.dirname(os.path.abspath(args.readme)))
                 if files.png else None)
        update_readme(args.readme, study, image=image)
        print(f'updated the latency table in {args.readme}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
