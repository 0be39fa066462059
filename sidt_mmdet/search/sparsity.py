"""The SiDT sparsity loss: weighted L1 of the search masks."""
from __future__ import annotations

import torch
from torch import nn

from ..utils.complexity import mask_costs

__all__ = ['SparsityLoss']


def _kind(name: str) -> str:
    if name.endswith('hidden_mask'):
        return 'mlp'
    if name == 'embed_mask':
        return 'embed'
    return 'attn'


class SparsityLoss(nn.Module):
    """``lambda_attn*sum|m_attn| + lambda_mlp*sum|m_mlp| + lambda_embed*|m_embed|``.

    With ``macs_weighted=True`` each entry's |m| is weighted by the MACs it costs
    at ``input_size`` (normalised to mean 1 per kind, so the lambdas keep their
    meaning): the search then removes expensive dimensions first.

    Returns the loss under ``loss_sparsity`` and, for the log (keys without
    "loss" are not summed into the total), the mean |m| per kind and the
    fraction of entries above ``keep_threshold``.
    """

    def __init__(self, lambda_attn: float = 1e-4, lambda_mlp: float = 1e-4,
                 lambda_embed: float = 0., macs_weighted: bool = False,
                 input_size: tuple[int, int] | None = None, keep_threshold: float = 0.05):
        super().__init__()
        for name, value in (('lambda_attn', lambda_attn), ('lambda_mlp', lambda_mlp),
                            ('lambda_embed', lambda_embed)):
            if value < 0:
                raise ValueError(f'{name}: expected >= 0, got {value}')
        self.lambdas = dict(attn=lambda_attn, mlp=lambda_mlp, embed=lambda_embed)
        self.macs_weighted = macs_weighted
        self.input_size = tuple(input_size) if input_size else None
        self.keep_threshold = keep_threshold
        self._weights: dict[str, torch.Tensor] | None = None

    def _mask_weights(self, backbone) -> dict[str, torch.Tensor]:
        if self._weights is None:
            costs = mask_costs(backbone, self.input_size or backbone.img_size)
            weights = {}
            for kind in ('attn', 'mlp', 'embed'):
                names = [n for n in costs if _kind(n) == kind]
                if names:
                    mean = torch.cat([costs[n].flatten() for n in names]).mean()
                    weights.update({n: costs[n] / mean for n in names})
            self._weights = weights
        return self._weights

    def forward(self, backbone) -> dict[str, torch.Tensor]:
        masks = backbone.mask_parameters()
        if not masks:
            raise ValueError('SparsityLoss: the backbone has no search masks '
                             "(build it with mode='search')")
        weights = self._mask_weights(backbone) if self.macs_weighted else {}
        total = None
        stats: dict[str, list[torch.Tensor]] = {}
        for name, m in masks.items():
            kind = _kind(name)
            a = m.abs()
            w = weights.get(name)
            term = (a * w.to(a)).sum() if w is not None else a.sum()
            term = self.lambdas[kind] * term
            total = term if total is None else total + term
            stats.setdefault(kind, []).append(a.detach().flatten())
        out = {'loss_sparsity': total}
        for kind, values in stats.items():
            v = torch.cat(values)
            out[f'sparsity_mean_abs_{kind}'] = v.mean()
            out[f'sparsity_kept_{kind}'] = (v > self.keep_threshold).float().mean()
        return out
