"""The studies' validation split: the training set's last ``num_val`` images, held out from
every training stage and read with the test pipeline; the choice made on it; and, without a
split, cache keys exactly as before the split existed."""
from __future__ import annotations

import hashlib
import json

import pytest
import torch

from sidt_mmdet.studies.common import REPO, Stages, StageSettings
from sidt_mmdet.studies.detection import DETECTION_SETTINGS, DetectionStages


def _keep_threads(make):
    threads = torch.get_num_threads()
    try:
        return make()
    finally:
        torch.set_num_threads(threads)


def _loader_datasets(stages):
    """The training loader's dataset (as every training stage builds it) and the validation
    loader's."""
    from mmengine.registry import init_default_scope
    from mmengine.runner import Runner
    cfg = stages.config(stages.s.dense_config)
    init_default_scope(cfg.get('default_scope'))
    return Runner.build_dataloader(cfg.train_dataloader).dataset, stages.val_loader().dataset


# ------------------------------------------------------------------ the split
@pytest.mark.slow
def test_cifar_training_loses_exactly_the_last_images(tmp_path):
    settings = dict(data_root=str(tmp_path / 'data'), data_preset='easy', num_train=60,
                    num_test=10, num_val=15)
    stages = _keep_threads(lambda: Stages(str(tmp_path / 'work'), StageSettings(**settings)))

    def key(info):
        return hashlib.sha256(info['img'].tobytes()).hexdigest(), int(info['gt_label'])

    full = [key(stages.train_dataset().get_data_info(i)) for i in range(60)]
    assert len(set(full)) == 60  # the images tell apart
    train, val = _loader_datasets(stages)
    assert [key(train.get_data_info(i)) for i in range(len(train))] == full[:45]
    assert [key(val.get_data_info(i)) for i in range(len(val))] == full[45:]
    # the test pipeline: no random crop on the validation images
    assert [type(t).__name__ for t in val.pipeline.transforms] == ['PackInputs']
    # deterministic: another study on the same data holds out the same images
    again = _keep_threads(lambda: Stages(str(tmp_path / 'work2'), StageSettings(**settings)))
    _, val2 = _loader_datasets(again)
    assert [key(val2.get_data_info(i)) for i in range(len(val2))] == full[45:]


@pytest.mark.slow
def test_coco_training_loses_exactly_the_last_images_and_val_has_their_annotations(tmp_path):
    root = tmp_path / 'data'
    settings = dict(DETECTION_SETTINGS, data_root=str(root), num_train=10, num_test=2,
                    num_val=3)
    stages = _keep_threads(lambda: DetectionStages(str(tmp_path / 'w'),
                                                   StageSettings(**settings)))
    full = stages.train_dataset()
    ids = [full.get_data_info(i)['img_id'] for i in range(len(full))]
    train, val = _loader_datasets(stages)
    train_ids = [train.get_data_info(i)['img_id'] for i in range(len(train))]
    val_ids = [val.get_data_info(i)['img_id'] for i in range(len(val))]
    assert train_ids == ids[:-3] and val_ids == ids[-3:]
    assert all('train2017' in val.get_data_info(i)['img_path'] for i in range(3))
    # the evaluation's ground truth: exactly the held-out images and all their annotations
    coco = json.loads((root / 'annotations' / 'instances_train2017.json').read_text())
    held = json.loads(open(stages.val_ann_file(), encoding='utf-8').read())
    assert [im['id'] for im in held['images']] == val_ids
    assert held['annotations'] == [a for a in coco['annotations']
                                   if a['image_id'] in set(val_ids)]
    assert held['annotations'] and held['categories'] == coco['categories']
    # a stale file (another split, a regenerated set) is written again
    path = stages.val_ann_file()
    with open(path, 'w', encoding='utf-8') as f:
        json.dump(dict(held, images=held['images'][:1]), f)
    other = _keep_threads(lambda: DetectionStages(str(tmp_path / 'w2'),
                                                  StageSettings(**settings)))
    assert other.val_ann_file() == path
    assert json.loads(open(path, encoding='utf-8').read()) == held
    # CocoMetric on the validation split scores the 3 held-out images against that file
    from sidt_mmdet.studies.coco_matches import load_matches
    model = stages._model(stages.s.dense_config, None, {'model.test_cfg.rcnn.score_thr': 0.0})
    out = stages.evaluate(model, str(tmp_path), 'val', split='val')
    assert len(load_matches(out['val'], 'bbox')) == 3
    gt = load_matches(out['val'], 'bbox').gt_count.sum()
    assert gt == sum(not a.get('iscrowd', 0) for a in held['annotations'])


