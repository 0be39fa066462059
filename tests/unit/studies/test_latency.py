"""The latency study runs end to end at a tiny size (nothing timed is asserted), writes
JSON + Markdown + PNG, renders the README table from the JSON, and skips Torch-Pruning
cleanly when it is absent."""
import json

import pytest

from sidt_mmdet.studies import latency
from sidt_mmdet.studies.latency import (
    README_BEGIN,
    README_END,
    load_study,
    run_latency_study,
    time_interleaved,
    update_readme,
    write_study,
)

pytestmark = pytest.mark.usefixtures('one_torch_thread')


@pytest.fixture(scope='module')
def tiny_study():
    return run_latency_study('tiny', iters=1, torch_pruning=False, search_cost=False,
                             log=lambda m: None)


def test_tiny_study_writes_json_markdown_png(tiny_study, tmp_path):
    files = write_study(tiny_study, str(tmp_path))
    study = load_study(files.json)
    assert study['meta']['preset'] == 'tiny'
    names = set(study['groups'][0]['models'])
    for gran in ('dim', 'head_uniform', 'head'):
        assert f'sidt {gran} kr0.6 r8' in names
    assert {'sidt dense', 'ref SIDTViT', 'ref timm', 'sidt dim kr0.6 r8 padded',
            'sidt dim kr0.6 r8 eq'} <= names
    pruned = [r for g in study['groups'] for r in g['models'].values()
              if r['kind'] == 'sidt_pruned']
    for r in pruned:
        assert r['macs_ratio'] < 1 and r['latency_ratio'] > 0
        assert r['macs_executed'] >= r['macs']
        if r['layout'] == 'grouped':
            assert r['macs_executed'] == r['macs']
    assert any(r['layout'] == 'padded' and r['macs_executed'] > r['macs'] for r in pruned)
    assert study['groups'][1]['shape']['vitdet']
    text = open(files.markdown, encoding='utf-8').read()
    assert '| sidt dim kr0.6 r8 |' in text and '## Goals' in text
    assert 'Torch-Pruning turned off' in text
    with open(files.png, 'rb') as f:
        assert f.read(8) == b'\x89PNG\r\n\x1a\n'
    assert not any(r['kind'] == 'tp_pruned' for g in study['groups']
                   for r in g['models'].values())


def test_missing_torch_pruning_is_a_note(monkeypatch):
    monkeypatch.setattr(latency.zoo.importlib.util, 'find_spec', lambda name: None)
    study = run_latency_study('tiny', iters=1, search_cost=False, log=lambda m: None)
    assert any('Torch-Pruning is not installed' in n for n in study['meta']['notes'])
    assert study['meta']['torch_pruning'] is None


def test_torch_pruning_rows():
    pytest.importorskip('torch_pruning', reason='Torch-Pruning rows need the bench extra '
                                                '(pip install -e ".[bench]")')
    study = run_latency_study('tiny', iters=1, search_cost=False, log=lambda m: None)
    rows = study['groups'][0]['models']
    tp = rows['tp kr0.6 r8']
    assert tp['kind'] == 'tp_pruned' and tp['base'] == 'timm dense'
    assert 0.3 < tp['macs_ratio'] < 0.9
    assert 'timm dense' in rows


def test_readme_table_round_trip(tiny_study, tmp_path):
    files = write_study(tiny_study, str(tmp_path / 'out'))
    readme = tmp_path / 'README.md'
    readme.write_text(f'# x\n\nbefore\n{README_BEGIN}\nold table\n{README_END}\nafter\n')
    update_readme(str(readme), load_study(files.json), image='out/latency.png')
    text = readme.read_text()
    assert 'old table' not in text and text.startswith('# x\n\nbefore\n')
    assert text.rstrip().endswith('after')
    assert '| toy 64, bs 2 | 0.6 |' in text and '![latency ratio' in text
    again = text
    update_readme(str(readme), load_study(files.json), image='out/latency.png')
    assert readme.read_text() == again
    bare = tmp_path / 'bare.md'
    bare.write_text('no markers\n')
    with pytest.raises(ValueError, match='bare.md: expected a line'):
        update_readme(str(bare), tiny_study)


def test_load_study_rejects_other_json(tmp_path):
    path = tmp_path / 'x.json'
    path.write_text(json.dumps({'format': 'other'}))
    with pytest.raises(ValueError, match='x.json: not a latency study JSON'):
        load_study(str(path))


