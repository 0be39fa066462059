from .layer_decay import SIDTLayerDecayOptimWrapperConstructor

__all__ = ['SIDTLayerDecayOptimWrapperConstructor']
