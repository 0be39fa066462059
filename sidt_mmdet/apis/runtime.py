"""One way to build a model from a config and load a checkpoint into it.

The demos, the studies and the detector benchmark build models outside a Runner (to count,
time, score or slice them); :func:`build_model` builds them as a Runner would, so that each
sees the same model: the config's default scope, the top-level ``data_preprocessor``
merged in (mmpretrain keeps the normalisation there), the backbone pruned to a subnet file
when one is given, and the checkpoint read by the safe loader and loaded in full.
"""
from __future__ import annotations

import os
import os.path as osp

__all__ = ['ModelLoadError', 'build_model']


class ModelLoadError(ValueError):
    """A checkpoint with missing or unexpected keys for the model its config builds."""


def build_model(cfg, checkpoint: str | os.PathLike | None = None, subnet=None,
                strict: bool = True, device=None, *, scope: str = 'mmdet',
                where: str | None = None):
    """The model ``cfg`` describes, in eval mode on ``device``.

    Args:
        cfg: a config path or an mmengine ``Config``.
        checkpoint: weights to load (its ``state_dict``, or the file's dict itself).
        subnet: a subnet file, dict or :class:`~sidt_mmdet.models.Subnet`: the backbone is
            built pruned to it (as a retrain config builds it).
        strict: refuse a checkpoint with missing or unexpected keys, naming the file and the
            first keys of each (the backbone refuses tensors of other shapes by itself).
        device: where to put the model (default: where it was built, the CPU).
        scope: the default scope of a config that names none.
        where: the config's name in messages (default: its path).

    Raises:
        ModelLoadError: ``strict`` and the checkpoint lacks keys or has others.
    """
    from mmengine.config import Config
    from mmengine.registry import MODELS, init_default_scope

    import sidt_mmdet  # noqa: F401  (registers SIDTViT / SIDTModel)

    from ..utils import load_checkpoint_safe
    from ..utils.cli import load_config
    from ..utils.config import runner_model_cfg, with_pruned_backbone
    name = cfg.filename if isinstance(cfg, Config) else os.fspath(cfg)
    cfg = cfg if isinstance(cfg, Config) else load_config(name)
    name = where or name
    init_default_scope(cfg.get('default_scope', scope))
    model_cfg = runner_model_cfg(cfg)
    if subnet is not None:
        if isinstance(subnet, (str, os.PathLike)) and not osp.isfile(subnet):
            raise FileNotFoundError(f'subnet file {subnet}: no such file')
        model_cfg = with_pruned_backbone(model_cfg, subnet, where=name)
    model = MODELS.build(model_cfg)
    if checkpoint is not None:
        ckpt = load_checkpoint_safe(checkpoint, map_location='cpu')
        state = ckpt.get('state_dict', ckpt) if isinstance(ckpt, dict) else ckpt
        missing, unexpected = model.load_state_dict(state, strict=False)
        if strict and (missing or unexpected):
            with_subnet = f' with subnet {subnet}' if isinstance(subnet, (str, os.PathLike)) \
                else (' with its subnet' if subnet is not None else '')
            raise ModelLoadError(f'checkpoint {os.fspath(checkpoint)} does not fit {name}'
                             f'{with_subnet}: {len(missing)} missing keys (first: '
                             f'{missing[:3]}), {len(unexpected)} unexpected (first: '
                             f'{unexpected[:3]})')
    if device is not None:
        model = model.to(device)
    return model.eval()
