from ..models.subnet import Subnet
from ..utils.stack import DETECTION_STACK, needs_detection_stack
from .checks import MaskGroupError, MissingSparsityError, NonFiniteMaskError, check_masks_finite
from .select import GRANULARITIES, select_subnet
from .sparsity import SparsityLoss

if DETECTION_STACK:  # registered in mmdet's registries (see sidt_mmdet.utils.stack)
    from .hooks import SIDTMaskCheckHook
    from .sidt_model import SIDTModel, backbone_out_channels

__all__ = ['select_subnet', 'GRANULARITIES', 'SIDTModel', 'SparsityLoss', 'Subnet',
           'backbone_out_channels', 'SIDTMaskCheckHook', 'MaskGroupError', 'MissingSparsityError',
           'NonFiniteMaskError', 'check_masks_finite']


def __getattr__(name: str):
    if name in ('SIDTMaskCheckHook', 'SIDTModel', 'backbone_out_channels'):
        raise needs_detection_stack(__name__, name)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
