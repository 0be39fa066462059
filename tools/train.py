"""Train a detector: mmdet's tools/train.py with sidt_mmdet imported (same flags)."""
import argparse

from mmdet.utils import setup_cache_size_limit_of_dynamo

import sidt_mmdet  # noqa: F401  (registers our components, installs safe checkpoint loading)
from sidt_mmdet.utils.launch import (
    add_runner_args,
    build_runner,
    close_process_group,
    load_tool_config,
)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Train a detector')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--amp', action='store_true', default=False,
                        help='enable automatic-mixed-precision training')
    parser.add_argument('--auto-scale-lr', action='store_true',
                        help='enable automatically scaling LR.')
    parser.add_argument(
        '--resume', nargs='?', type=str, const='auto',
        help='If specify checkpoint path, resume from it, while if not specify, try to auto '
        'resume from the latest checkpoint in the work directory.')
    add_runner_args(parser)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    setup_cache_size_limit_of_dynamo()  # fewer recompilations when a model is compiled
    cfg = load_tool_config(args)
    if args.amp:
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.loss_scale = 'dynamic'
    if args.auto_scale_lr:
        if 'base_batch_size' not in cfg.get('auto_scale_lr', {}):
            raise RuntimeError(f'--auto-scale-lr needs auto_scale_lr.base_batch_size in '
                               f'{args.config}')
        cfg.auto_scale_lr.enable = True
    # resume from a given checkpoint > the latest one in work_dir ("auto")
    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        cfg.resume = True
        cfg.load_from = args.resume
    try:
        build_runner(cfg).train()
    finally:
        close_process_group()


if __name__ == '__main__':
    main()
