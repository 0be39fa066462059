"""``tools/lowrank.py``: its flags and its one call, ``sidt_mmdet.apis.lowrank_export``."""
from __future__ import annotations

import argparse

from mmengine.config import DictAction

from ..apis.lowrank import lowrank_export
from ..export.lowrank import ALL_METHODS, TARGETS
from ..utils.cli import count, positive_int, ratio, run_tool

__all__ = ['build_parser', 'main']


def build_parser(prog: str = 'lowrank.py') -> argparse.ArgumentParser:
    """The flags of ``tools/lowrank.py``."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description='Factorize the Linear layers of a SIDTViT backbone into low-rank pairs '
                    'and write subnet.json + a checkpoint a retrain config loads.',
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog='The hybrid (low-rank attention, lighter MLP pruning, 50% of the params):'
               '\n  tools/lowrank.py SEARCH_CFG SEARCH_CKPT --mlp-keep-ratio 0.5 --targets '
               'attn.qkv attn.proj --backbone-ratio 0.5 --method svd -o OUT_DIR')
    parser.add_argument('config', help='config of the trained model (dense, search or pruned)')
    parser.add_argument('checkpoint', help='its checkpoint (loaded with weights_only=True)')
    parser.add_argument('-o', '--out-dir', required=True,
                        help='output directory (created; all files or none)')
    parser.add_argument('--method', required=True, choices=ALL_METHODS,
                        help='factorization (SVD is the Frobenius-optimal one on the weight; '
                             'svd_whitened the optimal one on the layer outputs over '
                             'calibration batches)')
    parser.add_argument('--calibration-batches', type=positive_int, default=8,
                        help='svd_whitened: batches of the config\'s train_dataloader whose '
                             'inputs give each layer\'s input covariance (default 8)')
    rule = parser.add_mutually_exclusive_group(required=True)
    rule.add_argument('--energy', type=ratio,
                      help='per layer: smallest rank keeping this fraction of sum sigma^2')
    rule.add_argument('--params-budget', type=count,
                      help='parameters (weights + biases) of the targeted layers after '
                           'factorization; ranks chosen globally by SVD spectra')
    rule.add_argument('--backbone-ratio', type=ratio,
                      help='the whole backbone ends at this fraction of the params of its '
                           'dense architecture (pruning included); the targeted layers get '
                           'the remaining budget')
    rule.add_argument('--rank', type=positive_int,
                      help='the same rank for every targeted layer (< min(in, out) of each)')
    rule.add_argument('--ranks-from', metavar='SUBNET_JSON',
                      help='use the lowrank.ranks recorded in another subnet file (compare '
                           'methods at equal params); --targets is ignored')
    parser.add_argument('--targets', nargs='+', choices=TARGETS, default=list(TARGETS),
                        help='Linear layers to factorize, by name suffix (default: all four)')
    source = parser.add_mutually_exclusive_group()
    source.add_argument('--subnet', metavar='SUBNET_JSON',
                        help='prune a dense/searched model to this subnet before factorizing')
    source.add_argument('--mlp-keep-ratio', type=ratio,
                        help='hybrid: from a searched model (mode="search" with MLP masks), '
                             'keep this fraction of MLP units by mask magnitude and every '
                             'attention dim, then factorize')
    parser.add_argument('--round-to', type=positive_int, default=8,
                        help='with --mlp-keep-ratio: round kept MLP widths up to a multiple '
                             '(default 8, 1 = off)')
    parser.add_argument('--device', default='cpu',
                        help='device for the decompositions (default cpu; e.g. cuda:0)')
    parser.add_argument('--seed', type=int, default=0,
                        help='seed of the random sketch of qr_randomized (default 0)')
    parser.add_argument('--overwrite', action='store_true', help='replace a non-empty OUT_DIR')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value (mmengine syntax)')
    return parser


def main(argv=None, prog: str = 'lowrank.py') -> int:
    """Parse ``argv`` and factorize; the exit code follows ``sidt_mmdet.utils.cli``."""
    args = vars(build_parser(prog).parse_args(argv))
    return run_tool(prog, lowrank_export, args.pop('config'), args.pop('checkpoint'),
                    args.pop('out_dir'), **args)
