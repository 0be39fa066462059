"""The detection presets that share a workspace share its stages: the comparison reuses the
dense model, the narrow model and the reference the task check trained."""
from __future__ import annotations

import pytest

from sidt_mmdet.studies.selection import PRESETS, _rows_of


@pytest.mark.parametrize('task, full', [('detection-task', 'detection-full'),
                                        ('detection-small-task', 'detection-small-full'),
                                        ('detection-harder-task', 'detection-harder-full'),
                                        ('detection-harder-long-task',
                                         'detection-harder-long-full')])
def test_the_detection_comparison_shares_the_task_checks_stages(task, full):
    task, full = PRESETS[task], PRESETS[full]
    assert task.workspace == full.workspace and task.task == full.task == 'detection'
    assert task.settings == full.settings
    assert task.search_fraction == full.search_fraction  # the reference's length
    assert task.methods == () and _rows_of(task) == []
    # every baseline under both controls, SiDT once per search, at both budgets
    assert len(_rows_of(full)) == 2 + 3 * 2 and full.ratios == (0.6, 0.4)
