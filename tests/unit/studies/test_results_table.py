"""The README results block: generated from JSON found on disk, refused without markers."""
from __future__ import annotations

import json

import pytest

from sidt_mmdet.studies.results import BEGIN, END, find_results, update_readme


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
