"""tools/deploy/export_onnx.py on the toy ViTDet recipe: a pruned backbone (heads, MLP and
embedding) with its simple pyramid exported as one fixed-size graph, checked by onnxruntime,
timed against the dense model; and a refusal that leaves no file. (A dynamic graph of a pruned
backbone and pyramid is traced once in the suite, by the unit test of the exporter: the trace
takes a minute.)"""
from __future__ import annotations

import json

import pytest
import torch
from conftest import run_command
from helpers import REPO, perturb_, random_masks_
from mmengine.config import Config
from mmengine.registry import init_default_scope

from sidt_mmdet.export import prune_model_state_dict
from sidt_mmdet.export.onnx import export_onnx_from_config
from sidt_mmdet.export.onnx_bench import README_BEGIN, README_END, update_latency_readme
from sidt_mmdet.search.select import select_subnet
from sidt_mmdet.utils.cli import run_tool
from sidt_mmdet.utils.config import backbone_cfg

pytest.importorskip('onnxruntime', reason="install the deploy group: pip install "
                                          "'sidt-mmdet[deploy]'")
pytest.importorskip('onnxscript', reason="install the deploy group: pip install "
                                         "'sidt-mmdet[deploy]'")

TOOL = REPO / 'tools/deploy/export_onnx.py'
SEARCH_CFG = REPO / ('configs/toy/sidt-search_mask-rcnn_sidtvit-toy-vitdet-kr0.6_simplefpn_'
                     'lsj-100it_toy-coco.py')
RETRAIN_CFG = REPO / ('configs/toy/sidt-retrain_mask-rcnn_sidtvit-toy-vitdet-kr0.6_simplefpn_'
                      'lsj-100it_toy-coco.py')


@pytest.fixture(scope='module')
def pruned_export(tmp_path_factory):
    """subnet.json + pruned.pth as tools/export_subnet.py writes them, from random masks."""
    from mmdet.registry import MODELS

    out = tmp_path_factory.mktemp('export')
    cfg = Config.fromfile(str(SEARCH_CFG))
    init_default_scope('mmdet')
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    random_masks_(perturb_(model.backbone))
    subnet = select_subnet(model.backbone, keep_ratio=0.6)
    assert subnet.embed is not None and len(subnet.embed) < 64
    subnet.save(str(out / 'subnet.json'))
    torch.save(dict(state_dict=prune_model_state_dict(model.state_dict(), subnet)),
               out / 'pruned.pth')
    assert backbone_cfg(Config.fromfile(str(RETRAIN_CFG)).model)['mode'] == 'pruned'
    return out


@pytest.mark.slow
def test_pruned_with_neck_and_benchmark(pruned_export, tmp_path):
    onnx_path = tmp_path / 'pruned.onnx'
    result = run_command([
        'python', str(TOOL), str(RETRAIN_CFG), str(pruned_export / 'pruned.pth'),
        '--subnet', str(pruned_export / 'subnet.json'), '-o', str(onnx_path),
        '--input-size', '160', '192', '--with-neck', '--benchmark',
        '--repeats', '3', '--threads', '1'], timeout=900)
    out = result.stdout
    assert 'onnxruntime vs PyTorch at input 1x3x160x192: max abs diff' in out
    assert onnx_path.is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ['pruned.latency.json', 'pruned.onnx']

    from sidt_mmdet.export.onnx import OnnxRunner, build_export_model

    runner = OnnxRunner(str(onnx_path))
    assert runner.fixed_shape and runner.input_shape == [1, 3, 160, 192]
    assert runner.output_names == ['p2', 'p3', 'p4', 'p5', 'p6']
    # the graph is the retrain config's model with the exported weights: checked here, on a
    # fresh input, against the model built in this process
    model = build_export_model(str(RETRAIN_CFG), str(pruned_export / 'pruned.pth'),
                               subnet=str(pruned_export / 'subnet.json'), with_neck=True)
    x = torch.randn(1, 3, 160, 192, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        expected = model.eval()(x)
    outs = runner(x)
    assert [o.shape[-2:] for o in outs] == [(40, 48), (20, 24), (10, 12), (5, 6), (3, 3)]
    assert max(float((torch.from_numpy(o) - e).abs().max())
               for o, e in zip(outs, expected)) < 1e-4

    bench = json.loads((tmp_path / 'pruned.latency.json').read_text())
    assert sorted(bench['models']) == ['dense', 'pruned']
    assert bench['source']['subnet'] == str(pruned_export / 'subnet.json')
    assert bench['input_size'] == [160, 192] and bench['threads'] == 1
    pruned, dense = bench['models']['pruned'], bench['models']['dense']
    assert pruned['params'] < dense['params']
    assert pruned['macs_ratio_vs_dense'] == pytest.approx(pruned['backbone_macs']
                                                          / dense['backbone_macs'])
    assert len(pruned['times_ms']) == len(dense['times_ms']) == 3
    assert pruned['speedup_vs_dense'] == pytest.approx(dense['median_ms'] / pruned['median_ms'])
    assert pruned['max_abs_diff'] < 1e-4 and dense['max_abs_diff'] < 1e-4
    assert 'latency pruned:' in out and 'the dense speed' in out
    # the README's ONNX latency table is generated from this JSON, figures in their columns
    readme = tmp_path / 'README.md'
    readme.write_text(f'x\n{README_BEGIN}\nstale\n{README_END}\ny\n')
    latency_json = str(tmp_path / 'pruned.latency.json')
    block = update_latency_readme(latency_json, str(readme))
    assert 'stale' not in readme.read_text() and block in readme.read_text()
    assert (f'| pruned | {pruned["backbone_params"] / 1e6:.1f}M | '
            f'{pruned["backbone_macs"] / 1e9:.1f}G ({pruned["macs_ratio_vs_dense"]:.2f}x) | '
            f'{pruned["median_ms"]:.0f} ms | {pruned["speedup_vs_dense"]:.2f}x faster |') in block
    assert f'| dense | {dense["backbone_params"] / 1e6:.1f}M |' in block
    assert '160 x 192, batch 1' in block and '3 runs' in block
    (tmp_path / 'bad.json').write_text('{"models": {}}')
    with pytest.raises(ValueError, match='bad.json: expected a benchmark JSON'):
        update_latency_readme(str(tmp_path / 'bad.json'), str(readme))


@pytest.mark.slow
def test_refusal_is_one_error_line_and_no_file(pruned_export, tmp_path, capsys):
    onnx_path = tmp_path / 'x.onnx'
    result = run_command([
        'python', str(TOOL), str(RETRAIN_CFG), str(pruned_export / 'pruned.pth'),
        '-o', str(onnx_path), '--input-size', '160', '160'], check=False)
    # the retrain config's default subnet path does not exist here: it names it
    assert result.returncode == 1, result.stderr[-2000:]
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith('export_onnx.py: error:')]
    assert len(lines) == 1 and 'subnet' in lines[0], result.stderr[-2000:]
    # the library call of the tool, in this process (its exit path is the subprocess's above)
    assert run_tool('export_onnx.py', export_onnx_from_config, str(RETRAIN_CFG),
                    str(pruned_export / 'pruned.pth'), str(onnx_path),
                    subnet=str(pruned_export / 'subnet.json'), input_size=[150, 160]) == 1
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith('export_onnx.py: error:')]
    assert len(lines) == 1, err
    assert lines[0].startswith('export_onnx.py: error: input size 150x160 is not a multiple of '
                               'the patch size 16'), err
    assert not list(tmp_path.iterdir())
