"""The models a group times: SIDTViT in search mode with random masks and pruned from it by
:func:`~sidt_mmdet.search.select_subnet`, timm's ``VisionTransformer`` /
``VisionTransformerSAM`` of the same shape, the same ViT pruned by Torch-Pruning (when
installed), and the analytic MACs and token counts of the timm models."""
from __future__ import annotations

import importlib.util
import math
import types

import torch
import torch.nn.functional as F

from .presets import Shape, Variant


def _sidt_kwargs(shape: Shape) -> dict:
    kw = dict(arch=shape.arch_dict(), img_size=shape.size, patch_size=shape.patch)
    if shape.vitdet:
        kw.update(window_size=shape.window, global_attn_indexes=list(shape.global_blocks),
                  use_rel_pos=True)
    return kw


def _random_search_model(shape: Shape, seed: int = 0):
    from ...models import SIDTViT
    torch.manual_seed(seed)
    model = SIDTViT(mode='search', **_sidt_kwargs(shape))
    with torch.no_grad():
        for m in model.mask_parameters().values():
            m.uniform_(0, 1)
    return model.eval()


def _sidt_pruned(search, shape: Shape, v: Variant):
    from ...models import SIDTViT
    from ...models.slicing import slice_vit_state_dict
    from ...search import select_subnet
    sub = select_subnet(search, keep_ratio=v.keep, granularity=v.granularity,
                        round_to=v.round_to, equal_heads=v.equal_heads, layout=v.layout)
    model = SIDTViT(mode='pruned', subnet=sub, pruned_layout=v.layout, **_sidt_kwargs(shape))
    model.load_state_dict(slice_vit_state_dict(search.state_dict(), sub))
    return model.eval()


def _timm_vit(shape: Shape):
    import timm
    a = shape.arch_dict()
    return timm.create_model('vit_base_patch16_224', pretrained=False, num_classes=0,
                             embed_dim=a['embed_dims'], depth=a['num_layers'],
                             num_heads=a['num_heads'], mlp_ratio=a['mlp_ratio'],
                             img_size=shape.size, patch_size=shape.patch).eval()


def _timm_sam(shape: Shape):
    from timm.models.vision_transformer_sam import VisionTransformerSAM
    a = shape.arch_dict()
    return VisionTransformerSAM(img_size=shape.size, patch_size=shape.patch,
                                embed_dim=a['embed_dims'], depth=a['num_layers'],
                                num_heads=a['num_heads'], mlp_ratio=a['mlp_ratio'],
                                window_size=shape.window,
                                global_attn_indexes=tuple(shape.global_blocks),
                                use_rel_pos=True, neck_chans=0, num_classes=0).eval()


def _tp_attention_forward(self, x, attn_mask=None, **kwargs):
    """timm's Attention with an inner width other than the embedding (Torch-Pruning's
    example forward): reshape by the pruned head_dim, project back from it."""
    B, N, _ = x.shape
    qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    q, k = self.q_norm(q), self.k_norm(k)
    x = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
    return self.proj(x.transpose(1, 2).reshape(B, N, -1))


def _timm_macs(model, tokens: int) -> int:
    """Analytic MACs of a (pruned) timm ViT: projections, MLP and both attention matmuls."""
    total = model.patch_embed.proj.weight.numel() * (tokens - model.num_prefix_tokens)
    for b in model.blocks:
        inner = b.attn.qkv.out_features // 3
        total += tokens * b.attn.qkv.in_features * b.attn.qkv.out_features
        total += 2 * tokens * tokens * inner
        total += tokens * b.attn.proj.in_features * b.attn.proj.out_features
        total += tokens * (b.mlp.fc1.in_features * b.mlp.fc1.out_features
                           + b.mlp.fc2.in_features * b.mlp.fc2.out_features)
    return total


def _tp_pruned(shape: Shape, v: Variant):
    import torch_pruning as tp
    from timm.models.vision_transformer import Attention
    model = _timm_vit(shape)
    example = torch.randn(1, 3, shape.size, shape.size)
    heads = {m.qkv: m.num_heads for m in model.modules() if isinstance(m, Attention)}
    pruner = tp.pruner.BasePruner(
        model, example, importance=tp.importance.GroupMagnitudeImportance(p=2),
        pruning_ratio=1 - v.keep, ignored_layers=[b.mlp.fc2 for b in model.blocks],
        num_heads=heads, prune_head_dims=True, prune_num_heads=False, global_pruning=False,
        round_to=v.round_to,
        # the embedding axis (last) of these follows fc2, which is ignored: kept
        unwrapped_parameters=[(model.cls_token, 2), (model.pos_embed, 2)])
    pruner.step()
    for m in model.modules():
        if isinstance(m, Attention):
            m.head_dim = m.qkv.out_features // (3 * m.num_heads)
            m.forward = types.MethodType(_tp_attention_forward, m)
    return model.eval()


def _torch_pruning_available() -> str | None:
    """None when Torch-Pruning 1.6.1 can be used, else why not."""
    if importlib.util.find_spec('torch_pruning') is None:
        return ('Torch-Pruning is not installed (`pip install -e ".[bench]"` installs '
                'torch-pruning==1.6.1)')
    return None



def _tp_version() -> str | None:
    try:
        import torch_pruning
    except ImportError:
        return None
    return getattr(torch_pruning, '__version__', 'unknown')


def _tokens(shape: Shape, cls_token: bool) -> int:
    side = math.ceil(shape.size / shape.patch)
    return side * side + int(cls_token)
