"""The bad-input table: each row hands a user-facing tool one wrong input and asserts one
clear refusal that names the file/key at fault and what was expected, and that no partial
output is left. The table of docs/reliability.md is generated from ``CASES``:
``python tests/integration/test_bad_inputs.py`` prints it.

Tools: ``tools/export_subnet.py`` and ``tools/lowrank.py`` (the library ``main`` they call,
in this process), ``SIDTViT(mode='pruned', subnet=...)``, and ``tools/train.py`` /
``tools/test.py`` with our configs (marked slow): one case as its own subprocess, the others
together in one tests/tool_driver.py subprocess (the library calls of each tool's ``main``
and the traceback it would print).
"""
from __future__ import annotations

import copy
import json
import math
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import REPO, run_command
from tiny_search import (
    SEARCH_CFG,
    build_search_model,
    write_config,
    write_search_checkpoint,
)

from sidt_mmdet.cli import export_subnet as export_cli
from sidt_mmdet.cli import lowrank as lowrank_cli

CONFIGS = REPO / 'configs'
RETRAIN_CFG = CONFIGS / 'cifar100/sidt-retrain_cls_vit-toy-p4-kr0.6_linear_4e_toy-cifar100.py'
DENSE_CFG = CONFIGS / 'cifar100/sidt-dense_cls_vit-toy-p4_linear_6e_toy-cifar100.py'
TOY_DET_CFG = CONFIGS / 'toy/sidt-dense_retinanet_sidtvit-toy_simplefpn_100it_toy-coco.py'
E, L, H, M = 64, 4, 2, 256  # the toy CIFAR ViT: 4 blocks of 2 heads of 32, MLP 256


@dataclass(frozen=True)
class Case:
    id: str
    group: str
    tool: str        # 'export', 'lowrank', 'SIDTViT', 'train', 'test'
    wrong: str       # what is wrong, as docs/reliability.md says it
    expect: tuple    # fragments the message must contain ('{x}' = a path of the case)
    slow: bool = False


def _doc(**changes):
    from sidt_mmdet.models import Subnet
    doc = Subnet.dense(E, L, H, M).to_dict()
    for path, value in changes.items():
        target = doc
        *keys, last = path.split('/')
        for k in keys:
            target = target[int(k) if k.isdigit() else k]
        target[int(last) if last.isdigit() else last] = value
    return doc


