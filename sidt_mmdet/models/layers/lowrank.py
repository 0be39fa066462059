"""Low-rank Linear layers: the rank-r pair that replaces an ``nn.Linear``, the layer names
that may be factorized, and the rebuild of a factorized structure from recorded ranks.

These live with the other layers (below the backbones) so a backbone rebuilds a factorized
model from its subnet file without importing the factorization code in ``export/``. The
rank rules are in ``docs/method.md`` (low-rank factorization).
"""
from __future__ import annotations

from numbers import Integral

from torch import Tensor, nn

__all__ = ['LOWRANK_TARGETS', 'LowRankLinear', 'worth_factorizing', 'check_rank',
           'get_linear', 'set_submodule', 'lowrank_ranks', 'apply_lowrank_structure']

# Linear layers of a SIDTViT block that may be factorized, by dotted name suffix.
LOWRANK_TARGETS = ('attn.qkv', 'attn.proj', 'mlp.fc1', 'mlp.fc2')


class LowRankLinear(nn.Module):
    """``y = up(down(x))``: a rank-``rank`` replacement for ``nn.Linear(in, out)``.

    The submodule names ``down`` (in -> rank, no bias) and ``up`` (rank -> out,
    carries the bias) are part of the checkpoint format: a factorized checkpoint
    stores ``<layer>.down.weight``, ``<layer>.up.weight`` and ``<layer>.up.bias``.
    """

    def __init__(self, in_features: int, out_features: int, rank: int, bias: bool = True,
                 device=None, dtype=None) -> None:
        super().__init__()
        check_rank(rank, 1, min(in_features, out_features), 'rank',
                   f'in_features={in_features}, out_features={out_features}')
        rank = int(rank)
        self.in_features = in_features
        self.out_features = out_features
        self.rank = rank
        self.down = nn.Linear(in_features, rank, bias=False, device=device, dtype=dtype)
        self.up = nn.Linear(rank, out_features, bias=bias, device=device, dtype=dtype)

    @property
    def bias(self) -> Tensor | None:
        """The bias of the pair (kept on ``up``), so readers treat it like an ``nn.Linear``."""
        return self.up.bias

    def forward(self, x: Tensor) -> Tensor:
        return self.up(self.down(x))

    def extra_repr(self) -> str:
        return (f'in_features={self.in_features}, out_features={self.out_features}, '
                f'rank={self.rank}, bias={self.up.bias is not None}')


def worth_factorizing(in_features: int, out_features: int, rank: int) -> bool:
    """True when rank ``rank`` has fewer weights than the dense layer.

    The bias is the same size both ways, so it does not enter the comparison.
    """
    return rank * (in_features + out_features) < in_features * out_features


def lowrank_ranks(module: nn.Module) -> dict[str, int]:
    """``{qualified name: rank}`` of every :class:`LowRankLinear` inside ``module``."""
    return {name: m.rank for name, m in module.named_modules() if isinstance(m, LowRankLinear)}


def apply_lowrank_structure(model: nn.Module, ranks: dict[str, int]) -> nn.Module:
    """Swap the named ``nn.Linear`` layers for shape-correct :class:`LowRankLinear`.

    Used before loading a factorized checkpoint: the values are placeholders that
    the checkpoint overwrites. ``ranks`` is what ``sidt_mmdet.export.lowrank.replaced_ranks``
    recorded, so every rank must be one ``lowrank_model`` would have applied.
    """
    for name, rank in ranks.items():
        linear = get_linear(model, name)
        in_f, out_f = linear.in_features, linear.out_features
        check_rank(rank, 1, min(in_f, out_f) - 1, f'ranks[{name!r}]',
                   f'a Linear with out={out_f}, in={in_f}')
        if not worth_factorizing(in_f, out_f, rank):
            raise ValueError(f'ranks[{name!r}]={rank} does not save parameters for a Linear with '
                             f'out={out_f}, in={in_f} (needs rank*(in+out) < in*out), so '
                             f'lowrank_model never replaces it; record only replaced layers')
        weight = linear.weight
        new = LowRankLinear(in_f, out_f, rank, bias=linear.bias is not None,
                            device=weight.device, dtype=weight.dtype)
        set_submodule(model, name, new.train(linear.training))
    return model


def check_rank(rank: int, low: int, high: int, arg: str, what: str) -> None:
    """Raise a ValueError naming ``arg`` unless ``rank`` is an integer in ``[low, high]``."""
    # Integral admits numpy ints from rank arithmetic; bool is one too, but True as a
    # rank is always a bug.
    if isinstance(rank, bool) or not isinstance(rank, Integral) or not low <= rank <= high:
        raise ValueError(f'{arg} must be an integer in [{low}, {high}] for {what}, got {rank!r}')


def get_linear(model: nn.Module, name: str) -> nn.Linear:
    """The ``nn.Linear`` called ``name``; a ValueError names what is there instead."""
    try:
        module = model.get_submodule(name)
    except AttributeError:
        raise ValueError(f'no module named {name!r} in {type(model).__name__}') from None
    if not isinstance(module, nn.Linear):
        raise ValueError(f'module {name!r} is a {type(module).__name__}, expected nn.Linear')
    return module


def set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    """Replace the submodule called ``name`` (dotted) by ``module``."""
    parent, _, child = name.rpartition('.')
    setattr(model.get_submodule(parent), child, module)
