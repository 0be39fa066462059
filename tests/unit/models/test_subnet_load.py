"""Subnet.load's refusals, message by message: each names the file and says what was expected
(a user reads them after passing the wrong path to ``--subnet`` or ``subnet=``)."""
from __future__ import annotations

import json
import re

import pytest
import torch

from sidt_mmdet.models import Subnet, SubnetError


def _refusal(path, error=SubnetError) -> str:
    with pytest.raises(error) as err:
        Subnet.load(path)
    return str(err.value)


def test_a_directory_names_its_subnet_file_or_says_what_is_expected(tmp_path):
    """Catches the hint of a directory refusal taking the wrong branch: an export directory
    names the subnet.json inside it, any other directory says which file is expected."""
    assert _refusal(tmp_path) == (f'subnet file {tmp_path} is a directory; expected the '
                                  'subnet.json written by tools/export_subnet.py')
    Subnet.dense(16, 2, 2, 32).save(tmp_path / 'subnet.json')
    assert _refusal(tmp_path) == (f'subnet file {tmp_path} is a directory; the subnet file of '
                                  f'that export is {tmp_path / "subnet.json"}')


def test_a_missing_file_is_named(tmp_path):
    """Catches a FileNotFoundError that does not say which path was looked for."""
    path = tmp_path / 'nope.json'
    assert _refusal(path, FileNotFoundError) == f'subnet file not found: {path}'


@pytest.mark.parametrize('zipped', [True, False], ids=['zip', 'legacy-pickle'])
def test_a_checkpoint_of_either_format_is_told_apart(tmp_path, zipped):
    """Catches a header check that misses one of torch.save's two formats (zip, or the legacy
    pickle whose first byte is 0x80): both are named as checkpoints, not as bad UTF-8."""
    path = tmp_path / 'pruned.pth'
    torch.save({'w': torch.zeros(2)}, path, _use_new_zipfile_serialization=zipped)
    assert path.read_bytes()[:1] == (b'P' if zipped else b'\x80')
    assert _refusal(path) == (f'{path} is a PyTorch checkpoint (zip/pickle), not a subnet file; '
                              'the subnet file is the subnet.json written beside pruned.pth')


def test_json_nested_too_deeply_is_a_subnet_error(tmp_path):
    """Catches a RecursionError escaping (a traceback instead of one message)."""
    path = tmp_path / 'subnet.json'
    path.write_text('[' * 200_000 + ']' * 200_000)
    assert _refusal(path) == f'{path}: JSON nested too deeply to be a subnet file'


def test_a_document_refusal_names_the_file(tmp_path):
    """Catches from_dict's messages losing the path they were read from (they would name
    ``subnet``, not the file)."""
    path = tmp_path / 'subnet.json'
    path.write_text(json.dumps([1, 2]))
    assert _refusal(path) == f'{path}: expected a JSON object, got list'
    doc = Subnet.dense(16, 2, 2, 32).to_dict()
    doc['format'] = 'other'
    path.write_text(json.dumps(doc))
    assert re.match(rf'{re.escape(str(path))}: "format" must be ', _refusal(path))


def test_dense_subnet_lists_are_independent():
    """Catches lists shared between heads or blocks of Subnet.dense (a script that drops a
    dim of one head would drop it from every head, or every block)."""
    sub = Subnet.dense(16, 3, 2, 32)
    sub.blocks[0]['qk'][0].remove(3)
    sub.blocks[0]['mlp'].remove(5)
    assert sub.widths() == [dict(qk=[7, 8], v=[8, 8], mlp=31),
                            dict(qk=[8, 8], v=[8, 8], mlp=32),
                            dict(qk=[8, 8], v=[8, 8], mlp=32)]


def test_to_dict_is_a_deep_copy_that_round_trips():
    """Catches a field dropped from the file form, or shared with it (editing the written
    dict would edit the subnet): every field comes back from from_dict, and changing the
    dict's nested values leaves the subnet as it was."""
    sub = Subnet.dense(16, 2, 2, 32)
    sub.lowrank = {'method': 'svd', 'ranks': {'blocks.0.mlp.fc1': 4}}
    sub.budget = dict(kind='keep_ratio', value=0.5, input_size=[32, 32])
    sub.stats = dict(macs_after=10, input_size=[32, 32])
    sub.source = dict(checkpoints=['search.pth'])
    doc = sub.to_dict()
    back = Subnet.from_dict(json.loads(json.dumps(doc)))
    for field in ('blocks', 'lowrank', 'budget', 'stats', 'source', 'embed'):
        assert getattr(back, field) == getattr(sub, field), field
    doc['blocks'][0]['mlp'].append(99)
    doc['lowrank']['ranks']['blocks.0.mlp.fc1'] = 2
    for field in ('budget', 'stats'):
        doc[field]['input_size'].append(3)
    doc['source']['checkpoints'].append('other.pth')
    assert sub.blocks[0]['mlp'][-1] == 31
    assert sub.lowrank == {'method': 'svd', 'ranks': {'blocks.0.mlp.fc1': 4}}
    assert sub.budget['input_size'] == sub.stats['input_size'] == [32, 32]
    assert sub.source == dict(checkpoints=['search.pth'])