def test_a_split_that_leaves_nothing_or_a_negative_one_is_refused(tmp_path):
    with pytest.raises(ValueError, match='num_val: expected an int >= 0, got -1'):
        StageSettings(data_root='x', num_val=-1)

    class Small(Stages):
        def train_dataset(self):
            return [0] * 5
    stages = _keep_threads(lambda: Small(str(tmp_path), StageSettings(data_root='x',
                                                                      num_val=5)))
    with pytest.raises(ValueError, match='num_val: 5 held out of 5 training images'):
        stages.num_train_images()


# -------------------------------------------------------- no split, no change
class _FixedRoot(Stages):
    def ensure_data(self):
        return '/data/toy-cifar'


class _FixedRootDetection(DetectionStages):
    def ensure_data(self):
        return '/data/toy-coco'


def _dense_key(stages) -> dict:
    keys = []

    def cached(name, spec, run):
        keys.append((name, dict(spec, config_hash=stages.config_hash(spec['config']))))
        return dict(checkpoint='x')
    stages.cached = cached
    stages.dense()
    return keys[0]


@pytest.mark.slow  # resolves two configs' mmpretrain/mmdet bases
@pytest.mark.parametrize('num_val', [None, 0])
def test_without_a_split_the_data_spec_and_cache_keys_are_those_of_before(tmp_path, num_val):
    extra = {} if num_val is None else dict(num_val=num_val)
    cls = _keep_threads(lambda: _FixedRoot(str(tmp_path / 'c'), StageSettings(
        data_root='/data/toy-cifar', num_train=200, num_test=100, **extra)))
    det = _keep_threads(lambda: _FixedRootDetection(str(tmp_path / 'd'), StageSettings(
        data_root='/data/toy-coco', num_train=16, num_test=8, **DETECTION_SETTINGS, **extra)))
    # computed before the validation split existed
    cifar_data = {'root': '/data/toy-cifar', 'preset': 'hard', 'num_train': 200,
                  'num_test': 100}
    coco_data = {'root': '/data/toy-coco', 'preset': 'hard', 'num_train': 16, 'num_test': 8,
                 'img_size': 256}
    assert cls.data_spec() == cifar_data and det.data_spec() == coco_data
    base = dict(stage='dense', iters=3756, warmup=313, seed=0, batch=64)
    assert _dense_key(cls) == ('dense-it3756-s0', dict(
        base, config=f'{REPO}/configs/cifar100/sidt-dense_cls_vit-toy-p4_linear_12e_'
                     'toy-cifar100-hard.py', data=cifar_data, config_hash='453c4c6e3ccb77d2'))
    assert _dense_key(det) == ('dense-it3756-s0', dict(
        base, config=f'{REPO}/configs/toy/sidt-dense_mask-rcnn_sidtvit-toy_simplefpn_100it_'
                     'toy-coco-hard.py', data=coco_data, config_hash='00fdd84883e70dc1'))
    assert 'indices' not in cls.config(cls.s.dense_config).train_dataloader.dataset
    with pytest.raises(ValueError, match='num_val > 0'):
        cls.val_loader()


def test_with_a_split_the_data_spec_names_it():
    stages = _keep_threads(lambda: Stages('/tmp', StageSettings(data_root='/data/toy',
                                                                num_val=7)))
    assert stages.data_spec()['num_val'] == 7


# ----------------------------------------------------------------- the choice
class _Fake(Stages):
    """Stages whose evaluation is a table: ``evaluate`` records each split it is asked for,
    and a model is its checkpoint's path."""

    def __init__(self, work_dir, test_top1, num_val=10):
        _keep_threads(lambda: super(_Fake, self).__init__(
            work_dir, StageSettings(data_root='/data/toy', num_val=num_val)))
        self.test_top1 = test_top1
        self.evaluated = []

    def ensure_data(self):
        return '/data/toy'

    def num_train_images(self):
        return 100

    def config_hash(self, path):
        return 'fixed'

    def _model(self, config, checkpoint, options=None):
        return checkpoint

    def evaluate(self, model, run_dir, name='predictions', split='test'):
        self.evaluated.append((model, split))
        return {'top1': self.test_top1[model], name: f'{run_dir}/{name}.npz'}


