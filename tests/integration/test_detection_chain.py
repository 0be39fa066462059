"""The SiDT detection pipeline through the stock tools, as subprocesses, on toy COCO (CPU).

One 2-process search (``tools/dist_train.sh``, gloo) is shared by every test here:
the sparsity terms it logs, a ``--resume`` of it, and the chain search -> export
(``tools/export_subnet.py --keep-ratio 0.6``) -> retrain (``tools/train.py``) -> mmdet's
own ``tools/test.py``.
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import mmdet
import pytest
import torch
from helpers import REPO, free_port, run_command

from sidt_mmdet.models import Subnet
from sidt_mmdet.utils import load_checkpoint_safe

STOCK_TEST = Path(mmdet.__file__).parent / '.mim' / 'tools' / 'test.py'
SEARCH_CFG = 'configs/toy/sidt-search_mask-rcnn_sidtvit-toy-kr0.6_simplefpn_100it_toy-coco.py'
RETRAIN_CFG = 'configs/toy/sidt-retrain_mask-rcnn_sidtvit-toy-kr0.6_simplefpn_100it_toy-coco.py'
SEARCH_ITERS = 6  # 4 images per iteration over 2 processes: two passes over 12 images
RESUME_FROM = 3
MASK_LR = 1e-2  # the toy search config's paramwise_cfg.mask_lr
NO_VAL = ['val_cfg=None', 'val_dataloader=None', 'val_evaluator=None']
COCO_BBOX = re.compile(r'coco/bbox_mAP: (-?\d+\.\d+)')
COCO_SEGM = re.compile(r'coco/segm_mAP: (-?\d+\.\d+)')

pytestmark = pytest.mark.slow


def _env(toy_coco_dir: Path, **extra) -> dict:
    return {'SIDT_TOY_COCO': str(toy_coco_dir), **extra}


def _output(result) -> str:
    return result.stdout + result.stderr


def _scalars(work_dir: Path) -> list[dict]:
    files = sorted(work_dir.glob('*/vis_data/scalars.json'))
    assert files, f'no scalars.json under {work_dir}'
    return [json.loads(line) for line in files[-1].read_text().splitlines() if line.strip()]


@pytest.fixture(scope='module')
def search_run(tmp_path_factory, toy_coco_dir) -> tuple[Path, str]:
    """``tools/dist_train.sh SEARCH_CFG 2``: (work dir, its log)."""
    work_dir = tmp_path_factory.mktemp('search')
    result = run_command(
        ['bash', 'tools/dist_train.sh', SEARCH_CFG, '2', '--work-dir', str(work_dir),
         '--cfg-options', f'train_cfg.max_iters={SEARCH_ITERS}',
         f'default_hooks.checkpoint.interval={RESUME_FROM}', 'default_hooks.logger.interval=1',
         'log_processor.window_size=1', *NO_VAL],
        env=_env(toy_coco_dir, PORT=str(free_port())))
    return work_dir, _output(result)


@pytest.fixture(scope='module')
def export_dir(search_run, tmp_path_factory) -> tuple[Path, str]:
    work_dir, _ = search_run
    out = tmp_path_factory.mktemp('export') / 'kr0.6'
    result = run_command([sys.executable, 'tools/export_subnet.py', SEARCH_CFG,
                          str(work_dir / f'iter_{SEARCH_ITERS}.pth'), '--keep-ratio', '0.6',
                          '-o', str(out)])
    return out, _output(result)


def test_search_runs_on_two_cpu_processes_with_gloo(search_run):
    work_dir, log = search_run
    # mmengine's environment report calls the world size "GPU number", also on CPU
    assert 'Distributed training: True' in log and 'GPU number: 2' in log
    assert "dist_cfg: {'backend': 'gloo'}" in log
    assert f'Iter(train) [{SEARCH_ITERS}/{SEARCH_ITERS}]' in log
    assert (work_dir / f'iter_{SEARCH_ITERS}.pth').is_file()


def test_sparsity_loss_drives_the_masks_down(search_run):
    work_dir, _ = search_run
    rows = [r for r in _scalars(work_dir) if 'loss_sparsity' in r]
    assert [r['iter'] for r in rows] == list(range(1, SEARCH_ITERS + 1))
    for kind in ('attn', 'mlp'):
        mean_abs = [r[f'sparsity_mean_abs_{kind}'] for r in rows]
        assert mean_abs[-1] < mean_abs[0] <= 1.0
        assert all(b <= a for a, b in zip(mean_abs, mean_abs[1:])), mean_abs
    assert rows[-1]['loss_sparsity'] < rows[0]['loss_sparsity']
    # The pull is the L1 term's, not the detection loss's: almost every entry went down.
    state = load_checkpoint_safe(work_dir / f'iter_{SEARCH_ITERS}.pth')['state_dict']
    masks = torch.cat([v.flatten() for k, v in state.items() if k.endswith('_mask')])
    assert masks.numel() == 4 * (4 * 16 + 256)
    assert (masks < 1).float().mean() > 0.95


def _mask_group(ckpt: dict) -> tuple[list[str], dict, dict]:
    """Names of the masks, their optimizer group and the optimizer state of its params."""
    names = [k for k in ckpt['state_dict'] if k.endswith('_mask')]
    shapes = [tuple(ckpt['state_dict'][k].shape) for k in names]
    optim = ckpt['optimizer']
    groups = [g for g in optim['param_groups']
              if [tuple(optim['state'][i]['exp_avg'].shape) for i in g['params']] == shapes]
    assert len(groups) == 1, 'expected exactly one optimizer group holding the masks'
    return names, groups[0], {n: optim['state'][i] for n, i in zip(names, groups[0]['params'])}


def test_resume_restores_masks_and_optimizer_state(search_run, toy_coco_dir, tmp_path):
    """Resume iteration RESUME_FROM on 2 processes and train one more iteration: the masks
    after it must be exactly one AdamW step from the checkpoint's masks with the restored
    moments (a fresh optimizer or fresh masks cannot produce them)."""
    work_dir, _ = search_run
    before_path = work_dir / f'iter_{RESUME_FROM}.pth'
    resumed = tmp_path / 'resumed'
    result = run_command(
        ['bash', 'tools/dist_train.sh', SEARCH_CFG, '2', '--work-dir', str(resumed),
         '--resume', str(before_path), '--cfg-options', f'train_cfg.max_iters={RESUME_FROM + 1}',
         'default_hooks.checkpoint.interval=1', *NO_VAL],
        env=_env(toy_coco_dir, PORT=str(free_port())))
    assert f'resumed epoch: 0, iter: {RESUME_FROM}' in _output(result)
    before = load_checkpoint_safe(before_path)
    after = load_checkpoint_safe(resumed / f'iter_{RESUME_FROM + 1}.pth')
    names, group_before, state_before = _mask_group(before)
    _, group_after, state_after = _mask_group(after)
    assert group_before['weight_decay'] == 0
    # The checkpoint holds the lr of the next step (schedulers step before it is saved).
    lr = group_before['lr']
    assert 0 < lr <= MASK_LR
    beta1, beta2 = group_before['betas']
    eps = group_before['eps']
    step = RESUME_FROM + 1
    moved = 0.
    for name in names:
        m0, m1 = before['state_dict'][name], after['state_dict'][name]
        s0, s1 = state_before[name], state_after[name]
        assert float(s0['step']) == RESUME_FROM and float(s1['step']) == step
        # second moments carry over: v1 = beta2 * v0 + (1 - beta2) * g^2 >= beta2 * v0
        assert (s1['exp_avg_sq'] >= beta2 * s0['exp_avg_sq'] * (1 - 1e-6)).all()
        denom = s1['exp_avg_sq'].sqrt() / (1 - beta2 ** step) ** 0.5 + eps
        expected = m0 - lr / (1 - beta1 ** step) * s1['exp_avg'] / denom
        torch.testing.assert_close(m1, expected, rtol=0, atol=1e-6)
        moved = max(moved, float((m0 - 1).abs().max()))
    assert moved > 2 * MASK_LR / 10  # the resumed masks were not at their initial 1.0


def test_export_writes_subnet_checkpoint_table_and_plot(export_dir, search_run):
    out, log = export_dir
    assert sorted(p.name for p in out.iterdir()) == [
        'pruned.pth', 'subnet.json', 'widths.csv', 'widths.md', 'widths.png']
    assert not [p for p in out.parent.iterdir() if p.name.startswith('.')]  # no temp dirs
    subnet = Subnet.load(out / 'subnet.json')
    assert subnet.budget['kind'] == 'keep_ratio' and subnet.budget['value'] == 0.6
    assert subnet.source['config'] == str(REPO / SEARCH_CFG)
    assert subnet.source['checkpoint'] == str(search_run[0] / f'iter_{SEARCH_ITERS}.pth')
    stats = subnet.stats
    assert stats['params_after'] < stats['params_before']
    assert stats['macs_after'] < stats['macs_before']
    assert f'{stats["params_before"]:,} -> {stats["params_after"]:,}' in log
    ckpt = load_checkpoint_safe(out / 'pruned.pth')
    assert set(ckpt) == {'state_dict', 'meta'}
    assert not any(k.endswith('_mask') for k in ckpt['state_dict'])
    backbone_params = sum(v.numel() for k, v in ckpt['state_dict'].items()
                          if k.startswith('backbone.'))
    assert backbone_params == stats['params_after']
    # The MACs the tool wrote (counted from the search model's masks) are those of the
    # backbone the retrain config rebuilds from subnet.json alone, whose parameters are
    # the checkpoint's: catches stats of another threshold or of the dense model.
    from mmengine.config import Config
    from mmengine.registry import MODELS, init_default_scope

    from sidt_mmdet.models.complexity import backbone_complexity
    cfg = Config.fromfile(str(REPO / RETRAIN_CFG))
    init_default_scope('mmdet')
    backbone = MODELS.build(dict(cfg.model.backbone, subnet=str(out / 'subnet.json')))
    assert sum(p.numel() for p in backbone.parameters()) == stats['params_after']
    assert backbone_complexity(backbone, stats['input_size']).macs == stats['macs_after']
    assert (out / 'widths.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


def test_chain_retrain_loads_pruned_checkpoint_and_stock_test_evaluates(
        export_dir, toy_coco_dir, tmp_path):
    out, _ = export_dir
    subnet_opt = f'model.backbone.subnet={out / "subnet.json"}'
    work_dir = tmp_path / 'retrain'
    result = run_command(
        [sys.executable, 'tools/train.py', RETRAIN_CFG, '--work-dir', str(work_dir),
         '--cfg-options', subnet_opt, f'load_from={out / "pruned.pth"}',
         'train_cfg.max_iters=4', 'default_hooks.checkpoint.interval=4', *NO_VAL],
        env=_env(toy_coco_dir))
    log = _output(result)
    assert f'Load checkpoint from {out / "pruned.pth"}' in log
    # mmengine lists any mismatch under these headings (strict=False loading)
    assert 'missing keys in source state_dict' not in log
    assert 'unexpected key in source state_dict' not in log
    assert (work_dir / 'iter_4.pth').is_file()

    preds_path = tmp_path / 'preds.pkl'
    test = run_command(
        [sys.executable, str(STOCK_TEST), RETRAIN_CFG, str(work_dir / 'iter_4.pth'),
         '--work-dir', str(tmp_path / 'test'), '--out', str(preds_path),
         '--cfg-options', subnet_opt],
        env=_env(toy_coco_dir))
    log = _output(test)
    assert 'missing keys in source state_dict' not in log
    assert 'unexpected key in source state_dict' not in log
    bbox, segm = COCO_BBOX.search(log), COCO_SEGM.search(log)
    assert bbox and segm, log[-3000:]
    print(f'toy chain: bbox mAP {bbox[1]}, segm mAP {segm[1]}')
    _check_metrics_are_those_of_the_predictions(preds_path, toy_coco_dir, bbox, segm)


def _check_metrics_are_those_of_the_predictions(preds_path, toy_coco_dir, bbox, segm):
    """The mAPs stock test.py printed are CocoMetric's on the predictions it dumped, one per
    val image with boxes and masks. Catches an evaluation of other predictions than the
    model's (a wrong dataset, a partial run), which a range check 0 <= mAP <= 1 passes."""
    import mmengine
    from mmdet.evaluation import CocoMetric

    ann_file = toy_coco_dir / 'annotations' / 'instances_val2017.json'
    ann = json.loads(ann_file.read_text())
    preds = mmengine.load(str(preds_path))
    assert sorted(p['img_id'] for p in preds) == sorted(im['id'] for im in ann['images'])
    for p in preds:
        inst = p['pred_instances']
        assert len(inst['bboxes']) == len(inst['masks']) == len(inst['scores']) > 0
    metric = CocoMetric(ann_file=str(ann_file), metric=['bbox', 'segm'])
    metric.dataset_meta = dict(classes=[c['name'] for c in ann['categories']])
    metric.process({}, preds)
    result = metric.evaluate(len(preds))
    assert result['coco/bbox_mAP'] == pytest.approx(float(bbox[1]), abs=5e-4)
    assert result['coco/segm_mAP'] == pytest.approx(float(segm[1]), abs=5e-4)
