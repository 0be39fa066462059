"""How a pruned attention runs heads of unequal widths (pure Python: the layer and the
MACs counter share it)."""
from __future__ import annotations

__all__ = ['LAYOUTS', 'head_groups']

LAYOUTS = ('grouped', 'padded')


def head_groups(qk: list[int], v: list[int],
                layout: str = 'grouped') -> list[tuple[tuple[int, ...], int, int]]:
    """How a pruned attention runs its heads: ``(heads, q/k width, v width)`` per call.

    ``'grouped'``: heads of equal (q/k, v) widths share one call, widest first, with
    no padding; ``'padded'``: one call, every head zero-padded to the widest.
    """
    if layout not in LAYOUTS:
        raise ValueError(f'layout: expected one of {LAYOUTS}, got {layout!r}')
    if len(qk) != len(v):
        raise ValueError(f'qk ({len(qk)} heads) and v ({len(v)} heads) must describe the '
                         'same heads')
    if layout == 'padded':
        return [(tuple(range(len(qk))), max(qk, default=0), max(v, default=0))]
    groups: dict[tuple[int, int], list[int]] = {}
    for h, widths in enumerate(zip(qk, v)):
        groups.setdefault(widths, []).append(h)
    return [(tuple(heads), a, b) for (a, b), heads in
            sorted(groups.items(), key=lambda item: (-item[0][0], -item[0][1]))]
