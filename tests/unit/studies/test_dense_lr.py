"""``StageSettings.dense_lr``: the dense and the narrow model train at it, the fine-tunes keep
the retrain config's learning rate, and without it the dense stage's cache key is unchanged."""
from __future__ import annotations

import pytest
import torch

from sidt_mmdet.studies.common import Stages, StageSettings


class _Recording(Stages):
    """Stages that record the learning rate each training stage is given, and train
    nothing."""

    def ensure_data(self):
        return '/data/toy-cifar'

    def cached(self, name, spec, run):
        self.specs[name] = spec
        return run(f'/tmp/{name}')

    def _train(self, cfg, run_dir, iters, warmup, seed, load_from):
        self.trained.append((run_dir.rsplit('/', 1)[-1], cfg.optim_wrapper.optimizer.lr))
        return None, 'ckpt.pth'

    def evaluate(self, model, run_dir, name='predictions', split='test'):
        return {'top1': 0.0}

    def _model(self, config, checkpoint, options=None):
        from sidt_mmdet.apis import build_model
        cfg = self.config(config, options)
        return build_model(cfg, device='cpu')


def _stages(tmp_path, **extra):
    threads = torch.get_num_threads()
    try:
        stages = _Recording(str(tmp_path), StageSettings(data_root='/data/toy-cifar', **extra))
    finally:
        torch.set_num_threads(threads)
    stages.specs, stages.trained = {}, []
    return stages


@pytest.mark.slow  # resolves the toy ViT's mmpretrain configs
def test_the_dense_and_narrow_models_train_at_dense_lr_and_the_key_names_it(tmp_path):
    config_lr = _stages(tmp_path).config(StageSettings.dense_config).optim_wrapper.optimizer.lr
    stages = _stages(tmp_path, dense_lr=config_lr * 3)
    stages.dense()
    stages.narrow(keep=0.6, seed=0)
    assert stages.trained == [('dense-it3756-s0', config_lr * 3),
                              ('narrow-k0.6-it3756-s0', config_lr * 3)]
    assert stages.specs['dense-it3756-s0']['lr'] == config_lr * 3
    assert stages.specs['narrow-k0.6-it3756-s0']['lr'] == config_lr * 3
    # without it: the config's rate, and a dense key without an 'lr' entry (the earlier runs')
    plain = _stages(tmp_path)
    plain.dense()
    assert plain.trained == [('dense-it3756-s0', config_lr)]
    assert 'lr' not in plain.specs['dense-it3756-s0']


@pytest.mark.parametrize('lr', [0, -1e-3])
def test_a_learning_rate_that_is_not_positive_is_refused(lr):
    with pytest.raises(ValueError, match=f'dense_lr: expected a learning rate > 0 or None, '
                                         f'got {lr!r}'):
        StageSettings(data_root='x', dense_lr=lr)
