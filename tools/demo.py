"""The embedded end-to-end SiDT job behind ``make demo`` (toy COCO, CPU, minutes).

dense train -> search (masks + sparsity loss) -> select + export (keep ratio 0.6)
-> retrain the pruned detector -> COCO test of dense and pruned -> report.md

Every stage runs the same command a user runs (tools/train.py, tools/export_subnet.py,
tools/test.py), so the demo doubles as a walk-through. A stage whose output already
exists is reused, so an interrupted demo picks up where it stopped (``--fresh``
starts over). The report compares dense and pruned: backbone params and MACs,
measured backbone latency, and box/mask mAP.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import os.path as osp
import shutil
import subprocess
import sys
import tempfile
import time

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, REPO)

TOY = osp.join('configs', 'toy')
DENSE_CFG = osp.join(TOY, 'mask-rcnn_sidtvit-toy_simplefpn_100it_toy-coco.py')
SEARCH_CFG = osp.join(TOY, 'sidt-search_mask-rcnn_sidtvit-toy-kr0.6_simplefpn_100it_toy-coco.py')
RETRAIN_CFG = osp.join(TOY,
                       'sidt-retrain_mask-rcnn_sidtvit-toy-kr0.6_simplefpn_100it_toy-coco.py')


def log(msg: str) -> None:
    print(f'[demo {time.strftime("%H:%M:%S")}] {msg}', flush=True)


def run(cmd: list[str]) -> None:
    log('$ ' + ' '.join(cmd))
    subprocess.run(cmd, check=True, cwd=REPO, stdin=subprocess.DEVNULL)


def iters(n: int) -> list[str]:
    # The toy schedule: warm-up over 10 iterations, cosine to the end, validate at the end.
    return [f'train_cfg.max_iters={n}', f'train_cfg.val_interval={n}',
            f'param_scheduler.1.end={n}', f'default_hooks.checkpoint.interval={n}']


def train(cfg: str, work: str, n: int, extra: list[str]) -> str:
    ckpt = osp.join(work, f'iter_{n}.pth')
    if osp.exists(ckpt):
        log(f'reusing {ckpt}')
        return ckpt
    run([sys.executable, 'tools/train.py', cfg, '--work-dir', work,
         '--cfg-options', *iters(n), *extra])
    return ckpt


def test(cfg: str, ckpt: str, work: str, extra: list[str]) -> dict:
    found = _metrics(work)
    if found is None:
        cmd = [sys.executable, 'tools/test.py', cfg, ckpt, '--work-dir', work]
        run(cmd + (['--cfg-options', *extra] if extra else []))
        found = _metrics(work)
    if found is None:
        raise RuntimeError(f'tools/test.py wrote no metrics json under {work}')
    return found


def _metrics(work: str) -> dict | None:
    """The metrics mmengine's LoggerHook dumps to <work>/<timestamp>/<timestamp>.json."""
    for path in sorted(glob.glob(osp.join(work, '*', '*.json')), reverse=True):
        with open(path, encoding='utf-8') as f:
            lines = [json.loads(line) for line in f if line.strip()]
        for row in reversed(lines):
            if 'coco/bbox_mAP' in row:
                return row
    return None


def backbones(dense_ckpt: str, pruned_ckpt: str, subnet: str):
    """The trained dense and pruned backbones, built from their configs."""
    from mmdet.registry import MODELS
    from mmengine.config import Config

    import sidt_mmdet  # noqa: F401
    from sidt_mmdet.utils import load_checkpoint_safe

    out = []
    for cfg_path, ckpt, opts in ((DENSE_CFG, dense_ckpt, {}),
                                 (RETRAIN_CFG, pruned_ckpt,
                                  {'model.backbone.subnet': subnet})):
        cfg = Config.fromfile(osp.join(REPO, cfg_path))
        cfg.merge_from_dict(opts)
        model = MODELS.build(cfg.model).backbone
        state = load_checkpoint_safe(ckpt)['state_dict']
        model.load_state_dict({k[len('backbone.'):]: v for k, v in state.items()
                               if k.startswith('backbone.')})
        out.append(model.eval())
    return out


