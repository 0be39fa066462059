from ..utils.stack import DETECTION_STACK, needs_detection_stack
from .backbones import SIDTViT
from .subnet import Subnet, SubnetError

if DETECTION_STACK:  # the neck builds mmcv layers (see sidt_mmdet.utils.stack)
    from .necks import SIDTLN2d, SIDTSimpleFPN

__all__ = ['SIDTViT', 'SIDTSimpleFPN', 'SIDTLN2d', 'Subnet', 'SubnetError']


def __getattr__(name: str):
    if name in ('SIDTLN2d', 'SIDTSimpleFPN'):
        raise needs_detection_stack(__name__, name)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
