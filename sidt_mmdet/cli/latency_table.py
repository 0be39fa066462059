"""``tools/analysis/latency_table.py``: its flags and its one call,
``sidt_mmdet.apis.latency_table.latency_table_from_config``."""
from __future__ import annotations

from ..apis import latency_table
from ..apis.latency_table import latency_table_from_config
from ..utils.cli import doc_parser, int_at_least, positive_int, run_tool

__all__ = ['build_parser', 'main']


def build_parser(prog: str = 'latency_table.py', doc: str | None = None):
    from mmengine.config import DictAction
    parser = doc_parser(doc or latency_table.__doc__, prog)
    parser.add_argument('config', help='a config with a SIDTViT backbone (any mode)')
    parser.add_argument('--out', required=True, help='the table JSON (reused if it fits)')
    parser.add_argument('--input-size', type=int_at_least(1), nargs=2, metavar=('H', 'W'),
                        help='image size (default: the backbone img_size)')
    parser.add_argument('--batch', type=positive_int, default=1)
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--dtype', default='float32', choices=('float32', 'float16',
                                                                'bfloat16'))
    parser.add_argument('--threads', type=positive_int, default=None,
                        help='CPU threads (default: torch\'s)')
    parser.add_argument('--round-to', type=positive_int, default=8,
                        help='grid widths are multiples of this (the selection rounding)')
    parser.add_argument('--iters', type=positive_int, default=5, help='timed calls per point')
    parser.add_argument('--check', type=int_at_least(0), default=0,
                        help='held-out random subnets to check the table on')
    parser.add_argument('--budgets', type=float, nargs='+', default=(), metavar='RATIO',
                        help='select at these latency budgets (fractions of dense) on random '
                             'masks and measure each against the dense backbone')
    parser.add_argument('--loop-rounds', type=int_at_least(0), default=4,
                        help='with --budgets, also select each budget in closed loop: '
                             'measure, re-select at a corrected budget, at most this many '
                             'selections (0: open loop only)')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    return parser


def main(argv=None, prog: str = 'latency_table.py', doc: str | None = None) -> int:
    args = vars(build_parser(prog, doc).parse_args(argv))
    return run_tool(prog, latency_table_from_config, args.pop('config'), args.pop('out'),
                    **args)
