"""Search guards: non-finite masks stop the search naming the layer; masks outside their
own optimizer group stop it naming the constructor to use; log figures show progress."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from mmengine.optim import DefaultOptimWrapperConstructor
from torch import nn

from sidt_mmdet.engine import SIDTLayerDecayOptimWrapperConstructor
from sidt_mmdet.models import SIDTViT
from sidt_mmdet.search import (
    MaskGroupError,
    NonFiniteMaskError,
    SIDTMaskCheckHook,
    SparsityLoss,
    select_subnet,
)
from sidt_mmdet.search.checks import watch_mask_groups

ARCH = dict(embed_dims=16, num_layers=2, num_heads=2, mlp_ratio=2.0)


def _search(**kw):
    return SIDTViT(arch=ARCH, patch_size=8, img_size=32, mode='search', **kw)


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = _search()
        self.head = nn.Linear(4, 2)


# ------------------------------------------------------------------ non-finite masks
@pytest.mark.parametrize('value', [float('nan'), float('inf'), -float('inf')])
def test_sparsity_loss_names_the_broken_layer(value):
    bb = _search()
    with torch.no_grad():
        bb.blocks[1].mlp.hidden_mask[3] = value
    with pytest.raises(NonFiniteMaskError, match=r'backbone\.blocks\.1\.mlp\.hidden_mask'):
        SparsityLoss()(bb)


def test_hook_stops_right_after_the_step_that_broke_a_mask():
    model = Model()
    hook = SIDTMaskCheckHook()
    runner = SimpleNamespace(model=model, iter=6, max_iters=10)
    hook.after_train_iter(runner, 0)  # finite: nothing happens
    with torch.no_grad():
        model.backbone.blocks[0].attn.dim_mask[1, 2] = float('nan')
    with pytest.raises(NonFiniteMaskError) as err:
        hook.after_train_iter(runner, 0)
    assert 'backbone.blocks.0.attn.dim_mask (1 NaN, 0 Inf of 16)' in str(err.value)
    assert 'after iteration 7' in str(err.value)
    assert SIDTMaskCheckHook.priority == 'ABOVE_NORMAL'  # before CheckpointHook (VERY_LOW)


def test_selection_refuses_nan_masks():
    bb = _search()
    with torch.no_grad():
        bb.blocks[0].mlp.hidden_mask[0] = float('nan')
    with pytest.raises(NonFiniteMaskError, match='blocks.0.mlp.hidden_mask'):
        select_subnet(bb, keep_ratio=0.5)


@pytest.mark.parametrize('interval', [0, -1, 1.5, True])
def test_hook_interval_is_checked(interval):
    with pytest.raises(ValueError, match='interval'):
        SIDTMaskCheckHook(interval=interval)


# ------------------------------------------------------------------ optimizer groups
def _step(model, optim_wrapper):
    watch_mask_groups(model)
    optim_wrapper.optimizer.step()


OPTIM = dict(type='OptimWrapper', optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.05))


def test_plain_mmengine_constructor_is_refused_with_the_fix_named():
    model = Model()
    wrapper = DefaultOptimWrapperConstructor(OPTIM)(model)
    with pytest.raises(MaskGroupError) as err:
        _step(model, wrapper)
    msg = str(err.value)
    assert 'SIDTLayerDecayOptimWrapperConstructor' in msg and 'mask_lr' in msg
    assert 'weight_decay=0.05' in msg


def test_mask_group_with_weight_decay_is_refused():
    model = Model()
    cfg = dict(custom_keys={'_mask': dict(lr_mult=10.)})  # own groups, but decayed
    wrapper = DefaultOptimWrapperConstructor(OPTIM, cfg)(model)
    with pytest.raises(MaskGroupError, match='weight_decay=0.05'):
        _step(model, wrapper)


@pytest.mark.parametrize('build', [
    lambda: SIDTLayerDecayOptimWrapperConstructor(OPTIM, dict(mask_lr=1e-2)),
    lambda: DefaultOptimWrapperConstructor(
        OPTIM, dict(custom_keys={'_mask': dict(lr_mult=10., decay_mult=0.)})),
])
def test_masks_in_their_own_group_pass(build, monkeypatch):
    """The check runs at the first step, finds nothing wrong with a mask-only, decay-free
    group, and is skipped afterwards. Catches a refusal of the right set-up, and a check
    that never runs (which the refusal tests alone would not tell from a pass)."""
    from sidt_mmdet.search import checks

    verdicts, real = [], checks.mask_group_problem

    def spy(optimizer, mask_ids):
        verdicts.append((optimizer, set(mask_ids), real(optimizer, mask_ids)))
        return verdicts[-1][2]

    monkeypatch.setattr(checks, 'mask_group_problem', spy)
    model = Model()
    masks = {id(p) for p in model.backbone.mask_parameters().values()}
    wrapper = build()(model)
    groups = [g for g in wrapper.optimizer.param_groups
              if any(id(p) in masks for p in g['params'])]
    assert groups and all({id(p) for p in g['params']} <= masks and g['weight_decay'] == 0
                          for g in groups)
    _step(model, wrapper)
    _step(model, wrapper)  # checked once, then skipped
    ours = [v for v in verdicts if v[1] == masks]
    assert [(opt, verdict) for opt, _, verdict in ours] == [(wrapper.optimizer, None)]


# ------------------------------------------------------------------ log figures
def test_figures_tell_how_far_the_search_has_got():
    bb = _search(search_dims=('mlp',))
    loss = SparsityLoss(keep_ratio=0.5, keep_threshold=0.05)
    start = loss(bb)
    assert start['sparsity_done_mlp'] == 0 and start['sparsity_p50_mlp'] == 1
    with torch.no_grad():  # the search drives half of the units below the threshold...
        for blk in bb.blocks:
            blk.mlp.hidden_mask[:16] = 0.01
            blk.mlp.hidden_mask[16:20] = 0.5
    half = loss(bb)
    # ...the mean alone (0.57) would not say that selection at 0.5 now only drops dead units
    assert half['sparsity_done_mlp'] == 1 and half['sparsity_cut_mlp'] == pytest.approx(0.01)
    assert half['sparsity_p10_mlp'] == pytest.approx(0.01)
    assert half['sparsity_p90_mlp'] == 1 and half['sparsity_kept_mlp'] == 0.5
    with torch.no_grad():  # a quarter of the dropped half still alive
        for blk in bb.blocks:
            blk.mlp.hidden_mask[12:16] = 0.5
    assert loss(bb)['sparsity_done_mlp'] == 0.75


@pytest.mark.parametrize('ratio', [0, 1.5, -1, float('nan'), '0.5'])
def test_keep_ratio_of_the_figures_is_checked(ratio):
    with pytest.raises(ValueError, match='keep_ratio'):
        SparsityLoss(keep_ratio=ratio)
