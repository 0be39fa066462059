from .simple_fpn import SIDTLN2d, SIDTSimpleFPN

__all__ = ['SIDTLN2d', 'SIDTSimpleFPN']
