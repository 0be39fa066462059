"""The generated data sets are read by the real readers: pycocotools, mmdet, mmpretrain."""
from __future__ import annotations

import filecmp
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import REPO, TOY_CIFAR_SIZES, TOY_COCO_SIZES, run_command
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

import sidt_mmdet.datasets.toy_cifar100  # noqa: F401  (registers ToyCIFAR100 in mmpretrain)
from sidt_mmdet.datasets.generation import TOY_COCO_CLASSES, make_toy_cifar100, make_toy_coco
from sidt_mmdet.datasets.generation import toy_cifar100 as cifar_cli
from sidt_mmdet.datasets.generation import toy_coco as coco_cli

TOOLS = REPO / 'tools' / 'dataset'


def _quiet(_):
    pass


# ----------------------------------------------------------------------------- toy COCO
@pytest.mark.parametrize('split', ['train2017', 'val2017'])
def test_pycocotools_reads_toy_coco(toy_coco_dir, split):
    coco = COCO(str(toy_coco_dir / 'annotations' / f'instances_{split}.json'))
    num_images = TOY_COCO_SIZES['num_train' if split == 'train2017' else 'num_val']
    assert len(coco.getImgIds()) == num_images
    assert [c['name'] for c in coco.loadCats(coco.getCatIds())] == list(TOY_COCO_CLASSES)
    ann_ids = coco.getAnnIds()
    assert len(ann_ids) == len(set(ann_ids)) >= num_images  # every image has an object
    for img in coco.loadImgs(coco.getImgIds()):
        with Image.open(toy_coco_dir / split / img['file_name']) as pil:
            assert pil.size == (img['width'], img['height'])
        for ann in coco.loadAnns(coco.getAnnIds(imgIds=img['id'])):
            x, y, w, h = ann['bbox']
            assert ann['iscrowd'] == 0 and w > 0 and h > 0
            assert 0 <= x and 0 <= y and x + w <= img['width'] and y + h <= img['height']
            mask = coco.annToMask(ann)
            assert mask.shape == (img['height'], img['width'])
            ys, xs = np.nonzero(mask)
            # mask inside box (rasterisation may touch the box's last pixel)
            assert xs.min() >= np.floor(x) and xs.max() <= np.ceil(x + w)
            assert ys.min() >= np.floor(y) and ys.max() <= np.ceil(y + h)
            mask_box = mask_utils.toBbox(mask_utils.encode(np.asfortranarray(mask)))
            # and the box is tight: only thin polygon tips (stars) fall between pixel centres
            np.testing.assert_allclose(mask_box, ann['bbox'], atol=3)
            assert ann['area'] == pytest.approx(mask.sum(), rel=0.15, abs=8)


def test_mmdet_coco_dataset_reads_toy_coco(toy_coco_dir):
    from mmcv.transforms import LoadImageFromFile
    from mmdet.datasets import CocoDataset
    from mmdet.datasets.transforms import LoadAnnotations

    dataset = CocoDataset(
        data_root=str(toy_coco_dir), ann_file='annotations/instances_train2017.json',
        data_prefix=dict(img='train2017/'), metainfo=dict(classes=TOY_COCO_CLASSES),
        pipeline=[LoadImageFromFile(), LoadAnnotations(with_bbox=True, with_mask=True)])
    assert len(dataset) == TOY_COCO_SIZES['num_train']
    coco = COCO(str(toy_coco_dir / 'annotations' / 'instances_train2017.json'))
    for idx in range(len(dataset)):
        info = dataset.get_data_info(idx)
        anns = coco.loadAnns(coco.getAnnIds(imgIds=info['img_id']))
        assert len(info['instances']) == len(anns)
        for inst, ann in zip(info['instances'], anns, strict=True):
            x, y, w, h = ann['bbox']
            np.testing.assert_allclose(inst['bbox'], [x, y, x + w, y + h])
            assert inst['bbox_label'] == ann['category_id'] - 1
        sample = dataset[idx]
        masks = sample['gt_masks'].to_ndarray()
        assert masks.shape == (len(anns), *sample['img'].shape[:2])
        for mask, (x1, y1, x2, y2) in zip(masks, sample['gt_bboxes'].numpy(), strict=True):
            ys, xs = np.nonzero(mask)
            assert xs.min() >= np.floor(x1) and xs.max() <= np.ceil(x2)
            assert ys.min() >= np.floor(y1) and ys.max() <= np.ceil(y2)


