"""Subnet.from_dict on a document edited by hand: every refusal, word for word.

A user who edits a subnet file (or writes one from another tool) reads these messages to
find the key to fix, so each case checks the whole message: the key it names, what was
expected and what was found. A check that is skipped, tests the wrong key or names the
wrong one fails its row.
"""
from __future__ import annotations

import copy
import hashlib
import json

import pytest

from sidt_mmdet.models import Subnet, SubnetError

_TOP = ("['arch', 'blocks', 'budget', 'embed', 'format', 'lowrank', 'source', 'stats', "
        "'version']")


def _doc() -> dict:
    """A valid document: 8 channels, 2 blocks of 2 heads of 4 dims, 16 MLP units."""
    return Subnet.dense(8, 2, 2, 16).to_dict()


def _edit(path: str, value):
    def apply(doc):
        *keys, last = path.split('.')
        node = doc
        for k in keys:
            node = node[int(k)] if isinstance(node, list) else node[k]
        if value is _DROP:
            del node[last]
        elif isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value
        return doc
    return apply


_DROP = object()

CASES = [
    # (edit, message); the document is refused under the name 'subnet'
    (lambda d: [], 'subnet: expected a JSON object, got list'),
    (_edit('format', 'other'), 'subnet: "format" must be \'sidt-subnet\', got \'other\''),
    (_edit('format', _DROP), 'subnet: "format" must be \'sidt-subnet\', got None'),
    (_edit('version', 2), 'subnet: unknown subnet version 2 (this sidt_mmdet reads version 1)'),
    (_edit('version', True),
     'subnet: unknown subnet version True (this sidt_mmdet reads version 1)'),
    (_edit('version', '1'),
     "subnet: unknown subnet version '1' (this sidt_mmdet reads version 1)"),
    (_edit('extra', 1), f"subnet: unknown keys ['extra']; expected keys {_TOP}"),
    (_edit('arch', _DROP), 'subnet: missing "arch" object'),
    (_edit('arch', [8, 2, 2, 16]), 'subnet: missing "arch" object'),
    (lambda d: _edit('blocks', _DROP)(_edit('arch.num_heads', _DROP)(d)),
     "subnet: missing keys ['arch.num_heads', 'blocks']"),
    (_edit('blocks', _DROP), "subnet: missing keys ['blocks']"),
    (_edit('arch.depth', 2), "subnet: arch: unknown keys ['depth']; expected "
                             "['embed_dims', 'num_layers', 'num_heads', 'mlp_hidden']"),
    (_edit('budget', []), 'subnet: "budget" must be an object, got list'),
    (_edit('stats', 'x'), 'subnet: "stats" must be an object, got str'),
    (_edit('source', 3), 'subnet: "source" must be an object, got int'),
    # indices the writer would have sorted
    (_edit('embed', [1, 0]), 'subnet: embed: indices must be sorted ascending, got [1, 0]'),
    (_edit('blocks.1.mlp', [0, 0]), 'subnet: blocks[1].mlp: indices must be unique, got [0, 0]'),
    (_edit('blocks.0.qk.1', [3, 2]),
     'subnet: blocks[0].qk[1]: indices must be sorted ascending, got [3, 2]'),
    (_edit('blocks.1.v.0', [0, 2, 1]),
     'subnet: blocks[1].v[0]: indices must be sorted ascending, got [0, 2, 1]'),
    (_edit('blocks.0.mlp', list(range(10, 0, -1))),
     'subnet: blocks[0].mlp: indices must be sorted ascending, got [10, 9, 8, 7, 6, 5, 4, 3]...'),
    (_edit('blocks.0.mlp', [8, 0, 1, 2, 3, 4, 5, 6, 7]),
     'subnet: blocks[0].mlp: indices must be sorted ascending, got [8, 0, 1, 2, 3, 4, 5, 6]...'),
    (_edit('blocks.0.mlp', [3, 2, 1, 0, 4, 5, 6, 7]),
     'subnet: blocks[0].mlp: indices must be sorted ascending, got [3, 2, 1, 0, 4, 5, 6, 7]'),
    # the architecture
    (_edit('arch.embed_dims', True),
     'subnet: arch.embed_dims: expected a positive integer, got True'),
    (_edit('arch.num_layers', 0), 'subnet: arch.num_layers: expected a positive integer, got 0'),
    (_edit('arch.num_heads', '2'),
     "subnet: arch.num_heads: expected a positive integer, got '2'"),
    (_edit('arch.mlp_hidden', -16),
     'subnet: arch.mlp_hidden: expected a positive integer, got -16'),
    (_edit('arch.num_heads', 3), 'subnet: arch: num_heads=3 does not divide embed_dims=8'),
    (_edit('arch.num_layers', 3),
     'subnet: blocks: expected 3 blocks (arch.num_layers), got 2'),
    (_edit('blocks', None), 'subnet: blocks: expected 2 blocks (arch.num_layers), got None'),
    (_edit('blocks', {'0': {}}),
     "subnet: blocks: expected 2 blocks (arch.num_layers), got {'0': {}}"),
    # embedding channels
    (_edit('embed', []), 'subnet: embed: keeps no embedding channel'),
    (_edit('embed', [0, 8]), 'subnet: embed: indices must lie in [0, 8), got range [0, 8]'),
    (_edit('embed', [-1, 3]), 'subnet: embed: indices must lie in [0, 8), got range [-1, 3]'),
    (_edit('embed', 3), 'subnet: embed: expected a list of indices, got int'),
    # blocks
    (_edit('blocks.0', []), 'subnet: blocks[0]: expected a dict with exactly the keys "qk", '
                            '"v", "mlp"'),
    (_edit('blocks.0', [7]), 'subnet: blocks[0]: expected a dict with exactly the keys "qk", '
                             '"v", "mlp"'),
    (_edit('blocks.1.mlp', _DROP), 'subnet: blocks[1]: expected a dict with exactly the keys '
                                   '"qk", "v", "mlp"'),
    (_edit('blocks.1.attn', []), 'subnet: blocks[1]: expected a dict with exactly the keys '
                                 '"qk", "v", "mlp", got unknown keys [\'attn\']'),
    (_edit('blocks.0.qk', [[0]]),
     'subnet: blocks[0].qk: expected one index list per head (2 heads)'),
    (_edit('blocks.1.v', 'all'),
     'subnet: blocks[1].v: expected one index list per head (2 heads)'),
    (_edit('blocks.0.v.1', [0, 4]),
     'subnet: blocks[0].v[1]: indices must lie in [0, 4), got range [0, 4]'),
    (_edit('blocks.0.qk.0', [0, True]),
     'subnet: blocks[0].qk[0]: indices must be integers, got True'),
    (_edit('blocks.1.mlp', [0, 1.0]),
     'subnet: blocks[1].mlp: indices must be integers, got 1.0'),
    (_edit('blocks.1.mlp', ['a' * 60]),
     "subnet: blocks[1].mlp: indices must be integers, got '" + 'a' * 39),
    (_edit('blocks.0.mlp', None), 'subnet: blocks[0].mlp: expected a list of indices, got '
                                  'NoneType'),
    (_edit('blocks.1.v', [[], []]),
     'subnet: blocks[1]: keeps no attention head (every v list is empty)'),
    (_edit('blocks.0.mlp', []), 'subnet: blocks[0].mlp: keeps no MLP hidden unit'),
    # the low-rank record
    (_edit('lowrank', []), 'subnet: lowrank: expected {"method": ..., "ranks": {name: rank}}'),
    (_edit('lowrank', {'method': 'svd'}),
     'subnet: lowrank: expected {"method": ..., "ranks": {name: rank}}'),
    (_edit('lowrank', {'method': 'svd', 'ranks': {'blocks.0.mlp.fc1': 0}}),
     "subnet: lowrank.ranks['blocks.0.mlp.fc1']: expected a positive integer, got 0"),
    (_edit('lowrank', {'method': 'svd', 'ranks': {'a': 2, 'b': True}}),
     "subnet: lowrank.ranks['b']: expected a positive integer, got True"),
    (_edit('lowrank', {'method': 'svd', 'ranks': {'a': 2.0}}),
     "subnet: lowrank.ranks['a']: expected a positive integer, got 2.0"),
]