def test_time_interleaved_rotates_and_checks_arguments():
    calls = []
    fns = {n: (lambda n=n: calls.append(n)) for n in 'abc'}
    times = time_interleaved(fns, iters=3, warmup=0)
    assert all(len(t) == 3 for t in times.values())
    assert calls == list('abc' 'bca' 'cab')
    with pytest.raises(ValueError, match='iters must be >= 1'):
        time_interleaved(fns, iters=0)
    with pytest.raises(ValueError, match="preset: expected one of"):
        run_latency_study('huge')


@pytest.mark.slow
def test_search_cost_measures_time_and_memory():
    shape, iters = latency.PRESETS['tiny']['search'][0]
    cost = latency.search_step_cost(shape, iters=iters, log=lambda m: None)
    assert cost['peak_bytes']['dense step'] > 0 and cost['peak_bytes']['search step'] > 0
    assert cost['time_ratio'] > 0 and cost['memory_ratio'] > 0


def test_cuda_rows_render(tiny_study):
    """CUDA groups (fp16 autocast, batch 64) render with their own goal, from plain data."""
    import copy

    from sidt_mmdet.studies.latency import readme_table, render_markdown
    study = copy.deepcopy(tiny_study)
    cuda = copy.deepcopy(study['groups'][0])
    cuda.update(device='cuda', dtype='fp16')
    cuda['shape']['batch'] = 64
    study['groups'].append(cuda)
    text = render_markdown(study)
    assert '## toy 64, bs 64, cuda fp16' in text and 'worst speedup' in text
    assert '| toy 64, bs 64, cuda fp16 | 0.6 |' in readme_table(study)


@pytest.mark.slow
def test_forward_memory_and_the_scaling_table(tiny_study, tmp_path):
    """Catches a scaling figure read from the wrong process or model: the dense forward of
    a backbone 4x wider than the pruned one (keep 0.25) adds more peak memory, each counted
    in its own subprocess; the scaling table renders from plain data between its own
    README markers and leaves the latency block alone."""
    import copy

    from sidt_mmdet.studies.latency import SCALING_BEGIN, SCALING_END, scaling_table
    from sidt_mmdet.studies.latency.measure import forward_memory
    from sidt_mmdet.studies.latency.presets import Group, Shape, Variant
    shape = Shape('toy 128', dict(embed_dims=256, num_layers=2, num_heads=4), 128, 4)
    group = Group(shape, (Variant(0.25, 'dim', 8),), iters=1)
    mem = forward_memory(group)
    assert set(mem) == {'sidt dense', 'sidt dim kr0.25 r8'}
    assert mem['sidt dense'] > mem['sidt dim kr0.25 r8'] > 0
    study = copy.deepcopy(tiny_study)
    study['meta']['preset'] = 'scaling'
    g = study['groups'][1]
    pruned = next(n for n, r in g['models'].items() if r['kind'] == 'sidt_pruned')
    g['memory_bytes'] = {'sidt dense': 4 * 2**20, pruned: 3 * 2**20}
    table = scaling_table(study)
    assert '| toy-det 64 (window 2, rel-pos), bs 1 |' in table and '| 4 | 3 | 0.750 |' in table
    readme = tmp_path / 'README.md'
    readme.write_text(f'{README_BEGIN}\nlatency\n{README_END}\n{SCALING_BEGIN}\nold\n'
                      f'{SCALING_END}\n')
    update_readme(str(readme), study)
    text = readme.read_text()
    assert 'latency\n' in text and 'old' not in text and table in text
    assert '## Scaling' in latency.render_markdown(study)


@pytest.mark.slow
def test_whole_detector_rows(tmp_path):
    """The study's whole-detector rows: backbone, backbone + neck and the test step of a
    toy detector, dense against its backbone pruned at keep 0.6, each a ratio of the two
    medians; the pruned backbone has fewer MACs; the table renders from plain data."""
    from sidt_mmdet.studies.latency.measure import _REPO, detector_cost
    config = f'{_REPO}/configs/toy/sidt-dense_retinanet_sidtvit-toy_simplefpn_100it_toy-coco.py'
    d = detector_cost(config, 0.6, iters=1, work_dir=str(tmp_path), log=lambda m: None)
    assert set(d['rows']) == {'backbone', 'backbone+neck', 'detector'}
    for r in d['rows'].values():
        assert r['ratio'] == pytest.approx(r['pruned_ms'] / r['dense_ms'])
    assert 0.3 < d['backbone_macs_ratio'] < 1 and d['input_shape'][-2:] == [160, 160]
    study = dict(meta=dict(preset='detector'), groups=[], search=[], detector=[d])
    text = '\n'.join(latency.report._detector_table(study))
    assert '| sidt-dense_retinanet_sidtvit-toy_simplefpn_100it_toy-coco (160x160) | detector |' \
        in text
