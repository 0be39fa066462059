"""The GPU check (``--preset gpu``): its grid (rows, dtypes, batches against the readme
grid), its refusal without CUDA, its README block rendered from hand-made JSON (run and not
run), and its whole code path at toy size on a CPU (``gpu-tiny``)."""
from __future__ import annotations

import copy
import json

import pytest
import torch

from sidt_mmdet.studies.latency import (
    GPU_BEGIN,
    GPU_END,
    PRESETS,
    README_BEGIN,
    README_END,
    CudaRequiredError,
    cuda_goal_lines,
    gpu_table,
    load_study,
    pending_study,
    run_latency_study,
    update_readme,
    write_study,
)

pytestmark = pytest.mark.usefixtures('one_torch_thread')


def _by_row(groups):
    return {(g.shape.name, g.shape.batch, g.dtype): g for g in groups}


def test_gpu_grid_is_the_readme_rows_at_batch_1_and_64_in_fp16_and_bf16():
    gpu, readme = PRESETS['gpu'], _by_row(PRESETS['readme']['groups'])
    assert gpu['groups'] == [] and gpu['search'] == [] and gpu['requires_cuda']
    rows = _by_row(gpu['cuda'])
    assert len(rows) == len(gpu['cuda']) == 10
    assert {g.device for g in gpu['cuda']} == {'cuda'}
    assert [g.dtype for g in gpu['cuda']] == ['fp16'] * 5 + ['bf16'] * 5  # the goal's first
    want = {  # (name, batch) -> the readme row whose variants it times
        ('ViT-B 224', 1): ('ViT-B 224', 1), ('ViT-B 224', 64): ('ViT-B 224', 8),
        ('ViTDet-B 512', 1): ('ViTDet-B 512', 1), ('ViTDet-B 512', 64): ('ViTDet-B 512', 1),
        ('ViTDet-B 1024', 1): ('ViTDet-B 1024', 1)}
    assert {(n, b, d) for n, b in want for d in ('fp16', 'bf16')} == set(rows)
    for (name, batch), ref in want.items():
        base = readme[(*ref, 'fp32')]
        for dtype in ('fp16', 'bf16'):
            g = rows[(name, batch, dtype)]
            assert g.variants == base.variants, (name, batch, dtype)
            assert g.shape.size == base.shape.size and g.shape.vitdet == base.shape.vitdet
    # ViTDet-B at 1024 runs at batch 1 only (batch 64 is timed at 512)
    assert not any(g.shape.size == 1024 and g.shape.batch > 1 for g in gpu['cuda'])
    check = gpu['budget_check']
    assert (check.shape.name, check.shape.batch, check.device, check.dtype) == (
        'ViT-B 224', 64, 'cuda', 'float16')
    assert check.budgets == (0.8, 0.6, 0.4)


def test_gpu_tiny_is_the_same_path_on_cpu():
    tiny = PRESETS['gpu-tiny']
    assert tiny['cuda'] == [] and not tiny.get('requires_cuda')
    assert {(g.device, g.dtype) for g in tiny['groups']} == {('cpu', 'fp32')}
    assert (tiny['budget_check'].device, tiny['budget_check'].dtype) == ('cpu', 'float32')
    # the gpu preset's budgets below 0.95, 0.95 added: the toy's smallest subnet is near 0.8
    gpu = PRESETS['gpu']['budget_check'].budgets
    assert tiny['budget_check'].budgets == (0.95, *(b for b in gpu if b > 0.4))


