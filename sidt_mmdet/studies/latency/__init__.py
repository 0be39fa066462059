"""Latency study: pruned SIDTViT against its dense model, beside Torch-Pruning, in one run.

For each shape (model, input size, batch) every model of the group is built, then all
are timed *interleaved* (one forward of each per round, the order rotated every round)
and the median per model is kept, so machine drift hits every model alike and the
figures to read are ratios within a group:

- ``latency ratio``: pruned / its own dense model; ``MACs ratio`` likewise, from
  :mod:`sidt_mmdet.models.complexity` (attention matmuls included);
  ``latency/MACs`` = the two divided, 1.0 being the physical limit;
- SIDTViT pruned by :func:`~sidt_mmdet.search.select_subnet` at each keep ratio,
  granularity, rounding (and layout / ``equal_heads`` variants), from random masks
  (speed depends on widths, not on values);
- Torch-Pruning (the optional ``bench`` dependency group) pruning timm's
  ``VisionTransformer`` of the same shape at the same keep ratio and rounding (head
  dims and MLP, embedding kept), against timm's dense model; skipped with a note
  when it is not installed;
- dense SIDTViT against timm's ``VisionTransformer`` / ``VisionTransformerSAM``;
- on CUDA (when present): fp16 / bf16 autocast rows, synchronised timing; ``--preset gpu``
  times only those (refused without CUDA) and checks latency budgets on a latency table
  built there;
- the search stage's own cost: a training step (forward, backward, AdamW) of the
  search model (masks on attention, MLP and embedding) against the dense one, time
  interleaved and peak memory (CUDA: ``max_memory_allocated``; CPU: peak resident
  memory of the step, each model in a fresh subprocess).

:func:`run_latency_study` returns plain data (JSON); :func:`write_study` writes
``latency.json``, ``latency.md`` and ``latency.png``; :func:`update_readme` puts the
compact table between two markers of a Markdown file. Everything after timing is
computed from the JSON, so the figures can be re-rendered without re-timing.
"""
from __future__ import annotations

from ...utils.timing import median_latency, time_interleaved  # kept importable from here
from .measure import CudaRequiredError, budget_check, run_latency_study, search_step_cost

# the CPU peak-memory subprocesses call these from here
from .measure import _forward_memory_child as _forward_memory_child
from .measure import _step_memory_child as _step_memory_child
from .presets import (
    GOALS,
    GPU_BEGIN,
    GPU_END,
    PRESETS,
    README_BEGIN,
    README_END,
    SCALING_BEGIN,
    SCALING_END,
    BudgetCheck,
    Group,
    Shape,
    Variant,
)
from .report import (
    CUDA_GOAL,
    StudyFiles,
    cuda_goal_lines,
    gpu_table,
    load_study,
    pending_study,
    plot_study,
    readme_table,
    render_markdown,
    scaling_table,
    update_readme,
    write_study,
)

__all__ = ['PRESETS', 'Shape', 'Variant', 'Group', 'run_latency_study', 'time_interleaved',
           'write_study', 'render_markdown', 'readme_table', 'update_readme', 'plot_study',
           'search_step_cost', 'median_latency', 'load_study', 'StudyFiles', 'GOALS',
           'README_BEGIN', 'README_END', 'SCALING_BEGIN', 'SCALING_END', 'scaling_table',
           'GPU_BEGIN', 'GPU_END', 'BudgetCheck', 'budget_check', 'CudaRequiredError',
           'cuda_goal_lines', 'gpu_table', 'pending_study', 'CUDA_GOAL']
