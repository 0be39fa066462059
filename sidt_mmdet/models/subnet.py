"""The subnet file: which dimensions of a SIDTViT survive pruning.

It lives next to the models (not in ``search/``) because the pruned backbone is
built from it and must not import the search code. A subnet is plain data
(JSON), versioned, validated on load, and written atomically.

Layout (version 1)::

    {"format": "sidt-subnet", "version": 1,
     "arch": {"embed_dims": 768, "num_layers": 12, "num_heads": 12, "mlp_hidden": 3072},
     "embed": [kept residual channels] or null (all kept),
     "blocks": [{"qk": [[kept q/k dims of head 0], ...], "v": [[kept v dims of head 0], ...],
                 "mlp": [kept hidden units]}, ...],
     "lowrank": null or {"method": "svd", "ranks": {"blocks.0.attn.qkv": 64, ...}},
     "budget": {...}, "stats": {...}, "source": {...}}

Indices are within the dense layer: head dims in ``[0, head_dim)``, MLP units in
``[0, mlp_hidden)``, embedding channels in ``[0, embed_dims)``; sorted, unique.
A head whose ``v`` list is empty contributes nothing and is dropped together with
its q/k dims (normalised on construction, so counts stay exact).
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
from dataclasses import dataclass, field
from typing import Any

from ..utils.fileio import write_json_atomic

__all__ = ['Subnet', 'SubnetError', 'SUBNET_VERSION']

SUBNET_FORMAT = 'sidt-subnet'
SUBNET_VERSION = 1
_ARCH_KEYS = ('embed_dims', 'num_layers', 'num_heads', 'mlp_hidden')
_TOP_KEYS = {'format', 'version', 'arch', 'embed', 'blocks', 'lowrank', 'budget', 'stats',
             'source'}
_BLOCK_KEYS = {'qk', 'v', 'mlp'}


class SubnetError(ValueError):
    """A subnet that is malformed or does not fit the architecture."""


def _index_list(value: Any, upper: int, where: str) -> list[int]:
    if not isinstance(value, (list, tuple)):
        raise SubnetError(f'{where}: expected a list of indices, got {type(value).__name__}')
    out = []
    for v in value:
        if isinstance(v, bool) or not isinstance(v, int):
            raise SubnetError(f'{where}: indices must be integers, got {v!r:.40}')
        out.append(v)
    if len(set(out)) != len(out):
        raise SubnetError(f'{where}: indices must be unique')
    if out and (min(out) < 0 or max(out) >= upper):
        raise SubnetError(f'{where}: indices must lie in [0, {upper}), '
                          f'got range [{min(out)}, {max(out)}]')
    return sorted(out)


def _check_sorted(data: dict, where: str) -> None:
    """A subnet file lists indices ascending (as :meth:`Subnet.save` writes them): a file
    that does not was edited by hand or written by something else, and is refused rather
    than silently reordered."""
    lists = [('embed', data.get('embed'))]
    blocks = data.get('blocks')
    for i, blk in enumerate(blocks if isinstance(blocks, list) else []):
        if isinstance(blk, dict):
            lists.append((f'blocks[{i}].mlp', blk.get('mlp')))
            for key in ('qk', 'v'):
                heads = blk.get(key)
                lists += [(f'blocks[{i}].{key}[{h}]', x) for h, x in
                          enumerate(heads if isinstance(heads, list) else [])]
    for name, value in lists:
        if isinstance(value, list) and all(type(v) is int for v in value) and \
                any(a >= b for a, b in zip(value, value[1:])):
            problem = 'unique' if len(set(value)) < len(value) else 'sorted ascending'
            raise SubnetError(f'{where}: {name}: indices must be {problem}, got '
                              f'{value[:8]}{"..." if len(value) > 8 else ""}')


@dataclass
class Subnet:
    """Kept indices per block of a SIDTViT, plus the record of how they were chosen."""

    embed_dims: int
    num_layers: int
    num_heads: int
    mlp_hidden: int
    blocks: list[dict]
    embed: list[int] | None = None
    lowrank: dict | None = None
    budget: dict = field(default_factory=dict)
    stats: dict = field(default_factory=dict)
    source: dict = field(default_factory=dict)

    def __post_init__(self):
        for name in ('embed_dims', 'num_layers', 'num_heads', 'mlp_hidden'):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise SubnetError(f'arch.{name}: expected a positive integer, got {value!r}')
        if self.embed_dims % self.num_heads:
            raise SubnetError(f'arch: num_heads={self.num_heads} does not divide '
                              f'embed_dims={self.embed_dims}')
        if not isinstance(self.blocks, (list, tuple)) or len(self.blocks) != self.num_layers:
            got = len(self.blocks) if isinstance(self.blocks, (list, tuple)) else self.blocks
            raise SubnetError(f'blocks: expected {self.num_layers} blocks (arch.num_layers), '
                              f'got {got}')
        if self.embed is not None:
            self.embed = _index_list(self.embed, self.embed_dims, 'embed')
            if not self.embed:
                raise SubnetError('embed: keeps no embedding channel')
        head_dim = self.head_dim
        blocks = []
        for i, blk in enumerate(self.blocks):
            where = f'blocks[{i}]'
            if not isinstance(blk, dict) or set(blk) != _BLOCK_KEYS:
                extra = sorted(map(str, set(blk) - _BLOCK_KEYS)) if isinstance(blk, dict) else []
                raise SubnetError(f'{where}: expected a dict with exactly the keys "qk", "v", '
                                  f'"mlp"' + (f', got unknown keys {extra}' if extra else ''))
            qk, v = blk['qk'], blk['v']
            for key, lists in (('qk', qk), ('v', v)):
                if not isinstance(lists, (list, tuple)) or len(lists) != self.num_heads:
                    raise SubnetError(f'{where}.{key}: expected one index list per head '
                                      f'({self.num_heads} heads)')
            qk = [_index_list(q, head_dim, f'{where}.qk[{h}]') for h, q in enumerate(qk)]
            v = [_index_list(x, head_dim, f'{where}.v[{h}]') for h, x in enumerate(v)]
            # A head without v dims outputs exactly zero: its q/k dims are dead weight.
            qk = [q if x else [] for q, x in zip(qk, v)]
            if not any(v):
                raise SubnetError(f'{where}: keeps no attention head (every v list is empty)')
            mlp = _index_list(blk['mlp'], self.mlp_hidden, f'{where}.mlp')
            if not mlp:
                raise SubnetError(f'{where}.mlp: keeps no MLP hidden unit')
            blocks.append(dict(qk=qk, v=v, mlp=mlp))
        self.blocks = blocks
        if self.lowrank is not None:
            if (not isinstance(self.lowrank, dict)
                    or not isinstance(self.lowrank.get('ranks'), dict)):
                raise SubnetError('lowrank: expected {"method": ..., "ranks": {name: rank}}')
            for name, rank in self.lowrank['ranks'].items():
                if isinstance(rank, bool) or not isinstance(rank, int) or rank <= 0:
                    raise SubnetError(f'lowrank.ranks[{name!r}]: expected a positive integer, '
                                      f'got {rank!r}')

    # ------------------------------------------------------------------ views
    @property
    def head_dim(self) -> int:
        return self.embed_dims // self.num_heads

    @property
    def kept_embed(self) -> list[int]:
        return list(range(self.embed_dims)) if self.embed is None else list(self.embed)

    @property
    def arch(self) -> dict:
        return dict(embed_dims=self.embed_dims, num_layers=self.num_layers,
                    num_heads=self.num_heads, mlp_hidden=self.mlp_hidden)

    def active_heads(self, block: int) -> list[int]:
        """Heads of ``block`` that survive: those keeping at least one v dim."""
        return [h for h, dims in enumerate(self.blocks[block]['v']) if dims]

    def qk_union(self, block: int) -> list[int]:
        """Head dims kept as q/k by any head of ``block``: the columns a pruned
        block keeps of its relative-position tables."""
        return sorted({j for dims in self.blocks[block]['qk'] for j in dims})

    def widths(self) -> list[dict]:
        """Per block: kept q/k and v dims per head and MLP units (for tables and plots)."""
        return [dict(qk=[len(q) for q in b['qk']], v=[len(x) for x in b['v']],
                     mlp=len(b['mlp'])) for b in self.blocks]

    def digest(self) -> str:
        """Fingerprint of what is kept (arch and kept indices), not of the record: a pruned
        checkpoint stores it, so loading checks it came from this subnet. The low-rank
        ranks are left out: factorizing keeps the kept indices (and changes the shapes,
        which are checked anyway)."""
        doc = dict(arch=self.arch, embed=self.embed, blocks=self.blocks)
        text = json.dumps(doc, sort_keys=True, separators=(',', ':'))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def check_arch(self, embed_dims: int, num_layers: int, num_heads: int,
                   mlp_hidden: int, where: str = 'subnet') -> None:
        """Raise a :class:`SubnetError` naming every field that differs from the model."""
        want = dict(embed_dims=embed_dims, num_layers=num_layers, num_heads=num_heads,
                    mlp_hidden=mlp_hidden)
        diffs = [f'{k}: subnet has {getattr(self, k)}, model has {v}'
                 for k, v in want.items() if getattr(self, k) != v]
        if diffs:
            raise SubnetError(f'{where} does not fit the architecture: ' + '; '.join(diffs))

    # ---------------------------------------------------------------- (de)ser
    def to_dict(self) -> dict:
        return dict(format=SUBNET_FORMAT, version=SUBNET_VERSION, arch=self.arch,
                    embed=self.embed, blocks=copy.deepcopy(self.blocks),
                    lowrank=copy.deepcopy(self.lowrank), budget=copy.deepcopy(self.budget),
                    stats=copy.deepcopy(self.stats), source=copy.deepcopy(self.source))

    @classmethod
    def from_dict(cls, data: dict, where: str = 'subnet') -> Subnet:
        """Validate a subnet document (the JSON object of a subnet file).

        Raises:
            SubnetError: anything that does not describe a subnet: wrong type, missing or
                unknown key, index out of range, ...; the message names ``where`` and the key.
        """
        if not isinstance(data, dict):
            raise SubnetError(f'{where}: expected a JSON object, got {type(data).__name__}')
        if data.get('format') != SUBNET_FORMAT:
            raise SubnetError(f'{where}: "format" must be {SUBNET_FORMAT!r}, '
                              f'got {data.get("format")!r}')
        version = data.get('version')
        if type(version) is not int or version != SUBNET_VERSION:
            raise SubnetError(f'{where}: unknown subnet version {version!r} '
                              f'(this sidt_mmdet reads version {SUBNET_VERSION})')
        unknown = sorted(map(str, set(data) - _TOP_KEYS))
        if unknown:
            raise SubnetError(f'{where}: unknown keys {unknown}; expected keys '
                              f'{sorted(_TOP_KEYS)}')
        arch = data.get('arch')
        if not isinstance(arch, dict):
            raise SubnetError(f'{where}: missing "arch" object')
        missing = [f'arch.{k}' for k in _ARCH_KEYS if k not in arch] + \
            [k for k in ('blocks',) if k not in data]
        if missing:
            raise SubnetError(f'{where}: missing keys {missing}')
        unknown = sorted(map(str, set(arch) - set(_ARCH_KEYS)))
        if unknown:
            raise SubnetError(f'{where}: arch: unknown keys {unknown}; expected '
                              f'{list(_ARCH_KEYS)}')
        records = {}
        for key in ('budget', 'stats', 'source'):
            value = data.get(key)
            if value is not None and not isinstance(value, dict):
                raise SubnetError(f'{where}: "{key}" must be an object, got '
                                  f'{type(value).__name__}')
            records[key] = value or {}
        _check_sorted(data, where)
        try:
            return cls(embed_dims=arch['embed_dims'], num_layers=arch['num_layers'],
                       num_heads=arch['num_heads'], mlp_hidden=arch['mlp_hidden'],
                       blocks=data['blocks'], embed=data.get('embed'),
                       lowrank=data.get('lowrank'), **records)
        except SubnetError as e:
            raise SubnetError(f'{where}: {e}') from None

    @classmethod
    def load(cls, path: str | os.PathLike) -> Subnet:
        """Read and validate a subnet file.

        Raises:
            FileNotFoundError: ``path`` does not exist.
            SubnetError: ``path`` is a directory, not UTF-8 JSON (e.g. a checkpoint), or a
                document that does not describe a subnet; the message names the file.
        """
        path = os.fspath(path)
        if os.path.isdir(path):
            inside = os.path.join(path, 'subnet.json')
            hint = (f'; the subnet file of that export is {inside}' if os.path.isfile(inside)
                    else '; expected the subnet.json written by tools/export_subnet.py')
            raise SubnetError(f'subnet file {path} is a directory{hint}')
        if not os.path.isfile(path):
            raise FileNotFoundError(f'subnet file not found: {path}')
        with open(path, 'rb') as f:
            raw = f.read()
        if raw[:4] == b'PK\x03\x04' or raw[:1] == b'\x80':
            raise SubnetError(f'{path} is a PyTorch checkpoint (zip/pickle), not a subnet file; '
                              'the subnet file is the subnet.json written beside pruned.pth')
        try:
            data = json.loads(raw.decode('utf-8'))
        except UnicodeDecodeError as e:
            raise SubnetError(f'{path}: not a subnet file (not UTF-8 text: byte '
                              f'{raw[e.start]:#04x} at offset {e.start}); expected JSON') from None
        except json.JSONDecodeError as e:
            raise SubnetError(f'{path}: not valid JSON ({e})') from None
        except RecursionError:
            raise SubnetError(f'{path}: JSON nested too deeply to be a subnet file') from None
        return cls.from_dict(data, where=path)

    def save(self, path: str | os.PathLike) -> None:
        """Write atomically: a reader never sees a half-written subnet file."""
        write_json_atomic(path, self.to_dict())

    @classmethod
    def coerce(cls, subnet: Subnet | dict | str | os.PathLike) -> Subnet:
        """Accept a Subnet, its dict form, or a path to its JSON file."""
        if isinstance(subnet, Subnet):
            return subnet
        if isinstance(subnet, dict):
            return cls.from_dict(subnet)
        if isinstance(subnet, (str, os.PathLike)):
            return cls.load(subnet)
        raise SubnetError(f'subnet: expected a Subnet, dict or path, got {type(subnet).__name__}')

    @classmethod
    def dense(cls, embed_dims: int, num_layers: int, num_heads: int, mlp_hidden: int) -> Subnet:
        """The subnet that keeps everything (useful as a starting point in scripts and tests)."""
        d = embed_dims // num_heads
        # new lists for every head of every block: editing one leaves the others as they are
        return cls(embed_dims, num_layers, num_heads, mlp_hidden,
                   blocks=[dict(qk=[list(range(d)) for _ in range(num_heads)],
                                v=[list(range(d)) for _ in range(num_heads)],
                                mlp=list(range(mlp_hidden))) for _ in range(num_layers)])
