"""The command-line layer: per tool its argparse parser and one library call (what
``tools/*.py`` call: each script runs a ``main`` of this package).

The library underneath (``sidt_mmdet.apis`` and below) takes typed arguments and never
imports argparse or this package. Nothing is imported here: a tool imports its own module
(``from sidt_mmdet.cli.export_subnet import main``). The value types of the flags, the error
type and the exit-code rule are in ``sidt_mmdet.utils.cli``.
"""
