
from .lowrank import LowRankLinear, apply_lowrank_structure, lowrank_model, replaced_ranks
from .prune import prune_backbone, prune_model_state_dict

__all__ = ['LowRankLinear', 'apply_lowrank_structure', 'lowrank_model', 'replaced_ranks',
           'prune_backbone', 'prune_model_state_dict']
