"""The timing: every model of a group built and timed interleaved, the per-model records and
ratios, the search step's time and peak memory against the dense step (CUDA allocator, or
resident memory of a fresh subprocess per model on CPU), the latency-budget check of the
``gpu`` presets, and :func:`run_latency_study`, which runs a preset and returns plain
data."""
from __future__ import annotations

import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, replace

import torch

from ...utils.timing import time_interleaved
from .presets import GOALS, PRESETS, BudgetCheck, Group, Shape, Variant
from .zoo import (
    _random_search_model,
    _sidt_kwargs,
    _sidt_pruned,
    _timm_macs,
    _timm_sam,
    _timm_vit,
    _tokens,
    _torch_pruning_available,
    _tp_pruned,
    _tp_version,
)


def _build_group(group: Group, tp_note: str | None, log) -> tuple[dict, dict]:
    """(callables by name, records by name) of every model of the group."""
    from ...models import SIDTViT
    from ...models.complexity import backbone_complexity
    shape, size = group.shape, (group.shape.size, group.shape.size)
    names = [v.name for v in group.variants]
    if len(set(names)) != len(names):
        raise ValueError(f'{shape.name}: variants with the same name '
                         f'{sorted({n for n in names if names.count(n) > 1})}')
    device = torch.device(group.device)
    records: dict[str, dict] = {}
    models: dict[str, torch.nn.Module] = {}
    search = _random_search_model(shape)
    dense = SIDTViT(**_sidt_kwargs(shape)).eval()
    models['sidt dense'] = dense
    rep = backbone_complexity(dense, size)
    records['sidt dense'] = dict(kind='sidt_dense', macs=rep.macs, macs_executed=rep.macs,
                                 params=rep.params, base=None)
    want_tp = any(v.tool == 'torch_pruning' for v in group.variants) and not shape.vitdet
    if want_tp and tp_note is None:
        ref = _timm_vit(shape)
        models['timm dense'] = ref
        records['timm dense'] = dict(kind='timm_dense', base=None,
                                     macs=_timm_macs(ref, _tokens(shape, True)),
                                     params=sum(p.numel() for p in ref.parameters()))
    for v in group.variants:
        if v.tool == 'torch_pruning':
            if tp_note is not None or shape.vitdet:
                continue
            model = _tp_pruned(shape, v)
            macs = _timm_macs(model, _tokens(shape, True))
            records[v.name] = dict(kind='tp_pruned', base='timm dense', macs=macs,
                                   macs_executed=macs,
                                   params=sum(p.numel() for p in model.parameters()),
                                   **asdict(v))
        else:
            model = _sidt_pruned(search, shape, v)
            rep = backbone_complexity(model, size)
            records[v.name] = dict(kind='sidt_pruned', base='sidt dense', macs=rep.macs,
                                   macs_executed=rep.macs_executed, params=rep.params,
                                   calls=sum(len(b.attn.groups) for b in model.blocks),
                                   **asdict(v))
        models[v.name] = model
    if group.reference:
        ours_kw = _sidt_kwargs(shape)
        if shape.vitdet:
            ref = _timm_sam(shape)
            ours = SIDTViT(norm_cfg=dict(type='LN', eps=1e-5), **ours_kw).eval()
            last = len(ref.blocks) - 1
            models['ref SIDTViT'] = ours
            models['ref timm'] = ref

            def ref_fn(x, m=ref, i=last):
                return m.forward_intermediates(x, indices=[i], intermediates_only=True)
            kind = 'VisionTransformerSAM'
        else:
            ref = _timm_vit(shape)
            ours = SIDTViT(with_cls_token=True, final_norm=True, **ours_kw).eval()
            models['ref SIDTViT'] = ours
            models['ref timm'] = ref
            ref_fn = ref.forward_features
            kind = 'VisionTransformer'
        records['ref SIDTViT'] = dict(kind='reference_sidt', base='ref timm')
        records['ref timm'] = dict(kind='reference_timm', base=None, model=kind)
    del search
    x = torch.randn(shape.batch, 3, shape.size, shape.size, device=device)
    fns = {}
    amp = {'fp16': torch.float16, 'bf16': torch.bfloat16}.get(group.dtype)
    for name, model in models.items():
        model.to(device)
        call = ref_fn if name == 'ref timm' else model

        def fn(call=call):
            with torch.inference_mode(), torch.autocast(device.type, dtype=amp,
                                                        enabled=amp is not None):
                call(x)
        fns[name] = fn
    log(f'{shape.name}, batch {shape.batch}, {group.device} {group.dtype}: '
        f'{len(fns)} models')
    return fns, records


