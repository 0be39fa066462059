"""What the export-like APIs return: the directory they wrote and the subnet in it."""
from __future__ import annotations

import os.path as osp
from dataclasses import dataclass
from typing import ClassVar

from ..models import Subnet

__all__ = ['SUBNET_FILE', 'ExportedDir']

SUBNET_FILE = 'subnet.json'


@dataclass
class ExportedDir:
    """``out_dir`` holds ``subnet.json`` and a checkpoint named by ``CHECKPOINT_FILE``."""

    CHECKPOINT_FILE: ClassVar[str] = 'pruned.pth'

    out_dir: str
    subnet: Subnet

    @property
    def subnet_file(self) -> str:
        return osp.join(self.out_dir, SUBNET_FILE)

    @property
    def checkpoint(self) -> str:
        return osp.join(self.out_dir, self.CHECKPOINT_FILE)
