"""Helpers shared by the tests: the repository root; perturbed weights, random masks and
hard-masked subnets for the backbone tests."""
from pathlib import Path

import torch

from sidt_mmdet.models import SIDTViT, Subnet
from sidt_mmdet.models.slicing import slice_vit_state_dict

REPO = Path(__file__).resolve().parent.parent


def perturb_(module, seed=0, std=0.05):
    """Move every parameter off its init (LN 1/0, zero biases, zero rel-pos) so a
    dropped bias or a wrong table index cannot hide."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g) * std)
    return module


def random_masks_(backbone, seed=0, zero_frac=0.3):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, m in backbone.mask_parameters().items():
            m.copy_(torch.rand(m.shape, generator=g) + 0.5)
            m.mul_((torch.rand(m.shape, generator=g) > zero_frac).float())
    return backbone


def subnet_from_masks(backbone):
    """Keep exactly the nonzero mask entries (the hard-masked supernet)."""
    sub = Subnet.dense(backbone.embed_dims_dense, backbone.num_layers, backbone.num_heads,
                       backbone.mlp_hidden)
    blocks = []
    for blk in backbone.blocks:
        qk_m, v_m = blk.attn.masks()
        mlp_m = blk.mlp.hidden_mask
        qk = [torch.nonzero(qk_m[h]).flatten().tolist() for h in range(qk_m.shape[0])]
        v = [torch.nonzero(v_m[h]).flatten().tolist() for h in range(v_m.shape[0])]
        if not any(v):
            v[0] = [0]
        mlp = torch.nonzero(mlp_m).flatten().tolist() or [0]
        blocks.append(dict(qk=qk, v=v, mlp=mlp))
    embed = None
    if backbone.embed_mask is not None:
        embed = torch.nonzero(backbone.embed_mask).flatten().tolist()
    return Subnet(sub.embed_dims, sub.num_layers, sub.num_heads, sub.mlp_hidden,
                  blocks=blocks, embed=embed)


def hard_mask_(backbone, subnet):
    """Zero every mask entry the subnet drops, so supernet == pruned model."""
    with torch.no_grad():
        for blk, b in zip(backbone.blocks, subnet.blocks):
            qk_m, v_m = blk.attn.masks()
            keep_qk = torch.zeros_like(qk_m)
            keep_v = torch.zeros_like(v_m)
            for h in range(qk_m.shape[0]):
                keep_qk[h, b['qk'][h]] = 1
                keep_v[h, b['v'][h]] = 1
            if qk_m is v_m:
                qk_m.mul_(keep_qk * keep_v)
            else:
                qk_m.mul_(keep_qk)
                v_m.mul_(keep_v)
            keep = torch.zeros_like(blk.mlp.hidden_mask)
            keep[b['mlp']] = 1
            blk.mlp.hidden_mask.mul_(keep)


def build_pruned(search, subnet, **kw):
    pruned = SIDTViT(mode='pruned', subnet=subnet, **kw)
    missing, unexpected = pruned.load_state_dict(
        slice_vit_state_dict(search.state_dict(), subnet), strict=True)
    assert not missing and not unexpected
    return pruned
