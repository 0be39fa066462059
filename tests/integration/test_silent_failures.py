"""Runs that used to end with exit 0 and a wrong result now stop, or do what the config says,
through our tools/train.py and tools/test.py and mmdet's stock ones:

- a search config without the SIDTModel wrapper (no sparsity loss) stops before its first
  step, naming the wrapper and ``model.sparsity``;
- ``--resume`` with a changed ``mask_lr`` trains at the new lr (read back from the next
  checkpoint's optimizer state);
- ``--resume`` after adding ``'embed'`` to ``search_dims`` is refused naming the checkpoint
  and both search dims, before PyTorch's parameter-group size error;
- a checkpoint with relative-position tables, tested or trained from (``load_from``) with a
  config without them, exits non-zero naming the keys and ``use_rel_pos``.

Our tools' cases run in one tests/tool_driver.py process; the stock tools run as their own.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import mmdet
import pytest
import torch
from helpers import REPO, run_command, toy_coco_cfg_options
from tiny_search import SEARCH_CFG, write_config

from sidt_mmdet.utils import load_checkpoint_safe

pytestmark = pytest.mark.slow

STOCK_TOOLS = Path(mmdet.__file__).parent / '.mim' / 'tools'
DENSE_CFG = SEARCH_CFG.parent / 'sidt-dense_cls_vit-toy-p4_linear_6e_toy-cifar100.py'
TOY_DET_CFG = REPO / 'configs/toy/sidt-dense_retinanet_sidtvit-toy_simplefpn_100it_toy-coco.py'
ITERS = 3
# eta_min=0: the cosine schedule is proportional to its base lr, so a resumed run at 50 x the
# mask lr must show exactly 50 x the lr of the original run at every later step
SCHEDULE = ("param_scheduler = [dict(type='CosineAnnealingLR', by_epoch=False, begin=0, "
            f"end={ITERS}, eta_min=0.)]")


def _last_line(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    return lines[-1] if lines else ''


def _without_sidt_model(path: Path, data_root: Path) -> Path:
    """The dense config with the backbone in search mode (and the layer-decay constructor
    with a mask lr): everything a search needs but the SIDTModel wrapper."""
    text = write_config(path, data_root, ITERS, 4).read_text()
    path.write_text(text.replace(repr(str(SEARCH_CFG)), repr(str(DENSE_CFG)), 1)
                    + "model = dict(backbone=dict(mode='search'))\n"
                    'optim_wrapper = dict(paramwise_cfg=dict(mask_lr=1e-2))\n')
    return path


@pytest.fixture(scope='module')
def rel_pos_checkpoint(tmp_path_factory) -> Path:
    """A checkpoint of the toy RetinaNet, whose backbone has relative-position tables."""
    from mmengine.config import Config
    from mmengine.registry import MODELS, init_default_scope

    import sidt_mmdet  # noqa: F401

    cfg = Config.fromfile(str(TOY_DET_CFG))
    assert cfg.model.backbone.use_rel_pos
    init_default_scope('mmdet')
    path = tmp_path_factory.mktemp('rel_pos') / 'rel_pos.pth'
    torch.save({'state_dict': MODELS.build(cfg.model).state_dict(), 'meta': {}}, path)
    return path


@pytest.fixture(scope='module')
def runs(tmp_path_factory, toy_cifar_dir, toy_coco_dir, rel_pos_checkpoint):
    """case -> (exit status, last stderr line, work dir); stdout of the whole driver."""
    root = tmp_path_factory.mktemp('silent_failures')
    search = write_config(root / 'search.py', toy_cifar_dir, ITERS, 4, extra=SCHEDULE)
    first = root / 'first'
    no_rel_pos = ['--cfg-options', *toy_coco_cfg_options(toy_coco_dir)[1:],
                  'model.backbone.use_rel_pos=False']
    cases = {
        'no-sidt-model': ['train', [str(_without_sidt_model(root / 'plain.py', toy_cifar_dir)),
                                    '--work-dir', str(root / 'plain')]],
        'first': ['train', [str(search), '--work-dir', str(first)]],
        'resume-mask-lr': ['train', [str(search), '--work-dir', str(root / 'mask_lr'),
                                     '--resume', str(first / 'iter_1.pth'), '--cfg-options',
                                     'optim_wrapper.paramwise_cfg.mask_lr=0.5']],
        'resume-embed': ['train', [str(search), '--work-dir', str(root / 'embed'),
                                   '--resume', str(first / 'iter_1.pth'), '--cfg-options',
                                   'model.backbone.search_dims=[attn,mlp,embed]']],
        'test-rel-pos': ['test', [str(TOY_DET_CFG), str(rel_pos_checkpoint),
                                  '--work-dir', str(root / 'test'), *no_rel_pos]],
        'train-rel-pos': ['train', [str(TOY_DET_CFG), '--work-dir', str(root / 'load_from'),
                                    *no_rel_pos, f'load_from={rel_pos_checkpoint}']],
    }
    out = root / 'results.json'
    result = run_command([sys.executable, 'tests/tool_driver.py',
                          json.dumps(list(cases.values())), str(out)], timeout=900)
    results = json.loads(out.read_text())
    assert len(results) == len(cases)
    return {name: (r['returncode'], _last_line(r['stderr']), Path(argv[argv.index(
        '--work-dir') + 1])) for (name, (_, argv)), r in zip(cases.items(), results)}, \
        result.stdout, first


def _pths(work: Path) -> list[str]:
    return sorted(p.name for p in work.rglob('*.pth')) if work.exists() else []


def test_a_search_without_sidt_model_stops_before_its_first_step(runs):
    code, message, work = runs[0]['no-sidt-model']
    assert code == 1
    assert 'MissingSparsityError' in message and "type='mmdet.SIDTModel'" in message
    assert 'model.sparsity' in message and "model.backbone.mode='search'" in message
    assert _pths(work) == []


def test_a_resume_with_a_new_mask_lr_trains_at_it(runs):
    cases, stdout, first = runs
    assert cases['first'][0] == 0 and cases['resume-mask-lr'][0] == 0, cases
    assert "resume: the config's optimizer settings replace the checkpoint's" in stdout
    resumed = cases['resume-mask-lr'][2]
    assert _pths(resumed) == ['iter_2.pth', f'iter_{ITERS}.pth']
    # after iteration 2 of 3 the cosine schedule is at (1 + cos(2 pi / 3)) / 2 = 1/4 of its base
    old = load_checkpoint_safe(str(first / 'iter_2.pth'))['optimizer']['param_groups']
    new = load_checkpoint_safe(str(resumed / 'iter_2.pth'))['optimizer']['param_groups']
    [i] = [i for i, g in enumerate(old) if g['initial_lr'] == 1e-2]  # the mask group
    assert old[i]['lr'] == pytest.approx(0.01 / 4, rel=1e-9)
    assert new[i]['initial_lr'] == 0.5 and new[i]['lr'] == pytest.approx(0.5 / 4, rel=1e-9)
    others = [(g['lr'], g['weight_decay']) for j, g in enumerate(old) if j != i]
    assert others == [(g['lr'], g['weight_decay']) for j, g in enumerate(new) if j != i]


def test_a_resume_with_another_mask_layout_is_refused_naming_both(runs):
    cases, _, first = runs
    code, message, work = cases['resume-embed']
    assert code == 1 and "doesn't match the size" not in message
    assert str(first / 'iter_1.pth') in message and 'optimizer state does not fit' in message
    assert "search_dims=('attn', 'mlp')" in message
    assert "model.backbone.search_dims=('attn', 'mlp', 'embed')" in message
    assert _pths(work) == []


@pytest.mark.parametrize('case', ['test-rel-pos', 'train-rel-pos'])
def test_a_rel_pos_checkpoint_into_a_config_without_them(runs, rel_pos_checkpoint, case):
    code, message, work = runs[0][case]
    assert code == 1
    assert str(rel_pos_checkpoint) in message and 'backbone.blocks.0.attn.rel_pos_h' in message
    assert 'use_rel_pos=True' in message and 'model.backbone.use_rel_pos=False' in message
    assert _pths(work) == []


def test_stock_mmdet_train_refuses_a_search_without_sidt_model(tmp_path, toy_cifar_dir):
    cfg = _without_sidt_model(tmp_path / 'plain.py', toy_cifar_dir)
    result = run_command([sys.executable, str(STOCK_TOOLS / 'train.py'), str(cfg),
                          '--work-dir', str(tmp_path / 'work')], check=False)
    assert result.returncode != 0
    message = _last_line(result.stderr)
    assert 'MissingSparsityError' in message and 'SIDTModel' in message, result.stderr[-3000:]
    assert _pths(tmp_path / 'work') == []


def test_stock_mmdet_test_refuses_a_rel_pos_checkpoint_without_rel_pos(
        tmp_path, toy_coco_dir, rel_pos_checkpoint):
    result = run_command([sys.executable, str(STOCK_TOOLS / 'test.py'), str(TOY_DET_CFG),
                          str(rel_pos_checkpoint), '--work-dir', str(tmp_path),
                          *toy_coco_cfg_options(toy_coco_dir), 'model.backbone.use_rel_pos=False'],
                         check=False)
    assert result.returncode != 0
    message = _last_line(result.stderr)
    assert 'CheckpointMismatchError' in message, result.stderr[-3000:]
    assert str(rel_pos_checkpoint) in message and 'backbone.blocks.0.attn.rel_pos_h' in message
    assert 'use_rel_pos=True' in message and 'model.backbone.use_rel_pos=False' in message
    assert 'coco/bbox_mAP' not in result.stdout