def _group_result(group: Group, records: dict, times: dict[str, list[float]]) -> dict:
    rows = {}
    for name, rec in records.items():
        med = statistics.median(times[name])
        rows[name] = dict(rec, median_s=med, samples_s=[round(t, 6) for t in times[name]])
    for rec in rows.values():
        base = rows.get(rec['base']) if rec.get('base') else None
        if base is None:
            continue
        rec['latency_ratio'] = rec['median_s'] / base['median_s']
        if 'macs' in rec and 'macs' in base:
            rec['macs_ratio'] = rec['macs'] / base['macs']
            rec['latency_per_macs'] = rec['latency_ratio'] / rec['macs_ratio']
    return dict(shape=asdict(group.shape), iters=group.iters, warmup=group.warmup,
                device=group.device, dtype=group.dtype, models=rows)


# ----------------------------------------------------------------- search cost
def _search_step_fn(shape: Shape, search: bool, device: str):
    from ...models import SIDTViT
    torch.manual_seed(0)
    kw = _sidt_kwargs(shape)
    if search:
        kw.update(mode='search', search_dims=('attn', 'mlp', 'embed'))
    model = SIDTViT(**kw).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(shape.batch, 3, shape.size, shape.size, device=device)

    def step():
        out = model(x)[0]
        loss = out.square().mean()
        if search:
            loss = loss + 1e-4 * sum(m.abs().sum() for m in model.mask_parameters().values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def _rss_bytes() -> int:
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')


_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))  # the directory above sidt_mmdet/


def _child_peak(child: str, *args) -> int:
    """Run ``child(*args)`` (a function of this package that returns a byte count) in a
    fresh subprocess: the allocator never returns its pool, so two models measured in one
    process would mix."""
    code = ('import json, sys; from sidt_mmdet.studies import latency; '
            f'print(json.dumps(latency.{child}(*json.loads(sys.argv[1]))))')
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join(p for p in (_REPO, env.get('PYTHONPATH')) if p)
    # A fixed mmap threshold: glibc otherwise raises it after the first large free, so the
    # memory of a model built and dropped before the measurement (the search model a
    # pruned one is sliced from) stays in the heap and the measured step reuses it unseen.
    env['MALLOC_MMAP_THRESHOLD_'] = str(1 << 16)
    out = subprocess.run([sys.executable, '-c', code, json.dumps(list(args))],
                         capture_output=True, text=True, env=env, check=False,
                         stdin=subprocess.DEVNULL)
    if out.returncode != 0:
        raise RuntimeError(f'peak-memory subprocess failed ({out.returncode}):\n'
                           f'{out.stderr[-2000:]}')
    return int(json.loads(out.stdout.strip().splitlines()[-1]))


def _peak_step_memory_cpu(shape: Shape, search: bool) -> int:
    """Peak resident memory that one search (or dense) step adds, in a fresh subprocess."""
    return _child_peak('_step_memory_child', asdict(shape), search)


def _peak_forward_memory_cpu(shape: Shape, variant: Variant | None) -> int:
    """Peak resident memory that one steady-state inference forward (after a first call
    has built what the model keeps between calls) of the dense model (``variant`` ``None``)
    or of the pruned ``variant`` adds: its activations, in a fresh subprocess."""
    return _child_peak('_forward_memory_child', asdict(shape),
                       None if variant is None else asdict(variant))


def _shape_of(shape: dict) -> Shape:
    return Shape(**dict(shape, global_blocks=tuple(shape['global_blocks'])))


def _step_memory_child(shape: dict, search: bool) -> int:
    if platform.system() != 'Linux':
        raise RuntimeError('CPU peak memory is read from /proc (Linux only)')
    step = _search_step_fn(_shape_of(shape), search, 'cpu')
    # ru_maxrss survives fork and exec (it would report the parent's peak); the kernel's
    # per-process high-water mark (VmHWM) starts afresh at exec and can be reset here, so
    # the peak below is the step's alone.
    _reset_peak_rss()
    before = _rss_bytes()
    step()
    return max(0, _peak_rss_bytes() - before)


def _forward_memory_child(shape: dict, variant: dict | None) -> int:
    from ...models import SIDTViT
    if platform.system() != 'Linux':
        raise RuntimeError('CPU peak memory is read from /proc (Linux only)')
    s = _shape_of(shape)
    model = (SIDTViT(**_sidt_kwargs(s)).eval() if variant is None
             else _sidt_pruned(_random_search_model(s), s, Variant(**variant)))
    x = torch.randn(s.batch, 3, s.size, s.size)
    with torch.inference_mode():
        model(x)  # builds what a model keeps between calls (packed weights, rel-pos tables)
    gc.collect()  # and the search model a pruned one was sliced from goes
    _reset_peak_rss()
    before = _rss_bytes()
    with torch.inference_mode():
        model(x)
    return max(0, _peak_rss_bytes() - before)


