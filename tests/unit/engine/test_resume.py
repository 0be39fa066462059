"""--resume with a changed config: the config's lr, mask lr and weight decay win over the
checkpoint's optimizer state (the schedule rescaled), and a checkpoint of another mask layout
is refused before PyTorch's size error, naming the file, the group and both search dims.

These call what ``Runner.resume`` calls: the optimizer wrapper's and the schedulers'
``load_state_dict`` on the state a checkpoint read by the safe loader holds.
"""
from __future__ import annotations

import pytest
import torch
from mmengine.optim import CosineAnnealingLR
from torch import nn

from sidt_mmdet.engine import SIDTLayerDecayOptimWrapperConstructor
from sidt_mmdet.engine import resume as resume_module
from sidt_mmdet.models import SIDTViT
from sidt_mmdet.utils import load_checkpoint_safe
from sidt_mmdet.utils.safe_load import CheckpointMismatchError

ARCH = dict(embed_dims=16, num_layers=2, num_heads=2, mlp_ratio=2.0)
STEPS = 6


class Model(nn.Module):
    def __init__(self, search_dims=('attn', 'mlp')):
        super().__init__()
        torch.manual_seed(0)
        self.backbone = SIDTViT(arch=ARCH, patch_size=8, img_size=32, mode='search',
                                search_dims=search_dims)
        self.head = nn.Linear(16, 2)


def _build(model, mask_lr=1e-2, weight_decay=0.05):
    cfg = dict(optimizer=dict(type='AdamW', lr=1e-3, weight_decay=weight_decay))
    wrapper = SIDTLayerDecayOptimWrapperConstructor(cfg, dict(mask_lr=mask_lr))(model)
    return wrapper, CosineAnnealingLR(wrapper, by_epoch=False, begin=0, end=STEPS, eta_min=0.)


def _step(model, wrapper, scheduler):
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    feats = model.backbone(x)[0]
    loss = model.head(feats.mean((2, 3))).square().mean() + sum(
        m.abs().sum() for m in model.backbone.mask_parameters().values())
    wrapper.update_params(loss)
    scheduler.step()


def _mask_group(wrapper):
    [group] = [g for g, names in zip(wrapper.optimizer.param_groups, wrapper.sidt_group_names)
               if names[0].endswith('_mask')]
    return group


@pytest.fixture
def checkpoint(tmp_path):
    """A run at mask lr 0.01 saved after 2 of its 6 steps, read back as --resume reads it."""
    model = Model()
    wrapper, scheduler = _build(model)
    for _ in range(2):
        _step(model, wrapper, scheduler)
    path = tmp_path / 'iter_2.pth'
    torch.save({'state_dict': model.state_dict(), 'optimizer': wrapper.state_dict(),
                'param_schedulers': [scheduler.state_dict()]}, path)
    return path, (model, wrapper, scheduler)


def _resume(path, model, **config):
    wrapper, scheduler = _build(model, **config)
    ckpt = load_checkpoint_safe(str(path))
    model.load_state_dict(ckpt['state_dict'], strict=False)  # as mmengine loads it
    wrapper.load_state_dict(ckpt['optimizer'])
    scheduler.load_state_dict(ckpt['param_schedulers'][0])
    return wrapper, scheduler


def test_a_changed_mask_lr_governs_the_resumed_run(checkpoint, monkeypatch):
    path, (old_model, old_wrapper, old_scheduler) = checkpoint
    said = []
    monkeypatch.setattr(resume_module, 'print_log', lambda msg, **kw: said.append(msg))
    model = Model()
    wrapper, scheduler = _resume(path, model, mask_lr=0.5, weight_decay=0.1)
    masks = _mask_group(wrapper)
    assert masks['initial_lr'] == 0.5
    # the cosine schedule at step 2 for a base of 0.5, not 0.01
    assert masks['lr'] == pytest.approx(50 * _mask_group(old_wrapper)['lr'], rel=1e-12)
    for _ in range(3):  # and the schedule goes on from there
        _step(model, wrapper, scheduler)
        _step(old_model, old_wrapper, old_scheduler)
        assert _mask_group(wrapper)['lr'] == pytest.approx(
            50 * _mask_group(old_wrapper)['lr'], rel=1e-9)
    decayed = [g for g in wrapper.optimizer.param_groups if g['weight_decay']]
    assert decayed and all(g['weight_decay'] == 0.1 for g in decayed)
    # the moments are the checkpoint's
    state = wrapper.optimizer.state_dict()['state']
    assert state and all(int(s['step']) == 5 for s in state.values())
    assert len(said) == 1 and "the config's optimizer settings replace" in said[0]
    assert 'the search masks' in said[0] and 'initial_lr 0.01 -> 0.5' in said[0]
    assert 'weight_decay 0.05 -> 0.1' in said[0]


def test_an_unchanged_config_resumes_as_saved(checkpoint, monkeypatch):
    path, (_, old_wrapper, _) = checkpoint
    said = []
    monkeypatch.setattr(resume_module, 'print_log', lambda msg, **kw: said.append(msg))
    wrapper, _ = _resume(path, Model())
    assert said == []
    for got, want in zip(wrapper.optimizer.param_groups, old_wrapper.optimizer.param_groups):
        assert {k: v for k, v in got.items() if k != 'params'} == \
            {k: v for k, v in want.items() if k != 'params'}


def test_a_changed_mask_layout_is_refused_naming_both_search_dims(checkpoint):
    path, _ = checkpoint
    with pytest.raises(CheckpointMismatchError) as err:
        _resume(path, Model(search_dims=('attn', 'mlp', 'embed')))
    msg = str(err.value)
    assert msg.startswith(str(path)) and "doesn't match" not in msg
    # (the embedding mask comes first, so the groups after it shift too)
    assert '(the search masks, 5 tensors, first backbone.embed_mask) has 5 tensors in the ' \
           'config, 10 in the checkpoint' in msg
    assert "the checkpoint searched search_dims=('attn', 'mlp'), split_qkv=False" in msg
    assert "model.backbone.search_dims=('attn', 'mlp', 'embed')" in msg
    assert 'load_from' in msg and '\n' not in msg


def test_groups_of_equal_sizes_but_other_tensors_are_refused(checkpoint):
    """PyTorch pairs saved and current tensors by position: a head of another width behind
    groups of the same sizes would get the moments of another tensor."""
    path, _ = checkpoint
    model = Model()
    model.head = nn.Linear(16, 3)
    wrapper, _ = _build(model)
    with pytest.raises(CheckpointMismatchError) as err:
        wrapper.load_state_dict(load_checkpoint_safe(str(path))['optimizer'])
    assert 'head.weight (3, 16) would get the optimizer state of a tensor of shape (2, 16)' \
        in str(err.value)
