"""The README results block: generated from JSON found on disk, refused without markers."""
from __future__ import annotations

import json

import pytest

from sidt_mmdet.studies.results import BEGIN, END, find_results, publish, update_readme


def _selection(preset, top1):
    return dict(study='selection', preset=preset, seeds=[0, 1], dense=dict(
        top1=80.0, config='configs/cifar100/x.py'), retrain_config='configs/cifar100/y.py',
        summary=[dict(method='magnitude', ratio=0.6, seeds=[0, 1], macs_ratio=0.6,
                      params_ratio=0.61, top1_pruned_mean=10.0, top1_finetuned_mean=top1,
                      subnet='s.json')],
        goals=[dict(goal='g', status='missed', detail='d')])


def test_largest_preset_wins_and_table_holds_its_figures(tmp_path):
    (tmp_path / 'a').mkdir()
    (tmp_path / 'a' / 'selection_quick.json').write_text(json.dumps(_selection('quick', 70.5)))
    (tmp_path / 'a' / 'selection_full.json').write_text(json.dumps(_selection('full', 71.25)))
    assert find_results(str(tmp_path))['selection']['preset'] == 'full'
    readme = tmp_path / 'README.md'
    readme.write_text(f'intro\n{BEGIN}\n{END}\nrest\n')
    block = update_readme(str(tmp_path), str(readme), latency=False)
    assert '| selection (full) | magnitude |' in block and '71.25' in block
    assert '70.50' not in block and '**missed**: g' in block
    assert readme.read_text().startswith(f'intro\n{BEGIN}\n') and 'rest' in readme.read_text()


def test_a_result_without_equal_training_is_passed_over_and_named(tmp_path):
    """Fails if a study written before every row had the same post-dense training (SiDT's
    search as free extra iterations) still fills the table."""
    (tmp_path / 'a').mkdir()
    old = dict(_selection('full', 71.25), runs=[dict(method='magnitude')])
    new = dict(_selection('short', 70.5), runs=[dict(method='magnitude', post_dense_iters=9)])
    (tmp_path / 'a' / 'selection_full.json').write_text(json.dumps(old))
    (tmp_path / 'a' / 'selection_short.json').write_text(json.dumps(new))
    superseded = []
    assert find_results(str(tmp_path), superseded)['selection']['preset'] == 'short'
    assert superseded == [str(tmp_path / 'a' / 'selection_full.json')]
    readme = tmp_path / 'README.md'
    readme.write_text(f'{BEGIN}\n{END}\n')
    block = update_readme(str(tmp_path), str(readme), latency=False)
    assert '70.50' in block and '71.25' not in block
    assert 'Not shown, kept for the record:' in block and 'selection_full.json' in block


def test_readme_without_markers_is_refused(tmp_path):
    readme = tmp_path / 'README.md'
    readme.write_text('no markers\n')
    with pytest.raises(ValueError, match='results:begin.*results:end'):
        update_readme(str(tmp_path), str(readme), latency=False)
    assert readme.read_text() == 'no markers\n'


def test_no_results_says_how_to_make_them(tmp_path):
    readme = tmp_path / 'README.md'
    readme.write_text(f'{BEGIN}\n{END}\n')
    assert 'compare_selection.py' in update_readme(str(tmp_path), str(readme), latency=False)


def _study_dir(tmp_path, subnet_path=None):
    ws = tmp_path / 'work' / 'hard'
    (ws / 'export-x').mkdir(parents=True)
    subnet = ws / 'export-x' / 'subnet.json'
    subnet.write_text('{"blocks": []}\n')
    res = _selection('full', 60.0)
    res['summary'][0]['subnet'] = str(subnet_path or subnet)
    res['dense']['checkpoint'] = str(ws / 'dense' / 'iter_1.pth')  # not copied
    (ws / 'finetune-x').mkdir()
    (ws / 'finetune-x' / 'predictions.npz').write_bytes(b'per-image predictions')
    res['summary'][0]['runs'] = [dict(predictions=str(ws / 'finetune-x' / 'predictions.npz'))]
    (ws / 'selection_full.json').write_text(json.dumps(res))
    (ws / 'selection_full.md').write_text('# report\n')
    return ws, subnet


