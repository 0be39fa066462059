"""Time SIDTViT against its references and dense against pruned, in one run.

No dataset needed. Models are timed interleaved (A, B, A, B, ...) so machine
drift hits both; the figure is the median per forward, and the comparison is a
ratio. Results are printed and written as JSON (``--out``).

    python tools/analysis/benchmark_backbone.py timm --arch small --size 224 --batch 8
    python tools/analysis/benchmark_backbone.py sam --size 1024 --batch 1
    python tools/analysis/benchmark_backbone.py pruned --arch small --keep-ratio 0.6
    python tools/analysis/benchmark_backbone.py pruned --subnet work_dirs/x/subnet.json ...
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..', '..'))

from sidt_mmdet.export import prune_backbone  # noqa: E402
from sidt_mmdet.models import SIDTViT, Subnet  # noqa: E402
from sidt_mmdet.search import select_subnet  # noqa: E402
from sidt_mmdet.utils.complexity import backbone_complexity  # noqa: E402


def time_models(models: dict, x: torch.Tensor, iters: int, warmup: int) -> dict[str, float]:
    """Median seconds per forward of each model, timed interleaved."""
    times = {name: [] for name in models}
    with torch.inference_mode():
        for _ in range(warmup):
            for fn in models.values():
                fn(x)
        for i in range(iters):
            for name, fn in models.items():
                t0 = time.perf_counter()
                fn(x)
                times[name].append(time.perf_counter() - t0)
            print(f'\r  iteration {i + 1}/{iters}', end='', file=sys.stderr, flush=True)
    print(file=sys.stderr)
    return {name: statistics.median(t) for name, t in times.items()}


def bench_timm(args):
    import timm
    arch = SIDTViT.arch_zoo[args.arch]
    ref = timm.create_model('vit_base_patch16_224', pretrained=False, num_classes=0,
                            embed_dim=arch['embed_dims'], depth=arch['num_layers'],
                            num_heads=arch['num_heads'], img_size=args.size).eval()
    ours = SIDTViT(arch=args.arch, img_size=args.size, with_cls_token=True, final_norm=True,
                   out_type='featmap').eval()
    return dict(reference=lambda x: ref.forward_features(x), sidt_dense=lambda x: ours(x))


def bench_sam(args):
    from timm.models.vision_transformer_sam import VisionTransformerSAM
    arch = SIDTViT.arch_zoo[args.arch]
    glob = {'base': (2, 5, 8, 11), 'large': (5, 11, 17, 23), 'huge': (7, 15, 23, 31)}.get(
        args.arch, (2, 5, 8, 11))
    ref = VisionTransformerSAM(img_size=args.size, embed_dim=arch['embed_dims'],
                               depth=arch['num_layers'], num_heads=arch['num_heads'],
                               window_size=14, global_attn_indexes=glob, use_rel_pos=True,
                               neck_chans=0, num_classes=0).eval()
    ours = SIDTViT(arch=args.arch, img_size=args.size, window_size=14, global_attn_indexes=glob,
                   use_rel_pos=True, norm_cfg=dict(type='LN', eps=1e-5)).eval()
    last = arch['num_layers'] - 1
    return dict(reference=lambda x: ref.forward_intermediates(x, indices=[last],
                                                              intermediates_only=True),
                sidt_dense=lambda x: ours(x))


def bench_pruned(args):
    kw = dict(arch=args.arch, img_size=args.size)
    if args.subnet:
        subnet = Subnet.load(args.subnet)
        search = SIDTViT(mode='search', **kw)
    else:
        # Random masks stand in for a search: speed depends on widths, not on values.
        torch.manual_seed(args.seed)
        search = SIDTViT(mode='search', **kw)
        with torch.no_grad():
            for m in search.mask_parameters().values():
                m.uniform_(0, 1)
        subnet = select_subnet(search, keep_ratio=args.keep_ratio, round_to=args.round_to,
                               granularity=args.granularity)
    dense = SIDTViT(**kw).eval()
    pruned = prune_backbone(search, subnet).eval()
    size = (args.size, args.size)
    a, b = backbone_complexity(dense, size), backbone_complexity(pruned, size)
    args.extra = dict(params_dense=a.params, params_pruned=b.params, macs_dense=a.macs,
                      macs_pruned=b.macs, macs_executed_pruned=b.macs_executed,
                      macs_ratio=b.macs / a.macs, params_ratio=b.params / a.params)
    return dict(reference=lambda x: dense(x), sidt_pruned=lambda x: pruned(x))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('what', choices=['timm', 'sam', 'pruned'],
                        help='timm: dense SIDTViT vs timm ViT; sam: ViTDet-shaped SIDTViT vs '
                             "timm's VisionTransformerSAM; pruned: dense vs pruned SIDTViT")
    parser.add_argument('--arch', default=None, help='tiny/small/base/large (default: small, '
                        'base for sam)')
    parser.add_argument('--size', type=int, default=None, help='input side (224; 1024 for sam)')
    parser.add_argument('--batch', type=int, default=None, help='batch size (8; 1 for sam)')
    parser.add_argument('--iters', type=int, default=20)
    parser.add_argument('--warmup', type=int, default=3)
    parser.add_argument('--threads', type=int, default=None, help='torch threads')
    parser.add_argument('--keep-ratio', type=float, default=0.6)
    parser.add_argument('--round-to', type=int, default=8)
    parser.add_argument('--granularity', default='dim')
    parser.add_argument('--subnet', default=None, help='subnet.json to time instead of a '
                        'random selection')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--out', default=None, help='write the figures as JSON here')
    args = parser.parse_args(argv)
    sam = args.what == 'sam'
    args.arch = args.arch or ('base' if sam else 'small')
    args.size = args.size or (1024 if sam else 224)
    args.batch = args.batch or (1 if sam else 8)
    args.extra = {}
    if args.threads:
        torch.set_num_threads(args.threads)
    models = {'timm': bench_timm, 'sam': bench_sam, 'pruned': bench_pruned}[args.what](args)
    x = torch.randn(args.batch, 3, args.size, args.size)
    print(f'{args.what}: arch={args.arch} size={args.size} batch={args.batch} '
          f'threads={torch.get_num_threads()} torch={torch.__version__}', file=sys.stderr)
    times = time_models(models, x, args.iters, args.warmup)
    names = list(times)
    ratio = times[names[1]] / times[names[0]]
    result = dict(what=args.what, arch=args.arch, size=args.size, batch=args.batch,
                  threads=torch.get_num_threads(), torch=torch.__version__,
                  seconds={k: round(v, 5) for k, v in times.items()},
                  time_ratio=round(ratio, 4), **args.extra)
    for name, t in times.items():
        print(f'{name:>12}: {t * 1e3:9.2f} ms / forward')
    print(f'{"ratio":>12}: {ratio:9.3f} ({names[1]} / {names[0]})')
    for k, v in args.extra.items():
        print(f'{k:>22}: {v:,.4g}' if isinstance(v, float) else f'{k:>22}: {v:,}')
    if args.out:
        directory = os.path.dirname(os.path.abspath(args.out))
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, suffix='.json')
        with os.fdopen(fd, 'w') as f:
            json.dump(result, f, indent=1)
        os.replace(tmp, args.out)
    return result


if __name__ == '__main__':
    main()