def test_gpu_preset_refuses_without_cuda(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    logged = []
    with pytest.raises(CudaRequiredError, match='--preset gpu times CUDA only and torch sees '
                                                'no CUDA device here'):
        run_latency_study('gpu', log=logged.append)
    assert logged == []  # refused before anything is built or logged


def _row(kind, median_s, macs, **extra):
    return dict(kind=kind, median_s=median_s, macs=macs, **extra)


def _hand_made_study(fp16_pruned_s: float) -> dict:
    """A CUDA fp16 batch-64 group (dense 10 ms, 100 GMACs; pruned at keep 0.6 to 50 GMACs)
    and a bf16 batch-1 group, with a budget check."""
    pruned = dict(keep=0.6, granularity='dim', round_to=8, layout='grouped', equal_heads=False,
                  tool='sidt', base='sidt dense')

    def group(batch, dtype, pruned_s):
        dense = _row('sidt_dense', 0.010, 100e9, base=None)
        p = _row('sidt_pruned', pruned_s, 50e9, **pruned)
        p.update(latency_ratio=pruned_s / 0.010, macs_ratio=0.5)
        return dict(shape=dict(name='ViT-B 224', batch=batch, size=224, vitdet=False,
                               window=14), device='cuda', dtype=dtype, iters=20, warmup=1,
                    models={'sidt dense': dense, 'sidt dim kr0.6 r8': p})

    rows = [dict(target=0.8, measured_ratio=0.81, predicted_ratio=0.79, macs_ratio=0.7,
                 dense_ms=10.0, pruned_ms=8.1),
            dict(target=0.4, infeasible='below the smallest subnet')]
    return dict(format='sidt-latency-study', version=1,
                meta=dict(preset='gpu', torch='2.11.0', threads=16, cpu='x86_64', cpus=16,
                          cuda='NVIDIA H100 80GB HBM3', date='2026-01-02 03:04:05',
                          seconds=400.0, torch_pruning=None, notes=['a note']),
                groups=[group(64, 'fp16', fp16_pruned_s), group(1, 'bf16', 0.009)],
                search=[], detector=[],
                budget_check=dict(shape=dict(name='ViT-B 224', batch=64),
                                  key=dict(device='cuda: NVIDIA H100 80GB HBM3',
                                           dtype='float16'),
                                  measurements=1234, table_seconds=56.0, rows=rows,
                                  max_abs_error_vs_target=0.0125))


def _readme(tmp_path):
    path = tmp_path / 'README.md'
    path.write_text(f'# x\n{README_BEGIN}\nreadme table\n{README_END}\n'
                    f'{GPU_BEGIN}\nold block\n{GPU_END}\nafter\n')
    return path


def test_gpu_block_renders_from_json(tmp_path):
    # speedup 1 / 0.55 = 1.82 >= 0.5 ** -0.85 = 1.80: met
    study = _hand_made_study(0.0055)
    path = tmp_path / 'latency.json'
    path.write_text(json.dumps(study))
    readme = _readme(tmp_path)
    update_readme(str(readme), load_study(str(path)))
    text = readme.read_text()
    assert 'old block' not in text and 'readme table' in text and text.endswith('after\n')
    assert 'NVIDIA H100 80GB HBM3, torch 2.11.0, preset `gpu`' in text
    assert '| ViT-B 224, bs 64, cuda fp16 | 10.00 | 0.6 | 0.55 / 0.50 | — | — | — |' in text
    assert '| ViT-B 224, bs 1, cuda bf16 | 10.00 | 0.6 | 0.90 / 0.50 | — | — | — |' in text
    assert ('- ViT-B 224, bs 64, cuda fp16: worst speedup 1.82 against (MACs ratio)^-0.85 = '
            '1.80 (dim kr 0.6 r8): met') in text
    assert '| 0.8 | 0.810 | 0.790 | 0.700 | 10.00 | 8.10 |' in text
    assert '| 0.4 | infeasible: below the smallest subnet |' in text
    assert 'Largest |measured / budget - 1|: 1.2%.' in text and '- a note' in text
    files = write_study(study, str(tmp_path / 'out'), plot=False)
    assert files.png is None and not (tmp_path / 'out' / 'latency.png').exists()
    assert '## Latency budgets' in open(files.markdown, encoding='utf-8').read()


def test_gpu_goal_missed_and_not_evaluated():
    study = _hand_made_study(0.0056)  # 1 / 0.56 = 1.79 < 1.80
    assert cuda_goal_lines(study)[0].endswith('(dim kr 0.6 r8): missed')
    cpu = copy.deepcopy(study)
    for g in cpu['groups']:
        g['device'] = 'cpu'
    assert cuda_goal_lines(cpu) == [
        '- no CUDA fp16 group at batch 64 in this study: not evaluated']


def test_gpu_block_says_not_run(tmp_path):
    files = write_study(pending_study('gpu'), str(tmp_path), plot=False)
    readme = _readme(tmp_path)
    update_readme(str(readme), load_study(files.json))
    block = readme.read_text().split(GPU_BEGIN)[1].split(GPU_END)[0]
    assert block.strip().startswith('Not run yet: no CUDA machine has run `--preset gpu`')
    assert not any(ch.isdigit() for ch in block)  # no figure at all
    assert gpu_table(load_study(files.json)) in readme.read_text()
    assert 'Not run yet' in open(files.markdown, encoding='utf-8').read()


def test_gpu_tiny_runs_the_whole_path(tmp_path):
    study = run_latency_study('gpu-tiny', torch_pruning=False, log=lambda m: None)
    assert [(g['shape']['name'], g['shape']['batch'], g['dtype']) for g in study['groups']] == [
        ('toy 64', 2, 'fp32'), ('toy 64', 1, 'fp32'), ('toy-det 64', 1, 'fp32')]
    for g in study['groups']:
        assert {'sidt dense', 'sidt dim kr0.6 r8', 'sidt head_uniform kr0.6 r8'} <= set(
            g['models'])
    check = study['budget_check']
    assert check['key']['device'].startswith('cpu') and check['key']['dtype'] == 'float32'
    assert [r['target'] for r in check['rows']] == [0.95, 0.8, 0.6]
    measured = [r for r in check['rows'] if 'measured_ratio' in r]  # 0.95 is always feasible
    assert measured and all(r['measured_ratio'] > 0 and r['pruned_ms'] > 0 for r in measured)
    files = write_study(study, str(tmp_path), plot=False)
    readme = _readme(tmp_path)
    update_readme(str(readme), load_study(files.json))
    text = readme.read_text()
    assert '| toy 64, bs 2 |' in text and '| 0.8 |' in text
    assert 'not evaluated' in text  # no CUDA fp16 batch-64 group on a CPU