def test_publish_copies_the_json_its_report_and_subnets(tmp_path):
    _, subnet = _study_dir(tmp_path)
    docs = tmp_path / 'docs'
    written = publish(str(tmp_path / 'work'), str(docs))
    assert written == [str(docs / 'hard' / 'selection_full.json')]
    out = json.loads((docs / 'hard' / 'selection_full.json').read_text())
    copied = docs / 'hard' / 'export-x' / 'subnet.json'
    assert out['summary'][0]['subnet'] == str(copied)
    assert copied.read_text() == subnet.read_text()
    assert not (docs / 'hard' / 'dense').exists()
    # the per-image predictions, which the paired intervals are recomputed from
    preds = docs / 'hard' / 'finetune-x' / 'predictions.npz'
    assert out['summary'][0]['runs'][0]['predictions'] == str(preds)
    assert preds.read_bytes() == b'per-image predictions'
    assert (docs / 'hard' / 'selection_full.md').read_text() == '# report\n'
    # the published copy is what the table reads
    assert find_results(str(docs))['selection']['summary'][0]['top1_finetuned_mean'] == 60.0


def test_publish_refuses_missing_or_foreign_subnets(tmp_path):
    _study_dir(tmp_path, subnet_path=tmp_path / 'work' / 'hard' / 'gone' / 'subnet.json')
    with pytest.raises(FileNotFoundError, match='gone/subnet.json is missing'):
        publish(str(tmp_path / 'work'), str(tmp_path / 'docs'))
    other = tmp_path / 'elsewhere.json'
    other.write_text('{}')
    _study_dir(tmp_path / 'b', subnet_path=other)
    with pytest.raises(ValueError, match='outside the study\'s workspace'):
        publish(str(tmp_path / 'b' / 'work'), str(tmp_path / 'docs'))
    with pytest.raises(FileNotFoundError, match='no selection_'):
        publish(str(tmp_path / 'nothing'), str(tmp_path / 'docs'))


def test_detection_study_gets_its_own_table(tmp_path):
    """The detection selection study (its own JSON name) fills a box / mask mAP table beside
    the classification one, and is not taken for the classification study."""
    det = dict(study='selection', preset='detection-short', task_type='detection', seeds=[0],
               dense=dict(bbox_mAP=41.5, segm_mAP=38.25, config='configs/toy/d.py'),
               retrain_config='configs/toy/r.py',
               summary=[dict(method='sidt-l1/dim', seeds=[0], macs_ratio=0.6, params_ratio=0.62,
                             bbox_mAP_finetuned_mean=40.125, segm_mAP_finetuned_mean=37.5,
                             subnet='s.json', post_dense_iters=9)],
               runs=[dict(post_dense_iters=9)], goals=[dict(goal='h', status='met', detail='e')])
    (tmp_path / 'a').mkdir()
    (tmp_path / 'a' / 'selection_detection-short.json').write_text(json.dumps(det))
    (tmp_path / 'a' / 'selection_short.json').write_text(json.dumps(
        dict(_selection('short', 70.5), runs=[dict(post_dense_iters=9)])))
    found = find_results(str(tmp_path))
    assert found['selection']['preset'] == 'short'
    assert found['detection']['preset'] == 'detection-short'
    readme = tmp_path / 'README.md'
    readme.write_text(f'{BEGIN}\n{END}\n')
    block = update_readme(str(tmp_path), str(readme), latency=False)
    assert '| detection (short) | dense | `d.py` |  | 1.000 | 1.000 |  | 41.50 | 38.25 | 0 |' \
        in block
    assert '| detection (short) | sidt-l1/dim | `r.py` | `s.json` | 0.620 | 0.600 |  | 40.12 ' \
        '| 37.50 | 0 |' in block
    assert '| selection (short) | magnitude |' in block and '- detection: **met**: h' in block
