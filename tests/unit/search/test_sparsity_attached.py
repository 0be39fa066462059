"""A search that would train its masks without the sparsity loss is refused: a search-mode
backbone in a model not built by SIDTModel (refused when the optimizer wrapper is built), and
sparsity lambdas that are 0 for every kind of mask (refused at the first loss), unless
``allow_zero=True`` says it is on purpose (one warning)."""
from __future__ import annotations

import pytest
from mmengine.config import Config
from mmengine.model import BaseModel
from mmengine.optim import build_optim_wrapper
from mmengine.registry import MODELS, init_default_scope
from tiny_search import SEARCH_CFG, build_search_model
from torch import nn

from sidt_mmdet.models import SIDTViT
from sidt_mmdet.search import MissingSparsityError, SparsityLoss
from sidt_mmdet.search import sparsity as sparsity_module
from sidt_mmdet.search.checks import check_sparsity_attached

DENSE_CFG = SEARCH_CFG.parent / 'sidt-dense_cls_vit-toy-p4_linear_6e_toy-cifar100.py'
ARCH = dict(embed_dims=16, num_layers=2, num_heads=2, mlp_ratio=2.0)


def _search(**kw):
    return SIDTViT(arch=ARCH, patch_size=8, img_size=32, mode='search', **kw)


def _dense_config_in_search_mode():
    """What a user writes when they forget the wrapper: the dense config, backbone in search
    mode, the layer-decay constructor (the dense config already uses it)."""
    cfg = Config.fromfile(str(DENSE_CFG))
    cfg.model.backbone.mode = 'search'
    cfg.optim_wrapper.paramwise_cfg.mask_lr = 1e-2
    init_default_scope(cfg.get('default_scope', 'mmpretrain'))
    return cfg


def test_search_without_sidt_model_is_refused_when_the_optimizer_is_built():
    cfg = _dense_config_in_search_mode()
    model = MODELS.build(cfg.model)
    with pytest.raises(MissingSparsityError) as err:
        build_optim_wrapper(model, cfg.optim_wrapper)
    msg = str(err.value)
    assert "model.backbone.mode='search'" in msg and 'ImageClassifier' in msg
    assert "type='mmdet.SIDTModel'" in msg and 'model.sparsity' in msg
    assert 'backbone.blocks.0.attn.dim_mask' in msg and 'allow_zero=True' in msg


def test_the_search_config_itself_builds_its_optimizer():
    cfg = Config.fromfile(str(SEARCH_CFG))
    init_default_scope(cfg.get('default_scope', 'mmpretrain'))
    wrapper = build_optim_wrapper(build_search_model(), cfg.optim_wrapper)
    assert any(g['lr'] == 1e-2 for g in wrapper.optimizer.param_groups)


def test_only_models_a_runner_trains_are_checked():
    """A bare nn.Module holding a search backbone (a custom loop adds its own loss) and a
    model whose masks are frozen pass."""
    bare = nn.Module()
    bare.backbone = _search()
    check_sparsity_attached(bare)

    class Frozen(BaseModel):
        def __init__(self):
            super().__init__()
            self.backbone = _search()
            self.backbone.requires_grad_(False)

        def forward(self, *args, **kwargs):
            return {}

    check_sparsity_attached(Frozen())


def test_all_zero_lambdas_are_refused_at_the_first_loss():
    loss = SparsityLoss(lambda_attn=0, lambda_mlp=0, lambda_embed=1e-3)  # no embed mask here
    with pytest.raises(ValueError) as err:
        loss(_search())
    msg = str(err.value)
    assert 'lambda_attn=0, lambda_mlp=0' in msg and 'allow_zero=True' in msg


def test_a_zero_lambda_for_one_kind_is_allowed():
    """The hybrid search: no attention sparsity, the MLP searched."""
    out = SparsityLoss(lambda_attn=0.0)(_search(search_dims=('mlp',)))
    assert out['loss_sparsity'] > 0
    assert SparsityLoss(lambda_attn=0.0)(_search())['loss_sparsity'] > 0


def test_allow_zero_warns_once(monkeypatch):
    said = []
    monkeypatch.setattr(sparsity_module, 'print_log', lambda msg, **kw: said.append(msg))
    loss = SparsityLoss(lambda_attn=0, lambda_mlp=0, allow_zero=True)
    bb = _search()
    for _ in range(3):
        assert float(loss(bb)['loss_sparsity'].detach()) == 0
    assert len(said) == 1 and 'WITHOUT a sparsity loss' in said[0]
    with pytest.raises(ValueError, match='allow_zero'):
        SparsityLoss(allow_zero='yes')


def test_the_mask_check_hook_refuses_it_before_training_too():
    """With mmengine's own constructor (custom_keys for the masks) the constructor check does
    not run; the hook of the search configs refuses the run before its first step."""
    from types import SimpleNamespace

    from sidt_mmdet.search import SIDTMaskCheckHook

    model = MODELS.build(_dense_config_in_search_mode().model)
    with pytest.raises(MissingSparsityError, match='SIDTModel'):
        SIDTMaskCheckHook().before_train(SimpleNamespace(model=model))
    SIDTMaskCheckHook().before_train(SimpleNamespace(model=build_search_model()))
