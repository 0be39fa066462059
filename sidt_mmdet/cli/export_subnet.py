"""``tools/export_subnet.py``: its flags and its one call, ``sidt_mmdet.apis.export_subnet``
(the help text is the docstring of ``sidt_mmdet.apis.export``)."""
from __future__ import annotations

import argparse
import sys

from mmengine.config import DictAction

from ..apis import export
from ..apis.export import BUDGET_KINDS, export_subnet
from ..search.select import GRANULARITIES, HEAD_WIDTHS, MACS_COUNTS, UNIT_ORDERS
from ..utils.cli import count, int_at_least, ratio, run_tool

__all__ = ['build_parser', 'main']


def _macs_arg(text: str) -> int | str:
    """A MACs budget (a count such as 150G), or the older ``kept``/``executed``."""
    return text if text in MACS_COUNTS else count(text)


def build_parser(prog: str = 'export_subnet.py', doc: str | None = None
                 ) -> argparse.ArgumentParser:
    """The flags of ``tools/export_subnet.py`` (``doc``: its usage text)."""
    doc = doc or export.__doc__
    parser = argparse.ArgumentParser(
        prog=prog, description=doc.split('\n\n')[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog='\n\n'.join(doc.split('\n\n')[1:]))
    parser.add_argument('config', help='the search config the checkpoint was trained with')
    parser.add_argument('checkpoint', help='checkpoint of the search run (with *_mask tensors)')
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument('--keep-ratio', type=ratio,
                        help='fraction of each searched kind of dims to keep, in (0, 1]')
    budget.add_argument('--params', type=count,
                        help='target backbone parameters (e.g. 60M), at most the dense count')
    # outside the group: the older '--flops N --macs executed' still parses (see main)
    parser.add_argument('--macs', type=_macs_arg,
                        help='target backbone MACs per image at --input-size (e.g. 150G)')
    parser.add_argument('--flops', type=count, help=argparse.SUPPRESS)  # --macs' older name
    budget.add_argument('--latency', type=ratio,
                        help='target predicted backbone latency, a fraction of the dense one '
                             '(needs --latency-table)')
    budget.add_argument('--latency-ms', type=float,
                        help='target predicted backbone latency in milliseconds (needs '
                             '--latency-table)')
    budget.add_argument('--subnet', help='prune to this subnet file instead of selecting one')
    parser.add_argument('-o', '--out-dir', required=True, help='directory to create')
    parser.add_argument('--granularity', choices=GRANULARITIES,
                        help="single dims or whole heads ('head_uniform' is the older "
                             "spelling of --head-widths uniform; default: the config's "
                             "sidt_export, else dim)")
    parser.add_argument('--head-widths', choices=HEAD_WIDTHS,
                        help='how the heads of a layer relate: free widths run grouped by '
                             "width, 'uniform' one width chosen per layer, 'equal' every head "
                             "at the widest one's width, 'padded' free widths run as one "
                             'call padded to the widest (the MACs budget then counts the '
                             'padding); recorded in the subnet file (default: free)')
    parser.add_argument('--round-to', type=int_at_least(1),
                        help="round kept widths up to a multiple of this; 1: off (default: "
                             "the config's sidt_export, else 8)")
    parser.add_argument('--equal-heads', action='store_true',
                        help='the older spelling of --head-widths equal')
    parser.add_argument('--min-heads', type=int,
                        help="heads kept per block, at least (default: 1)")
    parser.add_argument('--min-mlp', type=int,
                        help="MLP units kept per block, at least (default: 8)")
    parser.add_argument('--input-size', type=int_at_least(1), nargs=2, metavar=('H', 'W'),
                        help='image size for MACs (default: the backbone img_size)')
    parser.add_argument('--latency-table', metavar='JSON',
                        help='the latency table a --latency budget is predicted with '
                             '(tools/analysis/latency_table.py, on the target machine)')
    parser.add_argument('--unit-order', choices=UNIT_ORDERS,
                        help="how a kind's units queue: 'score' (mask magnitude) or "
                             "'score_per_ms' (score per predicted millisecond; the default "
                             'with a latency budget)')
    parser.add_argument('--latency-measure', action='store_true', default=None,
                        help='meet the --latency (--latency-ms) budget in measured latency on '
                             'this machine: select, time the subnet against the dense '
                             'backbone, re-select at a corrected budget (a few rounds); the '
                             "table's key must be this machine's (default: the config's "
                             'sidt_export.latency_measure, else off)')
    parser.add_argument('--device', default='cpu', help='device to load the model on')
    parser.add_argument('--overwrite', action='store_true',
                        help='replace OUT_DIR if it exists and is not empty, saying what was '
                             'replaced (the old subnet digest and pruned.pth: retrains that '
                             'loaded it no longer match the new subnet.json)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, as in tools/train.py')
    return parser


def main(argv=None, prog: str = 'export_subnet.py', doc: str | None = None) -> int:
    """Parse ``argv`` and export; the exit code follows ``sidt_mmdet.utils.cli``."""
    parser = build_parser(prog, doc)
    args = vars(parser.parse_args(argv))
    if isinstance(args.get('macs'), str):  # the older --macs kept|executed
        args['macs_count'] = args.pop('macs')
        print(f'{prog}: warning: --macs {args["macs_count"]} is deprecated: a MACs budget '
              'counts what the pruned layout runs (the padding too with --head-widths '
              'padded), and --macs now takes the budget itself', file=sys.stderr)
        if args['macs_count'] == 'kept':
            args['macs_count'] = None
    if args.get('flops') is not None:
        if args.get('macs') is not None:
            parser.error('argument --flops: not allowed with argument --macs')
        print(f'{prog}: warning: --flops is deprecated, use --macs (the budget was always in '
              'MACs)', file=sys.stderr)
        args['macs'] = args.pop('flops')
    args.pop('flops', None)
    budget = {k: args.pop(k, None) for k in BUDGET_KINDS}
    budget = {k: v for k, v in budget.items() if v is not None}
    if 'macs' in budget and len(budget) > 1:
        other = next(k for k in budget if k != 'macs')
        parser.error(f'argument --macs: not allowed with argument --{other.replace("_", "-")}')
    return run_tool(prog, export_subnet, args.pop('config'), args.pop('checkpoint'), budget,
                    args.pop('out_dir'), **args)
