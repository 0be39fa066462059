"""The studies' stage cache: a stage runs again when its config (or an option merged into it)
changes, and is reused when nothing did."""
from __future__ import annotations

import torch

from sidt_mmdet.studies.common import Stages, StageSettings


def _stages(tmp_path, **options):
    root = tmp_path / 'data'
    (root / 'cifar-100-python').mkdir(parents=True, exist_ok=True)
    (root / 'cifar-100-python' / 'meta').write_bytes(b'')  # present: nothing is generated
    threads = torch.get_num_threads()
    try:
        return Stages(str(tmp_path / 'work'), StageSettings(data_root=str(root),
                                                            extra_options=options))
    finally:
        torch.set_num_threads(threads)


def test_a_changed_config_never_reuses_a_stale_stage(tmp_path):
    runs = []

    def run(run_dir):
        runs.append(run_dir)
        return dict(n=len(runs))

    stages = _stages(tmp_path)
    spec = dict(stage='x', config=stages.s.dense_config)
    assert stages.cached('x', spec, run)['n'] == 1
    assert stages.cached('x', spec, run)['n'] == 1 and len(runs) == 1  # reused
    # the same stage name and settings, another learning rate merged into the config
    other = _stages(tmp_path, **{'optim_wrapper.optimizer.lr': 0.5})
    assert other.config_hash(spec['config']) != stages.config_hash(spec['config'])
    assert other.cached('x', spec, run)['n'] == 2 and len(runs) == 2
    # and the study's provenance lists the config with the hash it ran with
    assert other.configs_used == {stages.s.dense_config}
