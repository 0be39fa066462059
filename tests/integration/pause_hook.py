"""A test-only mmengine hook: the run stops (sleeps) after the checkpoint of a chosen
iteration and says so in a state file, so that a test can kill it exactly there.

Used by test_interruption.py through ``custom_imports`` (this directory is put on the
subprocess's PYTHONPATH). ``$SIDT_PAUSE_AT_ITER`` is the iteration, ``$SIDT_PAUSE_FILE`` the
state file; with them unset the hook does nothing, so the same config serves the run that is
killed, its resume and the uninterrupted reference. A paused run that is never killed exits
with status 3 after ``$SIDT_PAUSE_TIMEOUT`` seconds (default 600) instead of living on.
"""
from __future__ import annotations

import os
import time

from mmengine.hooks import Hook
from mmengine.registry import HOOKS

__all__ = ['PauseAfterCheckpointHook']


@HOOKS.register_module()
class PauseAfterCheckpointHook(Hook):
    priority = 'LOWEST'  # after the CheckpointHook has saved that iteration

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        at = os.environ.get('SIDT_PAUSE_AT_ITER')
        if at is None or runner.iter + 1 != int(at):
            return
        state = os.environ['SIDT_PAUSE_FILE']
        with open(f'{state}.tmp', 'w') as f:
            f.write(f'paused after iteration {runner.iter + 1}\n')
        os.replace(f'{state}.tmp', state)  # the test never reads a half-written file
        time.sleep(float(os.environ.get('SIDT_PAUSE_TIMEOUT', 600)))
        os._exit(3)
