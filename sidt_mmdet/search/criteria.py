"""Baseline importance criteria on SiDT's own units, for comparison with the searched masks.

Each criterion scores the units :func:`~sidt_mmdet.search.select.select_subnet` selects
(one head dim of one block, shared by q, k and v; one MLP hidden unit) and returns
:class:`~sidt_mmdet.search.select.UnitScores`, so every method then goes through the same
budget search, minimum widths, rounding, export and retrain as the SiDT masks do.

A unit's weights are its *group*, as in Torch-Pruning's dependency groups: for head dim
``j`` of head ``h`` the rows ``h*d + j`` of W_q, W_k and W_v inside ``attn.qkv`` and the
column ``h*d + j`` of ``attn.proj``; for MLP unit ``u`` the row ``u`` of ``mlp.fc1`` and the
column ``u`` of ``mlp.fc2``. Biases are left out, as in Torch-Pruning's default
(``bias=False``).

- ``magnitude``: sum of squared weights over the group (Torch-Pruning's
  ``GroupMagnitudeImportance(p=2)``; its mean over the group's layers ranks the same).
- ``taylor``: first-order Taylor, sum over the group of ``|w * dL/dw|`` with gradients of
  the task loss accumulated over a few batches (``GroupTaylorImportance``, not
  multivariable).
- ``random``: uniform random scores from a seed.
- ``uniform``: the same width in every layer: within each head (and each MLP) the units
  are ordered by magnitude, and the k-th best unit of every layer gets the same score, so
  the pooled selection fills all layers evenly.

With ``normalize=True`` (the default, Torch-Pruning's ``normalizer='mean'``) the scores of
each block are divided by their mean per kind before they are pooled over blocks, as
Torch-Pruning does before a global ranking.
"""
from __future__ import annotations

from collections.abc import Iterable

import torch

from .select import UnitScores

__all__ = ['CRITERIA', 'magnitude_scores', 'taylor_scores', 'random_scores', 'uniform_scores',
           'criterion_scores', 'accumulate_task_gradients']

CRITERIA = ('magnitude', 'taylor', 'random', 'uniform')


def _attn_group(attn, weight_of) -> torch.Tensor:
    """(H, d) sums of ``weight_of(W)`` over each head dim's group (qkv rows + proj column)."""
    H, d = attn.num_heads, attn.head_dim
    if attn.sum_qk != H * d or attn.sum_v != H * d:
        raise ValueError('criteria score the dense layout: build the backbone in mode '
                         "'dense' or 'search', not 'pruned'")
    qkv = weight_of(attn.qkv.weight).sum(dim=1).view(3, H, d)
    proj = weight_of(attn.proj.weight).sum(dim=0).view(H, d)
    return qkv.sum(dim=0) + proj


def _mlp_group(mlp, weight_of) -> torch.Tensor:
    return weight_of(mlp.fc1.weight).sum(dim=1) + weight_of(mlp.fc2.weight).sum(dim=0)


def _normalized(t: torch.Tensor, normalize: bool) -> torch.Tensor:
    t = t.detach().float().cpu()
    if normalize:
        mean = t.mean()
        t = t / mean if mean > 0 else t
    return t


def _scores(backbone, weight_of, name: str, normalize: bool) -> UnitScores:
    qk, mlp = [], []
    with torch.no_grad():
        for blk in backbone.blocks:
            qk.append(_normalized(_attn_group(blk.attn, weight_of), normalize))
            mlp.append(_normalized(_mlp_group(blk.mlp, weight_of), normalize))
    return UnitScores(qk=qk, v=list(qk), mlp=mlp, name=name)


def magnitude_scores(backbone, normalize: bool = True) -> UnitScores:
    """L2 magnitude (sum of squares) of each unit's weights; see the module docstring."""
    return _scores(backbone, lambda w: w.detach().pow(2), 'magnitude', normalize)


