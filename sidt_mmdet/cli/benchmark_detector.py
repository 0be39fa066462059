"""``tools/analysis/benchmark_detector.py``: its flags and its one call,
``sidt_mmdet.apis.benchmark.benchmark_detectors`` (and the table it prints)."""
from __future__ import annotations

from ..apis import benchmark
from ..apis.benchmark import ModelSpec, benchmark_detectors, format_benchmark
from ..utils.cli import ToolError, doc_parser, int_at_least, positive_int, run_tool

__all__ = ['build_parser', 'main']


def build_parser(prog: str = 'benchmark_detector.py', doc: str | None = None):
    from mmengine.config import DictAction
    parser = doc_parser(doc or benchmark.__doc__, prog)
    parser.add_argument('config', help='detector config')
    parser.add_argument('checkpoint', nargs='?', default=None,
                        help='its checkpoint (default: none, random weights)')
    parser.add_argument('--subnet', default=None,
                        help="a subnet file: build CONFIG's backbone pruned on it")
    parser.add_argument('--compare', nargs='+', metavar=('CONFIG', 'CHECKPOINT'), default=None,
                        help='a second model (config, optional checkpoint) timed interleaved '
                             'with the first; ratios are second / first')
    parser.add_argument('--compare-subnet', default=None,
                        help="a subnet file for the --compare model's backbone")
    parser.add_argument('--device', default=None,
                        help="cpu, cuda, cuda:1 (default: cuda if available, else cpu)")
    parser.add_argument('--iters', type=positive_int, default=20,
                        help='timed rounds (default: %(default)s)')
    parser.add_argument('--warmup', type=int_at_least(0), default=3,
                        help='untimed rounds first (default: %(default)s)')
    parser.add_argument('--batch', type=positive_int, default=1, help='images per call')
    parser.add_argument('--input-size', type=positive_int, nargs=2, metavar=('H', 'W'),
                        default=None, help="synthetic image size (default: the config's "
                                           'test Resize)')
    parser.add_argument('--dataset', action='store_true',
                        help="time on the config's test dataloader instead of synthetic "
                             'images')
    parser.add_argument('--threads', type=positive_int, default=None, help='torch threads')
    parser.add_argument('--out', default=None, help='write the figures as JSON here')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings (both models), as in tools/train.py')
    return parser


def _run(args) -> None:
    specs = [ModelSpec(args.config, args.checkpoint, args.subnet)]
    if args.compare:
        if len(args.compare) > 2:
            raise ToolError(f'--compare: expected CONFIG [CHECKPOINT], got {args.compare}')
        specs.append(ModelSpec(args.compare[0], (args.compare[1:] or [None])[0],
                               args.compare_subnet))
    elif args.compare_subnet:
        raise ToolError('--compare-subnet needs --compare CONFIG [CHECKPOINT]')
    result = benchmark_detectors(specs, device=args.device, iters=args.iters,
                                 warmup=args.warmup, batch=args.batch,
                                 input_size=args.input_size, dataset=args.dataset,
                                 threads=args.threads, cfg_options=args.cfg_options,
                                 out=args.out)
    print(format_benchmark(result), flush=True)
    if args.out:
        print(f'wrote {args.out}')


def main(argv=None, prog: str = 'benchmark_detector.py', doc: str | None = None) -> int:
    """Parse ``argv`` and benchmark; the exit code follows ``sidt_mmdet.utils.cli``."""
    return run_tool(prog, _run, build_parser(prog, doc).parse_args(argv))
