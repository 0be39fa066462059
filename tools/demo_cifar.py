"""`make demo-cifar`: the whole SiDT flow as CIFAR-100 classification, on CPU, in minutes.

On the generated toy CIFAR-100 set (real pickle format, data/toy_cifar100/, created when
missing) and the toy ViT classifier (configs/cifar100/*_toy-cifar100.py), through the same
tools a user runs:

    dense training -> dense test -> search (sparsity loss) -> export (select 0.6) ->
    test of the pruned model before retraining -> retrain -> test

then writes WORK_DIR/report.md: params and MACs of backbone and classifier, measured backbone
latency dense vs pruned (interleaved timing, median), top-1/top-5 dense vs pruned, and the
per-layer width plot (WORK_DIR/widths.png). Every stage's full log stays in its work dir; the
console shows the stage banners and mmengine's epoch lines.

Threads: each stage runs with OMP_NUM_THREADS=1 unless OMP_NUM_THREADS is set. One thread is
the safe choice on a shared 2-core machine (two threads competing with other jobs run several
times slower); on an idle machine `OMP_NUM_THREADS=2 make demo-cifar` is faster.

    python tools/demo_cifar.py [--work-dir work_dirs/demo-cifar] [--keep-ratio 0.6]
"""
from __future__ import annotations

import argparse
import json
import os
import os.path as osp
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import deque

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
CFG_DIR = osp.join(REPO, 'configs', 'cifar100')
DENSE_CFG = osp.join(CFG_DIR, 'sidt-dense_cls_vit-toy-p4_toy-cifar100.py')
SEARCH_CFG = osp.join(CFG_DIR, 'sidt-search_cls_vit-toy-p4-kr0.6_toy-cifar100.py')
RETRAIN_CFG = osp.join(CFG_DIR, 'sidt-retrain_cls_vit-toy-p4-kr0.6_toy-cifar100.py')
# Console lines worth showing from a stage (its full output goes to its log file).
_SHOW = re.compile(r'Epoch\((train|val|test)\)|\[export\]|\[toy_cifar100\] wrote|'
                   r'Error|error:|Traceback')


_MMENGINE_PREFIX = re.compile(r'^\S+ \S+ - mmengine - \w+ - ')


class StageError(RuntimeError):
    """A stage's command failed; the message holds the command and its output tail."""


def log(msg: str) -> None:
    print(f'[demo-cifar] {msg}', flush=True)


def run_stage(title: str, args: list[str], log_path: str) -> None:
    """Run one tool, show its progress lines, keep its full output in ``log_path``."""
    log(title)
    os.makedirs(osp.dirname(log_path), exist_ok=True)
    env = dict(os.environ)
    env.setdefault('OMP_NUM_THREADS', '1')
    env['PYTHONUNBUFFERED'] = '1'
    tail: deque[str] = deque(maxlen=40)
    start = time.perf_counter()
    with open(log_path, 'w', encoding='utf-8') as out, subprocess.Popen(
            args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, text=True, bufsize=1) as proc:
        for line in proc.stdout:
            out.write(line)
            tail.append(line)
            if _SHOW.search(line):
                print('    ' + _MMENGINE_PREFIX.sub('', line.rstrip())[:260], flush=True)
        code = proc.wait()
    if code != 0:
        raise StageError(f'{title}: `{" ".join(args)}` exited {code}; full output in '
                         f'{log_path}; last lines:\n' + ''.join(tail))
    log(f'  done in {time.perf_counter() - start:.0f} s')