def taylor_scores(backbone, normalize: bool = True) -> UnitScores:
    """First-order Taylor ``sum |w * grad|`` from the gradients stored on the weights.

    Call :func:`accumulate_task_gradients` (or any backward pass of the task loss) first.

    Raises:
        ValueError: a weight of ``attn.qkv``/``attn.proj``/``mlp.fc1``/``mlp.fc2`` has no
            gradient.
    """
    def weight_of(w):
        if w.grad is None:
            raise ValueError('taylor criterion: the backbone weights have no gradient; run a '
                             'backward pass of the task loss first (accumulate_task_gradients)')
        return (w.detach() * w.grad.detach()).abs()
    return _scores(backbone, weight_of, 'taylor', normalize)


def random_scores(backbone, seed: int = 0) -> UnitScores:
    """Scores drawn uniformly at random from ``seed`` (the same seed, the same subnet)."""
    gen = torch.Generator().manual_seed(int(seed))
    H, d, h = backbone.num_heads, backbone.head_dim, backbone.mlp_hidden
    qk = [torch.rand(H, d, generator=gen) for _ in backbone.blocks]
    mlp = [torch.rand(h, generator=gen) for _ in backbone.blocks]
    return UnitScores(qk=qk, v=list(qk), mlp=mlp, name=f'random(seed={seed})')


def _rank_score(t: torch.Tensor) -> torch.Tensor:
    """Along the last axis: 1 for the best entry, then 1 - k/n for the k-th best."""
    n = t.shape[-1]
    order = torch.argsort(-t, dim=-1, stable=True)
    out = torch.empty_like(t, dtype=torch.float32)
    ranks = torch.arange(n, dtype=torch.float32).expand_as(out)
    out.scatter_(-1, order, 1 - ranks / n)
    return out


def uniform_scores(backbone) -> UnitScores:
    """Equal widths in every layer (per head and per MLP); which units, by magnitude."""
    mag = magnitude_scores(backbone, normalize=False)
    qk = [_rank_score(t) for t in mag.qk]
    return UnitScores(qk=qk, v=list(qk), mlp=[_rank_score(t) for t in mag.mlp],
                      name='uniform')


def accumulate_task_gradients(model: torch.nn.Module, batches: Iterable[dict],
                              num_batches: int) -> int:
    """Sum the task-loss gradients of ``num_batches`` batches on ``model``'s weights.

    ``model`` is an mmengine model (mmdet detector or mmpretrain classifier): each batch
    goes through its data preprocessor and ``mode='loss'``; sparsity terms (search models)
    are left out, so the gradient is that of the task. Returns the batches used.

    Raises:
        ValueError: ``num_batches`` < 1 or ``batches`` yields no batch.
    """
    if num_batches < 1:
        raise ValueError(f'num_batches: expected >= 1, got {num_batches}')
    model.train()
    model.zero_grad(set_to_none=True)
    used = 0
    for batch in batches:
        data = model.data_preprocessor(batch, True)
        losses = model(**data, mode='loss')
        task = {k: v for k, v in losses.items() if 'sparsity' not in k}
        loss, _ = model.parse_losses(task)
        loss.backward()
        used += 1
        if used >= num_batches:
            break
    if used == 0:
        raise ValueError('accumulate_task_gradients: the data loader yielded no batch')
    return used


def criterion_scores(name: str, backbone, *, seed: int = 0,
                     normalize: bool = True) -> UnitScores:
    """The scores of criterion ``name`` (one of :data:`CRITERIA`) for ``backbone``.

    ``taylor`` needs gradients on the backbone (:func:`accumulate_task_gradients`).
    """
    if name == 'magnitude':
        return magnitude_scores(backbone, normalize)
    if name == 'taylor':
        return taylor_scores(backbone, normalize)
    if name == 'random':
        return random_scores(backbone, seed)
    if name == 'uniform':
        return uniform_scores(backbone)
    raise ValueError(f'criterion: expected one of {CRITERIA}, got {name!r}')