CASES = [
    # ---------------------------------------------------------------- subnet files
    Case('subnet-not-json', 'subnet file', 'export', 'not JSON',
         ('{subnet}', 'not valid JSON')),
    Case('subnet-truncated', 'subnet file', 'export', 'truncated',
         ('{subnet}', 'not valid JSON')),
    Case('subnet-version', 'subnet file', 'export', 'unknown version (7)',
         ('{subnet}', 'unknown subnet version 7', 'reads version 1')),
    Case('subnet-layers', 'subnet file', 'export', 'wrong layer count (3 for 4)',
         ('{subnet}', 'num_layers: subnet has 3, model has 4')),
    Case('subnet-heads', 'subnet file', 'export', 'wrong head count (3 lists for 2 heads)',
         ('{subnet}', 'blocks[0].qk', '2 heads')),
    Case('subnet-range', 'subnet file', 'export', 'index out of range (MLP unit 300 of 256)',
         ('{subnet}', 'blocks[0].mlp', '[0, 256)')),
    Case('subnet-duplicate', 'subnet file', 'export', 'duplicate index',
         ('{subnet}', 'blocks[0].mlp', 'unique')),
    Case('subnet-negative', 'subnet file', 'export', 'negative index',
         ('{subnet}', 'blocks[1].v[0]', '[0, 32)')),
    Case('subnet-unsorted', 'subnet file', 'export', 'unsorted indices',
         ('{subnet}', 'blocks[0].mlp', 'sorted ascending')),
    Case('subnet-float', 'subnet file', 'export', 'float indices',
         ('{subnet}', 'blocks[0].mlp', 'indices must be integers, got 0.0')),
    Case('subnet-empty-layer', 'subnet file', 'export', 'an empty layer (no v dim in block 2)',
         ('{subnet}', 'blocks[2]', 'keeps no attention head')),
    Case('subnet-too-wide', 'subnet file', 'export', 'widths larger than the arch (40 dims of 32)',
         ('{subnet}', 'blocks[0].qk[0]', '[0, 32)')),
    Case('subnet-embed-unsearched', 'subnet file', 'export',
         'embedding indices on a model searched without the embedding mask',
         ('{subnet}', 'prunes the embedding', 'without the embedding mask')),
    Case('subnet-other-arch', 'subnet file', 'export', 'a subnet of another arch',
         ('{subnet}', 'embed_dims: subnet has 48, model has 64')),
    Case('subnet-directory', 'subnet file', 'SIDTViT', 'the subnet path is a directory',
         ('{dir}', 'is a directory', 'subnet.json')),
    Case('subnet-is-checkpoint', 'subnet file', 'SIDTViT', 'pruned.pth given as the subnet file',
         ('{subnet}', 'PyTorch checkpoint', 'subnet.json')),
    Case('subnet-missing', 'subnet file', 'SIDTViT', 'the subnet file does not exist',
         ('{subnet}', 'subnet file not found')),
    # ---------------------------------------------------------------- budgets
    Case('keep-ratio-0', 'budget', 'export', 'keep ratio 0',
         ('--keep-ratio', 'expected a value in (0, 1], got 0')),
    Case('keep-ratio-negative', 'budget', 'export', 'keep ratio -1',
         ('--keep-ratio', 'expected a value in (0, 1], got -1')),
    Case('keep-ratio-1.5', 'budget', 'export', 'keep ratio 1.5',
         ('--keep-ratio', 'expected a value in (0, 1], got 1.5')),
    Case('keep-ratio-nan', 'budget', 'export', 'keep ratio NaN',
         ('--keep-ratio', 'got nan')),
    Case('params-above-dense', 'budget', 'export', 'params above the dense model',
         ('params=', 'above the dense model')),
    Case('macs-above-dense', 'budget', 'export', 'MACs above the dense model',
         ('macs=', 'above the dense model')),
    Case('params-below-minimum', 'budget', 'export', 'params below the minimum widths',
         ('params=', 'below the smallest subnet the per-layer minimums allow')),
    Case('lowrank-energy', 'budget', 'lowrank', 'low-rank energy 1.5',
         ('--energy', 'expected a value in (0, 1], got 1.5')),
    # ---------------------------------------------------------------- checkpoints
    Case('ckpt-other-arch', 'checkpoint', 'export', 'a checkpoint of another architecture',
         ('{ckpt}', 'blocks.0.attn.qkv.weight', 'shape')),
    Case('ckpt-no-masks', 'checkpoint', 'export', 'a checkpoint without mask parameters',
         ('{ckpt}', 'no search mask parameters')),
    Case('ckpt-truncated', 'checkpoint', 'export', 'a truncated checkpoint',
         ('{ckpt}', 'truncated or corrupt')),
    Case('ckpt-not-a-checkpoint', 'checkpoint', 'export', 'not a checkpoint at all',
         ('{ckpt}', 'not a PyTorch checkpoint')),
    Case('ckpt-nan-masks', 'checkpoint', 'export', 'NaN masks',
         ('backbone.blocks.1.mlp.hidden_mask', 'NaN')),
    Case('ckpt-hostile', 'checkpoint', 'lowrank', 'a pickle that calls os.system',
         ('{ckpt}', 'system', 'allow-list')),
    Case('ckpt-truncated-lowrank', 'checkpoint', 'lowrank', 'a truncated checkpoint',
         ('{ckpt}', 'truncated or corrupt')),
    # ---------------------------------------------------------------- data and paths
    Case('out-unwritable', 'paths', 'export', 'an output directory that cannot be created',
         ('{out}', 'is not a directory')),
    Case('out-not-empty', 'paths', 'export', 'an output directory that exists and is not empty',
         ('{out}', 'not empty', '--overwrite')),
    Case('data-root-missing', 'data', 'train', 'missing data root',
         ('{data}', 'cifar-100-python'), slow=True),
    Case('ann-file-missing', 'data', 'train', 'missing annotation file',
         ('{ann}',), slow=True),
    # ---------------------------------------------------------------- stage hand-offs
    Case('retrain-from-search-ckpt', 'hand-off', 'train',
         'a search checkpoint as load_from of the retrain config',
         ('{ckpt}', '{subnet}', 'search checkpoint', 'export_subnet.py'), slow=True),
    Case('test-search-ckpt-dense-cfg', 'hand-off', 'test',
         'a search checkpoint evaluated with the dense config',
         ('{ckpt}', 'masks would be dropped'), slow=True),
    Case('search-plain-optimizer', 'hand-off', 'train',
         "a search with mmengine's plain optimizer constructor",
         ('SIDTLayerDecayOptimWrapperConstructor', 'mask_lr', 'weight_decay'), slow=True),
    Case('search-diverges', 'hand-off', 'train',
         'a search that diverges (mask lr 3e37: masks near 3e38 after one step, NaN after two)',
         ('no longer finite', 'backbone.blocks.', 'NaN', 'after iteration 2'), slow=True),
]


