"""``SIDTMaskCheckHook``: stop a search whose masks stop being finite, naming the layer, or
that has no sparsity loss."""
from __future__ import annotations

from mmdet.registry import HOOKS
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from .checks import check_masks_finite, check_sparsity_attached

__all__ = ['SIDTMaskCheckHook']


@HOOKS.register_module()
class SIDTMaskCheckHook(Hook):
    """Check the search masks after every optimizer step (``interval`` iterations).

    The sparsity loss already refuses non-finite masks when it reads them, but only at
    the next forward; this hook runs right after the update that broke them, before the
    CheckpointHook (priority VERY_LOW) can save them, so no checkpoint of a diverged
    search is ever written.
    """

    priority = 'ABOVE_NORMAL'

    def __init__(self, interval: int = 1):
        if isinstance(interval, bool) or not isinstance(interval, int) or interval < 1:
            raise ValueError(f'SIDTMaskCheckHook.interval: expected an integer >= 1, '
                             f'got {interval!r}')
        self.interval = interval

    def before_train(self, runner) -> None:
        # SIDTLayerDecayOptimWrapperConstructor checks this too; with another constructor
        # this hook is the search config's one place to refuse a search without its loss.
        check_sparsity_attached(runner.model.module if is_model_wrapper(runner.model)
                                else runner.model)

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        if self.every_n_train_iters(runner, self.interval) or self.is_last_train_iter(runner):
            model = runner.model.module if is_model_wrapper(runner.model) else runner.model
            backbone = getattr(model, 'backbone', None)
            if backbone is not None and hasattr(backbone, 'mask_parameters'):
                check_masks_finite(backbone, where=f' (after iteration {runner.iter + 1})')
