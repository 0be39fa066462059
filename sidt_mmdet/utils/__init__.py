"""Utilities shared by every stage; importing this installs the safe checkpoint loader."""
from .safe_load import (
    CheckpointMismatchError,
    CorruptCheckpointError,
    UnsafeCheckpointError,
    checkpoint_safe_globals,
    install_safe_checkpoint_loader,
    load_checkpoint_safe,
    save_checkpoint_atomic,
)

install_safe_checkpoint_loader()

__all__ = [
    'CheckpointMismatchError',
    'CorruptCheckpointError',
    'UnsafeCheckpointError',
    'checkpoint_safe_globals',
    'install_safe_checkpoint_loader',
    'load_checkpoint_safe',
    'save_checkpoint_atomic',
]
