"""The pruned layout stays exact through the tool chain: a hard-masked search detector
(windows + relative positions) and the detector exported from it give the same predictions
through tools/test.py (each from its own config, checkpoint file and subnet file; the two
runs share one tests/tool_driver.py process)."""
from __future__ import annotations

import json
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import REPO, hard_mask_, perturb_, run_command
from mmengine.config import Config
from mmengine.registry import MODELS, init_default_scope

from sidt_mmdet.cli import export_subnet as export_tool
from sidt_mmdet.search import select_subnet
from sidt_mmdet.utils import save_checkpoint_atomic

TOY = 'configs/toy'
SEARCH_CFG = f'{TOY}/sidt-search_mask-rcnn_sidtvit-toy-kr0.6_simplefpn_100it_toy-coco.py'
RETRAIN_CFG = f'{TOY}/sidt-retrain_mask-rcnn_sidtvit-toy-kr0.6_simplefpn_100it_toy-coco.py'

pytestmark = pytest.mark.slow


def _predictions(path: Path) -> list[dict]:
    with open(path, 'rb') as f:  # written by tools/test.py --out in this test
        return pickle.load(f)


def _same_detections(a: dict, b: dict) -> None:
    """Every detection of ``a`` has one in ``b`` with the same label, score and box."""
    pa, pb = a['pred_instances'], b['pred_instances']
    assert len(pa['scores']) == len(pb['scores'])
    box_a, box_b = np.asarray(pa['bboxes']), np.asarray(pb['bboxes'])
    sc_a, sc_b = np.asarray(pa['scores']), np.asarray(pb['scores'])
    lab_a, lab_b = np.asarray(pa['labels']), np.asarray(pb['labels'])
    np.testing.assert_allclose(np.sort(sc_a), np.sort(sc_b), atol=1e-4)
    for i in range(len(sc_a)):
        match = (lab_b == lab_a[i]) & (np.abs(sc_b - sc_a[i]) <= 1e-4)
        assert match.any()
        assert np.abs(box_b[match] - box_a[i]).max(axis=1).min() <= 1e-2


def test_tools_test_predictions_match_the_hard_masked_supernet(tmp_path, toy_coco_dir):
    """Unequal heads (``dim``) and whole heads dropped (``head``); the four tools/test.py runs
    share one driver process."""
    init_default_scope('mmdet')
    env = {'SIDT_TOY_COCO': str(toy_coco_dir)}
    runs = {}
    for granularity in ('dim', 'head'):
        torch.manual_seed(0)
        model = perturb_(MODELS.build(Config.fromfile(str(REPO / SEARCH_CFG)).model))
        with torch.no_grad():
            for m in model.backbone.mask_parameters().values():
                m.uniform_(0.2, 1.5)
        sub = select_subnet(model.backbone, keep_ratio=0.5, granularity=granularity,
                            round_to=2)
        hard_mask_(model.backbone, sub)
        search_ckpt = tmp_path / f'search_{granularity}.pth'
        sub_path = tmp_path / f'subnet_{granularity}.json'
        save_checkpoint_atomic({'state_dict': model.state_dict(), 'meta': {}}, search_ckpt)
        sub.save(sub_path)
        out = tmp_path / f'export_{granularity}'
        assert export_tool.main([str(REPO / SEARCH_CFG), str(search_ckpt), '--subnet',
                                 str(sub_path), '-o', str(out)]) == 0
        runs[f'search_{granularity}'] = (SEARCH_CFG, search_ckpt, [])
        runs[f'pruned_{granularity}'] = (
            RETRAIN_CFG, out / 'pruned.pth',
            ['--cfg-options', f'model.backbone.subnet={out / "subnet.json"}'])
    # every tools/test.py run in one process (tests/tool_driver.py: the tool's calls, one
    # Runner each); the subprocess of tools/test.py itself is tested in test_tools.py
    cases = [['test', [cfg, str(ckpt), '--work-dir', str(tmp_path / f'test_{name}'), '--out',
                       str(tmp_path / f'{name}.pkl'), *extra]]
             for name, (cfg, ckpt, extra) in runs.items()]
    report = tmp_path / 'tool_driver.json'
    run_command([sys.executable, 'tests/tool_driver.py', json.dumps(cases), str(report)],
                env=env)
    for (name, _), result in zip(runs.items(), json.loads(report.read_text())):
        assert result['returncode'] == 0, f'tools/test.py ({name}) failed:\n{result["stderr"]}'
    preds = {name: _predictions(tmp_path / f'{name}.pkl') for name in runs}
    for granularity in ('dim', 'head'):
        searched, pruned = preds[f'search_{granularity}'], preds[f'pruned_{granularity}']
        assert len(searched) == len(pruned) > 0
        for a, b in zip(searched, pruned):
            assert a['img_id'] == b['img_id']
            _same_detections(a, b)