@pytest.mark.parametrize('edit,message', CASES, ids=[m for _, m in CASES])
def test_each_refusal_names_the_key_and_what_was_expected(edit, message):
    with pytest.raises(SubnetError) as err:
        Subnet.from_dict(edit(_doc()))
    assert str(err.value) == message


def test_accepted_edits_keep_what_the_file_says():
    """Catches an optional record that is dropped, or replaced when present: absent or null
    records read as empty, present ones as written; a head without v dims loses its q/k
    dims; indices come back sorted when built in code."""
    doc = _doc()
    doc['budget'] = None
    del doc['stats']
    doc['source'] = dict(checkpoint='search.pth')
    doc['blocks'][1]['v'][0] = []
    doc['embed'] = [0, 2, 5]
    doc['lowrank'] = dict(method='svd', ranks={'blocks.0.mlp.fc1': 3, 'blocks.1.mlp.fc2': 1})
    sub = Subnet.from_dict(doc)
    assert (sub.budget, sub.stats, sub.source) == ({}, {}, dict(checkpoint='search.pth'))
    assert sub.blocks[1]['qk'] == [[], [0, 1, 2, 3]] and sub.active_heads(1) == [1]
    assert sub.embed == [0, 2, 5] and sub.kept_embed == [0, 2, 5]
    assert sub.lowrank == dict(method='svd', ranks={'blocks.0.mlp.fc1': 3, 'blocks.1.mlp.fc2': 1})
    built = Subnet(8, 1, 2, 16, blocks=[dict(qk=[[3, 0], [1]], v=[[2, 1], [0]], mlp=[9, 4])],
                   embed=[7, 1])
    assert built.blocks == [dict(qk=[[0, 3], [1]], v=[[1, 2], [0]], mlp=[4, 9])]
    assert built.embed == [1, 7] and built.qk_union(0) == [0, 1, 3]


