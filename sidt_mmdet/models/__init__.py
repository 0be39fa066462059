from .backbones import SIDTViT
from .necks import SIDTLN2d, SIDTSimpleFPN
from .subnet import Subnet, SubnetError

__all__ = ['SIDTViT', 'SIDTSimpleFPN', 'SIDTLN2d', 'Subnet', 'SubnetError']
