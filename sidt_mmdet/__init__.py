"""sidt-mmdet: search the intrinsic dimensions of ViT backbones inside MMDetection.

Importing this package (which ``custom_imports=dict(imports=['sidt_mmdet'])``
does while a config is parsed) registers every component and installs the
safe checkpoint loader that makes mmengine checkpoints load with
``torch.load(weights_only=True)``. Where mmdet is not installed it imports the
backbone path only (see :mod:`sidt_mmdet.utils.stack`).
"""
from .version import __version__
from . import utils  # noqa: F401  (installs the safe checkpoint loader first)
from .utils.stack import DETECTION_STACK
from . import datasets  # noqa: F401
from . import models  # noqa: F401
from . import search  # noqa: F401
from . import export  # noqa: F401

if DETECTION_STACK:
    from . import engine  # noqa: F401

__all__ = ['__version__']