@pytest.mark.parametrize('preset', ['easy', 'hard', 'harder'])
def test_toy_coco_is_deterministic(tmp_path, preset):
    kwargs = dict(num_train=3, num_val=2, img_size=64, seed=7, progress=_quiet, preset=preset)
    first = Path(make_toy_coco(str(tmp_path / 'a'), **kwargs))
    second = Path(make_toy_coco(str(tmp_path / 'b'), **kwargs))
    other = Path(make_toy_coco(str(tmp_path / 'c'), **{**kwargs, 'seed': 8}))
    files = sorted(p.relative_to(first) for p in first.rglob('*') if p.is_file())
    assert len(files) == 2 + 3 + 2
    _, mismatch, errors = filecmp.cmpfiles(first, second, files, shallow=False)
    assert mismatch == [] and errors == []
    _, mismatch, _ = filecmp.cmpfiles(first, other, files, shallow=False)
    assert mismatch


# ----------------------------------------------------------------------------- toy CIFAR
def test_toy_cifar_files_are_cifar100_python_format(toy_cifar_dir):
    base = toy_cifar_dir / 'cifar-100-python'
    assert sorted(p.name for p in base.iterdir()) == ['meta', 'test', 'train']
    with open(base / 'train', 'rb') as f:
        train = pickle.load(f, encoding='latin1')
    assert set(train) == {'data', 'fine_labels', 'coarse_labels', 'filenames', 'batch_label'}
    assert train['data'].dtype == np.uint8
    assert train['data'].shape == (TOY_CIFAR_SIZES['num_train'], 3072)
    assert sorted(set(train['fine_labels'])) == list(range(100))
    assert sorted(set(train['coarse_labels'])) == list(range(20))
    with open(base / 'meta', 'rb') as f:
        meta = pickle.load(f, encoding='latin1')
    assert len(meta['fine_label_names']) == 100 and len(meta['coarse_label_names']) == 20
    from mmpretrain.datasets.categories import CIFAR100_CATEGORIES
    assert tuple(meta['fine_label_names']) == tuple(CIFAR100_CATEGORIES)


def test_toy_cifar_classes_are_learnable(toy_cifar_dir):
    """A nearest-class-mean classifier on raw pixels is far above chance (1%)."""
    base = toy_cifar_dir / 'cifar-100-python'
    splits = {}
    for name in ('train', 'test'):
        with open(base / name, 'rb') as f:
            entry = pickle.load(f, encoding='latin1')
        splits[name] = (entry['data'].astype(np.float32), np.array(entry['fine_labels']))
    x, y = splits['train']
    means = np.stack([x[y == c].mean(0) for c in range(100)])
    xt, yt = splits['test']
    dist = (xt ** 2).sum(1)[:, None] - 2 * xt @ means.T + (means ** 2).sum(1)[None]
    accuracy = (dist.argmin(1) == yt).mean()
    assert accuracy > 0.1, accuracy


@pytest.mark.parametrize('split', ['train', 'test'])
def test_mmpretrain_reads_toy_cifar(toy_cifar_dir, split):
    from mmpretrain.registry import DATASETS

    dataset = DATASETS.build(dict(type='mmpretrain.ToyCIFAR100', data_root=str(toy_cifar_dir),
                                  split=split, pipeline=[]))
    with open(toy_cifar_dir / 'cifar-100-python' / split, 'rb') as f:
        raw = pickle.load(f, encoding='latin1')
    assert len(dataset) == len(raw['fine_labels'])
    assert len(dataset.CLASSES) == 100
    for idx in (0, len(dataset) - 1):
        sample = dataset[idx]
        assert sample['gt_label'] == raw['fine_labels'][idx]
        # mmpretrain turns the CHW rows into HWC images
        expected = raw['data'][idx].reshape(3, 32, 32).transpose(1, 2, 0)
        np.testing.assert_array_equal(sample['img'], expected)


