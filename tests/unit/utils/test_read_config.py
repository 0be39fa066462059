"""The tools' config: mmengine's text, formatted once per content."""
from __future__ import annotations

import copy

from mmengine.config import Config

from sidt_mmdet.utils import launch

TOY = 'configs/toy/sidt-dense_mask-rcnn_sidtvit-toy_simplefpn_100it_toy-coco.py'


def _count_formatting(monkeypatch) -> list:
    calls, real = [], launch.Config.pretty_text.fget

    def counted(self):
        calls.append(1)
        return real(self)

    monkeypatch.setattr(launch.Config, 'pretty_text', property(counted))
    return calls


def test_read_config_text_is_mmengines_and_formatted_once_per_content(repo, monkeypatch):
    """Catches a memo that changes what is written (a text other than Config's), one that
    formats on every call (the Runner's four calls per run), and one that keeps a stale text
    after the config changed (a work dir's dump from the previous stage)."""
    path = str(repo / TOY)
    want = Config.fromfile(path).pretty_text
    launch.FormattedOnceConfig._last = None
    calls = _count_formatting(monkeypatch)
    cfg = launch.read_config(path)
    assert isinstance(cfg, Config) and cfg.filename == path
    copied = copy.deepcopy(cfg)  # what the Runner keeps
    assert isinstance(copied, launch.FormattedOnceConfig)
    assert [cfg.pretty_text, copied.pretty_text, cfg.pretty_text] == [want] * 3
    assert len(calls) == 1
    copied.train_cfg.max_iters = 7
    changed = copied.pretty_text
    assert len(calls) == 2 and changed != want and 'max_iters=7' in changed
    assert cfg.pretty_text == want and len(calls) == 3
