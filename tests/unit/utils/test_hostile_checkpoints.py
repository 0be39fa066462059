"""Hostile checkpoints are refused by every in-process load path, naming what is unsafe,
with no side effect. (tools/train.py --resume, tools/test.py, export and low-rank:
tests/integration/test_hostile_tools.py.)"""
from __future__ import annotations

import pickle

import pytest
import torch
from hostile import PLANTED, RUNS_ON_LOAD, payloads, write_payload
from mmengine.logging import HistoryBuffer
from mmengine.runner import CheckpointLoader
from mmengine.runner.checkpoint import load_checkpoint
from torch import nn

import sidt_mmdet  # noqa: F401
from sidt_mmdet.models import SIDTViT
from sidt_mmdet.utils import UnsafeCheckpointError, load_checkpoint_safe, safe_load

ARCH = dict(embed_dims=16, num_layers=1, num_heads=2)
NAMES = list(payloads('m'))


def _loaders():
    def init_cfg(path):
        SIDTViT(arch=ARCH, patch_size=8, img_size=16,
                init_cfg=dict(type='Pretrained', checkpoint=path)).init_weights()

    def load_from(path):  # what Runner.load_checkpoint (load_from, --resume) calls
        model = nn.Module()
        model.backbone = SIDTViT(arch=ARCH, patch_size=8, img_size=16)
        load_checkpoint(model, path, map_location='cpu')

    return {'load_checkpoint_safe': load_checkpoint_safe,
            'CheckpointLoader': lambda p: CheckpointLoader.load_checkpoint(p, 'cpu'),
            'init_cfg Pretrained': init_cfg, 'mmengine load_checkpoint': load_from}


@pytest.mark.parametrize('loader', list(_loaders()))
@pytest.mark.parametrize('name', NAMES)
def test_refused_with_no_side_effect(tmp_path, name, loader, figures):
    marker = tmp_path / 'marker'
    obj, expect = payloads(str(marker))[name]
    path = write_payload(tmp_path / 'hostile.pth', obj)
    with pytest.raises(UnsafeCheckpointError) as err:
        _loaders()[loader](path)
    assert path in str(err.value) and expect in str(err.value)
    assert not marker.exists()
    figures.add('hostile_refused')


def test_every_payload_is_shown_live():
    """Each payload is covered by one of the two tests below."""
    assert sorted(RUNS_ON_LOAD + tuple(PLANTED)) == sorted(NAMES)


@pytest.mark.parametrize('name', [pytest.param(n, marks=pytest.mark.slow) if n == 'os.system'
                                  else n for n in RUNS_ON_LOAD])  # os.system starts a shell
def test_plain_pickle_would_have_run_the_payload(tmp_path, name):
    """The payloads are live: without weights_only, loading one runs it (so the tests above
    cannot pass merely because a payload is inert, e.g. a getattr chain that reaches nothing
    or an object array whose elements are plain values)."""
    marker = tmp_path / 'marker'
    path = write_payload(tmp_path / 'hostile.pth', payloads(str(marker))[name][0])
    assert not marker.exists()
    torch.load(path, weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize('name', list(PLANTED))
def test_planted_payloads_get_past_torch_and_are_stopped_by_our_checks(tmp_path, name,
                                                                       monkeypatch):
    """The planted payloads are live too: torch's weights_only unpickler, given our allow-list
    with a plain getattr and no check of what it loaded, hands over a HistoryBuffer carrying
    builtins.exec, a swapped statistic or a foreign attribute. So their refusal above is the
    work of our restricted getattr and post-load check (remove either and it fails)."""
    obj, _ = payloads(str(tmp_path / 'marker'))[name]
    path = write_payload(tmp_path / 'hostile.pth', obj)
    with pytest.raises(UnsafeCheckpointError):
        load_checkpoint_safe(path)
    monkeypatch.setattr(safe_load, '_check_loaded', lambda *args: None)
    monkeypatch.setattr(safe_load, '_restricted_getattr', getattr)
    loaded = load_checkpoint_safe(path)['meta']['payload']
    assert type(loaded) is HistoryBuffer and PLANTED[name](loaded)


def test_history_buffer_of_a_real_run_still_loads(tmp_path):
    buf = HistoryBuffer([1.0, 2.0, 3.0], [1, 1, 1])
    torch.save({'message_hub': {'log_scalars': {'loss': buf}}, 'state_dict': {}},
               tmp_path / 'ok.pth')
    got = load_checkpoint_safe(tmp_path / 'ok.pth')['message_hub']['log_scalars']['loss']
    assert got.mean() == 2.0 and got.statistics('max') == 3.0


def test_refusal_is_an_unpickling_error(tmp_path):
    """Callers that catch pickle's error type keep working."""
    assert issubclass(UnsafeCheckpointError, pickle.UnpicklingError)


@pytest.mark.parametrize('damage', ['truncated', 'text', 'empty', 'truncated legacy'])
def test_damaged_checkpoint_is_named_not_called_unsafe(tmp_path, damage):
    from sidt_mmdet.utils import CorruptCheckpointError
    path = tmp_path / 'ckpt.pth'
    torch.save({'state_dict': {'w': torch.randn(64, 64)}}, path,
               _use_new_zipfile_serialization=damage != 'truncated legacy')
    data = path.read_bytes()
    path.write_bytes({'truncated': data[:len(data) // 2], 'text': b'hello, not a checkpoint',
                      'empty': b'', 'truncated legacy': data[:40]}[damage])
    with pytest.raises(CorruptCheckpointError) as err:
        load_checkpoint_safe(path)
    assert str(path) in str(err.value)