def measure(dense, pruned, sizes: list[tuple[int, int]], iters_: int) -> list[dict]:
    import torch

    from sidt_mmdet.studies.latency import median_latency
    from sidt_mmdet.utils.complexity import backbone_complexity

    rows = []
    for side, batch in sizes:
        x = torch.randn(batch, 3, side, side)
        log(f'timing backbones at {side}x{side}, batch {batch}')
        t = median_latency({'dense': dense, 'pruned': pruned}, x, iters_, warmup=2)
        a = backbone_complexity(dense, (side, side))
        b = backbone_complexity(pruned, (side, side))
        rows.append(dict(size=side, batch=batch, ms_dense=t['dense'] * 1e3,
                         ms_pruned=t['pruned'] * 1e3, params_dense=a.params,
                         params_pruned=b.params, macs_dense=a.macs, macs_pruned=b.macs,
                         macs_executed_pruned=b.macs_executed))
    return rows


def write_report(path: str, ctx: dict) -> None:
    t0 = ctx['timing'][0]
    rows = [
        ('backbone params', f'{t0["params_dense"]:,}', f'{t0["params_pruned"]:,}',
         t0['params_pruned'] / t0['params_dense']),
    ]
    for t in ctx['timing']:
        rows += [
            (f'backbone MACs @{t["size"]}px', f'{t["macs_dense"]:,}', f'{t["macs_pruned"]:,}',
             t['macs_pruned'] / t['macs_dense']),
            (f'backbone latency @{t["size"]}px, batch {t["batch"]} (ms)', f'{t["ms_dense"]:.1f}',
             f'{t["ms_pruned"]:.1f}', t['ms_pruned'] / t['ms_dense']),
        ]
    for key, name in (('coco/bbox_mAP', 'box mAP'), ('coco/bbox_mAP_50', 'box mAP@50'),
                      ('coco/segm_mAP', 'mask mAP')):
        a, b = ctx['dense_metrics'].get(key), ctx['pruned_metrics'].get(key)
        if a is not None and b is not None:
            rows.append((name, f'{a:.3f}', f'{b:.3f}', b / a if a else float('nan')))
    lines = [
        '# SiDT demo report (toy COCO, CPU)', '',
        f'Stages (iterations): dense {ctx["n_dense"]}, search {ctx["n_search"]}, '
        f'retrain {ctx["n_retrain"]}; keep ratio {ctx["keep_ratio"]} of attention dims and '
        f'MLP units, widths rounded up to multiples of {ctx["round_to"]}. '
        f'Wall time {ctx["minutes"]:.1f} min on {os.cpu_count()} CPU cores.', '',
        '| | dense | pruned | pruned / dense |', '|---|---:|---:|---:|',
        *[f'| {n} | {a} | {b} | {r:.3f} |' for n, a, b, r in rows], '',
        'Toy data, a few hundred iterations from scratch: the mAP figures show that the chain '
        'works end to end, not what SiDT reaches on COCO. Latency is the median of interleaved '
        'runs of the two backbones in one process (`sidt_mmdet.studies.latency`). '
        'MACs include the attention matmuls that module-hook counters miss.', '',
        '## Kept width per layer', '', '![kept widths](export/widths.png)', '',
        ctx['widths_md'], '',
        '## Reproduce', '', '```', *ctx['commands'], '```', '']
    fd, tmp = tempfile.mkstemp(dir=osp.dirname(path), suffix='.md')
    with os.fdopen(fd, 'w', encoding='utf-8') as f:
        f.write('\n'.join(lines))
    os.replace(tmp, path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--work-dir', default='work_dirs/demo')
    parser.add_argument('--dense-iters', type=int, default=150)
    parser.add_argument('--search-iters', type=int, default=100)
    parser.add_argument('--retrain-iters', type=int, default=100)
    parser.add_argument('--keep-ratio', type=float, default=0.6)
    parser.add_argument('--round-to', type=int, default=8)
    parser.add_argument('--data-root', default='data/toy_coco/')
    parser.add_argument('--num-train', type=int, default=128,
                        help='toy COCO training images, when the demo generates the set')
    parser.add_argument('--num-val', type=int, default=32)
    parser.add_argument('--timing-iters', type=int, default=10)
    parser.add_argument('--fresh', action='store_true', help='delete the work dir first')
    args = parser.parse_args(argv)
    for name in ('dense_iters', 'search_iters', 'retrain_iters', 'timing_iters', 'num_train',
                 'num_val'):
        if getattr(args, name) <= 0:
            parser.error(f'--{name.replace("_", "-")} must be positive')
    start = time.time()
    if not osp.exists(osp.join(REPO, args.data_root, 'annotations', 'instances_val2017.json')):
        log(f'generating the toy COCO set in {args.data_root}')
        run([sys.executable, 'tools/dataset/make_toy_coco.py', '--out-dir', args.data_root,
             '--num-train', str(args.num_train), '--num-val', str(args.num_val)])
    work = args.work_dir
    if args.fresh and osp.isdir(work):
        shutil.rmtree(work)
    os.makedirs(work, exist_ok=True)
    data = [f'train_dataloader.dataset.data_root={args.data_root}',
            f'val_dataloader.dataset.data_root={args.data_root}',
            f'test_dataloader.dataset.data_root={args.data_root}',
            f'val_evaluator.ann_file={args.data_root}annotations/instances_val2017.json',
            f'test_evaluator.ann_file={args.data_root}annotations/instances_val2017.json']

    log('stage 1/5: dense training')
    dense_ckpt = train(DENSE_CFG, osp.join(work, 'dense'), args.dense_iters, data)
    log('stage 2/5: search (learnable masks + sparsity loss), from the dense weights')
    search_ckpt = train(SEARCH_CFG, osp.join(work, 'search'), args.search_iters,
                        data + [f'load_from={dense_ckpt}'])
    log(f'stage 3/5: select (keep ratio {args.keep_ratio}) and export')
    export = osp.join(work, 'export')
    subnet, pruned_init = osp.join(export, 'subnet.json'), osp.join(export, 'pruned.pth')
    if not osp.exists(subnet):
        run([sys.executable, 'tools/export_subnet.py', SEARCH_CFG, search_ckpt,
             '--keep-ratio', str(args.keep_ratio), '--round-to', str(args.round_to),
             '-o', export])
    else:
        log(f'reusing {export}')
    log('stage 4/5: retrain the pruned detector')
    sub_opt = [f'model.backbone.subnet={subnet}']
    pruned_ckpt = train(RETRAIN_CFG, osp.join(work, 'retrain'), args.retrain_iters,
                        data + sub_opt + [f'load_from={pruned_init}'])
    log('stage 5/5: COCO test of the dense and the pruned detector')
    dense_metrics = test(DENSE_CFG, dense_ckpt, osp.join(work, 'test_dense'), data)
    pruned_metrics = test(RETRAIN_CFG, pruned_ckpt, osp.join(work, 'test_pruned'),
                          data + sub_opt)
    dense, pruned = backbones(dense_ckpt, pruned_ckpt, subnet)
    timing = measure(dense, pruned, [(160, 8), (512, 2)], args.timing_iters)
    with open(osp.join(export, 'widths.md'), encoding='utf-8') as f:
        widths_md = f.read()
    commands = [
        f'python tools/train.py {DENSE_CFG} --work-dir {work}/dense',
        f'python tools/train.py {SEARCH_CFG} --work-dir {work}/search '
        f'--cfg-options load_from={dense_ckpt}',
        f'python tools/export_subnet.py {SEARCH_CFG} {search_ckpt} --keep-ratio '
        f'{args.keep_ratio} -o {export}',
        f'python tools/train.py {RETRAIN_CFG} --work-dir {work}/retrain --cfg-options '
        f'model.backbone.subnet={subnet} load_from={pruned_init}',
        f'python tools/test.py {RETRAIN_CFG} {pruned_ckpt} --cfg-options '
        f'model.backbone.subnet={subnet}',
        '(iteration counts: --cfg-options train_cfg.max_iters=N ...; see tools/demo.py)']
    report = osp.join(work, 'report.md')
    write_report(report, dict(timing=timing, dense_metrics=dense_metrics,
                              pruned_metrics=pruned_metrics, n_dense=args.dense_iters,
                              n_search=args.search_iters, n_retrain=args.retrain_iters,
                              keep_ratio=args.keep_ratio, round_to=args.round_to,
                              minutes=(time.time() - start) / 60, widths_md=widths_md,
                              commands=commands))
    with open(osp.join(work, 'report.json'), 'w', encoding='utf-8') as f:
        json.dump(dict(timing=timing, dense=dense_metrics, pruned=pruned_metrics), f, indent=1)
    log(f'done in {(time.time() - start) / 60:.1f} min: {report}')
    print(open(report, encoding='utf-8').read())
    return 0


if __name__ == '__main__':
    sys.exit(main())
