from .sidt_vit import SIDTViT

__all__ = ['SIDTViT']
