"""The SiDT sparsity loss: weighted L1 of the search masks."""
from __future__ import annotations

import logging

import torch
from mmengine.logging import print_log
from torch import nn

from ..models.complexity import mask_costs
from ..models.kinds import KINDS, kind_of
from .checks import check_masks_finite

__all__ = ['SparsityLoss']


class SparsityLoss(nn.Module):
    """``lambda_attn*sum|m_attn| + lambda_mlp*sum|m_mlp| + lambda_embed*|m_embed|``.

    ``lambdas`` gives the lambda of a kind registered beyond these three
    (:func:`~sidt_mmdet.models.kinds.register_kind`); a kind without one costs nothing.

    With ``macs_weighted=True`` each entry's |m| is weighted by the MACs it costs
    at ``input_size`` (normalised to mean 1 per kind, so the lambdas keep their
    meaning): the search then removes expensive dimensions first.

    Returns the loss under ``loss_sparsity`` and, for the log (keys without
    "loss" are not summed into the total), per kind of mask:

    - ``sparsity_mean_abs_*``: mean |m|; ``sparsity_kept_*``: fraction above
      ``keep_threshold``; ``sparsity_p10_*``, ``sparsity_p50_*``, ``sparsity_p90_*``:
      quantiles of |m| (the mean alone hides whether a few masks fell or all shrank);
    - with ``keep_ratio`` (the ratio the search will be exported at): ``sparsity_cut_*``,
      the largest |m| that exporting at that ratio would drop, and ``sparsity_done_*``,
      the fraction of the entries it drops that are already below ``keep_threshold``: 0 at the
      start, 1 once exporting at ``keep_ratio`` only removes dimensions the search has
      switched off.

    Masks that are no longer finite stop the search (:class:`NonFiniteMaskError`). A
    search whose lambdas are 0 for every kind of mask the backbone has would move the masks
    by the task gradient only: its first loss raises a ValueError, or, with
    ``allow_zero=True`` (a loss-free search on purpose), logs one warning.
    """

    def __init__(self, lambda_attn: float = 1e-4, lambda_mlp: float = 1e-4,
                 lambda_embed: float = 0., macs_weighted: bool = False,
                 input_size: tuple[int, int] | None = None, keep_threshold: float = 0.05,
                 keep_ratio: float | None = None, allow_zero: bool = False,
                 lambdas: dict[str, float] | None = None):
        super().__init__()
        if not isinstance(allow_zero, bool):
            raise ValueError(f'allow_zero: expected True or False, got {allow_zero!r}')
        self.allow_zero = allow_zero
        self._lambdas_checked = False
        if keep_ratio is not None and not (isinstance(keep_ratio, (int, float))
                                           and 0 < keep_ratio <= 1):
            raise ValueError(f'keep_ratio: expected a number in (0, 1], got {keep_ratio!r}')
        if not (isinstance(keep_threshold, (int, float)) and keep_threshold >= 0):
            raise ValueError(f'keep_threshold: expected a number >= 0, got {keep_threshold!r}')
        self.keep_ratio = keep_ratio
        unknown = sorted(set(lambdas or {}) - set(KINDS))
        if unknown:
            raise ValueError(f'lambdas: unknown kinds {unknown}; registered: {sorted(KINDS)}')
        self.lambdas = dict(attn=lambda_attn, mlp=lambda_mlp, embed=lambda_embed,
                            **(lambdas or {}))
        for name, value in self.lambdas.items():
            if value < 0:
                raise ValueError(f'lambda_{name}: expected >= 0, got {value}')
        self.macs_weighted = macs_weighted
        self.input_size = tuple(input_size) if input_size else None
        self.keep_threshold = keep_threshold
        self._weights: dict[str, torch.Tensor] | None = None

    def _mask_weights(self, backbone) -> dict[str, torch.Tensor]:
        if self._weights is None:
            costs = mask_costs(backbone, self.input_size or backbone.img_size)
            weights = {}
            for kind in KINDS:
                names = [n for n in costs if kind_of(n) == kind]
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
        if not self._lambdas_checked:
            self._check_lambdas(sorted({kind_of(n) for n in masks}))
        weights = self._mask_weights(backbone) if self.macs_weighted else {}
        total = None
        stats: dict[str, list[torch.Tensor]] = {}
        for name, m in masks.items():
            kind = kind_of(name)
            a = m.abs()
            w = weights.get(name)
            term = (a * w.to(a)).sum() if w is not None else a.sum()
            term = self.lambdas.get(kind, 0.) * term
            total = term if total is None else total + term
            stats.setdefault(kind, []).append(a.detach().flatten())
        check_masks_finite(backbone)
        out = {'loss_sparsity': total}
        for kind, values in stats.items():
            out.update(self.figures(kind, torch.cat(values)))
        return out

    def _check_lambdas(self, kinds: list[str]) -> None:
        if any(self.lambdas.get(k, 0.) for k in kinds):
            self._lambdas_checked = True
            return
        said = ', '.join(f'lambda_{k}={self.lambdas.get(k, 0.):g}' for k in kinds)
        what = (f'model.sparsity has {said} for every kind of search mask the backbone has '
                f'({", ".join(kinds)}): no sparsity loss, the masks move by the task gradient '
                'only')
        if not self.allow_zero:
            raise ValueError(f'SiDT search without a sparsity loss: {what}. Set a lambda > 0 '
                             '(e.g. lambda_attn=1e-4, lambda_mlp=1e-4), or '
                             'model.sparsity.allow_zero=True for a loss-free search on purpose')
        print_log(f'SiDT search WITHOUT a sparsity loss (model.sparsity.allow_zero=True): '
                  f'{what}', logger='current', level=logging.WARNING)
        self._lambdas_checked = True

    def figures(self, kind: str, v: torch.Tensor) -> dict[str, torch.Tensor]:
        """The log figures of one kind of mask from its |m| values (see the class doc)."""
        out = {f'sparsity_mean_abs_{kind}': v.mean(),
               f'sparsity_kept_{kind}': (v > self.keep_threshold).float().mean()}
        s = v.float().sort().values
        n = s.numel()
        for q in (10, 50, 90):
            out[f'sparsity_p{q}_{kind}'] = s[min(n - 1, (q * n) // 100)]
        if self.keep_ratio is not None:
            n_drop = n - max(1, round(self.keep_ratio * n))
            out[f'sparsity_cut_{kind}'] = s[n_drop - 1] if n_drop else s.new_tensor(0.)
            dropped = s[:n_drop]
            out[f'sparsity_done_{kind}'] = ((dropped < self.keep_threshold).float().mean()
                                            if n_drop else s.new_tensor(1.))
        return out
