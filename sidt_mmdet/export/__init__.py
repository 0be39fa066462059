
from .lowrank import LowRankLinear, apply_lowrank_structure, lowrank_model, replaced_ranks

__all__ = ['LowRankLinear', 'apply_lowrank_structure', 'lowrank_model', 'replaced_ranks']