def test_in_code_duplicates_are_refused_without_the_file_prefix():
    """Catches the uniqueness check of an index list built in code (the file's sorted-order
    check sees duplicates first, so only this path reaches it)."""
    with pytest.raises(SubnetError) as err:
        Subnet(8, 1, 2, 16, blocks=[dict(qk=[[0], [1]], v=[[0], [1, 1]], mlp=[0])])
    assert str(err.value) == 'blocks[0].v[1]: indices must be unique'


def test_digest_covers_the_kept_indices_only():
    """Catches a digest that changes with the record (a pruned checkpoint would be refused
    after its subnet's budget note was edited) or misses an index. Checked against sha256
    of the canonical JSON of arch, embed and blocks, computed here."""
    sub = Subnet.from_dict(_doc())
    canon = json.dumps(dict(arch=sub.arch, embed=None, blocks=sub.blocks), sort_keys=True,
                       separators=(',', ':'))
    assert sub.digest() == hashlib.sha256(canon.encode()).hexdigest()[:16]
    other = copy.deepcopy(sub)
    other.budget, other.stats, other.source = dict(k=1), dict(m=2), dict(c='x')
    other.lowrank = dict(method='svd', ranks={'blocks.0.mlp.fc1': 2})
    assert other.digest() == sub.digest()
    other.blocks[1]['mlp'] = other.blocks[1]['mlp'][:-1]
    assert other.digest() != sub.digest()
    other = copy.deepcopy(sub)
    other.embed = [0, 1]
    assert other.digest() != sub.digest()


def test_check_arch_names_every_field_that_differs():
    sub = Subnet.dense(8, 2, 2, 16)
    sub.check_arch(8, 2, 2, 16)
    with pytest.raises(SubnetError) as err:
        sub.check_arch(16, 2, 4, 16, where='pruned.pth')
    assert str(err.value) == ('pruned.pth does not fit the architecture: embed_dims: subnet '
                              'has 8, model has 16; num_heads: subnet has 2, model has 4')
    with pytest.raises(SubnetError) as err:
        sub.check_arch(8, 3, 2, 32)
    assert str(err.value) == ('subnet does not fit the architecture: num_layers: subnet has '
                              '2, model has 3; mlp_hidden: subnet has 16, model has 32')


def test_widths_and_coerce():
    sub = Subnet.from_dict(_edit('blocks.0.qk.1', [1])(_doc()))
    assert sub.widths() == [dict(qk=[4, 1], v=[4, 4], mlp=16), dict(qk=[4, 4], v=[4, 4], mlp=16)]
    assert Subnet.coerce(sub) is sub
    assert Subnet.coerce(sub.to_dict()) == sub
    with pytest.raises(SubnetError) as err:
        Subnet.coerce(3)
    assert str(err.value) == 'subnet: expected a Subnet, dict or path, got int'
