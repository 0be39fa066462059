"""Utilities shared by every stage; importing this installs the safe checkpoint loader
(with the detection stack: see :mod:`.stack`)."""
from .flop_handles import register_flop_handles
from .safe_load import (
    CheckpointMismatchError,
    CorruptCheckpointError,
    UnsafeCheckpointError,
    checkpoint_safe_globals,
    install_safe_checkpoint_loader,
    load_checkpoint_safe,
    save_checkpoint_atomic,
)
from .stack import DETECTION_STACK

# Both patch parts of mmengine that import OpenCV: only with the detection stack (.stack).
if DETECTION_STACK:
    install_safe_checkpoint_loader()
    # mmengine's FLOP analyzer (mmdet's get_flops.py) counts attention only with these handles.
    register_flop_handles()

__all__ = [
    'CheckpointMismatchError',
    'CorruptCheckpointError',
    'UnsafeCheckpointError',
    'checkpoint_safe_globals',
    'install_safe_checkpoint_loader',
    'load_checkpoint_safe',
    'save_checkpoint_atomic',
]
