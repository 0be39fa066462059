"""The safe loader's checks of a HistoryBuffer (the one object a Runner checkpoint holds that
is not plain data), one malformed field at a time, through a real ``torch.save`` file: each
refusal names the file, where the buffer sits and what is wrong with it, exactly."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from mmengine.logging import HistoryBuffer

from sidt_mmdet.utils.safe_load import (
    CorruptCheckpointError,
    UnsafeCheckpointError,
    load_checkpoint_safe,
)

HB = f'{HistoryBuffer.__module__}.{HistoryBuffer.__qualname__}'

# attrs set on a HistoryBuffer -> what the refusal says it carries
CASES = {
    'max_length a str': (dict(max_length='5'), 'max_length is a str'),
    'log history a list': (dict(_log_history=[1.0, 2.0]),
                           '_log_history is a list, expected a numeric numpy array'),
    'count history a list': (dict(_count_history=[1, 1]),
                             '_count_history is a list, expected a numeric numpy array'),
    'statistics a list': (dict(_statistics_methods=['mean']), '_statistics_methods is a list'),
    # the first problem found is the one named; the statistics are not read past it
    'two problems': (dict(max_length='5', _statistics_methods=['mean']), 'max_length is a str'),
    'statistic under another name': (
        dict(_statistics_methods={'evil': HistoryBuffer.mean}),
        f"_statistics_methods['evil'] is {HB}.mean, not HistoryBuffer.evil"),
    'statistic under a number': (
        dict(_statistics_methods={5: HistoryBuffer.mean}),
        f'_statistics_methods[5] is {HB}.mean, not HistoryBuffer.5'),
    'the class as a statistic': (
        dict(_statistics_methods={'mean': HistoryBuffer}),
        f"_statistics_methods['mean'] is {HB}, not HistoryBuffer.mean"),
}


@pytest.mark.parametrize('case', list(CASES))
def test_a_malformed_history_buffer_is_refused_with_what_is_wrong(tmp_path, case,
                                                                 monkeypatch):
    """Catches each check of a HistoryBuffer's fields being skipped, reading the wrong field,
    running past the first problem (a crash on the second), or describing the wrong value."""
    attrs, carries = CASES[case]
    buf = HistoryBuffer([1.0, 2.0], [1, 1])
    vars(buf).update(attrs)
    # the pickled state as a crafted file can hold it: mmengine's __setstate__ merges
    # ``statistics_methods`` into its defaults, then sets every attribute of the state as is
    monkeypatch.setattr(HistoryBuffer, '__getstate__',
                        lambda self: dict(vars(self), statistics_methods={}))
    path = tmp_path / 'ckpt.pth'
    torch.save({'message_hub': {'log_scalars': {'train/loss': buf}}}, path)
    with pytest.raises(UnsafeCheckpointError) as err:
        load_checkpoint_safe(path)
    assert str(err.value) == (
        f"refused {str(path)!r}: the HistoryBuffer at checkpoint['message_hub']['log_scalars']"
        f"['train/loss'] carries {carries}")


def test_a_well_formed_history_buffer_loads(tmp_path):
    """The reference for the cases above: the same buffer, unchanged, loads and computes."""
    buf = HistoryBuffer([1.0, 2.0], [1, 1])
    path = tmp_path / 'ckpt.pth'
    torch.save({'message_hub': {'log_scalars': {'train/loss': buf}}}, path)
    got = load_checkpoint_safe(path)['message_hub']['log_scalars']['train/loss']
    assert got.mean() == 1.5 and np.array_equal(got.data[0], [1.0, 2.0])


def test_a_corrupt_checkpoint_quotes_the_first_line_of_torchs_error(tmp_path):
    """Catches the reason being lost or replaced: the message ends with the first line of the
    error torch.load itself raises on the file (read here from torch, not from our code)."""
    path = tmp_path / 'ckpt.pth'
    torch.save({'w': torch.randn(64, 64)}, path)
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(Exception) as theirs:
        torch.load(path, weights_only=True)
    first = str(theirs.value).strip().splitlines()[0]
    assert first
    with pytest.raises(CorruptCheckpointError) as err:
        load_checkpoint_safe(path)
    assert str(err.value).endswith(f'torch said: {first})'), str(err.value)