def readme_table() -> str:
    lines = ['| # | input | wrong | tool | the error says |', '|---:|---|---|---|---|']
    for i, c in enumerate(CASES, 1):
        said = ' ... '.join(f'`{e}`' if not e.startswith('{') else e.strip('{}').upper()
                            for e in c.expect)
        lines.append(f'| {i} | {c.group} | {c.wrong} | `{c.tool}` | {said} |')
    return '\n'.join(lines) + '\n'


# ------------------------------------------------------------------------ running a case
def _load_tool(name):
    """What tools/<name>.py runs: the command-line module whose ``main`` the tool calls."""
    return {'export_subnet': export_cli, 'lowrank': lowrank_cli}[name]


def _call_tool(name, argv, capsys):
    try:
        code = _load_tool(name).main(argv)
    except SystemExit as e:  # argparse: exit 2 with the flag named
        code = e.code
    return code, capsys.readouterr().err


@pytest.fixture(scope='module')
def world(tmp_path_factory):
    """Files shared by the cases: a search checkpoint of the toy CIFAR search config, a
    dense one, one of another width, and their damaged versions."""
    import torch

    from sidt_mmdet.models import Subnet
    root = tmp_path_factory.mktemp('bad_inputs')
    model = build_search_model()
    w = dict(root=root, search=write_search_checkpoint(root / 'search.pth', model=model))
    dense = {k: v for k, v in model.state_dict().items() if not k.endswith('_mask')}
    torch.save({'state_dict': dense}, root / 'dense.pth')
    w['dense'] = root / 'dense.pth'
    wide = copy.deepcopy(model.state_dict())
    wide['backbone.blocks.0.attn.qkv.weight'] = torch.zeros(3 * 48, 48)
    torch.save({'state_dict': wide}, root / 'other_arch.pth')
    w['other'] = root / 'other_arch.pth'
    nan = copy.deepcopy(model.state_dict())
    nan['backbone.blocks.1.mlp.hidden_mask'][5] = math.nan
    torch.save({'state_dict': nan}, root / 'nan_masks.pth')
    w['nan'] = root / 'nan_masks.pth'
    data = w['search'].read_bytes()
    (root / 'truncated.pth').write_bytes(data[:len(data) // 3])
    w['truncated'] = root / 'truncated.pth'
    (root / 'notes.pth').write_text('not a checkpoint\n')
    w['text'] = root / 'notes.pth'
    Subnet.dense(E, L, H, M).save(root / 'dense_subnet.json')
    w['dense_subnet'] = root / 'dense_subnet.json'
    return w


def _subnet_file(root, name, doc=None, text=None):
    path = root / name
    path.write_text(text if text is not None else json.dumps(doc))
    return path


def _export_case(case, w, tmp, capsys):
    """(exit code, message, paths named in ``expect``) of one export/lowrank case."""
    out = tmp / 'out' / 'export'
    ckpt = w['search']
    args = ['--keep-ratio', '0.6']
    paths = dict(out=out, ckpt=ckpt)
    sub = None
    valid = json.dumps(_doc())
    cid = case.id
    if cid.startswith('subnet-'):
        doc = {
            'subnet-version': _doc(version=7),
            'subnet-layers': dict(_doc(), arch=dict(_doc()['arch'], num_layers=3),
                                  blocks=_doc()['blocks'][:3]),
            'subnet-heads': _doc(**{'blocks/0/qk': [[0], [1], [2]]}),
            'subnet-range': _doc(**{'blocks/0/mlp': [0, 300]}),
            'subnet-duplicate': _doc(**{'blocks/0/mlp': [0, 0, 1]}),
            'subnet-negative': _doc(**{'blocks/1/v/0': [-1, 0]}),
            'subnet-unsorted': _doc(**{'blocks/0/mlp': [3, 1, 2]}),
            'subnet-float': _doc(**{'blocks/0/mlp': [0.0, 1.0]}),
            'subnet-empty-layer': _doc(**{'blocks/2/v': [[], []]}),
            'subnet-too-wide': _doc(**{'blocks/0/qk/0': list(range(40))}),
            'subnet-embed-unsearched': _doc(embed=list(range(32))),
            'subnet-other-arch': dict(_doc(), arch=dict(_doc()['arch'], embed_dims=48),
                                      blocks=[dict(qk=[list(range(24))] * 2,
                                                   v=[list(range(24))] * 2,
                                                   mlp=list(range(256)))] * 4),
        }.get(cid)
        text = {'subnet-not-json': 'subnet: all\n', 'subnet-truncated': valid[:len(valid) // 2]
                }.get(cid)
        sub = _subnet_file(tmp, 'subnet.json', doc, text)
        args = ['--subnet', str(sub)]
        paths['subnet'] = sub
    elif cid.startswith('keep-ratio'):
        args = ['--keep-ratio', {'keep-ratio-0': '0', 'keep-ratio-negative': '-1',
                                 'keep-ratio-1.5': '1.5', 'keep-ratio-nan': 'nan'}[cid]]
    elif cid == 'params-above-dense':
        args = ['--params', '1G']
    elif cid == 'macs-above-dense':
        args = ['--macs', '1T']
    elif cid == 'params-below-minimum':
        args = ['--params', '1000']
    elif cid.startswith('ckpt-'):
        ckpt = w[{'ckpt-other-arch': 'other', 'ckpt-no-masks': 'dense',
                  'ckpt-truncated': 'truncated', 'ckpt-not-a-checkpoint': 'text',
                  'ckpt-nan-masks': 'nan', 'ckpt-truncated-lowrank': 'truncated'}.get(cid,
                                                                                      'search')]
        if cid == 'ckpt-hostile':
            from hostile import payloads, write_payload
            ckpt = Path(write_payload(tmp / 'hostile.pth',
                                      payloads(str(tmp / 'marker'))['os.system'][0]))
        paths['ckpt'] = ckpt
    elif cid == 'out-unwritable':
        (tmp / 'a_file').write_text('x')
        out = tmp / 'a_file' / 'export'
        paths['out'] = out
    elif cid == 'out-not-empty':
        out.mkdir(parents=True)
        (out / 'keep.txt').write_text('earlier work')
    if case.tool == 'lowrank':
        argv = [str(SEARCH_CFG), str(ckpt), '-o', str(out), '--method', 'svd',
                '--energy', '1.5' if cid == 'lowrank-energy' else '0.9',
                '--subnet', str(w['dense_subnet'])]
        code, err = _call_tool('lowrank', argv, capsys)
    else:
        code, err = _call_tool('export_subnet', [str(SEARCH_CFG), str(ckpt), '-o', str(out),
                                                 '--round-to', '1', *args], capsys)
    return code, err, paths, out


def _vit_case(case, w, tmp):
    from sidt_mmdet.models import SIDTViT, Subnet
    cid = case.id
    if cid == 'subnet-directory':
        Subnet.dense(E, L, H, M).save(tmp / 'subnet.json')
        path, paths = tmp, dict(dir=tmp)
    elif cid == 'subnet-is-checkpoint':
        path = w['search']
        paths = dict(subnet=path)
    else:
        path = tmp / 'nowhere' / 'subnet.json'
        paths = dict(subnet=path)
    try:
        SIDTViT(arch=dict(embed_dims=E, num_layers=L, num_heads=H), patch_size=4, img_size=32,
                mode='pruned', subnet=str(path))
    except (ValueError, OSError) as e:
        return 1, str(e), paths
    return 0, '', paths


def _runner_command(case, w, tmp, toy_cifar_dir, toy_coco_dir):
    """(tool script and its arguments, paths named in ``expect``, work dir) of a case."""
    cid = case.id
    work = tmp / 'work'
    paths = {}
    opts = [f'train_dataloader.dataset.data_root={toy_cifar_dir}/',
            f'val_dataloader.dataset.data_root={toy_cifar_dir}/',
            f'test_dataloader.dataset.data_root={toy_cifar_dir}/']
    if cid == 'data-root-missing':
        data = tmp / 'no_data'
        paths['data'] = data
        cmd = ['tools/train.py', str(write_config(tmp / 'cfg.py', data, 2, 4))]
    elif cid == 'ann-file-missing':
        ann = tmp / 'instances_train2017.json'
        paths['ann'] = ann
        cmd = ['tools/train.py', str(TOY_DET_CFG), '--cfg-options',
               f'train_dataloader.dataset.data_root={toy_coco_dir}/',
               f'train_dataloader.dataset.ann_file={ann}', 'train_cfg.max_iters=1']
    elif cid == 'retrain-from-search-ckpt':
        paths.update(ckpt=w['search'], subnet=w['dense_subnet'])
        cmd = ['tools/train.py', str(RETRAIN_CFG), '--cfg-options', *opts,
               f'model.backbone.subnet={w["dense_subnet"]}', f'load_from={w["search"]}',
               'train_cfg.max_epochs=1']
    elif cid == 'test-search-ckpt-dense-cfg':
        paths['ckpt'] = w['search']
        cmd = ['tools/test.py', str(DENSE_CFG), str(w['search']), '--cfg-options', *opts]
    elif cid == 'search-diverges':
        cfg = write_config(tmp / 'cfg.py', toy_cifar_dir, 2, 4,
                           extra='optim_wrapper = dict(paramwise_cfg=dict(mask_lr=3e37))')
        cmd = ['tools/train.py', str(cfg)]
    else:  # search-plain-optimizer
        cfg = write_config(tmp / 'cfg.py', toy_cifar_dir, 2, 4,
                           extra="optim_wrapper = dict(constructor='DefaultOptimWrapperConstructor'"
                                 ', paramwise_cfg=None)')
        cmd = ['tools/train.py', str(cfg)]
    return [*cmd, '--work-dir', str(work)], paths, work


def _last_line(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    return lines[-1] if lines else ''


# The runner case run as its own ``python tools/train.py`` process: it proves the exit status
# and that the message is the last line the process prints. The other runner cases run in
# one tests/tool_driver.py process (their tool's library calls, the traceback it would print).
REAL_SUBPROCESS_CASE = 'search-diverges'


def _runner_case(case, w, tmp, toy_cifar_dir, toy_coco_dir):
    cmd, paths, work = _runner_command(case, w, tmp, toy_cifar_dir, toy_coco_dir)
    result = subprocess.run([sys.executable, *cmd], cwd=REPO,
                            capture_output=True, text=True, timeout=600,
                            stdin=subprocess.DEVNULL, env={**os.environ, 'OMP_NUM_THREADS': '1'})
    return result.returncode, _last_line(result.stderr), paths, work


@pytest.fixture(scope='module')
def runner_cases_in_one_process(world, tmp_path_factory, toy_cifar_dir, toy_coco_dir):
    """case id -> (exit status, last stderr line, paths, work dir) of every runner case but
    REAL_SUBPROCESS_CASE, each its tool's library calls in one tests/tool_driver.py process."""
    plans = {}
    for case in CASES:
        if case.slow and case.id != REAL_SUBPROCESS_CASE:
            tmp = tmp_path_factory.mktemp(case.id)
            plans[case.id] = _runner_command(case, w=world, tmp=tmp,
                                             toy_cifar_dir=toy_cifar_dir,
                                             toy_coco_dir=toy_coco_dir)
    todo = [[Path(cmd[0]).stem, cmd[1:]] for cmd, _, _ in plans.values()]
    out = tmp_path_factory.mktemp('tool_driver') / 'results.json'
    run_command([sys.executable, 'tests/tool_driver.py', json.dumps(todo), str(out)],
                timeout=900)
    results = json.loads(out.read_text())
    assert len(results) == len(plans)
    return {cid: (r['returncode'], _last_line(r['stderr']), paths, work)
            for (cid, (_, paths, work)), r in zip(plans.items(), results)}


def _assert_refused(case, code, message, paths):
    assert code not in (0, None), f'{case.id}: accepted'
    for fragment in case.expect:
        if fragment.startswith('{'):
            fragment = str(paths[fragment.strip('{}')])
        assert fragment in message, f'{case.id}: {fragment!r} not in:\n{message}'


@pytest.mark.parametrize('case', [c for c in CASES if not c.slow], ids=lambda c: c.id)
def test_bad_input(case, world, tmp_path, capsys, figures):
    if case.tool == 'SIDTViT':
        code, message, paths = _vit_case(case, world, tmp_path)
    else:
        code, message, paths, out = _export_case(case, world, tmp_path, capsys)
        if case.id == 'out-not-empty':  # left as it was
            assert sorted(p.name for p in out.iterdir()) == ['keep.txt']
        else:
            assert not out.exists(), f'{case.id}: partial output {out}'
        hidden = [p.name for p in out.parent.glob('.*')] if out.parent.is_dir() else []
        assert not hidden, f'{case.id}: left {hidden}'
        assert message.count('error:') == 1, message  # one error line, no traceback
        assert 'Traceback' not in message
    assert not (tmp_path / 'marker').exists()
    _assert_refused(case, code, message, paths)
    figures.add('bad_input_cases')


@pytest.mark.slow
@pytest.mark.parametrize('case', [c for c in CASES if c.slow], ids=lambda c: c.id)
def test_bad_input_through_the_runner(case, world, tmp_path, toy_cifar_dir, toy_coco_dir,
                                      figures, request):
    if case.id == REAL_SUBPROCESS_CASE:
        code, message, paths, work = _runner_case(case, world, tmp_path, toy_cifar_dir,
                                                  toy_coco_dir)
    else:
        code, message, paths, work = request.getfixturevalue(
            'runner_cases_in_one_process')[case.id]
    _assert_refused(case, code, message, paths)
    written = sorted(p.name for p in work.rglob('*.pth')) if work.exists() else []
    # a diverging search keeps its last finite checkpoint, and never saves a NaN one
    assert written == (['iter_1.pth'] if case.id == 'search-diverges' else []), \
        f'{case.id}: wrote {written}'
    figures.add('bad_input_cases')


def test_readme_has_the_table():
    readme = (REPO / 'docs' / 'reliability.md').read_text(encoding='utf-8')
    assert readme_table() in readme, 'docs/reliability.md out of date: python ' \
                                     'tests/integration/test_bad_inputs.py prints the table'


if __name__ == '__main__':
    print(readme_table(), end='')