def forward_memory(group: Group) -> dict[str, int]:
    """Peak forward memory (bytes, CPU) of the group's dense model and its first SIDTViT
    variant, each in its own subprocess."""
    pruned = next(v for v in group.variants if v.tool == 'sidt')
    return {'sidt dense': _peak_forward_memory_cpu(group.shape, None),
            pruned.name: _peak_forward_memory_cpu(group.shape, pruned)}


def _reset_peak_rss() -> None:
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')
    except OSError:  # kernels before 4.0: the peak since exec (model build included)
        pass


def _peak_rss_bytes() -> int:
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith('VmHWM:'):
                return int(line.split()[1]) * 1024  # kB
    raise RuntimeError('/proc/self/status has no VmHWM line')


def search_step_cost(shape: Shape, iters: int, device: str = 'cpu',
                     log: Callable[[str], None] = print) -> dict:
    """Time (interleaved, median) and peak memory of a search step against a dense step."""
    steps = {'dense step': _search_step_fn(shape, False, device),
             'search step': _search_step_fn(shape, True, device)}
    log(f'search cost: {shape.name}, batch {shape.batch}, {device}')
    times = time_interleaved(steps, iters=iters, warmup=1, device=device)
    med = {k: statistics.median(v) for k, v in times.items()}
    if device.startswith('cuda'):
        peak = {}
        for name, fn in steps.items():
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            fn()
            torch.cuda.synchronize()
            peak[name] = torch.cuda.max_memory_allocated() - base
        how = 'torch.cuda.max_memory_allocated over one step'
    else:
        peak = {'dense step': _peak_step_memory_cpu(shape, False),
                'search step': _peak_step_memory_cpu(shape, True)}
        how = 'peak RSS added by the first step, fresh subprocess per model'
    return dict(shape=asdict(shape), device=device, iters=iters, memory_measured_by=how,
                median_s=med, peak_bytes=peak,
                time_ratio=med['search step'] / med['dense step'],
                memory_ratio=(peak['search step'] / peak['dense step']
                              if peak['dense step'] else float('nan')))


# ------------------------------------------------------------- whole detector
def detector_cost(config: str, keep: float, iters: int, work_dir: str,
                  log: Callable[[str], None] = print) -> dict:
    """A user's view: backbone, backbone + neck and the whole detector's test step (heads and
    NMS included) of ``config``'s detector, dense against its backbone pruned at ``keep``
    (random masks, widths rounded to 8), timed interleaved by
    :func:`~sidt_mmdet.apis.benchmark.benchmark_detectors` on a synthetic image at the
    config's test size. Random weights: the heads keep boxes by score, so the detector row
    depends on the weights as well as on the widths."""
    from ...apis.benchmark import ModelSpec, benchmark_detectors
    from ...apis.runtime import build_model
    from ...search import select_subnet
    dense = build_model(config).backbone
    search = dense.to_search(('attn', 'mlp'))
    with torch.no_grad():
        g = torch.Generator().manual_seed(0)
        for m in search.mask_parameters().values():
            m.copy_(torch.rand(m.shape, generator=g))
    subnet = select_subnet(search, keep_ratio=keep)
    path = os.path.join(work_dir, f'subnet_kr{keep}.json')
    subnet.save(path)
    log(f'whole detector: {os.path.basename(config)}, keep {keep}')
    bench = benchmark_detectors([ModelSpec(config, name='dense'),
                                 ModelSpec(config, subnet=path, name='pruned')],
                                device='cpu', iters=iters, warmup=2, log=lambda m: None)
    rows = {row: dict(dense_ms=r['dense']['median'], pruned_ms=r['pruned']['median'],
                      ratio=bench['ratios'][row]['ratio'],
                      untrusted=bench['ratios'][row]['untrusted'])
            for row, r in bench['rows'].items()}
    return dict(config=os.path.relpath(config, _REPO), keep=keep, iters=iters,
                input_shape=bench['models']['dense']['input_shape'],
                backbone_macs_ratio=(bench['models']['pruned']['backbone_macs']
                                     / bench['models']['dense']['backbone_macs']),
                rows=rows, note=bench['models']['dense'].get('note'))