def _final(tmp_path, label, top1, split='val'):
    ckpt = tmp_path / f'{label}.pth'
    ckpt.write_bytes(label.encode())
    return dict(config='retrain.py', checkpoint=str(ckpt), options={}, split=split, top1=top1)


def test_the_best_on_validation_is_chosen_and_tested_once(tmp_path):
    finals = {label: _final(tmp_path, label, top1)
              for label, top1 in (('a', 40.0), ('b', 55.0), ('c', 55.0), ('d', 10.0))}
    # test figures that would pick another candidate: the choice never reads them
    stages = _Fake(str(tmp_path / 'w'), {f['checkpoint']: 90.0 - f['top1']
                                         for f in finals.values()})
    choice = stages.choose('choice', {k: (lambda f=f: f) for k, f in finals.items()})
    # 'b' and 'c' tie on validation: the first listed wins
    assert choice['chosen'] == 'b' and choice['metric'] == 'top1'
    assert choice['val'] == {'a': 40.0, 'b': 55.0, 'c': 55.0, 'd': 10.0}
    assert stages.evaluated == [(finals['b']['checkpoint'], 'test')]
    assert choice['test']['top1'] == 35.0 and choice['test']['split'] == 'test'
    stored = json.loads((tmp_path / 'w' / 'choice' / 'choice.json').read_text())
    assert stored['chosen'] == 'b' and stored['val'] == choice['val']
    # a second run reuses the test evaluation
    again = stages.choose('choice', {k: (lambda f=f: f) for k, f in finals.items()})
    assert again['test']['top1'] == 35.0 and len(stages.evaluated) == 1


def test_a_candidate_of_several_seeds_is_chosen_by_its_mean_and_each_seed_tested(tmp_path):
    seeds = {'short': [_final(tmp_path, 's0', 50.0), _final(tmp_path, 's1', 30.0)],
             'long': [_final(tmp_path, 'l0', 45.0), _final(tmp_path, 'l1', 44.0)]}
    stages = _Fake(str(tmp_path / 'w'), {f['checkpoint']: f['top1'] - 1
                                         for fs in seeds.values() for f in fs})
    choice = stages.choose('c', {k: (lambda v=v: v) for k, v in seeds.items()})
    assert choice['chosen'] == 'long' and choice['val'] == {'short': 40.0, 'long': 44.5}
    assert sorted(m for m, _ in stages.evaluated) == sorted(f['checkpoint']
                                                            for f in seeds['long'])
    assert choice['test']['top1'] == 43.5 and len(choice['test']['runs']) == 2


def test_no_choice_without_a_validation_split_or_on_test_figures(tmp_path):
    final = _final(tmp_path, 'a', 40.0)
    with pytest.raises(ValueError, match=r'choice: no validation split .*StageSettings\.num_val'):
        _Fake(str(tmp_path / 'w'), {}, num_val=0).choose('choice', {'a': lambda: final})
    stages = _Fake(str(tmp_path / 'w'), {})
    on_test = _final(tmp_path, 'b', 60.0, split='test')
    with pytest.raises(ValueError, match=r"candidate 'b' was measured on \['test'\]"):
        stages.choose('choice', {'a': lambda: final, 'b': lambda: on_test})
    with pytest.raises(ValueError, match='no candidates'):
        stages.choose('choice', {})
    assert stages.evaluated == []


def test_the_search_cost_goal_reads_the_chosen_length_on_test_only():
    from sidt_mmdet.studies.search_cost import search_cost_goals

    def result(fraction, test, ref_test):
        # validation figures far above the reference: the goal must not read them
        summary = [dict(fraction=fraction, search_iters=10, top1_finetuned_mean=99.0,
                        reference_top1=1.0, reference_iters=20)]
        return dict(ratio=0.6, summary=summary, choice=dict(
            fraction=fraction, search_iters=10, top1_test=test, reference_top1_test=ref_test,
            reference_iters=20))
    assert search_cost_goals(result(0.1, 50.0, 50.4))[0]['status'] == 'met'
    missed = search_cost_goals(result(0.1, 50.0, 50.6))[0]
    assert missed['status'] == 'missed' and 'test 50.00 vs dense + 20 iterations 50.60' in \
        missed['detail']
    longer = search_cost_goals(result(0.2, 60.0, 50.0))[0]
    assert longer['status'] == 'not assessable' and 'validation chose 20%' in longer['detail']
