"""SIDTLayerDecayOptimWrapperConstructor: every group it makes, computed by hand.

The model is a 3-block search-mode SIDTViT (window + rel-pos, final norm) inside a small
"detector" with a neck (depthwise conv, GroupNorm, deformable conv) and a head, so every
rule of the constructor and of mmengine's paramwise_cfg has parameters to act on.
"""
import pytest
import torch
from mmcv.ops import DeformConv2dPack
from torch import nn

from sidt_mmdet.engine import layer_decay
from sidt_mmdet.engine.layer_decay import SIDTLayerDecayOptimWrapperConstructor
from sidt_mmdet.models import SIDTViT

BASE_LR, BASE_WD, DECAY, MASK_LR = 2e-3, 0.05, 0.5, 1e-2
# lr of layer id 0 (embeddings) .. 4 (after the last block): BASE_LR * 0.5 ** (4 - id)
LR = {0: 1.25e-4, 1: 2.5e-4, 2: 5e-4, 3: 1e-3, 4: 2e-3}
MASKS = ['backbone.embed_mask'] + [f'backbone.blocks.{i}.{m}' for i in range(3)
                                   for m in ('attn.dim_mask', 'mlp.hidden_mask')]


class Neck(nn.Module):
    def __init__(self):
        super().__init__()
        self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.gn = nn.GroupNorm(2, 16)
        self.dcn = DeformConv2dPack(16, 16, 3, padding=1)


