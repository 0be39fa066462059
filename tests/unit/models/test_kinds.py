"""The searchable kinds as objects: each owns its masks, its cuts and its cost, and the
slicer, the mask costs, the sparsity loss and the whole-model export loop over them, so a
kind or a channel reader added in one place is used everywhere."""
import pytest
import torch

from sidt_mmdet.export import prune_model_state_dict
from sidt_mmdet.models import SIDTViT, Subnet
from sidt_mmdet.models import kinds as kinds_mod
from sidt_mmdet.models.complexity import mask_costs
from sidt_mmdet.models.kinds import (
    KINDS,
    Cut,
    SearchKind,
    channel_readers,
    is_mask_key,
    kind_of,
    reads_backbone_channels,
    register_kind,
)
from sidt_mmdet.models.slicing import slice_vit_state_dict
from sidt_mmdet.search.sparsity import SparsityLoss


def _search(split=False):
    return SIDTViT(arch=dict(embed_dims=16, num_layers=2, num_heads=2, mlp_ratio=2.0),
                   patch_size=8, img_size=32, mode='search', split_qkv=split,
                   search_dims=('attn', 'mlp', 'embed'))


@pytest.mark.parametrize('split', [False, True])
def test_every_mask_belongs_to_exactly_one_kind(split):
    """Catches a mask no kind owns (it would be neither folded nor weighted) or one two
    kinds claim: the kinds' masks are the backbone's mask parameters, each once."""
    bb = _search(split)
    owned = {}
    for kind in KINDS.values():
        for key, m in kind.masks(bb).items():
            assert key not in owned, f'{key} claimed by {owned.get(key)} and {kind.name}'
            owned[key] = kind.name
            assert m is bb.get_parameter(key)
            assert kind_of(key) == kind.name and is_mask_key(key)
    assert sorted(owned) == sorted(bb.mask_parameters())
    assert set(mask_costs(bb, (32, 32))) == set(owned)
    assert not is_mask_key('blocks.0.attn.qkv.weight')


def test_cut_keeps_an_axis_and_scales_it():
    t = torch.arange(24.).view(2, 3, 4)
    out = Cut(-1, torch.tensor([3, 0]), torch.tensor([2., 10.])).apply(t)
    assert torch.equal(out, torch.stack([t[..., 3] * 2, t[..., 0] * 10], dim=-1))
    assert torch.equal(Cut(1, torch.tensor([2])).apply(t), t[:, 2:3])


class _PatchBiasKind(SearchKind):
    """A toy kind: a mask on the patch embedding's bias entries, cut to the first half."""

    name = 'toy_patch_bias'
    suffixes = ('toy_mask',)

    def masks(self, backbone):
        return {'toy_mask': backbone.toy_mask} if hasattr(backbone, 'toy_mask') else {}

    def cuts(self, state, subnet, fold):
        m = state.get('toy_mask') if fold else None
        keep = torch.arange(subnet.embed_dims // 2)
        yield 'patch_embed.proj.bias', Cut(0, keep, m[keep] if m is not None else None)

    def mask_costs(self, backbone, geometry):
        return {k: torch.full_like(m, 7.0) for k, m in self.masks(backbone).items()}


@pytest.fixture
def toy_kind():
    kind = register_kind(_PatchBiasKind())
    yield kind
    del KINDS[kind.name]


def test_a_registered_kind_is_sliced_costed_and_weighted(toy_kind):
    """What the design doc promises: a new kind is one class and one register_kind call.
    Its mask is dropped and folded by the slicer, costed by mask_costs and weighted by the
    sparsity loss (its entries' lambda is the loss's, looked up by the kind's name)."""
    bb = _search()
    bb.toy_mask = torch.nn.Parameter(torch.full((16,), 0.5))
    state = bb.state_dict()
    out = slice_vit_state_dict(state, Subnet.dense(16, 2, 2, 32))
    assert 'toy_mask' not in out
    assert torch.equal(out['patch_embed.proj.bias'], state['patch_embed.proj.bias'][:8] * 0.5)
    costs = mask_costs(bb, (32, 32))
    assert torch.equal(costs['toy_mask'], torch.full((16,), 7.0))
    assert kind_of('toy_mask') == 'toy_patch_bias'
    off = SparsityLoss(lambda_attn=0., lambda_mlp=0., allow_zero=True)(bb)
    on = SparsityLoss(lambda_attn=0., lambda_mlp=0., lambdas={'toy_patch_bias': 2.0},
                      macs_weighted=True)(bb)
    assert float(off['loss_sparsity']) == 0.
    assert float(on['loss_sparsity']) == pytest.approx(2.0 * 16 * 0.5)  # weights mean 1
    assert 'sparsity_kept_toy_patch_bias' in on
    with pytest.raises(ValueError, match="unknown kinds \\['nope'\\]"):
        SparsityLoss(lambdas={'nope': 1.0})
    with pytest.raises(ValueError, match='new name'):
        register_kind(_PatchBiasKind())


def test_sparsity_loss_groups_masks_by_kind():
    loss = SparsityLoss(lambda_attn=1.0, lambda_mlp=0.0, lambda_embed=0.0)
    bb = _search()
    out = loss(bb)
    attn = sum(float(m.detach().abs().sum()) for m in KINDS['attn'].masks(bb).values())
    assert float(out['loss_sparsity']) == pytest.approx(attn)


def test_a_declared_reader_is_cut_with_the_embedding():
    """Catches a neck or head left at the dense width: a reader declared with
    reads_backbone_channels (here a module of another package, by name) has the declared
    axis cut to the kept channels; an undeclared key of the same shape is left alone."""
    reads_backbone_channels('neck', {'proj.weight': 1}, name='_ToyReader')
    try:
        assert channel_readers()['neck.proj.weight'] == 1
        bb = _search()
        subnet = Subnet.from_dict(dict(Subnet.dense(16, 2, 2, 32).to_dict(),
                                       embed=[0, 3, 5, 8, 9, 15]))
        state = {f'backbone.{k}': v for k, v in bb.state_dict().items()}
        reader, other = torch.randn(4, 16), torch.randn(4, 16)
        state.update({'neck.proj.weight': reader, 'neck.other.weight': other})
        out = prune_model_state_dict(state, subnet)
        assert torch.equal(out['neck.proj.weight'], reader[:, subnet.kept_embed])
        assert torch.equal(out['neck.other.weight'], other)
    finally:
        del kinds_mod._READERS['_ToyReader']


def test_the_simple_fpn_declares_what_it_reads():
    from sidt_mmdet.models.necks.simple_fpn import SIDTSimpleFPN
    readers = channel_readers()
    assert SIDTSimpleFPN.__name__ in kinds_mod._READERS
    assert {k: readers[k] for k in ('neck.fpn1.0.weight', 'neck.lateral_convs.3.conv.weight')} \
        == {'neck.fpn1.0.weight': 0, 'neck.lateral_convs.3.conv.weight': 1}
