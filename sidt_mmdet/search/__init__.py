from ..models.subnet import Subnet
from .select import GRANULARITIES, select_subnet
from .sidt_model import SIDTModel, backbone_out_channels
from .sparsity import SparsityLoss

__all__ = ['select_subnet', 'GRANULARITIES', 'SIDTModel', 'SparsityLoss', 'Subnet',
           'backbone_out_channels']