# ------------------------------------------------------------- latency budgets
def budget_check(check: BudgetCheck, log: Callable[[str], None] = print) -> dict:
    """Build the latency table of ``check.shape``'s search backbone (random masks) on
    ``check.device`` in ``check.dtype``, then select at each budget on it and measure the
    selections against the dense backbone (:func:`~sidt_mmdet.apis.latency_table.
    check_budgets`): measured against target latency, plain data."""
    from ...apis.latency_table import check_budgets
    from ...models import SIDTViT
    from ...search.latency import build_latency_table
    shape = check.shape
    t0 = time.time()
    torch.manual_seed(0)
    backbone = SIDTViT(mode='search', search_dims=('attn', 'mlp', 'embed'),
                       **_sidt_kwargs(shape)).eval()
    widths, hiddens, embeds = check.grid
    log(f'latency table: {shape.name}, batch {shape.batch}, {check.device} {check.dtype}')
    table = build_latency_table(backbone, (shape.size, shape.size), shape.batch,
                                device=check.device, dtype=check.dtype, widths=widths,
                                hiddens=hiddens, embeds=embeds, iters=check.iters, round_to=8,
                                log=log)
    got = check_budgets(backbone, table, check.budgets, round_to=8, iters=check.iters)
    return dict(shape=asdict(shape), device=check.device, dtype=check.dtype,
                budgets=list(check.budgets), key=table.key, table_seconds=table.build_seconds,
                measurements=table.measurements, dense_predicted_ms=table.predict(None),
                seconds=round(time.time() - t0, 1), **got)


class CudaRequiredError(RuntimeError):
    """A preset that times CUDA only, run where torch sees no CUDA device."""


# ---------------------------------------------------------------------- study
def run_latency_study(preset: str = 'readme', *, iters: int | None = None,
                      threads: int | None = None, torch_pruning: bool = True,
                      search_cost: bool = True, log: Callable[[str], None] = print) -> dict:
    """Build and time every group of ``preset`` (see :data:`PRESETS`); plain data out."""
    if preset not in PRESETS:
        raise ValueError(f'preset: expected one of {sorted(PRESETS)}, got {preset!r}')
    spec = PRESETS[preset]
    has_cuda = torch.cuda.is_available()
    if spec.get('requires_cuda') and not has_cuda:
        raise CudaRequiredError(f'--preset {preset} times CUDA only and torch sees no CUDA '
                                f'device here (torch {torch.__version__})')
    if threads:
        torch.set_num_threads(threads)
    tp_note = _torch_pruning_available() if torch_pruning else 'Torch-Pruning turned off'
    if tp_note:
        log(f'Torch-Pruning rows skipped: {tp_note}')
    cuda_note = None if has_cuda else 'no CUDA device: CUDA rows (fp16/bf16 autocast) skipped'
    groups = list(spec['groups']) + (list(spec['cuda']) if has_cuda else [])
    if cuda_note:
        log(cuda_note)
    start = time.time()
    # first, so that a slow machine cuts groups (below), not the check
    budgets = budget_check(spec['budget_check'], log) if spec.get('budget_check') else None
    results = []
    skipped = []
    for g in groups:
        if spec.get('deadline_s') and time.time() - start > spec['deadline_s']:
            skipped.append(f'{g.shape.name} bs {g.shape.batch} {g.dtype}')
            continue
        fns, records = _build_group(g, tp_note, log)
        n = iters or g.iters
        times = time_interleaved(fns, iters=n, warmup=g.warmup, device=g.device,
                                 progress=lambda s: print(f'\r  {s}', end='', file=sys.stderr,
                                                          flush=True))
        print(file=sys.stderr)
        log(f'  done, {time.time() - start:.0f} s since the start')
        results.append(_group_result(replace(g, iters=n), records, times))
        del fns
        if spec.get('memory') and g.device == 'cpu':
            log(f'  peak forward memory: {g.shape.name}, batch {g.shape.batch}')
            results[-1]['memory_bytes'] = forward_memory(g)
            results[-1]['memory_measured_by'] = ('peak RSS added by a second inference '
                                                 'forward, fresh subprocess per model')
    search = []
    if search_cost:
        for shape, n in spec['search']:
            search.append(search_step_cost(shape, iters or n, 'cpu', log))
            if has_cuda:
                search.append(search_step_cost(shape, iters or n, 'cuda', log))
    detector = []
    if spec.get('detector'):
        import tempfile
        with tempfile.TemporaryDirectory() as tmp:
            for config, keep, n in spec['detector']:
                detector.append(detector_cost(os.path.join(_REPO, config), keep, iters or n,
                                              tmp, log))
    deadline_note = (f'past the {spec["deadline_s"]} s deadline, not timed: '
                     f'{", ".join(skipped)}' if skipped else None)
    if deadline_note:
        log(deadline_note)
    meta = dict(preset=preset, torch=torch.__version__, threads=torch.get_num_threads(),
                cpu=platform.processor() or platform.machine(), cpus=os.cpu_count(),
                cuda=torch.cuda.get_device_name(0) if has_cuda else None,
                date=time.strftime('%Y-%m-%d %H:%M:%S'), seconds=round(time.time() - start, 1),
                torch_pruning=_tp_version() if tp_note is None else None,
                notes=[n for n in (tp_note, cuda_note, deadline_note) if n])
    out = dict(format='sidt-latency-study', version=1, meta=meta, groups=results,
               search=search, detector=detector, goals=GOALS)
    if budgets is not None:
        out['budget_check'] = budgets
    return out

