from .attention import SIDTAttention
from .block import SIDTBlock
from .mlp import SIDTMlp
from .patch_embed import PatchEmbed

__all__ = ['SIDTAttention', 'SIDTBlock', 'SIDTMlp', 'PatchEmbed']
