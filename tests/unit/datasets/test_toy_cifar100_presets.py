"""Both presets of the generated CIFAR-100 set: deterministic, read by mmpretrain, and the
hard one out of reach of a nearest-class-mean classifier on pixels."""
from __future__ import annotations

import filecmp
import pickle

import numpy as np
import pytest

from sidt_mmdet.datasets.generation import make_toy_cifar100
from sidt_mmdet.datasets.generation.toy_cifar100 import PRESETS


def _quiet(_):
    pass


def _load(root, split):
    with open(root / 'cifar-100-python' / split, 'rb') as f:
        return pickle.load(f, encoding='latin1')


@pytest.mark.parametrize('preset', sorted(PRESETS))
def test_preset_is_deterministic_in_its_seed(tmp_path, preset):
    sizes = dict(num_train=200, num_test=100, preset=preset, progress=_quiet)
    a = tmp_path / 'a'
    b = tmp_path / 'b'
    c = tmp_path / 'c'
    make_toy_cifar100(str(a), seed=3, **sizes)
    make_toy_cifar100(str(b), seed=3, **sizes)
    make_toy_cifar100(str(c), seed=4, **sizes)
    for split in ('train', 'test', 'meta'):
        assert filecmp.cmp(a / 'cifar-100-python' / split, b / 'cifar-100-python' / split,
                           shallow=False)
    for split in ('train', 'test'):
        assert not np.array_equal(_load(a, split)['data'], _load(c, split)['data'])
    assert not np.array_equal(_load(a, 'train')['data'], _load(a, 'test')['data'][:100])


def test_presets_draw_different_images(tmp_path):
    easy = make_toy_cifar100(str(tmp_path / 'e'), 100, 100, preset='easy', progress=_quiet)
    hard = make_toy_cifar100(str(tmp_path / 'h'), 100, 100, preset='hard', progress=_quiet)
    from pathlib import Path
    e, h = _load(Path(easy), 'train'), _load(Path(hard), 'train')
    assert e['fine_labels'] == h['fine_labels']  # labels come from the seed alone
    assert not np.array_equal(e['data'], h['data'])


@pytest.mark.parametrize('preset', sorted(PRESETS))
def test_mmpretrain_reads_the_preset(tmp_path, preset):
    from mmpretrain.registry import DATASETS

    import sidt_mmdet.datasets.toy_cifar100  # noqa: F401  (registers it; not run alone else)

    root = tmp_path / preset
    make_toy_cifar100(str(root), num_train=300, num_test=100, preset=preset, progress=_quiet)
    raw = _load(root, 'test')
    dataset = DATASETS.build(dict(type='mmpretrain.ToyCIFAR100', data_root=str(root),
                                  split='test', pipeline=[]))
    assert len(dataset) == 100 and len(dataset.CLASSES) == 100
    sample = dataset[7]
    assert sample['gt_label'] == raw['fine_labels'][7]
    np.testing.assert_array_equal(sample['img'],
                                  raw['data'][7].reshape(3, 32, 32).transpose(1, 2, 0))


def test_unknown_preset_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"preset: expected one of \['easy', 'hard'\], got 'x'"):
        make_toy_cifar100(str(tmp_path / 'out'), preset='x', progress=_quiet)
    assert not (tmp_path / 'out').exists()


def _nearest_class_mean_top1(train: dict, test: dict) -> float:
    x = train['data'].astype(np.float64) / 255
    y = np.asarray(train['fine_labels'])
    means = np.stack([x[y == c].mean(axis=0) for c in range(100)])
    t = test['data'].astype(np.float64) / 255
    # argmin |t - mu|^2 = argmin (|mu|^2 - 2 t.mu)
    dist = (means ** 2).sum(axis=1)[None] - 2 * t @ means.T
    return float((dist.argmin(axis=1) == np.asarray(test['fine_labels'])).mean())


@pytest.mark.slow  # generates 12,000 images (about 7 s)
def test_hard_preset_defeats_nearest_class_mean_on_pixels(tmp_path):
    hard = tmp_path / 'hard'
    make_toy_cifar100(str(hard), num_train=5000, num_test=1000, preset='hard', progress=_quiet)
    top1 = _nearest_class_mean_top1(_load(hard, 'train'), _load(hard, 'test'))
    assert top1 < 0.30, f'nearest class mean reaches {top1:.1%} on the hard preset'
    # The same classifier does read the easy preset: the measure is not broken.
    easy = tmp_path / 'easy'
    make_toy_cifar100(str(easy), num_train=5000, num_test=1000, preset='easy', progress=_quiet)
    assert _nearest_class_mean_top1(_load(easy, 'train'), _load(easy, 'test')) > top1 + 0.1
