"""The whole-detector benchmark: the test size it reads from a config, the table it prints,
its refusals, and (slow) a run on the toy dense and pruned detectors, synthetic and on the
test dataloader. No timing is asserted (the machine is shared)."""
from __future__ import annotations

import json
import re
import sys

import pytest
from helpers import REPO, run_command
from mmengine.config import Config

from sidt_mmdet.apis.benchmark import ROWS, config_test_size, format_benchmark
from sidt_mmdet.cli.benchmark_detector import main
from sidt_mmdet.models import Subnet
from sidt_mmdet.utils.cli import ToolError

TOY = REPO / 'configs/toy'
DENSE = TOY / 'sidt-dense_mask-rcnn_sidtvit-toy_simplefpn_100it_toy-coco.py'
RETRAIN = TOY / 'sidt-retrain_mask-rcnn_sidtvit-toy-kr0.6_simplefpn_100it_toy-coco.py'
LINE = r'\[(dense|pruned)\] (backbone|backbone\+neck|detector) *: [0-9.]+ ms/img, fps [0-9.]+ img/s'


def _cfg(pipeline):
    return Config(dict(test_dataloader=dict(dataset=dict(pipeline=pipeline))))


def test_test_size_from_the_pipeline():
    resize = dict(type='Resize', scale=(1333, 800), keep_ratio=True)
    assert config_test_size(_cfg([dict(type='LoadImageFromFile'), resize])) == (800, 1333)
    plain = dict(type='Resize', scale=(640, 480), keep_ratio=False)
    assert config_test_size(_cfg([plain])) == (480, 640)
    assert config_test_size(_cfg([dict(type='mmdet.Resize', scale=512)])) == (512, 512)
    # the toy config: Resize to (160, 160) keeping the ratio
    assert config_test_size(Config.fromfile(str(DENSE))) == (160, 160)
    with pytest.raises(ToolError, match='no Resize with a scale: give --input-size'):
        config_test_size(_cfg([dict(type='LoadImageFromFile')]))


def test_table_from_hand_made_figures():
    def row(ms, iqr):
        return dict(median=ms, iqr=iqr, ms_per_img=ms / 2, q1=0, q3=0, min=0, max=0, n=5,
                    fps=2e3 / ms)
    result = dict(
        models=dict(dense={}, pruned={}), batch=2, device='cpu', threads=2, cpu_count=2,
        source='synthetic', iters=5, warmup=1, load_average=dict(before=0.5, after=None),
        rows={'backbone': dict(dense=row(20.0, 1.0), pruned=row(10.0, 0.4)),
              'detector': dict(dense=row(60.0, 8.0), pruned=row(58.0, 6.0))},
        ratios={'backbone': dict(ratio=0.5, untrusted=[]),
                'detector': dict(ratio=58 / 60, untrusted=['spread (IQR 8 ms) larger than '
                                                           'the difference of the medians '
                                                           '(2 ms)'])})
    lines = format_benchmark(result).splitlines()
    assert lines[0] == '| row | dense ms/img (IQR) | pruned ms/img (IQR) | ratio | |'
    # per image: the batch of 2 halves the medians and the IQRs
    assert lines[2] == '| backbone | 10.0 (0.5) | 5.0 (0.2) | 0.500 |  |'
    assert lines[3] == ('| detector | 30.0 (4.0) | 29.0 (3.0) | 0.967 | untrusted: spread (IQR '
                        '8 ms) larger than the difference of the medians (2 ms) |')
    assert lines[-1].endswith('load average 0.50 before, n/a after.')


@pytest.mark.parametrize('argv, message', [
    (['--compare', 'a.py', 'b.pth', 'c'], '--compare: expected CONFIG [CHECKPOINT]'),
    (['--compare-subnet', 's.json'], '--compare-subnet needs --compare'),
    (['--subnet', 'missing.json'], 'subnet file missing.json: no such file'),
])
def test_refusals_are_one_line(argv, message, capsys):
    assert main([str(DENSE), *argv]) == 1
    err = capsys.readouterr().err
    assert err.startswith('benchmark_detector.py: error: ') and message in err
    assert main(['missing.py']) == 1
    assert 'config missing.py: no such file' in capsys.readouterr().err


def _subnet(path):
    """Unequal heads and a dropped head: the pruned attention runs packed."""
    blocks = [dict(qk=[list(range(16)), list(range(8)), list(range(4)), []],
                   v=[list(range(16)), list(range(8)), list(range(4, 12)), []],
                   mlp=list(range(0, 256, 2))) for _ in range(4)]
    Subnet(64, 4, 4, 256, blocks=blocks).save(path)
    return path


@pytest.mark.slow
def test_dense_against_pruned_on_synthetic_images(tmp_path, capsys):
    out = tmp_path / 'bench.json'
    sub = _subnet(tmp_path / 'subnet.json')
    assert main([str(DENSE), '--compare', str(RETRAIN), '--compare-subnet', str(sub),
                 '--iters', '2', '--warmup', '1', '--threads', '1', '--out', str(out)]) == 0
    printed = capsys.readouterr().out
    assert len(re.findall(LINE, printed)) == 2 * len(ROWS)
    assert '| row | dense ms/img (IQR) | pruned ms/img (IQR) | ratio | |' in printed
    result = json.loads(out.read_text())
    assert list(result['rows']) == list(ROWS) and list(result['ratios']) == list(ROWS)
    assert result['device'] == 'cpu' and result['source'] == 'synthetic'
    dense, pruned = result['models']['dense'], result['models']['pruned']
    assert (dense['backbone_mode'], pruned['backbone_mode']) == ('dense', 'pruned')
    assert pruned['backbone_macs'] < dense['backbone_macs']
    assert dense['input_shape'] == [1, 3, 160, 160] and 'random weights' in dense['note']
    for row in ROWS:
        for name in ('dense', 'pruned'):
            s = result['rows'][row][name]
            assert s['n'] == 2 and s['min'] <= s['q1'] <= s['median'] <= s['q3'] <= s['max']
            assert s['ms_per_img'] == s['median'] and s['fps'] == pytest.approx(1e3 / s['median'])
        r = result['ratios'][row]
        assert r['ratio'] == pytest.approx(result['rows'][row]['pruned']['median']
                                           / result['rows'][row]['dense']['median'])
    assert result['load_average']['before'] is not None


@pytest.mark.slow
def test_tool_times_the_test_dataloader(tmp_path, toy_coco_dir):
    out = tmp_path / 'bench.json'
    res = run_command([sys.executable, 'tools/analysis/benchmark_detector.py', str(DENSE),
                       '--dataset', '--device', 'cpu', '--iters', '2', '--warmup', '0',
                       '--batch', '2', '--out', str(out), '--cfg-options',
                       f'test_dataloader.dataset.data_root={toy_coco_dir}/'])
    assert f'wrote {out}' in res.stdout and '| detector |' in res.stdout
    result = json.loads(out.read_text())
    assert result['source'] == 'dataset' and result['batch'] == 2 and result['ratios'] == {}
    assert result['models']['model0']['input_shape'][0] == 2
