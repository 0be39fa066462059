from .attention import SIDTAttention
from .block import SIDTBlock
from .lowrank import LOWRANK_TARGETS, LowRankLinear, apply_lowrank_structure, lowrank_ranks
from .mlp import SIDTMlp
from .patch_embed import PatchEmbed

__all__ = ['SIDTAttention', 'SIDTBlock', 'SIDTMlp', 'PatchEmbed', 'LOWRANK_TARGETS',
           'LowRankLinear', 'apply_lowrank_structure', 'lowrank_ranks']
