"""The accuracy-latency study's parts: Torch-Pruning's selection read back as a subnet, the
equal-compute check, the comparisons and goals, and the README block from a JSON."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from sidt_mmdet.studies import pareto


def _backbone(seed=0):
    from sidt_mmdet.models import SIDTViT
    torch.manual_seed(seed)
    return SIDTViT(arch=dict(embed_dims=64, num_layers=2, num_heads=2, mlp_ratio=4.0),
                   img_size=32, patch_size=4).eval()


def test_timm_twin_runs_the_same_blocks():
    bb = _backbone()
    twin = pareto._timm_twin(bb)
    x = torch.randn(2, 64, 64)
    with torch.no_grad():
        for ours, theirs in zip(bb.blocks, twin.blocks):
            torch.testing.assert_close(ours(x, (8, 8)), theirs(x), rtol=1e-5, atol=1e-5)


def test_torch_pruning_subnet_slices_to_torch_prunings_own_model():
    """The subnet read back from Torch-Pruning's pruned twin, sliced out of our backbone,
    computes what Torch-Pruning's pruned blocks compute."""
    pytest.importorskip('torch_pruning', reason='the bench group (torch-pruning) is not installed')
    from sidt_mmdet.models.slicing import slice_vit_state_dict
    bb = _backbone(1)
    with torch.no_grad():  # attention far from uniform, so that its scale shows
        for blk in bb.blocks:
            blk.attn.qkv.weight.mul_(8)
    twin, sub = pareto.torch_pruning_twin(bb, keep=0.5, round_to=8)
    for blk in sub.blocks:
        assert [len(x) for x in blk['qk']] == [16, 16] and blk['qk'] == blk['v']
        assert len(blk['mlp']) == 128
    ours = bb.to_pruned(sub)
    ours.load_state_dict(slice_vit_state_dict(bb.state_dict(), sub))
    ours.eval()
    x = torch.randn(2, 64, 64)
    with torch.no_grad():
        for a, b in zip(ours.blocks, twin.blocks):
            torch.testing.assert_close(a(x, (8, 8)), b(x), rtol=1e-5, atol=1e-5)
    # the kept channels are Torch-Pruning's largest-magnitude ones, not the first ones
    assert any(blk['mlp'] != list(range(128)) for blk in sub.blocks)


def _result(post=(10, 10), predictions=None):
    runs = []
    rng = np.random.default_rng(0)
    for k, (name, method, lat) in enumerate([
            (pareto.row_label(pareto.SIDT, 'latency'), pareto.SIDT, 0.55),
            (pareto.row_label(pareto.SIDT, 'macs'), pareto.SIDT, 0.62),
            (pareto.row_label('magnitude', 'macs'), 'magnitude', 0.60)]):
        runs.append(dict(name=name, method=method, ratio=0.6, seed=0, macs_ratio=0.6,
                         latency_ratio=lat, top1_finetuned=50.0 + k,
                         post_dense_iters=post[min(k, len(post) - 1)],
                         predictions=predictions[k] if predictions else None))
    del rng
    return dict(study='pareto', preset='hand', notes='hand-made', task_type='cifar',
                metric='top1', label='top-1', targets=[0.6], runs=runs, bootstrap_draws=200,
                dense=dict(top1=48.5),
                latency_batch=8, latency_table=dict(key=dict(threads=2)))


def _save_predictions(tmp_path, correct_rows):
    paths = []
    for k, correct in enumerate(correct_rows):
        path = tmp_path / f'p{k}.npz'
        gt = np.zeros(len(correct), dtype=np.int64)
        np.savez(path, pred=np.where(np.asarray(correct), 0, 1), gt=gt)
        paths.append(str(path))
    return paths


def test_rows_of_one_target_with_different_training_are_refused(tmp_path):
    paths = _save_predictions(tmp_path, [[1, 0] * 10] * 3)
    with pytest.raises(ValueError, match='different training after the dense model'):
        pareto.pareto_comparisons(_result(post=(10, 12, 10), predictions=paths))


def test_comparisons_and_goals_from_predictions(tmp_path):
    # SiDT (latency) right on all 200 images, the others on half: ahead of both
    paths = _save_predictions(tmp_path, [[1] * 200, [1, 0] * 100, [0, 1] * 100])
    result = _result(predictions=paths)
    result['comparisons'] = pareto.pareto_comparisons(result)
    assert [c['b'] for c in result['comparisons']] == [
        pareto.row_label(pareto.SIDT, 'macs'), pareto.row_label('magnitude', 'macs')]
    assert all(c['verdict'] == 'ahead' for c in result['comparisons'])
    assert result['comparisons'][0]['diff'] == pytest.approx(50.0)
    goals = pareto.pareto_goals(result)
    assert goals[0]['status'] == 'met'
    # one point of the MACs-budget curve: no curve to read the same accuracy on
    assert goals[1]['status'] == 'not shown'


def test_interpolated_latency_at_equal_accuracy():
    curve = [(0.8, 60.0), (0.6, 55.0), (0.4, 45.0)]
    assert pareto._interp_latency(curve, 50.0) == pytest.approx(0.5)
    assert pareto._interp_latency(curve, 57.5) == pytest.approx(0.7)
    assert pareto._interp_latency(curve, 70.0) is None


def test_readme_block_from_json(tmp_path):
    result = _result()
    for r in result['runs']:
        r['top1_finetuned'] = 51.25
    result['goals'] = [dict(goal='a goal', status='missed', detail='d')]
    path = tmp_path / 'pareto_hand.json'
    path.write_text(json.dumps(result))
    readme = tmp_path / 'README.md'
    readme.write_text(f'intro\n{pareto.README_BEGIN}\nold\n{pareto.README_END}\nend\n')
    pareto.update_pareto_readme(str(path), str(readme))
    text = readme.read_text()
    assert '| 0.6 | sidt-l1/dim | latency | 0.600 | 0.550 | 51.25 |' in text
    assert '- **missed**: a goal' in text and 'old' not in text
    assert 'Dense top-1 48.50; every row has 10 training iterations after it.' in text
    assert text.startswith('intro\n') and text.endswith('end\n')
    path.write_text(json.dumps(dict(study='selection')))
    with pytest.raises(ValueError, match='not an accuracy-latency study'):
        pareto.update_pareto_readme(str(path), str(readme))


@pytest.mark.parametrize('kw, match', [
    (dict(budget='latency'), 'latency with a latency table'),
    (dict(budget='macs', latency_table='t.json'), 'latency with a latency table'),
    (dict(budget='macs', loop_rounds=2), 'closed loop needs a latency budget')])
def test_an_export_budget_that_does_not_hold_together_is_refused(tmp_path, kw, match):
    from sidt_mmdet.studies.common import Stages, StageSettings
    stages = Stages(str(tmp_path), StageSettings(data_root=str(tmp_path / 'data')))
    with pytest.raises(ValueError, match=match):
        stages.export('export-x', {}, 'criterion', 'dense.pth', lambda m: None, 0.6, 'dim',
                      **kw)