class Head(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(16, 4)
        self.scale = nn.Parameter(torch.ones(4))  # 1-D, neither a bias nor a norm


class ToyDetector(nn.Module):
    def __init__(self, share_head=False):
        super().__init__()
        self.backbone = SIDTViT(arch=dict(embed_dims=16, num_layers=3, num_heads=2),
                                img_size=32, patch_size=8, window_size=2,
                                global_attn_indexes=[2], use_rel_pos=True, final_norm=True,
                                mode='search', search_dims=('attn', 'mlp', 'embed'))
        self.neck = Neck()
        self.head = Head()
        if share_head:  # a tied weight: one tensor registered in two modules
            self.tied = nn.Linear(16, 4)
            self.tied.weight = self.head.fc.weight


def block_params(i):
    """Names of block i: (decayed weights, no-decay 1-D / rel-pos tensors)."""
    p = f'backbone.blocks.{i}.'
    decayed = [p + n for n in ('attn.qkv.weight', 'attn.proj.weight', 'mlp.fc1.weight',
                               'mlp.fc2.weight')]
    flat = [p + n for n in ('norm1.weight', 'norm1.bias', 'attn.qkv.bias', 'attn.proj.bias',
                            'attn.rel_pos_h', 'attn.rel_pos_w', 'norm2.weight', 'norm2.bias',
                            'mlp.fc1.bias', 'mlp.fc2.bias')]
    return decayed, flat


def build(paramwise_cfg=None, model=None, optimizer=None):
    model = model or ToyDetector()
    cfg = dict(optimizer=optimizer or dict(type='AdamW', lr=BASE_LR, weight_decay=BASE_WD))
    wrapper = SIDTLayerDecayOptimWrapperConstructor(cfg, paramwise_cfg)(model)
    names = {id(p): n for n, p in model.named_parameters()}
    groups = {}
    for g in wrapper.optimizer.param_groups:
        for p in g['params']:
            assert names[id(p)] not in groups, f'{names[id(p)]} in two groups'
            groups[names[id(p)]] = (g['lr'], g['weight_decay'])
    return model, wrapper, groups


def assert_groups(groups, want):
    assert set(groups) == set(want)
    for name, (lr, wd) in want.items():
        got_lr, got_wd = groups[name]
        assert got_lr == pytest.approx(lr, rel=1e-12), name
        assert got_wd == pytest.approx(wd, rel=1e-12, abs=0), name


def default_groups():
    """What the constructor must produce for ToyDetector with layer_decay_rate=0.5."""
    want = {
        'backbone.patch_embed.proj.weight': (LR[0], BASE_WD),
        'backbone.patch_embed.proj.bias': (LR[0], 0.),
        'backbone.pos_embed': (LR[0], 0.),
        'backbone.norm.weight': (LR[4], 0.),
        'backbone.norm.bias': (LR[4], 0.),
        'neck.dw.weight': (BASE_LR, BASE_WD), 'neck.dw.bias': (BASE_LR, 0.),
        'neck.gn.weight': (BASE_LR, 0.), 'neck.gn.bias': (BASE_LR, 0.),
        'neck.dcn.weight': (BASE_LR, BASE_WD),
        'neck.dcn.conv_offset.weight': (BASE_LR, BASE_WD),
        'neck.dcn.conv_offset.bias': (BASE_LR, 0.),
        'head.fc.weight': (BASE_LR, BASE_WD), 'head.fc.bias': (BASE_LR, 0.),
        'head.scale': (BASE_LR, 0.),
    }
    for i in range(3):
        decayed, flat = block_params(i)
        want.update({n: (LR[i + 1], BASE_WD) for n in decayed})
        want.update({n: (LR[i + 1], 0.) for n in flat})
    want.update({n: (MASK_LR, 0.) for n in MASKS})
    return want


def test_every_group_of_a_three_block_model():
    """Catches a wrong exponent of the decay (off by one layer), a layer id taken from the
    wrong block, weight decay on norms/biases/position tables, and masks that get weight
    decay or the layer-decayed lr."""
    model, wrapper, groups = build(dict(layer_decay_rate=DECAY, mask_lr=MASK_LR))
    assert_groups(groups, default_groups())
    # parameters of equal (lr, weight decay) share one group: 5 layers x 2 + neck/head + masks
    assert len(wrapper.optimizer.param_groups) == 5 * 2 + 1
    assert {n for n, p in model.named_parameters()} == set(groups)


def test_mask_lr_mult_and_decay_one():
    """Catches mask_lr_mult ignored, a decay of 1.0 that still scales some layer, and masks
    merged into another group of the same lr (the README promises them their own)."""
    _, wrapper, groups = build(dict(mask_lr_mult=3.0))
    for name, (lr, _) in groups.items():
        assert lr == pytest.approx(3 * BASE_LR if name in MASKS else BASE_LR), name
    _, wrapper, _ = build(dict(layer_decay_rate=DECAY))  # mask lr == the base lr
    sizes = sorted(len(g['params']) for g in wrapper.optimizer.param_groups
                   if g['params'][0].ndim and g['lr'] == BASE_LR and g['weight_decay'] == 0)
    assert len(MASKS) in sizes


def test_frozen_parameters_are_left_out():
    """Catches frozen tensors handed to the optimizer (AdamW would keep state for them)."""
    model = ToyDetector()
    model.backbone.blocks[0].requires_grad_(False)
    _, _, groups = build(dict(layer_decay_rate=DECAY), model=model)
    assert not any(n.startswith('backbone.blocks.0.') for n in groups)
    assert 'backbone.blocks.1.attn.qkv.weight' in groups


def test_class_token_gets_no_weight_decay():
    """Catches the class token decayed towards zero (it is listed with pos_embed)."""
    model = nn.Module()
    model.backbone = SIDTViT(arch=dict(embed_dims=16, num_layers=3, num_heads=2), img_size=32,
                             patch_size=8, with_cls_token=True, out_type='cls_token')
    _, _, groups = build(dict(layer_decay_rate=DECAY), model=model)
    assert groups['backbone.cls_token'] == pytest.approx((LR[0], 0.))
    assert groups['backbone.blocks.2.mlp.fc1.weight'] == pytest.approx((LR[3], BASE_WD))


# ---------------------------------------------------------------- mmengine's paramwise_cfg
def test_custom_keys_multiply_into_the_layer_decay(monkeypatch):
    """Catches custom_keys dropped (the constructor overrides add_params), a custom lr that
    replaces instead of multiplying the layer decay, and a custom decay_mult overruled by
    the no-decay default; a custom key matching a mask is logged, not applied."""
    lines = []
    monkeypatch.setattr(layer_decay, 'print_log',
                        lambda msg, **kw: lines.append(msg) if kw == dict(logger='current')
                        else pytest.fail(f'logged {msg!r} with {kw}, not logger=current'))
    custom = {'head': dict(lr_mult=0.1, decay_mult=0.5),
              'backbone.blocks.1.mlp': dict(lr_mult=3.0)}
    _, _, groups = build(dict(layer_decay_rate=DECAY, mask_lr=MASK_LR, custom_keys=custom))
    want = default_groups()
    want.update({'head.fc.weight': (2e-4, 0.025), 'head.fc.bias': (2e-4, 0.025),
                 'head.scale': (2e-4, 0.025)})
    # block 1 has layer id 2 (lr 5e-4); decay_mult defaults to 1, so its biases decay too
    for n in ('fc1.weight', 'fc1.bias', 'fc2.weight', 'fc2.bias'):
        want[f'backbone.blocks.1.mlp.{n}'] = (1.5e-3, BASE_WD)
    assert_groups(groups, want)
    assert any("custom_keys ['backbone.blocks.1.mlp'] not applied to the search mask "
               'backbone.blocks.1.mlp.hidden_mask' in line for line in lines), lines


def test_norm_bias_flat_dwconv_and_dcn_rules():
    """Catches each of mmengine's multipliers ignored: norm_decay_mult (LayerNorm and
    GroupNorm), bias_lr_mult / bias_decay_mult (not on norm biases), flat_decay_mult
    (1-D tensors that are neither), dwconv_decay_mult, dcn_offset_lr_mult."""
    cfg = dict(layer_decay_rate=DECAY, mask_lr=MASK_LR, norm_decay_mult=1.0, bias_lr_mult=2.0,
               bias_decay_mult=0.4, flat_decay_mult=0.2, dwconv_decay_mult=0.6,
               dcn_offset_lr_mult=0.1)
    _, _, groups = build(cfg)
    want = default_groups()
    for i in range(3):
        p = f'backbone.blocks.{i}.'
        for n in ('norm1.weight', 'norm1.bias', 'norm2.weight', 'norm2.bias'):
            want[p + n] = (LR[i + 1], BASE_WD)  # norm_decay_mult=1: norms decay
        for n in ('attn.qkv.bias', 'attn.proj.bias', 'mlp.fc1.bias', 'mlp.fc2.bias'):
            want[p + n] = (2 * LR[i + 1], 0.02)  # bias_lr_mult x layer decay, 0.4 * 0.05
    want.update({
        'backbone.patch_embed.proj.bias': (2 * LR[0], 0.02),
        'backbone.norm.weight': (LR[4], BASE_WD), 'backbone.norm.bias': (LR[4], BASE_WD),
        'neck.gn.weight': (BASE_LR, BASE_WD), 'neck.gn.bias': (BASE_LR, BASE_WD),
        # mmengine checks the bias rule before the depthwise one
        'neck.dw.weight': (BASE_LR, 0.03), 'neck.dw.bias': (2 * BASE_LR, 0.02),
        # inside a DCN mmengine applies neither bias rule: the offset conv's lr comes from
        # dcn_offset_lr_mult, and its bias keeps the no-decay default of 1-D tensors
        'neck.dcn.conv_offset.weight': (2e-4, BASE_WD),
        'neck.dcn.conv_offset.bias': (2e-4, 0.),
        'head.fc.bias': (2 * BASE_LR, 0.02),
        'head.scale': (BASE_LR, 0.01),  # flat_decay_mult 0.2 * 0.05
    })
    assert_groups(groups, want)


def test_shared_parameters_need_bypass_duplicate():
    """Catches a shared tensor put in two groups (torch refuses) or silently deduplicated
    when mmengine would have refused it."""
    with pytest.raises(ValueError, match=r'parameter head\.fc\.weight is shared by several '
                                         r'modules; set paramwise_cfg\.bypass_duplicate=True'):
        build(dict(layer_decay_rate=DECAY), model=ToyDetector(share_head=True))
    _, _, groups = build(dict(layer_decay_rate=DECAY, mask_lr=MASK_LR, bypass_duplicate=True),
                         model=ToyDetector(share_head=True))
    want = dict(default_groups(), **{'tied.bias': (BASE_LR, 0.)})
    assert_groups(groups, want)


def test_a_model_without_layer_depths_gets_the_base_lr():
    """Catches the layer decay asked of a model that cannot give it (no ``backbone``, or a
    backbone without ``get_layer_depth``, as a torchvision or timm one): every parameter
    keeps mmengine's lr, and no-decay rules still hold."""
    plain = nn.Module()
    plain.head = nn.Linear(4, 2)
    other = nn.Module()
    other.backbone = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
    other.head = nn.Linear(4, 2)
    for model, want in (
            (plain, {'head.weight': (BASE_LR, BASE_WD), 'head.bias': (BASE_LR, 0.)}),
            (other, {'backbone.0.weight': (BASE_LR, BASE_WD), 'backbone.0.bias': (BASE_LR, 0.),
                     'backbone.1.weight': (BASE_LR, 0.), 'backbone.1.bias': (BASE_LR, 0.),
                     'head.weight': (BASE_LR, BASE_WD), 'head.bias': (BASE_LR, 0.)})):
        _, _, groups = build(dict(layer_decay_rate=DECAY), model=model)
        assert_groups(groups, want)


@pytest.mark.parametrize('weight_decay', [BASE_WD, 1e-5, None],
                         ids=['wd', 'small-wd', 'optimizer-default'])
def test_each_group_is_logged_with_its_lr_and_weight_decay(monkeypatch, weight_decay):
    """Catches the group log (what a user reads to check the schedule) dropping a group,
    miscounting its tensors, naming another group's first tensor, or showing a weight decay
    the group does not set explicitly (a 2-D weight with none of its own shows 'optimizer
    default'); the lines go to mmengine's current logger."""
    logged = []
    monkeypatch.setattr(layer_decay, 'print_log', lambda msg, **kw: logged.append((msg, kw)))
    optimizer = dict(type='AdamW', lr=BASE_LR)
    if weight_decay is not None:
        optimizer['weight_decay'] = weight_decay
    model, wrapper, _ = build(dict(layer_decay_rate=DECAY, mask_lr=MASK_LR),
                              optimizer=optimizer)
    names = {id(p): n for n, p in model.named_parameters()}
    groups = wrapper.optimizer.param_groups
    assert [kw for _, kw in logged] == [dict(logger='current')] * len(groups)
    for i, (group, (line, _)) in enumerate(zip(groups, logged)):
        first = names[id(group['params'][0])]
        decayed = group['params'][0].ndim > 1 and not first.endswith(('pos_embed', '_mask'))
        wd = ('optimizer default' if decayed and weight_decay is None
              else format(group['weight_decay'], '.4g'))
        assert line == (f'param group {i}: {len(group["params"])} tensors (first {first}), '
                        f'lr={group["lr"]:.4g}, weight_decay={wd}'), line
    shown = {BASE_WD: '0.05', 1e-5: '1e-05', None: 'optimizer default'}[weight_decay]
    block0 = 'lr=0.00025, weight_decay=' + shown
    assert any(line.endswith(block0) for line, _ in logged)


def test_optimizer_without_weight_decay_keeps_its_default():
    """Catches weight_decay=0 forced on every group when the config gives none (AdamW's
    own default 0.01 must stay for decayed weights)."""
    _, wrapper, groups = build(dict(layer_decay_rate=DECAY),
                               optimizer=dict(type='AdamW', lr=BASE_LR))
    assert groups['backbone.blocks.0.attn.qkv.weight'] == pytest.approx((LR[1], 0.01))
    assert groups['backbone.blocks.0.attn.qkv.bias'] == pytest.approx((LR[1], 0.))


def test_the_built_optimizer_steps():
    """The groups are a valid AdamW: one step moves a weight by lr (Adam's first step)."""
    model, wrapper, _ = build(dict(layer_decay_rate=DECAY, mask_lr=MASK_LR))
    w = model.backbone.blocks[0].mlp.fc1.weight
    before = w.detach().clone()
    out = model.backbone(torch.randn(2, 3, 32, 32))[0]
    wrapper.backward(out.square().sum() * 100)
    grad = w.grad.clone()
    wrapper.step()
    step = (before * (1 - LR[1] * BASE_WD) - w.detach()).abs()
    moved = step[grad.abs() > 1e-4]  # Adam's eps (1e-8) matters below that
    assert moved.numel() > 0
    torch.testing.assert_close(moved, torch.full_like(moved, LR[1]), rtol=1e-3, atol=0)


# ---------------------------------------------------------------------- refused configs
@pytest.mark.parametrize('rate', [0, -0.5, 1.5, 'x'])
def test_invalid_decay_rate(rate):
    with pytest.raises(ValueError, match=r'paramwise_cfg\.layer_decay_rate: expected a number '
                                         r'in \(0, 1\]'):
        build(dict(layer_decay_rate=rate))


def test_unknown_and_conflicting_keys():
    with pytest.raises(ValueError, match=r"paramwise_cfg: unknown key\(s\) \['decay_rate'\] "
                                         r'for SIDTLayerDecayOptimWrapperConstructor'):
        build(dict(decay_rate=0.7))
    with pytest.raises(ValueError, match=r'^paramwise_cfg: give mask_lr or mask_lr_mult, not '
                                         r'both$'):
        build(dict(mask_lr=1e-2, mask_lr_mult=2.0))
    with pytest.raises(ValueError, match=r'^optim_wrapper\.optimizer\.lr: must be set '
                                         r'\(layer-wise lr decay scales it\)$'):
        build(dict(layer_decay_rate=DECAY), optimizer=dict(type='AdamW'))
    with pytest.raises(ValueError, match='base_wd should not be None'):  # mmengine's own check
        build(dict(norm_decay_mult=0.), optimizer=dict(type='SGD', lr=0.1))


def _ddp(module):
    """``module`` inside mmengine's DDP wrapper, as a distributed Runner hands it over; built
    without a process group (the constructor reads only its class and ``.module``)."""
    from mmengine.model import MMDistributedDataParallel
    wrapper = MMDistributedDataParallel.__new__(MMDistributedDataParallel)
    nn.Module.__init__(wrapper)
    wrapper.module = module
    return wrapper


def test_a_wrapped_model_is_checked_and_remembered_unwrapped():
    """Catches the DDP wrapper checked or remembered in place of the model inside it: the
    wrapper is no mmengine model, so a search model without its sparsity loss would train
    unnoticed on several processes, and a resume would look for masks on the wrapper."""
    from mmengine.model import BaseModel

    from sidt_mmdet.search.checks import MissingSparsityError

    class Detector(BaseModel):
        def __init__(self):
            super().__init__()
            self.backbone = ToyDetector().backbone

        def forward(self, *args, **kwargs):
            raise NotImplementedError

    cfg = dict(optimizer=dict(type='AdamW', lr=BASE_LR, weight_decay=BASE_WD))
    for model in (Detector(), _ddp(Detector())):
        with pytest.raises(MissingSparsityError):
            SIDTLayerDecayOptimWrapperConstructor(cfg, dict(layer_decay_rate=DECAY))(model)
    model = _ddp(ToyDetector())
    wrapper = SIDTLayerDecayOptimWrapperConstructor(cfg, dict(layer_decay_rate=DECAY))(model)
    assert wrapper.sidt_model is model.module
