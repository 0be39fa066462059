"""The detection presets that share a workspace share its stages: the comparison reuses the
dense model, the narrow model and the reference the task check trained."""
from __future__ import annotations

import pytest

from sidt_mmdet.studies.selection import PRESETS, _rows_of


@pytest.mark.parametrize('task, fulls', [
    ('detection-task', ['detection-full']),
    ('detection-small-task', ['detection-small-full']),
    ('detection-harder-task', ['detection-harder-full']),
    # its schedule is too long for both budgets in one study
    ('detection-harder-long-task', ['detection-harder-long-full',
                                    'detection-harder-long-full-r0.4']),
    ('detection-harder-xlong-task', ['detection-harder-xlong-full',
                                     'detection-harder-xlong-full-r0.4']),
    ('detection-xs-task', ['detection-xs-full', 'detection-xs-full-r0.4']),
    ('detection-xs-long-task', ['detection-xs-long-full', 'detection-xs-long-full-r0.4'])])
def test_the_detection_comparison_shares_the_task_checks_stages(task, fulls):
    task = PRESETS[task]
    assert task.methods == () and _rows_of(task) == []
    budgets = []
    for full in map(PRESETS.get, fulls):
        assert task.workspace == full.workspace and task.task == full.task == 'detection'
        assert task.settings == full.settings
        assert task.search_fraction == full.search_fraction  # the reference's length
        # every baseline under both controls, SiDT once per search
        assert len(_rows_of(full)) == 2 + 3 * 2
        assert 0 < full.expected_minutes <= 90
        budgets += full.ratios
    assert budgets == [0.6, 0.4]  # both budgets, each once
