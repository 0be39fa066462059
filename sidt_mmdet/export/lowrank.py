"""Low-rank factorizations of Linear layers (docs/method.md, low-rank factorization).

A Linear ``W`` (out x in) becomes two thinner Linears, ``W ~ A @ B`` with ``A``
(out x r) and ``B`` (r x in). Six ways to get the factors from the weight alone are
provided so they can be compared at equal rank; SVD is the Frobenius-optimal one
(Eckart-Young). A seventh, ``svd_whitened``, also needs calibration data: it
minimises the error on the layer's *outputs* ``|(W - AB) X|_F`` over inputs X seen
in calibration (activation-aware SVD, as SVD-LLM and ASVD): with ``C = X X^T / n =
S S^T`` (Cholesky), ``W S = U Sigma V^T`` is truncated and ``B = Sigma_r^1/2 V_r^T
S^-1``. It beats plain SVD on the outputs whenever the inputs are not white.

Rank rules, in one place:

- :func:`factorize` accepts ``1 <= rank <= min(out, in)``; full rank is allowed so
  that every method can be checked to reproduce ``W`` exactly.
- :func:`factorize_linear` and ``LowRankLinear`` (``models/layers/lowrank.py``) reject
  ``rank >= min(out, in)`` unless ``allow_full_rank=True``: such a layer is never
  smaller than the dense one.
- :func:`lowrank_model` replaces a layer only when ``worth_factorizing`` holds,
  i.e. ``r * (in + out) < in * out``. Ranks from an energy threshold or a budget
  that do not pay off leave the layer dense (``replaced=False`` in the report);
  an explicit rank outside ``[1, min(out, in) - 1]`` is an error.
- ``apply_lowrank_structure`` (``models/layers/lowrank.py``) rebuilds exactly the
  replaced layers, so it rejects ranks that :func:`lowrank_model` would never have applied.

Computations run in float64 on the weight's device; results are cast back to the
layer's dtype.
"""
from __future__ import annotations

import heapq
import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from ..models.layers.lowrank import (
    LOWRANK_TARGETS,
    LowRankLinear,
    check_rank,
    get_linear,
    set_submodule,
    worth_factorizing,
)

__all__ = [
    'METHODS', 'CALIBRATED_METHODS', 'ALL_METHODS', 'TARGETS', 'CalibrationError',
    'factorize', 'factorize_linear', 'relative_error', 'output_relative_error',
    'collect_input_covariances', 'rank_for_energy', 'ranks_for_budget', 'lowrank_model',
    'replaced_ranks',
]

# Methods that need only the weight, and those that also need calibration inputs.
METHODS = ('svd', 'qr', 'qr_pivoted', 'qr_rows', 'qr_randomized', 'lu')
CALIBRATED_METHODS = ('svd_whitened',)
ALL_METHODS = METHODS + CALIBRATED_METHODS
TARGETS = LOWRANK_TARGETS
# Relative ridge added to a covariance before its Cholesky factor: calibration inputs of
# a small batch (or dead channels) make it singular.
_COV_RIDGE = 1e-6


class CalibrationError(ValueError):
    """A calibrated method was asked for without (usable) calibration data."""


