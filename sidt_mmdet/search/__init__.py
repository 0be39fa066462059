from ..models.subnet import Subnet
from .checks import MaskGroupError, MissingSparsityError, NonFiniteMaskError, check_masks_finite
from .hooks import SIDTMaskCheckHook
from .select import GRANULARITIES, select_subnet
from .sidt_model import SIDTModel, backbone_out_channels
from .sparsity import SparsityLoss

__all__ = ['select_subnet', 'GRANULARITIES', 'SIDTModel', 'SparsityLoss', 'Subnet',
           'backbone_out_channels', 'SIDTMaskCheckHook', 'MaskGroupError', 'MissingSparsityError',
           'NonFiniteMaskError', 'check_masks_finite']
