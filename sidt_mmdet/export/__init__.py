from .lowrank import lowrank_model, replaced_ranks
from .prune import prune_backbone, prune_model_state_dict

__all__ = ['lowrank_model', 'replaced_ranks', 'prune_backbone', 'prune_model_state_dict']
