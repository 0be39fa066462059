"""The pipeline as functions that return result objects, with typed arguments (what the
command lines of ``sidt_mmdet.cli``, and so ``tools/``, call; no argparse here).

Not imported by ``import sidt_mmdet`` (a config's ``custom_imports`` needs only the
registered components): ``from sidt_mmdet.apis import export_subnet``.
"""
from .export import ExportError, ExportResult, export_subnet
from .lowrank import LowRankError, LowRankResult, lowrank_export
from .runtime import build_model

__all__ = ['ExportError', 'ExportResult', 'export_subnet', 'LowRankError', 'LowRankResult',
           'lowrank_export', 'build_model']
