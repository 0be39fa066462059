"""``tools/train.py`` and ``tools/test.py`` as functions: mmdet 3.3's flags, the config they
make of them, and the Runner they run.

    python tools/train.py CONFIG [--work-dir DIR] [--resume [CKPT]] [--amp] [--auto-scale-lr]
    python tools/test.py CONFIG CKPT [--work-dir DIR] [--out preds.pkl] [--show-dir DIR] [--tta]

:func:`train_main` / :func:`test_main` are what the tools call (also under torchrun,
``tools/dist_train.sh``): parse ``argv``, make the config (:func:`train_config`,
:func:`test_config`), run the Runner, and destroy the process group in any case. They return
0; a refused config or a failing run raises, so the tool prints the traceback and exits 1 as
mmdet's tools do; argparse exits 2 for a wrong command line. The flags they share, the config
set-up and the Runner for CPU or GPU live in :mod:`sidt_mmdet.utils.launch`.

Not imported by ``import sidt_mmdet`` nor ``sidt_mmdet.cli``; importing this module imports
``sidt_mmdet`` (registered components, safe checkpoint loading) first, as the tools need.
"""
from __future__ import annotations

import argparse

from mmengine.config import Config, ConfigDict

from ..utils.launch import add_runner_args, build_runner, close_process_group, load_tool_config

__all__ = ['build_test_parser', 'build_train_parser', 'parse_test_args', 'test_config',
           'test_main', 'train_config', 'train_main']


# ------------------------------------------------------------------------------- train
def build_train_parser(prog: str = 'train.py') -> argparse.ArgumentParser:
    """The flags of ``tools/train.py`` (mmdet 3.3's)."""
    parser = argparse.ArgumentParser(prog=prog, description='Train a detector')
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
    return parser


def train_config(args: argparse.Namespace) -> Config:
    """The training config of parsed ``tools/train.py`` flags."""
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
    return cfg


def train_main(argv: list[str] | None = None, prog: str = 'train.py') -> int:
    """``tools/train.py``: parse ``argv`` (default ``sys.argv[1:]``), train; 0 when done."""
    from mmdet.utils import setup_cache_size_limit_of_dynamo

    args = build_train_parser(prog).parse_args(argv)
    setup_cache_size_limit_of_dynamo()  # fewer recompilations when a model is compiled
    cfg = train_config(args)
    try:
        build_runner(cfg).train()
    finally:
        close_process_group()
    return 0


# -------------------------------------------------------------------------------- test
def build_test_parser(prog: str = 'test.py') -> argparse.ArgumentParser:
    """The flags of ``tools/test.py`` (mmdet 3.3's)."""
    parser = argparse.ArgumentParser(prog=prog, description='MMDet test (and eval) a model')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--out', type=str,
                        help='dump predictions to a pickle file for offline evaluation')
    parser.add_argument('--show', action='store_true', help='show prediction results')
    parser.add_argument('--show-dir',
                        help='directory where painted images will be saved. If specified, '
                        'it will be automatically saved to the work_dir/timestamp/show_dir')
    parser.add_argument('--wait-time', type=float, default=2, help='the interval of show (s)')
    parser.add_argument('--tta', action='store_true',
                        help='test time augmentation with the config\'s tta_model and '
                        'tta_pipeline')
    add_runner_args(parser)
    return parser


def parse_test_args(argv: list[str] | None = None, prog: str = 'test.py'
                    ) -> argparse.Namespace:
    """Parsed ``tools/test.py`` flags; a usage error (exit 2) for an ``--out`` not a pickle."""
    parser = build_test_parser(prog)
    args = parser.parse_args(argv)
    if args.out is not None and not args.out.endswith(('.pkl', '.pickle')):
        parser.error(f'--out must end with .pkl or .pickle, got {args.out!r}')
    return args


def test_config(args: argparse.Namespace) -> Config:
    """The test config of parsed ``tools/test.py`` flags (``--out`` is added to the built
    runner's evaluator by :func:`test_main`)."""
    cfg = load_tool_config(args)
    cfg.load_from = args.checkpoint
    if args.show or args.show_dir:
        visualization = cfg.default_hooks.get('visualization')
        if visualization is None:
            raise RuntimeError(f'--show/--show-dir need default_hooks.visualization in '
                               f'{args.config}')
        visualization.update(draw=True, show=args.show, wait_time=args.wait_time,
                             test_out_dir=args.show_dir)
    if args.tta:
        missing = [key for key in ('tta_model', 'tta_pipeline') if key not in cfg]
        if missing:
            raise RuntimeError(f'--tta needs {missing} in {args.config}')
        cfg.model = ConfigDict(**cfg.tta_model, module=cfg.model)
        cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline
    return cfg


def test_main(argv: list[str] | None = None, prog: str = 'test.py') -> int:
    """``tools/test.py``: parse ``argv`` (default ``sys.argv[1:]``), test (and evaluate,
    and dump ``--out``); 0 when done."""
    from mmdet.evaluation import DumpDetResults
    from mmdet.utils import setup_cache_size_limit_of_dynamo

    args = parse_test_args(argv, prog)
    setup_cache_size_limit_of_dynamo()
    cfg = test_config(args)
    try:
        runner = build_runner(cfg)
        if args.out is not None:
            runner.test_evaluator.metrics.append(DumpDetResults(out_file_path=args.out))
        runner.test()
    finally:
        close_process_group()
    return 0


# not tests, for pytest, when a test module imports them
test_config.__test__ = test_main.__test__ = False
