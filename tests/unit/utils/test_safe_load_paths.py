"""The safe loader as mmengine reaches it, the checkpoint file remembered for every tensor it
loaded (so a refused resume can name the file), and the walk over what was loaded."""
from __future__ import annotations

import gc

import pytest
import torch
from mmengine.logging import HistoryBuffer
from mmengine.runner import CheckpointLoader
from mmengine.runner.checkpoint import load_from_local

from sidt_mmdet.utils import safe_load
from sidt_mmdet.utils.safe_load import (
    UnsafeCheckpointError,
    checkpoint_source,
    install_safe_checkpoint_loader,
    load_checkpoint_safe,
)


def test_install_replaces_mmengines_local_loader():
    """Catches an install that registers nothing, something else, or not over mmengine's
    own loader of local files (``import sidt_mmdet`` already installed it once: put
    mmengine's back first)."""
    try:
        CheckpointLoader.register_scheme(prefixes='', loader=load_from_local, force=True)
        assert CheckpointLoader._get_checkpoint_loader('ckpt.pth') is load_from_local
        install_safe_checkpoint_loader()
        install_safe_checkpoint_loader()  # idempotent
        assert CheckpointLoader._get_checkpoint_loader('ckpt.pth') is safe_load._load_from_local
    finally:
        install_safe_checkpoint_loader()


def test_mmengine_passes_map_location_through(tmp_path):
    """Catches the map_location of mmengine's loader dropped (every load would go to the
    CPU, or to the loader's default)."""
    path = tmp_path / 'ckpt.pth'
    torch.save({'state_dict': {'w': torch.ones(2)}}, path)
    ckpt = CheckpointLoader.load_checkpoint(str(path), map_location='meta')
    assert ckpt['state_dict']['w'].device.type == 'meta'


@pytest.mark.parametrize('layout', ['state_dict', 'model', 'module', 'bare'])
def test_every_loaded_weight_knows_its_file(tmp_path, layout):
    """Catches a container key of checkpoints (mmengine's ``state_dict``, torchvision's and
    timm's ``model``, DDP's ``module``, or a bare state dict) whose tensors are not
    remembered, and the optimizer's state left out beside the weights."""
    weights = {'w': torch.ones(3), 'b': torch.zeros(1)}
    obj = weights if layout == 'bare' else {layout: weights, 'meta': {'iter': 1}}
    if layout == 'state_dict':
        obj['optimizer'] = {'state': {0: {'exp_avg': torch.ones(3), 'step': 4}},
                            'param_groups': [{'lr': 0.1}]}
    path = tmp_path / 'ckpt.pth'
    torch.save(obj, path)
    got = load_checkpoint_safe(path)
    state = got if layout == 'bare' else got[layout]
    assert checkpoint_source(state['w']) == checkpoint_source(state['b']) == str(path)
    if layout == 'state_dict':
        assert checkpoint_source(got['optimizer']['state'][0]['exp_avg']) == str(path)
    assert checkpoint_source(torch.ones(3)) is None


def test_the_record_of_a_tensor_goes_with_it(tmp_path):
    """Catches the record outliving its tensor (every load of a long run would add to it)."""
    path = tmp_path / 'ckpt.pth'
    torch.save({'state_dict': {f'w{i}': torch.ones(2) for i in range(5)}}, path)
    gc.collect()
    before = len(safe_load._SOURCES)
    loaded = load_checkpoint_safe(path)
    assert len(safe_load._SOURCES) == before + 5
    del loaded
    gc.collect()
    assert len(safe_load._SOURCES) == before


def test_a_function_planted_beside_a_list_is_found(tmp_path):
    """Catches the walk over a checkpoint dropping what is still to visit when it enters a
    list: a function reached through the restricted getattr, stored next to a list, is
    refused with where it sits and what it is."""
    path = tmp_path / 'ckpt.pth'
    torch.save({'meta': {'hook': HistoryBuffer.mean, 'milestones': [1, 2]}}, path)
    with pytest.raises(UnsafeCheckpointError) as err:
        load_checkpoint_safe(path)
    hb = f'{HistoryBuffer.__module__}.{HistoryBuffer.__qualname__}'
    assert str(err.value) == (
        f"refused {str(path)!r}: checkpoint['meta']['hook'] holds an unexpected {hb}.mean "
        '(a checkpoint holds tensors, numbers, strings and containers of them)')


def test_shared_and_self_containing_containers_load(tmp_path):
    """Catches the walk revisiting what it has seen: a list that contains itself would loop
    for ever (the test would hang, mutation testing counts it as a timeout); shared lists
    load as shared."""
    loop = [1]
    loop.append(loop)
    shared = [torch.zeros(1)]
    path = tmp_path / 'ckpt.pth'
    torch.save({'meta': {'loop': loop, 'shared': [shared] * 50}}, path)
    got = load_checkpoint_safe(path)['meta']
    assert got['loop'][1] is got['loop'] and got['shared'][0] is got['shared'][49]