def test_stock_cifar100_keeps_its_md5_check():
    from mmpretrain.datasets import CIFAR100

    from sidt_mmdet.datasets import ToyCIFAR100

    assert issubclass(ToyCIFAR100, CIFAR100) and ToyCIFAR100 is not CIFAR100
    assert CIFAR100.train_list == [['train', '16019d7e3df5f24257cddd939b257f8d']]
    assert CIFAR100.test_list == [['test', 'f0ef6b0ae62326f3e7ffdfab6717acfc']]
    assert CIFAR100.meta['md5'] == '7973b15100ade9c7d40fb424638fde48'
    assert CIFAR100._check_integrity is not ToyCIFAR100._check_integrity


def test_toy_cifar_missing_folder_names_the_path(tmp_path):
    from mmpretrain.registry import DATASETS

    with pytest.raises(FileNotFoundError, match=r'cifar-100-python.*make_toy_cifar100'):
        DATASETS.build(dict(type='mmpretrain.ToyCIFAR100', data_root=str(tmp_path), pipeline=[]))


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize('cli, flag, value', [
    (coco_cli, '--num-train', '0'),
    (coco_cli, '--num-val', '-1'),
    (coco_cli, '--img-size', '16'),
    (coco_cli, '--img-size', 'big'),
    (coco_cli, '--max-objects', '0'),
    (cifar_cli, '--num-train', '0'),
    (cifar_cli, '--num-test', '-5'),
])
def test_generators_refuse_invalid_sizes(tmp_path, capsys, cli, flag, value):
    with pytest.raises(SystemExit) as exc:
        cli.main(['--out-dir', str(tmp_path / 'out'), flag, value])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f'argument {flag}:' in err and value in err
    assert not (tmp_path / 'out').exists()


@pytest.mark.parametrize('make, kwargs', [
    (make_toy_coco, dict(num_train=0)),
    (make_toy_coco, dict(img_size=31)),
    (make_toy_cifar100, dict(num_test=-1)),
    (make_toy_cifar100, dict(num_train=2.5)),
])
def test_generator_functions_refuse_invalid_sizes(tmp_path, make, kwargs):
    name = next(iter(kwargs))
    with pytest.raises(ValueError, match=f'{name} must be an integer >= '):
        make(str(tmp_path / 'out'), **kwargs, progress=_quiet)


def _sizes(cli) -> list[str]:
    return ['--num-train', '2', '--num-val' if cli is coco_cli else '--num-test', '1']


@pytest.mark.parametrize('cli', [coco_cli, cifar_cli])
def test_generators_refuse_non_empty_dir_without_overwrite(tmp_path, capsys, cli):
    out = tmp_path / 'out'
    out.mkdir()
    (out / 'keep.txt').write_text('user data')
    assert cli.main(['--out-dir', str(out), *_sizes(cli)]) == 1
    err = capsys.readouterr().err
    assert str(out) in err and 'is not empty' in err
    assert '--overwrite' in err
    assert (out / 'keep.txt').read_text() == 'user data'
    assert sorted(p.name for p in tmp_path.iterdir()) == ['out']  # no temp dir left behind

    assert cli.main(['--out-dir', str(out), *_sizes(cli), '--overwrite']) == 0
    assert 'wrote' in capsys.readouterr().out
    assert not (out / 'keep.txt').exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ['out']


@pytest.mark.slow
def test_generator_cli_refusal_exit_code_and_message(tmp_path):
    """The real command line (argparse's own exit 2 is covered in-process above)."""
    (tmp_path / 'out').mkdir()
    (tmp_path / 'out' / 'x').touch()
    full = run_command([sys.executable, str(TOOLS / 'make_toy_coco.py'), '--out-dir',
                        str(tmp_path / 'out')], check=False)
    assert full.returncode == 1
    assert f"output directory '{tmp_path / 'out'}' is not empty; pass --overwrite" in full.stderr


def test_generator_failure_leaves_no_partial_output(tmp_path, monkeypatch):
    from sidt_mmdet.datasets.generation import toy_coco

    def broken(*args, **kwargs):
        raise RuntimeError('disk full')

    monkeypatch.setattr(toy_coco, '_write_split', broken)
    with pytest.raises(RuntimeError, match='disk full'):
        make_toy_coco(str(tmp_path / 'out'), progress=_quiet)
    assert list(tmp_path.iterdir()) == []


def test_generator_refuses_a_file_as_output(tmp_path):
    target = tmp_path / 'file'
    target.write_text('x')
    with pytest.raises(FileExistsError, match='is not a directory'):
        make_toy_cifar100(str(target), num_train=1, num_test=1, overwrite=True,
                          progress=_quiet)
