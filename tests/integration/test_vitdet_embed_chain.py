"""A toy ViTDet-style Mask R-CNN searched with embedding pruning, exported, rebuilt
from its config and the subnet file alone, fine-tuned and evaluated by mmdet's tools/test.py.

When the embedding (residual stream) is pruned the backbone map gets narrower, so the simple
pyramid's input layers must shrink with it: SIDTModel sizes them from the subnet and the
export slices their weights.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

import mmdet
import pytest
import torch
from helpers import REPO, run_command
from mmengine.config import Config
from mmengine.registry import MODELS, init_default_scope

from sidt_mmdet.apis import export_subnet
from sidt_mmdet.models import Subnet
from sidt_mmdet.utils import load_checkpoint_safe

STOCK_TEST = Path(mmdet.__file__).parent / '.mim' / 'tools' / 'test.py'
# mmdet's own train.py: the config's custom_imports is all it takes to rebuild the pruned model.
STOCK_TRAIN = Path(mmdet.__file__).parent / '.mim' / 'tools' / 'train.py'
SEARCH_CFG = ('configs/toy/sidt-search_mask-rcnn_sidtvit-toy-vitdet-kr0.6_simplefpn_lsj-100it_'
              'toy-coco.py')
RETRAIN_CFG = ('configs/toy/sidt-retrain_mask-rcnn_sidtvit-toy-vitdet-kr0.6_simplefpn_lsj-100it_'
               'toy-coco.py')
SEARCH_ITERS = 4
NO_VAL = ['val_cfg=None', 'val_dataloader=None', 'val_evaluator=None']
# The layers of SIDTSimpleFPN that read the backbone map, and their input-channel axis.
NECK_READERS = {'neck.fpn1.0.weight': 0, 'neck.fpn2.0.weight': 0,
                'neck.lateral_convs.2.conv.weight': 1, 'neck.lateral_convs.3.conv.weight': 1}

pytestmark = pytest.mark.slow


@pytest.fixture(scope='module')
def exported(tmp_path_factory, toy_coco_dir) -> Path:
    work_dir = tmp_path_factory.mktemp('vitdet_search')
    run_command([sys.executable, 'tools/train.py', SEARCH_CFG, '--work-dir', str(work_dir),
                 '--cfg-options', f'train_cfg.max_iters={SEARCH_ITERS}',
                 f'default_hooks.checkpoint.interval={SEARCH_ITERS}', *NO_VAL],
                env={'SIDT_TOY_COCO': str(toy_coco_dir)})
    out = tmp_path_factory.mktemp('vitdet_export') / 'export'
    # in-process (the CLI itself runs as a subprocess in test_detection_chain.py)
    export_subnet(str(REPO / SEARCH_CFG), str(work_dir / f'iter_{SEARCH_ITERS}.pth'),
                  dict(keep_ratio=0.6), str(out))
    return out


def test_embedding_is_pruned_and_the_neck_follows(exported, monkeypatch, tmp_path):
    subnet = Subnet.load(exported / 'subnet.json')
    kept = len(subnet.kept_embed)
    assert subnet.embed is not None and 8 <= kept < subnet.embed_dims == 64
    state = load_checkpoint_safe(exported / 'pruned.pth')['state_dict']
    for key, axis in NECK_READERS.items():
        assert state[key].shape[axis] == kept, key
    assert state['backbone.patch_embed.proj.weight'].shape[0] == kept

    # Rebuilt from the retrain config and the subnet file alone (no search model around).
    monkeypatch.setenv('SIDT_TOY_COCO', str(tmp_path))
    cfg = Config.fromfile(str(REPO / RETRAIN_CFG))
    cfg.merge_from_dict({'model.backbone.subnet': str(exported / 'subnet.json')})
    init_default_scope('mmdet')
    model = MODELS.build(cfg.model)
    assert model.backbone.out_channels == model.neck.input_channels == kept
    result = model.load_state_dict(state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    model.eval()
    with torch.no_grad():
        feats = model.extract_feat(torch.randn(1, 3, 160, 144))
    assert [f.shape[1] for f in feats] == [model.neck.out_channels] * 5
    assert all(torch.isfinite(f).all() for f in feats)


def test_stock_train_loads_with_no_missing_keys_and_stock_test_evaluates(
        exported, toy_coco_dir, tmp_path):
    subnet_opt = f'model.backbone.subnet={exported / "subnet.json"}'
    env = {'SIDT_TOY_COCO': str(toy_coco_dir)}
    work_dir = tmp_path / 'retrain'
    result = run_command(
        [sys.executable, str(STOCK_TRAIN), RETRAIN_CFG, '--work-dir', str(work_dir),
         '--cfg-options', subnet_opt, f'load_from={exported / "pruned.pth"}',
         'train_cfg.max_iters=3', 'default_hooks.checkpoint.interval=3',
         'default_hooks.logger.interval=1', *NO_VAL], env=env)
    log = result.stdout + result.stderr
    assert f'Load checkpoint from {exported / "pruned.pth"}' in log
    assert 'missing keys in source state_dict' not in log
    assert 'unexpected key in source state_dict' not in log
    losses = [float(x) for x in re.findall(r'Iter\(train\) \[\d/3\].* loss: (\d+\.\d+)', log)]
    assert len(losses) == 3
    # The fine-tune trained the loaded pruned weights: same keys and shapes, every backbone
    # tensor moved. Catches a retrain that started from a fresh init or rebuilt other widths.
    start = load_checkpoint_safe(exported / 'pruned.pth')['state_dict']
    end = load_checkpoint_safe(work_dir / 'iter_3.pth')['state_dict']
    assert set(end) == set(start)
    for key, value in start.items():
        assert end[key].shape == value.shape, key
    moved = [k for k in start if k.startswith('backbone.') and not torch.equal(start[k], end[k])]
    backbone = [k for k in start if k.startswith('backbone.')]
    assert len(moved) == len(backbone), sorted(set(backbone) - set(moved))

    test = run_command([sys.executable, str(STOCK_TEST), RETRAIN_CFG, str(work_dir / 'iter_3.pth'),
                        '--work-dir', str(tmp_path / 'test'), '--cfg-options', subnet_opt],
                       env=env)
    log = test.stdout + test.stderr
    bbox = re.search(r'coco/bbox_mAP: (-?\d+\.\d+)', log)
    segm = re.search(r'coco/segm_mAP: (-?\d+\.\d+)', log)
    assert bbox and segm, log[-3000:]
    print(f'toy ViTDet embed chain: bbox mAP {bbox[1]}, segm mAP {segm[1]}')