def factorize(weight: Tensor, rank: int, method: str, *, generator: torch.Generator | None = None,
              oversample: int = 10, power_iters: int = 2,
              input_cov: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Factors ``A`` (out x rank) and ``B`` (rank x in) with ``A @ B ~ weight``.

    ``rank`` may be anything in ``1..min(out, in)``; at ``min(out, in)`` every
    method reproduces ``weight`` up to rounding. ``generator``, ``oversample`` and
    ``power_iters`` only matter for ``qr_randomized``; ``input_cov`` (in x in, the
    second moment of the layer's inputs, :func:`collect_input_covariances`) is what
    ``svd_whitened`` needs and the other methods ignore.

    Raises:
        CalibrationError: ``svd_whitened`` without ``input_cov``, or one of the wrong shape.
    """
    _check_method(method)
    if weight.dim() != 2:
        raise ValueError(f'weight must be a 2-D (out x in) matrix, got shape {tuple(weight.shape)}')
    out_f, in_f = weight.shape
    check_rank(rank, 1, min(out_f, in_f), 'rank', f'a {out_f}x{in_f} weight')
    rank = int(rank)
    if oversample < 0 or power_iters < 0:
        raise ValueError(f'oversample and power_iters must be >= 0, got {oversample} and '
                         f'{power_iters}')
    w = weight.detach().to(torch.float64)
    if method == 'svd_whitened':
        a, b = _whitened_svd(w, rank, input_cov)
    elif method == 'svd':
        u, s, vh = torch.linalg.svd(w, full_matrices=False)
        # Splitting S evenly keeps both factors at the same scale.
        root = s[:rank].sqrt()
        a, b = u[:, :rank] * root, root[:, None] * vh[:rank]
    elif method == 'qr':
        q, r = torch.linalg.qr(w)
        a, b = q[:, :rank], r[:rank]
    elif method == 'qr_pivoted':
        q, r, perm = _pivoted_qr(w, rank)
        a, b = q, _unpermute_columns(r, perm)
    elif method == 'qr_rows':
        # W^T = Q R  =>  W = R^T Q^T: the factor that is cut is the row-space basis.
        q, r = torch.linalg.qr(w.T)
        a, b = r[:rank].T, q[:, :rank].T
    elif method == 'qr_randomized':
        a = _randomized_range(w, rank, generator, oversample, power_iters)
        b = a.T @ w
    else:  # lu
        # torch's convention is W = P L U, i.e. P^T W = L U.
        p, lower, upper = torch.linalg.lu(w)
        a, b = p @ lower[:, :rank], upper[:rank]
    return a.to(weight.dtype), b.to(weight.dtype)


def factorize_linear(linear: nn.Linear, rank: int, method: str, *, allow_full_rank: bool = False,
                     generator: torch.Generator | None = None,
                     input_cov: Tensor | None = None) -> LowRankLinear:
    """A :class:`LowRankLinear` approximating ``linear`` (bias, dtype, device, mode kept).

    ``rank >= min(out, in)`` is rejected unless ``allow_full_rank`` because such a
    layer cannot be smaller than ``linear``. Whether a smaller rank actually saves
    parameters is ``worth_factorizing``'s call, not this function's.
    """
    if not isinstance(linear, nn.Linear):
        raise ValueError(f'linear must be an nn.Linear, got {type(linear).__name__}')
    in_f, out_f = linear.in_features, linear.out_features
    high = min(in_f, out_f) if allow_full_rank else min(in_f, out_f) - 1
    hint = '' if allow_full_rank else ' (pass allow_full_rank=True for rank min(out, in))'
    check_rank(rank, 1, high, 'rank', f'a Linear with out={out_f}, in={in_f}{hint}')
    weight = linear.weight
    a, b = factorize(weight, rank, method, generator=generator, input_cov=input_cov)
    module = LowRankLinear(in_f, out_f, rank, bias=linear.bias is not None,
                           device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        module.down.weight.copy_(b)
        module.up.weight.copy_(a)
        if linear.bias is not None:
            module.up.bias.copy_(linear.bias)
    return module.train(linear.training)


def relative_error(weight: Tensor, a: Tensor, b: Tensor) -> float:
    """``|W - A B|_F / |W|_F`` (0 for an all-zero ``W`` reproduced exactly)."""
    w = weight.detach().to(torch.float64)
    diff = torch.linalg.norm(w - a.detach().to(torch.float64) @ b.detach().to(torch.float64))
    norm = torch.linalg.norm(w)
    if norm == 0:
        return 0.0 if diff == 0 else math.inf
    return float(diff / norm)


def output_relative_error(weight: Tensor, a: Tensor, b: Tensor, input_cov: Tensor) -> float:
    """``|(W - A B) X|_F / |W X|_F`` over the calibration inputs, from their covariance."""
    w = weight.detach().to(torch.float64)
    c = input_cov.detach().to(torch.float64)
    diff = w - a.detach().to(torch.float64) @ b.detach().to(torch.float64)
    num = torch.einsum('oi,ij,oj->', diff, c, diff).clamp_min(0)
    den = torch.einsum('oi,ij,oj->', w, c, w)
    if den <= 0:
        return 0.0 if num == 0 else math.inf
    return float((num / den).sqrt())


def collect_input_covariances(model: nn.Module, names: list[str] | tuple[str, ...],
                              run: Callable[[], object]) -> dict[str, Tensor]:
    """Second moments ``X^T X / n`` of the inputs of the named ``nn.Linear`` layers.

    Hooks the layers, calls ``run()`` (which feeds calibration batches through the
    model, e.g. ``lambda: [model.test_step(b) for b in batches]``), removes the hooks,
    and returns ``{name: (in x in) float64 tensor}`` (every token of every image is one
    sample).

    Raises:
        CalibrationError: ``run()`` sent no input through one of the layers.
    """
    sums: dict[str, Tensor] = {}
    counts = dict.fromkeys(names, 0)
    handles = []

    def hook(name):
        def fn(module, args):
            x = args[0].detach().reshape(-1, args[0].shape[-1]).to(torch.float64)
            sums[name] = sums.get(name, 0) + x.T @ x
            counts[name] += x.shape[0]
        return fn

    for name in names:
        handles.append(get_linear(model, name).register_forward_pre_hook(hook(name)))
    try:
        with torch.no_grad():
            run()
    finally:
        for h in handles:
            h.remove()
    empty = [n for n in names if counts[n] == 0]
    if empty:
        raise CalibrationError(f'calibration sent no input through {empty[:4]}: the '
                               'calibration run must call the model forward on some batches')
    return {n: sums[n] / counts[n] for n in names}


def rank_for_energy(weight: Tensor, energy: float) -> int:
    """Smallest ``r`` whose top ``r`` singular values keep ``energy`` of ``sum sigma^2``."""
    _check_energy(energy)
    s = torch.linalg.svdvals(weight.detach().to(torch.float64))
    cum = torch.cumsum(s * s, dim=0)
    # Compare against the cumsum's own last entry so that energy=1.0 is met exactly.
    rank = int(torch.searchsorted(cum, energy * cum[-1]).item()) + 1
    return min(rank, s.numel())


def ranks_for_budget(weights: dict[str, Tensor], params_budget: float, *, fixed_params: int = 0,
                     normalize: bool = True) -> dict[str, int]:
    """Per-layer ranks so that all layers together cost at most ``params_budget``.

    Cost of a layer (out x in) at rank r is ``r * (in + out)`` while that is below
    ``in * out``, otherwise the layer stays dense at ``in * out``; ``fixed_params``
    (e.g. the biases, which factorization does not change) is added to the total.

    Rule (greedy, global): every layer starts at rank 1. Each further singular
    value of a layer costs ``in + out`` parameters and is worth ``sigma^2``
    (divided by ``|W|_F^2`` when ``normalize``, so layers of different scale
    compete on the relative error that is reported). Repeatedly take the
    candidate with the highest worth per parameter that still fits the budget;
    candidates of one layer come in order (largest sigma first). Once a layer's
    next singular value would no longer save parameters, its next candidate is
    "go dense": all remaining sigma^2 for the rest of ``in * out``. A layer whose
    candidate does not fit is closed (its later candidates are worth less).

    Returns ``{name: rank}``; a rank equal to ``min(out, in)`` means "keep dense".
    Raises ``ValueError`` if the budget is below rank 1 everywhere.
    """
    if not weights:
        raise ValueError('weights must name at least one layer, got an empty dict')
    spectra, shapes = {}, {}
    for name, w in weights.items():
        if w.dim() != 2:
            raise ValueError(f'weights[{name!r}] must be 2-D (out x in), got shape '
                             f'{tuple(w.shape)}')
        s2 = torch.linalg.svdvals(w.detach().to(torch.float64)) ** 2
        total = float(s2.sum())
        scale = total if normalize and total > 0 else 1.0
        spectra[name] = (s2 / scale).tolist()
        shapes[name] = tuple(w.shape)

    def cost(name: str, rank: int) -> int:
        out_f, in_f = shapes[name]
        return rank * (in_f + out_f) if worth_factorizing(in_f, out_f, rank) else in_f * out_f

    def candidate(idx: int):
        name = names[idx]
        rank, s2 = ranks[name], spectra[name]
        out_f, in_f = shapes[name]
        if cost(name, rank) == in_f * out_f:  # already dense
            return None
        if worth_factorizing(in_f, out_f, rank + 1):
            gain, new_rank = s2[rank], rank + 1
        else:
            gain, new_rank = sum(s2[rank:]), len(s2)
        extra = cost(name, new_rank) - cost(name, rank)
        # idx breaks ties deterministically (in dict order).
        return (-gain / extra, idx, new_rank, extra)

    names = list(weights)
    ranks = {name: 1 if worth_factorizing(shapes[name][1], shapes[name][0], 1)
             else min(shapes[name]) for name in names}
    used = fixed_params + sum(cost(name, ranks[name]) for name in names)
    if used > params_budget:
        raise ValueError(f'params_budget={params_budget} is below the minimum achievable {used} '
                         f'(rank 1 for every layer, {fixed_params} fixed params included)')
    heap = [c for c in map(candidate, range(len(names))) if c is not None]
    heapq.heapify(heap)
    while heap:
        _, idx, new_rank, extra = heapq.heappop(heap)
        if used + extra > params_budget:
            continue  # closes this layer: its later candidates are worth less per param
        used += extra
        ranks[names[idx]] = new_rank
        nxt = candidate(idx)
        if nxt is not None:
            heapq.heappush(heap, nxt)
    return ranks


def lowrank_model(model: nn.Module, method: str, energy: float | None = None,
                  params_budget: float | None = None, ranks: dict[str, int] | None = None,
                  targets: tuple[str, ...] = TARGETS, *,
                  generator: torch.Generator | None = None,
                  input_covs: dict[str, Tensor] | None = None) -> dict[str, dict]:
    """Replace, in place, target ``nn.Linear`` layers by :class:`LowRankLinear`.

    Exactly one way to choose ranks must be given:

    - ``energy``: per layer, :func:`rank_for_energy`;
    - ``params_budget``: the matched layers' parameters after factorization
      (weights and biases) are at most this, ranks from :func:`ranks_for_budget`;
    - ``ranks``: ``{qualified_name: rank}``; these layers are used as they are
      and ``targets`` is ignored.

    A layer is matched when its qualified name ends with a target as a dotted
    suffix (``blocks.3.attn.qkv`` matches ``attn.qkv``). It is replaced only if
    ``worth_factorizing``. Returns, per matched layer, ``rank``, ``in``,
    ``out``, ``params_before``, ``params_after``, ``rel_error`` (0 when left dense)
    and ``replaced``; :func:`replaced_ranks` extracts what a subnet file records.

    ``svd_whitened`` needs ``input_covs`` (:func:`collect_input_covariances`) for every
    matched layer; ranks then still come from the weights (energy/budget), so every
    method gets the same ranks, and the report adds ``out_rel_error``, the relative
    error on the calibration outputs.

    Raises:
        CalibrationError: a calibrated method without a covariance for a matched layer.
    """
    _check_method(method)
    given = [k for k, v in (('energy', energy), ('params_budget', params_budget),
                            ('ranks', ranks)) if v is not None]
    if len(given) != 1:
        raise ValueError('exactly one of energy, params_budget or ranks must be given, got '
                         + (', '.join(given) if given else 'none'))
    if energy is not None:
        _check_energy(energy)
    if ranks is not None:
        layers = {name: get_linear(model, name) for name in ranks}
    else:
        layers = _match_targets(model, targets)
    if method in CALIBRATED_METHODS:
        missing = [n for n in layers if input_covs is None or n not in input_covs]
        if missing:
            raise CalibrationError(
                f'{method} needs calibration data: the input covariance of every layer it '
                f'factorizes (input_covs from collect_input_covariances over a few training '
                f'batches); missing for {missing[:4]}{"..." if len(missing) > 4 else ""}')

    if energy is not None:
        chosen = {name: rank_for_energy(m.weight, energy) for name, m in layers.items()}
    elif params_budget is not None:
        biases = sum(m.bias.numel() for m in layers.values() if m.bias is not None)
        chosen = ranks_for_budget({name: m.weight for name, m in layers.items()}, params_budget,
                                  fixed_params=biases)
    else:
        chosen = {}
        for name, m in layers.items():
            check_rank(ranks[name], 1, min(m.in_features, m.out_features) - 1,
                        f'ranks[{name!r}]', f'a Linear with out={m.out_features}, '
                        f'in={m.in_features}')
            chosen[name] = int(ranks[name])  # report and subnet file are JSON

    report = {}
    for name, linear in layers.items():
        rank, in_f, out_f = chosen[name], linear.in_features, linear.out_features
        bias = out_f if linear.bias is not None else 0
        entry = {'rank': rank, 'in': in_f, 'out': out_f, 'params_before': in_f * out_f + bias,
                 'params_after': in_f * out_f + bias, 'rel_error': 0.0, 'replaced': False}
        cov = input_covs.get(name) if input_covs is not None else None
        if worth_factorizing(in_f, out_f, rank):
            new = factorize_linear(linear, rank, method, generator=generator, input_cov=cov)
            entry.update(params_after=rank * (in_f + out_f) + bias, replaced=True,
                         rel_error=relative_error(linear.weight, new.up.weight,
                                                  new.down.weight))
            if cov is not None:
                entry['out_rel_error'] = output_relative_error(
                    linear.weight, new.up.weight, new.down.weight, cov)
            set_submodule(model, name, new)
        report[name] = entry
    return report


def replaced_ranks(report: dict[str, dict]) -> dict[str, int]:
    """``{name: rank}`` of the layers :func:`lowrank_model` actually replaced."""
    return {name: e['rank'] for name, e in report.items() if e['replaced']}


def _check_method(method: str) -> None:
    if method not in ALL_METHODS:
        raise ValueError(f'method must be one of {", ".join(ALL_METHODS)}; got {method!r}')


def _whitened_svd(w: Tensor, rank: int, input_cov: Tensor | None) -> tuple[Tensor, Tensor]:
    """SVD of ``W S`` with ``S S^T`` the input covariance; ``B`` undoes ``S``."""
    in_f = w.shape[1]
    if input_cov is None:
        raise CalibrationError(
            'svd_whitened needs calibration data: pass input_cov, the (in x in) covariance of '
            "the layer's inputs over a few training batches (collect_input_covariances); "
            'use method="svd" to factorize from the weight alone')
    if tuple(input_cov.shape) != (in_f, in_f):
        raise CalibrationError(f'input_cov: expected shape ({in_f}, {in_f}) for a weight with '
                               f'in={in_f}, got {tuple(input_cov.shape)}')
    c = input_cov.detach().to(device=w.device, dtype=torch.float64)
    c = (c + c.T) / 2
    ridge = _COV_RIDGE * max(float(torch.diagonal(c).mean()), 1e-12)
    eye = torch.eye(in_f, dtype=c.dtype, device=c.device)
    s, info = torch.linalg.cholesky_ex(c + ridge * eye)
    while int(info) != 0:  # not positive definite to rounding: a larger ridge
        ridge *= 10
        s, info = torch.linalg.cholesky_ex(c + ridge * eye)
    u, sv, vh = torch.linalg.svd(w @ s, full_matrices=False)
    root = sv[:rank].sqrt()
    a = u[:, :rank] * root
    # B = root V_r^T S^-1, by a triangular solve: S^T B^T = (root V_r^T)^T.
    b = torch.linalg.solve_triangular(s.T, (root[:, None] * vh[:rank]).T, upper=True).T
    return a, b


def _check_energy(energy: float) -> None:
    if not 0 < energy <= 1:  # also rejects NaN
        raise ValueError(f'energy must be in (0, 1], got {energy}')


def _match_targets(model: nn.Module, targets: tuple[str, ...]) -> dict[str, nn.Linear]:
    if isinstance(targets, str):
        targets = (targets,)
    unknown = [t for t in targets if t not in TARGETS]
    if unknown or not targets:
        raise ValueError(f'targets must be a non-empty subset of {", ".join(TARGETS)}; '
                         f'unknown: {", ".join(map(repr, unknown)) or "none given"}')
    layers = {name: m for name, m in model.named_modules()
              if isinstance(m, nn.Linear)
              and any(name == t or name.endswith('.' + t) for t in targets)}
    if not layers:
        raise ValueError(f'no nn.Linear in {type(model).__name__} has a name ending with any of '
                         f'targets={tuple(targets)}')
    return layers


def _unpermute_columns(r: Tensor, perm: Tensor) -> Tensor:
    # W P = Q R means column j of R belongs to column perm[j] of W.
    b = torch.empty_like(r)
    b[:, perm] = r
    return b


def _pivoted_qr(w: Tensor, steps: int) -> tuple[Tensor, Tensor, Tensor]:
    """Householder QR with column pivoting, stopped after ``steps`` columns.

    Returns ``Q`` (m x steps), ``R`` (steps x n) and ``perm`` with
    ``W[:, perm] ~ Q R``, exact when ``steps = min(m, n)``. torch has no pivoted QR
    (LAPACK geqp3) and scipy is not a dependency; stopping early makes a rank-r
    factorization cost O(r m n) instead of a full decomposition. Column norms
    are recomputed at each step rather than downdated, which costs the same
    order as the update and avoids the cancellation downdating suffers from.
    """
    m, n = w.shape
    r = w.clone()
    perm = torch.arange(n, device=w.device)
    reflectors = []
    for j in range(steps):
        p = j + int(torch.argmax(torch.linalg.vector_norm(r[j:, j:], dim=0)))
        if p != j:
            r[:, [j, p]] = r[:, [p, j]]
            perm[[j, p]] = perm[[p, j]]
        v = r[j:, j].clone()
        norm_x = torch.linalg.vector_norm(v)
        # Reflect onto -sign(x0)|x| so that v[0] never cancels.
        v[0] += norm_x if v[0] >= 0 else -norm_x
        norm_v = torch.linalg.vector_norm(v)
        if norm_v > 0:
            v /= norm_v
            r[j:, j:] -= 2 * torch.outer(v, v @ r[j:, j:])
        reflectors.append(v)
    q = torch.eye(m, steps, dtype=w.dtype, device=w.device)
    for j in reversed(range(steps)):
        v = reflectors[j]
        q[j:] -= 2 * torch.outer(v, v @ q[j:])
    return q, torch.triu(r[:steps]), perm


def _randomized_range(w: Tensor, rank: int, generator: torch.Generator | None,
                      oversample: int, power_iters: int) -> Tensor:
    """Orthonormal ``m x rank`` basis for the dominant range of ``w`` (Halko et al.).

    Sketch with ``rank + oversample`` Gaussian columns, sharpen with power
    iterations (re-orthonormalised each half-step so small singular values are
    not lost to rounding), then cut the sketch basis to ``rank`` with a pivoted
    QR of ``Q^T W``. Taking the first ``rank`` columns of the sketch's QR instead
    would throw the oversampling away: those columns depend only on the first
    ``rank`` random vectors.
    """
    m, n = w.shape
    width = min(rank + oversample, m, n)
    gen_device = generator.device if generator is not None else w.device
    omega = torch.randn(n, width, generator=generator, dtype=w.dtype, device=gen_device)
    q = torch.linalg.qr(w @ omega.to(w.device)).Q
    for _ in range(power_iters):
        q = torch.linalg.qr(w.T @ q).Q
        q = torch.linalg.qr(w @ q).Q
    q_small, _, _ = _pivoted_qr(q.T @ w, rank)
    return q @ q_small
