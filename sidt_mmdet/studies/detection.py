"""The studies' stages on a detection task: the toy Mask R-CNN on the hard toy COCO preset.

:class:`DetectionStages` is :class:`~sidt_mmdet.studies.common.Stages` with the data, the
configs and the evaluation of a detector: the hard toy COCO set is generated in COCO's
layout (``make_toy_coco(preset='hard')``), every stage trains through mmengine's Runner on
``configs/toy/*_toy-coco-hard.py`` (what ``tools/train.py`` builds), and each evaluation runs
mmdet's ``CocoMetric`` on the test split, box and mask mAP (x100), writing the COCO results
JSON and the per-image matches (:mod:`sidt_mmdet.studies.coco_matches`) the paired
bootstrap redraws. The validation split (``num_val``) is the training set's last images,
evaluated the same way against a COCO file of those images
(:meth:`DetectionStages.val_ann_file`).
"""
from __future__ import annotations

import json
import os.path as osp

import torch

from ..apis.chain import data_root_options
from ..utils.fileio import write_json_atomic
from .coco_matches import coco_matches, save_matches
from .common import REPO, Stages, log

__all__ = ['DetectionStages', 'DETECTION_SETTINGS', 'ANN_FILE', 'hard_configs']

_TOY = osp.join(REPO, 'configs', 'toy')


def hard_configs(backbone: str = 'toy', data: str = 'hard') -> dict:
    """The StageSettings configs of the toy Mask R-CNN with SIDTViT ``backbone`` (``'toy'``:
    64 wide, ``'toy-s'``: 32 wide, ``'toy-xs'``: 16 wide) on the ``data`` toy COCO preset
    (``'hard'``, ``'harder'``: ``'harder'`` with ``'toy-s'`` only)."""
    return {f'{stage}_config': osp.join(_TOY, f'sidt-{stage}_mask-rcnn_sidtvit-{backbone}{kr}_'
                                              f'simplefpn_100it_toy-coco-{data}.py')
            for stage, kr in (('dense', ''), ('search', '-kr0.6'), ('retrain', '-kr0.6'))}


# The StageSettings of the detection studies' configs.
DETECTION_SETTINGS = hard_configs('toy')
ANN_FILE = osp.join('annotations', 'instances_val2017.json')
# The generated images' longest side, the configs' input size.
IMG_SIZE = 256


class DetectionStages(Stages):
    """The stages of a study on the hard toy COCO preset (see the module docstring)."""

    metrics = ('bbox_mAP', 'segm_mAP')
    metric_label = 'box mAP'

    def ensure_data(self) -> str:
        from ..datasets.generation import make_toy_coco
        root = osp.abspath(self.s.data_root)
        if not osp.isfile(osp.join(root, ANN_FILE)):
            log(f'generating the {self.s.data_preset} toy COCO set in {root}')
            make_toy_coco(root, num_train=self.s.num_train, num_val=self.s.num_test,
                          img_size=IMG_SIZE, preset=self.s.data_preset, overwrite=osp.isdir(root),
                          progress=lambda _: None)
        return root

    def data_spec(self) -> dict:
        return dict(super().data_spec(), img_size=IMG_SIZE)

    def data_options(self, root: str) -> dict:
        return data_root_options('detection', root)

    def val_ann_file(self) -> str:
        """The COCO annotation file of the validation split: the training set's last
        ``num_val`` images as the training stages read it (after its filter), with their
        annotations, beside the training annotations as ``<train>_last<num_val>.json``;
        written (atomically) when it is absent or holds anything else."""
        if not self.s.num_val:
            raise ValueError('val_ann_file: no validation split; set StageSettings.num_val > 0')
        if getattr(self, '_val_ann_file', None):
            return self._val_ann_file
        dataset = self.train_dataset()
        ids = [dataset.get_data_info(i)['img_id']
               for i in range(len(dataset) - self.s.num_val, len(dataset))]
        with open(dataset.ann_file, encoding='utf-8') as f:
            coco = json.load(f)
        images = {im['id']: im for im in coco['images']}
        keep = set(ids)
        held_out = dict(coco, images=[images[i] for i in ids],
                        annotations=[a for a in coco['annotations'] if a['image_id'] in keep])
        path = f'{osp.splitext(dataset.ann_file)[0]}_last{self.s.num_val}.json'
        try:
            with open(path, encoding='utf-8') as f:
                current = json.load(f)
        except (OSError, ValueError):
            current = None
        if current != held_out:
            write_json_atomic(path, held_out)
        self._val_ann_file = path
        return path

    def val_dataloader_cfg(self, cfg):
        """``cfg``'s test loader on the images of :meth:`val_ann_file` (the training
        images' folder)."""
        loader = super().val_dataloader_cfg(cfg)
        del loader.dataset['split'], loader.dataset['indices']
        loader.dataset.ann_file = self.val_ann_file()
        loader.dataset.data_prefix = dict(cfg.train_dataloader.dataset.data_prefix)
        return loader

    def predict(self, model, split: str = 'test'):
        raise NotImplementedError('a detector has no per-image label: see evaluate()')

    def evaluate(self, model, run_dir: str, name: str = 'predictions',
                 split: str = 'test') -> dict:
        """Box and mask mAP (x100) of ``model`` on ``split`` (``'test'``, or ``'val'``
        against :meth:`val_ann_file`) by mmdet's CocoMetric, its COCO results JSON
        (``run_dir/<name>.{bbox,segm}.json``) and the per-image matches
        (``run_dir/<name>.npz``) for the paired bootstrap."""
        from mmdet.evaluation import CocoMetric
        from mmengine.evaluator import Evaluator
        loader = self.loader(split)
        ann_file = (self.val_ann_file() if split == 'val'
                    else osp.join(osp.abspath(self.s.data_root), ANN_FILE))
        prefix = osp.join(run_dir, name)
        evaluator = Evaluator(CocoMetric(ann_file=ann_file, metric=['bbox', 'segm'],
                                         outfile_prefix=prefix))
        evaluator.dataset_meta = loader.dataset.metainfo
        model.eval()
        with torch.no_grad():
            for data in loader:
                evaluator.process(data_samples=model.test_step(data), data_batch=data)
        figures = evaluator.evaluate(len(loader.dataset))
        matches = {kind: coco_matches(ann_file, f'{prefix}.{kind}.json', kind)
                   for kind in ('bbox', 'segm')}
        for kind, m in matches.items():
            # CocoMetric rounds to 3 decimals and reports nothing when no image has a
            # detection above the score threshold (an mAP of 0); the matches recompute it
            metric_ap = figures.get(f'coco/{kind}_mAP', 0.0)
            if abs(m.score() - metric_ap) > 6e-4:
                raise RuntimeError(f'{kind} mAP from the matches {m.score():.4f} differs from '
                                   f"CocoMetric's {metric_ap:.3f}")
        path = osp.join(run_dir, f'{name}.npz')
        save_matches(path, matches)
        return {'bbox_mAP': 100 * matches['bbox'].score(),
                'segm_mAP': 100 * matches['segm'].score(), name: path}