def data_options(data_root: str) -> list[str]:
    return [f'{loader}.dataset.data_root={data_root}'
            for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader')]


def read_metrics(test_work_dir: str) -> dict:
    """The metrics tools/test.py wrote (``<work_dir>/<timestamp>/<timestamp>.json``)."""
    runs = sorted(d for d in os.listdir(test_work_dir)
                  if osp.isfile(osp.join(test_work_dir, d, f'{d}.json')))
    if not runs:
        raise StageError(f'no metric file under {test_work_dir}/<timestamp>/')
    with open(osp.join(test_work_dir, runs[-1], f'{runs[-1]}.json'), encoding='utf-8') as f:
        lines = [json.loads(line) for line in f if line.strip()]
    return {k: float(v) for k, v in lines[-1].items() if k.startswith('accuracy/')}


def last_checkpoint(work_dir: str) -> str:
    path = osp.join(work_dir, 'last_checkpoint')
    if not osp.isfile(path):
        raise StageError(f'{path} missing: the training stage wrote no checkpoint')
    with open(path, encoding='utf-8') as f:
        return f.read().strip()


def schedule_options(config: str, epochs: int) -> list[str]:
    """``--cfg-options`` that train ``config`` for ``epochs``: the cosine decay ends there too
    (the toy configs compute its end from their own epoch count) unless training stops before
    it begins; validation and checkpoint at the end."""
    from mmengine.config import Config
    schedulers = Config.fromfile(config).param_scheduler
    cosine = [i for i, s in enumerate(schedulers)
              if s['type'] == 'CosineAnnealingLR' and s.get('begin', 0) < epochs]
    return [f'train_cfg.max_epochs={epochs}', f'train_cfg.val_interval={epochs}',
            f'default_hooks.checkpoint.interval={epochs}',
            *(f'param_scheduler.{i}.end={epochs}' for i in cosine)]


def run_chain(work_dir: str, data_root: str, export_args: list[str], python: str,
              epochs: dict | None = None, extra_options: list[str] | None = None) -> dict:
    """dense -> test -> search -> export -> test (pruned) -> retrain -> test; paths + metrics.

    ``epochs`` may override ``dense``/``search``/``retrain`` epochs of the toy configs;
    ``extra_options`` are added to every train/test ``--cfg-options``.
    """
    epochs = epochs or {}
    data = data_options(data_root) + list(extra_options or [])
    w = {k: osp.join(work_dir, k) for k in ('dense', 'dense_test', 'search', 'export',
                                            'pruned_test', 'retrain', 'retrain_test')}
    logs = osp.join(work_dir, 'logs')
    steps = 7

    def epoch_opts(stage, config):
        n = epochs.get(stage)
        return [] if n is None else schedule_options(config, n)

    run_stage(f'1/{steps} dense training ({osp.relpath(DENSE_CFG, REPO)})',
              [python, 'tools/train.py', DENSE_CFG, '--work-dir', w['dense'], '--cfg-options',
               *data, *epoch_opts('dense', DENSE_CFG)], osp.join(logs, '1_dense_train.log'))
    dense_ckpt = last_checkpoint(w['dense'])
    run_stage(f'2/{steps} dense test ({osp.relpath(dense_ckpt, REPO)})',
              [python, 'tools/test.py', DENSE_CFG, dense_ckpt, '--work-dir', w['dense_test'],
               '--cfg-options', *data], osp.join(logs, '2_dense_test.log'))
    run_stage(f'3/{steps} search: masks + sparsity loss, from the dense model',
              [python, 'tools/train.py', SEARCH_CFG, '--work-dir', w['search'], '--cfg-options',
               *data, f'load_from={dense_ckpt}', *epoch_opts('search', SEARCH_CFG)],
              osp.join(logs, '3_search.log'))
    search_ckpt = last_checkpoint(w['search'])
    run_stage(f'4/{steps} export: select ({" ".join(export_args)}), slice, fold masks',
              [python, 'tools/export_subnet.py', SEARCH_CFG, search_ckpt, *export_args,
               '-o', w['export'], '--overwrite'], osp.join(logs, '4_export.log'))
    subnet = osp.join(w['export'], 'subnet.json')
    pruned_ckpt = osp.join(w['export'], 'pruned.pth')
    run_stage(f'5/{steps} test of the pruned model before retraining',
              [python, 'tools/test.py', RETRAIN_CFG, pruned_ckpt, '--work-dir', w['pruned_test'],
               '--cfg-options', *data, f'model.backbone.subnet={subnet}'],
              osp.join(logs, '5_pruned_test.log'))
    run_stage(f'6/{steps} retrain the pruned classifier',
              [python, 'tools/train.py', RETRAIN_CFG, '--work-dir', w['retrain'],
               '--cfg-options', *data, f'model.backbone.subnet={subnet}',
               f'load_from={pruned_ckpt}', *epoch_opts('retrain', RETRAIN_CFG)],
              osp.join(logs, '6_retrain.log'))
    retrain_ckpt = last_checkpoint(w['retrain'])
    run_stage(f'7/{steps} test of the retrained pruned model',
              [python, 'tools/test.py', RETRAIN_CFG, retrain_ckpt, '--work-dir',
               w['retrain_test'], '--cfg-options', *data, f'model.backbone.subnet={subnet}'],
              osp.join(logs, '7_retrain_test.log'))
    return dict(dirs=w, subnet=subnet, dense_ckpt=dense_ckpt, search_ckpt=search_ckpt,
                pruned_ckpt=pruned_ckpt, retrain_ckpt=retrain_ckpt,
                metrics=dict(dense=read_metrics(w['dense_test']),
                             pruned_before_retrain=read_metrics(w['pruned_test']),
                             pruned=read_metrics(w['retrain_test'])))


# ------------------------------------------------------------------------------- figures
def build_model(config: str, subnet: str | None = None):
    from mmengine.config import Config
    from mmengine.registry import MODELS, init_default_scope

    import sidt_mmdet  # noqa: F401  (registers SIDTViT/SIDTModel)
    cfg = Config.fromfile(config)
    if subnet is not None:
        cfg.merge_from_dict({'model.backbone.subnet': subnet})
    init_default_scope(cfg.default_scope)
    model_cfg = cfg.model.copy()
    model_cfg.setdefault('data_preprocessor', cfg.get('data_preprocessor'))
    return MODELS.build(model_cfg).eval()


def measure(subnet_path: str, batch: int = 64, iters: int = 30, warmup: int = 5) -> dict:
    """Params, MACs (our counter, attention matmuls included) and backbone latency."""
    import torch

    from sidt_mmdet.studies.latency import median_latency
    from sidt_mmdet.utils.complexity import backbone_complexity

    dense, pruned = build_model(DENSE_CFG), build_model(RETRAIN_CFG, subnet_path)
    size = tuple(dense.backbone.img_size)
    out = {}
    for name, model in (('dense', dense), ('pruned', pruned)):
        c = backbone_complexity(model.backbone, size)
        head = sum(p.numel() for p in model.head.parameters())
        out[name] = dict(backbone_params=c.params, backbone_macs=c.macs,
                         classifier_params=sum(p.numel() for p in model.parameters()),
                         head_params=head, head_macs=model.head.fc.in_features
                         * model.head.fc.out_features, embed_dims=model.backbone.out_channels)
    threads = int(os.environ.get('OMP_NUM_THREADS', '1'))
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    x = torch.randn(batch, 3, *size)
    times = median_latency({'dense': dense.backbone, 'pruned': pruned.backbone}, x, iters,
                           warmup)
    for name, t in times.items():
        out[name]['latency_ms'] = t * 1e3
    out['latency'] = dict(batch=batch, input_size=list(size), iters=iters, threads=threads,
                          torch=torch.__version__)
    return out


def _k(n: float) -> str:
    for unit, scale in (('G', 1e9), ('M', 1e6), ('K', 1e3)):
        if abs(n) >= scale:
            return f'{n / scale:.3f}{unit}'
    return f'{n:g}'


def write_report(path: str, chain: dict, figures: dict, subnet, elapsed: float,
                 plot: str | None) -> str:
    d, p = figures['dense'], figures['pruned']
    t = chain['metrics']
    lat = figures['latency']

    def row(label, key, fmt=_k):
        ratio = p[key] / d[key] if d[key] else float('nan')
        return f'| {label} | {fmt(d[key])} | {fmt(p[key])} | {ratio:.3f} |'

    def acc(label, key):
        a, b = t['dense'][key], t['pruned'][key]
        return f'| {label} | {a:.2f} | {b:.2f} | {b / a if a else float("nan"):.3f} |'

    budget = ', '.join(f'{k}={v}' for k, v in subnet.budget.items())
    lines = [
        '# demo-cifar: SiDT on the toy CIFAR-100 classifier', '',
        f'Generated by `tools/demo_cifar.py` in {elapsed / 60:.1f} min on CPU. Data: generated '
        'CIFAR-100 (real pickle format), read by `ToyCIFAR100`. Model: '
        f'`{osp.relpath(DENSE_CFG, REPO)}` (ViT {d["embed_dims"]} wide, '
        f'{subnet.num_layers} blocks, {subnet.num_heads} heads, 4x4 patches on 32x32).', '',
        f'Subnet: {budget}; `{osp.relpath(chain["subnet"], REPO)}`.', '',
        '| | dense | pruned | pruned / dense |', '|---|---|---|---|',
        row('backbone params', 'backbone_params'),
        row('classifier params (backbone + head)', 'classifier_params'),
        row('backbone MACs / image', 'backbone_macs'),
        row('head MACs / image', 'head_macs'),
        row(f'backbone latency, ms / batch of {lat["batch"]} ({lat["threads"]} thread)',
            'latency_ms', lambda v: f'{v:.2f}'),
        acc('top-1 (%), retrained', 'accuracy/top1'),
        acc('top-5 (%), retrained', 'accuracy/top5'),
        '',
        f'Top-1 of the pruned model before retraining (sliced weights, masks folded): '
        f'{t["pruned_before_retrain"]["accuracy/top1"]:.2f}%.', '',
        'MACs are counted by `sidt_mmdet.utils.complexity` (attention matmuls included, '
        'softmax/norms not). Latency: backbone forward only, dense and pruned timed '
        f'interleaved, median of {lat["iters"]} runs, torch {lat["torch"]}.', '',
        '## Kept widths per block', '',
        '| block | heads | q/k dims per head | v dims per head | MLP units |',
        '|---|---|---|---|---|',
    ]
    for i, w in enumerate(subnet.widths()):
        heads = sum(1 for v in w['v'] if v)
        lines.append(f'| {i} | {heads}/{subnet.num_heads} | {w["qk"]} | {w["v"]} | '
                     f'{w["mlp"]}/{subnet.mlp_hidden} |')
    if plot:
        lines += ['', f'![kept widths]({osp.basename(plot)})']
    lines += ['', '## Files', '']
    for key, value in chain['dirs'].items():
        lines.append(f'- {key}: `{osp.relpath(value, REPO)}`')
    text = '\n'.join(lines) + '\n'
    fd, tmp = tempfile.mkstemp(dir=osp.dirname(path), suffix='.md')
    with os.fdopen(fd, 'w', encoding='utf-8') as f:
        f.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    return text


def ensure_data(data_root: str, python: str, work_dir: str) -> None:
    if osp.isfile(osp.join(data_root, 'cifar-100-python', 'meta')):
        log(f'data: {data_root}/cifar-100-python/ exists')
        return
    run_stage(f'0 generate the toy CIFAR-100 set in {data_root}',
              [python, 'tools/dataset/make_toy_cifar100.py', '--out-dir', data_root],
              osp.join(work_dir, 'logs', '0_data.log'))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog='\n\n'.join(__doc__.split('\n\n')[1:]))
    parser.add_argument('--work-dir', default='work_dirs/demo-cifar')
    parser.add_argument('--data-root', default='data/toy_cifar100',
                        help='toy CIFAR-100 root; generated when cifar-100-python/ is missing')
    parser.add_argument('--keep-ratio', type=float, default=0.6,
                        help='fraction of searched dims kept (default: %(default)s)')
    parser.add_argument('--python', default=sys.executable, help='interpreter for the tools')
    args = parser.parse_args(argv)
    if not 0 < args.keep_ratio <= 1:
        parser.error(f'argument --keep-ratio: expected a value in (0, 1], got {args.keep_ratio}')
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    work_dir = osp.abspath(args.work_dir)
    data_root = osp.abspath(args.data_root)
    os.makedirs(work_dir, exist_ok=True)
    try:
        ensure_data(data_root, args.python, work_dir)
        chain = run_chain(work_dir, data_root, ['--keep-ratio', str(args.keep_ratio)],
                          args.python)
    except StageError as e:
        print(f'[demo-cifar] error: {e}', file=sys.stderr)
        return 1
    log('report: params, MACs, backbone latency (dense vs pruned, interleaved)')
    figures = measure(chain['subnet'])
    from sidt_mmdet.models import Subnet
    subnet = Subnet.load(chain['subnet'])
    plot = osp.join(chain['dirs']['export'], 'widths.png')
    if osp.isfile(plot):
        shutil.copyfile(plot, osp.join(work_dir, 'widths.png'))
        plot = osp.join(work_dir, 'widths.png')
    else:
        plot = None
    report = osp.join(work_dir, 'report.md')
    text = write_report(report, chain, figures, subnet, time.perf_counter() - start, plot)
    print(text)
    log(f'done in {(time.perf_counter() - start) / 60:.1f} min: {osp.relpath(report)}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
