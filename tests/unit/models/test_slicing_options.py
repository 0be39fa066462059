"""slice_vit_state_dict's options beside the fold: masks left unfolded when asked, and keys
it does not know passed through (a user's extra buffers, a head stored with the backbone)."""
import torch

from sidt_mmdet.models import SIDTViT, Subnet
from sidt_mmdet.models.slicing import slice_vit_state_dict


def _search_state():
    bb = SIDTViT(arch=dict(embed_dims=16, num_layers=1, num_heads=2, mlp_ratio=2.0),
                 patch_size=8, img_size=32, mode='search', split_qkv=True,
                 search_dims=('attn', 'mlp', 'embed'))
    state = bb.state_dict()
    for k in state:
        if k.endswith('_mask'):
            state[k] = torch.full_like(state[k], 0.5)
    return state


def _subnet():
    sub = Subnet.dense(16, 1, 2, 32)
    sub.blocks[0] = dict(qk=[[0, 3], [1]], v=[[2], [0, 5]], mlp=[1, 4, 30])
    return Subnet.from_dict(dict(sub.to_dict(), embed=[0, 2, 3, 9, 15]))


def test_unfolded_masks_leave_the_weights_as_they_are():
    """Catches masks folded into the weights when ``fold_masks=False`` (a user who folds
    them elsewhere would scale twice): every sliced tensor equals the dense one at the kept
    indices, and the masks are dropped either way."""
    state, sub = _search_state(), _subnet()
    E, hid = sub.kept_embed, sub.blocks[0]['mlp']
    raw = slice_vit_state_dict(state, sub, fold_masks=False)
    folded = slice_vit_state_dict(state, sub)
    assert not any(k.endswith('_mask') for k in list(raw) + list(folded))
    fc1 = state['blocks.0.mlp.fc1.weight']
    assert torch.equal(raw['blocks.0.mlp.fc1.weight'], fc1[hid][:, E])
    assert torch.equal(raw['pos_embed'], state['pos_embed'][..., E])
    assert torch.equal(raw['patch_embed.proj.weight'], state['patch_embed.proj.weight'][E])
    # rows q (head 0 dims 0, 3; head 1 dim 1), then k, then v (head 0 dim 2; head 1 0, 5)
    q = [0, 3, 9]
    rows = q + [16 + r for r in q] + [32 + 2, 32 + 8, 32 + 13]
    qkv = state['blocks.0.attn.qkv.weight']
    assert torch.equal(raw['blocks.0.attn.qkv.weight'], qkv[rows][:, E])
    # folded, the masks scale what they gate: the residual writers (embedding mask), the
    # q/k/v rows (split masks) and fc2's columns (MLP mask)
    for k in ('patch_embed.proj.weight', 'pos_embed', 'blocks.0.attn.qkv.weight',
              'blocks.0.attn.proj.weight', 'blocks.0.mlp.fc2.weight'):
        assert not torch.equal(raw[k], folded[k]), k


def test_keys_it_does_not_know_pass_through():
    state = _search_state()
    state['head.fc.weight'] = torch.arange(6.).view(2, 3)
    out = slice_vit_state_dict(state, _subnet())
    assert torch.equal(out['head.fc.weight'], torch.arange(6.).view(2, 3))
