"""Physically prune a searched SIDTViT, alone or inside a whole detector/classifier."""
from __future__ import annotations

import torch

from ..models.backbones.sidt_vit import SIDTViT
from ..models.kinds import channel_readers
from ..models.slicing import slice_vit_state_dict
from ..models.subnet import Subnet

__all__ = ['prune_backbone', 'prune_model_state_dict']

def prune_backbone(backbone: SIDTViT, subnet: Subnet | dict | str) -> SIDTViT:
    """A ``mode='pruned'`` SIDTViT with the backbone's weights sliced to ``subnet``.

    Surviving mask values are folded into the weights. With attention/MLP pruning
    the result equals the hard-masked supernet; embedding pruning changes the
    LayerNorm statistics and needs the retrain stage.
    """
    subnet = Subnet.coerce(subnet)
    pruned = backbone.to_pruned(subnet)
    state = slice_vit_state_dict(backbone.state_dict(), subnet)
    pruned.load_state_dict(state, strict=True)
    param = next(backbone.parameters())
    return pruned.to(device=param.device, dtype=param.dtype).train(backbone.training)


def prune_model_state_dict(state: dict[str, torch.Tensor], subnet: Subnet,
                           backbone_prefix: str = 'backbone.') -> dict[str, torch.Tensor]:
    """Slice a whole model's state dict: the backbone, and when the embedding is
    pruned, the layers that declare they read the backbone map
    (:func:`~sidt_mmdet.models.kinds.reads_backbone_channels`)."""
    inner = {k[len(backbone_prefix):]: v for k, v in state.items()
             if k.startswith(backbone_prefix)}
    if not inner:
        raise ValueError(f'no "{backbone_prefix}*" keys in the state dict: is this a model with '
                         'a SIDTViT backbone?')
    out = {k: v for k, v in state.items() if not k.startswith(backbone_prefix)}
    out.update({backbone_prefix + k: v for k, v in slice_vit_state_dict(inner, subnet).items()})
    if subnet.embed is not None:
        kept = torch.as_tensor(subnet.kept_embed, dtype=torch.long)
        for key, axis in channel_readers().items():
            if key in out and out[key].shape[axis] == subnet.embed_dims:
                out[key] = out[key].index_select(axis, kept.to(out[key].device)).contiguous()
    return out
