"""One strict loader with one mismatch report."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from sidt_mmdet.utils.state_dict import (
    StateDictMismatchError,
    compare_state_dicts,
    load_state_dict_strict,
    state_dict_of,
    strip_prefix,
)


def test_strip_prefix_and_state_dict_of():
    w = torch.zeros(2)
    assert strip_prefix({'module.a': w, 'b': w}) == {'a': w, 'b': w}
    assert list(state_dict_of({'state_dict': {'module.x': w}, 'meta': {}}, 'c.pth')) == ['x']
    assert list(state_dict_of({'x': w}, 'c.pth')) == ['x']
    for bad in ({'meta': {}}, {'state_dict': {'a': 1}}, [w], {}):
        with pytest.raises(ValueError, match='c.pth: holds no state dict'):
            state_dict_of(bad, 'c.pth')


def test_mismatch_report_and_strict_load():
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    good = {k: torch.ones_like(v) for k, v in model.state_dict().items()}
    load_state_dict_strict(model, good, 'a.pth', 'the model')
    assert all(torch.equal(v, torch.ones_like(v)) for v in model.state_dict().values())

    bad = dict(good)
    del bad['0.bias']
    bad['extra'] = torch.zeros(1)
    bad['1.weight'] = torch.zeros(3, 3)
    report = compare_state_dicts(model.state_dict(), bad)
    assert report.missing == ['0.bias'] and report.unexpected == ['extra']
    assert report.shapes == ['1.weight: checkpoint (3, 3) vs model (2, 4)']
    with pytest.raises(StateDictMismatchError, match=r'a.pth does not fit the model; missing '
                       r'keys: 0.bias; unexpected keys: extra; shape mismatches: 1.weight'):
        load_state_dict_strict(model, bad, 'a.pth', 'the model')
    assert not compare_state_dicts(model.state_dict(), good)
