"""tools/export_subnet.py (``sidt_mmdet.apis.export``): what it writes for each budget, and each
bad input gives one clear error and leaves no file behind (run in-process through
``sidt_mmdet.cli.export_subnet.main``, which the tool calls; the chain tests run the command
line)."""
from __future__ import annotations

import csv
import json
import os
import re
from pathlib import Path

import pytest
import torch
from helpers import REPO, perturb_
from mmengine.config import Config
from mmengine.registry import MODELS, init_default_scope

from sidt_mmdet.apis import export as tool
from sidt_mmdet.cli import export_subnet as cli
from sidt_mmdet.models import Subnet
from sidt_mmdet.utils import load_checkpoint_safe, save_checkpoint_atomic

TOY = REPO / 'configs/toy'
SEARCH_CFG = TOY / 'sidt-search_mask-rcnn_sidtvit-toy-kr0.6_simplefpn_100it_toy-coco.py'
RETRAIN_CFG = TOY / 'sidt-retrain_mask-rcnn_sidtvit-toy-kr0.6_simplefpn_100it_toy-coco.py'
DENSE_CFG = TOY / 'sidt-dense_mask-rcnn_sidtvit-toy_simplefpn_100it_toy-coco.py'
FILES = ['pruned.pth', 'subnet.json', 'widths.csv', 'widths.md', 'widths.png']


def _build(path: Path):
    init_default_scope('mmdet')
    return MODELS.build(Config.fromfile(str(path)).model)


@pytest.fixture(scope='module')
def search_ckpt(tmp_path_factory) -> Path:
    """A search checkpoint with distinct, partly tiny mask values (no training needed)."""
    torch.manual_seed(0)
    model = perturb_(_build(SEARCH_CFG))
    with torch.no_grad():
        for m in model.backbone.mask_parameters().values():
            m.copy_(torch.rand(m.shape) * 1.5)
    path = tmp_path_factory.mktemp('ckpt') / 'search.pth'
    save_checkpoint_atomic({'state_dict': model.state_dict(), 'meta': {'iter': 7}}, path)
    return path


@pytest.fixture(scope='module')
def dense_ckpt(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp('ckpt') / 'dense.pth'
    save_checkpoint_atomic({'state_dict': _build(DENSE_CFG).state_dict(), 'meta': {}}, path)
    return path


def _export(ckpt: Path, out: Path, *budget: str, config: Path = SEARCH_CFG) -> int:
    return cli.main([str(config), str(ckpt), *budget, '-o', str(out)])


def _assert_nothing_written(out: Path):
    assert not out.exists()
    parent = out.parent
    if parent.is_dir():
        leftovers = [p.name for p in parent.iterdir() if p.name.startswith(f'.{out.name}.')]
        assert not leftovers, leftovers


@pytest.mark.parametrize('budget, granularity', [
    (('--keep-ratio', '0.5'), 'dim'),
    (('--params', '150K'), 'head_uniform'),
    (('--flops', '1.8e7', '--input-size', '128', '160'), 'head'),
])
def test_export_meets_the_budget_and_retrain_model_loads_it(search_ckpt, tmp_path, budget,
                                                             granularity, capsys):
    out = tmp_path / 'out'
    assert _export(search_ckpt, out, *budget, '--granularity', granularity,
                   '--round-to', '1') == 0
    progress = capsys.readouterr().out
    assert '[export] selecting a subnet' in progress and f'[export] done: {out}' in progress
    assert sorted(p.name for p in out.iterdir()) == FILES
    subnet = Subnet.load(out / 'subnet.json')
    stats = subnet.stats
    assert subnet.budget['granularity'] == granularity
    assert subnet.source == dict(config=str(SEARCH_CFG), checkpoint=str(search_ckpt))
    if budget[0] == '--params':
        assert stats['params_after'] <= 150_000
    if budget[0] == '--flops':
        assert stats['input_size'] == [128, 160] and stats['macs_after'] <= 18_000_000
    if granularity == 'head':  # whole heads: every kept head keeps all 16 dims
        assert all(len(dims) in (0, 16) for b in subnet.blocks for dims in b['v'])

    # The retrain config, given only the subnet file, builds a model the checkpoint fits.
    cfg = Config.fromfile(str(RETRAIN_CFG))
    cfg.merge_from_dict({'model.backbone.subnet': str(out / 'subnet.json')})
    init_default_scope('mmdet')
    retrain = MODELS.build(cfg.model)
    ckpt = load_checkpoint_safe(out / 'pruned.pth')
    result = retrain.load_state_dict(ckpt['state_dict'], strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert sum(p.numel() for p in retrain.backbone.parameters()) == stats['params_after']
    assert ckpt['meta']['sidt_export']['budget'] == subnet.budget
    assert json.loads(json.dumps(ckpt['meta'])) == ckpt['meta']  # plain data only

    rows = list(csv.DictReader((out / 'widths.csv').open()))
    assert [r['block'] for r in rows] == ['0', '1', '2', '3', 'stem', 'total']
    assert [r['attention'] for r in rows[:4]] == ['window 4'] * 3 + ['global']
    for key in ('params_before', 'params_after', 'macs_before', 'macs_after'):
        assert sum(int(r[key]) for r in rows[:5]) == int(rows[5][key])
    assert int(rows[5]['params_after']) == stats['params_after']
    assert int(rows[5]['macs_after']) == stats['macs_after']
    widths = subnet.widths()
    assert [r['mlp_width'] for r in rows[:4]] == [f'{w["mlp"]}/256' for w in widths]
    assert [r['qk_width'] for r in rows[:4]] == [f'{sum(w["qk"])}/64' for w in widths]
    md = (out / 'widths.md').read_text()
    assert md.count('\n| ') == 7  # header + 4 blocks + stem + total


def test_export_with_a_given_subnet_file(search_ckpt, tmp_path):
    first = tmp_path / 'first'
    assert _export(search_ckpt, first, '--keep-ratio', '0.7') == 0
    second = tmp_path / 'second'
    assert _export(search_ckpt, second, '--subnet', str(first / 'subnet.json')) == 0
    a, b = Subnet.load(first / 'subnet.json'), Subnet.load(second / 'subnet.json')
    assert a.blocks == b.blocks and a.stats['params_after'] == b.stats['params_after']
    assert b.source['subnet'] == str(first / 'subnet.json')


def test_overwrite(search_ckpt, tmp_path, capsys):
    out = tmp_path / 'out'
    out.mkdir()
    (out / 'keep.txt').write_text('mine')
    assert _export(search_ckpt, out, '--keep-ratio', '0.6') == 1
    assert 'is not empty; pass --overwrite' in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ['keep.txt']
    assert cli.main([str(SEARCH_CFG), str(search_ckpt), '--keep-ratio', '0.6', '-o', str(out),
                      '--overwrite']) == 0
    assert sorted(p.name for p in out.iterdir()) == FILES
    assert 'held no readable subnet.json (keep.txt)' in capsys.readouterr().out


def test_overwriting_an_export_says_what_it_replaced(search_ckpt, tmp_path, capsys):
    """--overwrite over an earlier export names its subnet digest and pruned.pth, and warns
    that retrains which loaded that pruned.pth no longer match the new subnet file."""
    out = tmp_path / 'out'
    assert _export(search_ckpt, out, '--keep-ratio', '0.6') == 0
    old = Subnet.load(out / 'subnet.json').digest()
    capsys.readouterr()
    result = tool.export_subnet(str(SEARCH_CFG), str(search_ckpt), dict(keep_ratio=0.4),
                                str(out), overwrite=True)
    new = result.subnet.digest()
    assert new != old and result.replaced['digest'] == old
    said = capsys.readouterr().out
    assert f'replaced the export in {out}' in said, said
    assert f'(digest {old}, now {new})' in said and str(out / 'pruned.pth') in said
    assert 'Earlier retrains loaded the old pruned.pth' in said
    # the same subnet again: the retrains' checkpoints still load, from the old weights
    assert _export(search_ckpt, out, '--keep-ratio', '0.4', '--overwrite') == 0
    said = capsys.readouterr().out
    assert f'the same subnet (digest {new})' in said and 'still load' in said, said


def test_export_result_repr_is_one_short_line(search_ckpt, tmp_path):
    result = tool.export_subnet(str(SEARCH_CFG), str(search_ckpt), dict(keep_ratio=0.6),
                                str(tmp_path / 'out'))
    text = repr(result)
    assert '\n' not in text and len(text) < 400 and '[' not in text, text  # no index lists
    assert text.startswith(f"ExportResult(out_dir='{tmp_path / 'out'}', budget='keep_ratio=0.6")
    after, before = result.after, result.before
    assert f'params=x{after.params / before.params:.3f}' in text
    assert f'MACs=x{after.macs / before.macs:.3f}' in text
    heads = sum(len(result.subnet.active_heads(i)) for i in range(4))
    mlp = sum(len(b['mlp']) for b in result.subnet.blocks)
    assert f'heads {heads}/16' in text and f'MLP {mlp}/1024' in text and 'embed 64/64' in text


@pytest.mark.parametrize('flag, value, message', [
    ('--keep-ratio', '0', r'expected a value in \(0, 1\], got 0'),
    ('--keep-ratio', '1.5', r'expected a value in \(0, 1\], got 1.5'),
    ('--keep-ratio', '-0.2', r'expected a value in \(0, 1\], got -0.2'),
    ('--params', '0', 'expected a positive target'),
    ('--flops', '-5G', 'expected a positive target'),
    ('--macs', '-5G', 'expected a positive target'),
    ('--params', 'lots', 'expected a count such as'),
])
def test_bad_budget_is_refused_before_any_work(search_ckpt, tmp_path, capsys, flag, value,
                                               message):
    out = tmp_path / 'out'
    with pytest.raises(SystemExit) as exc:
        _export(search_ckpt, out, f'{flag}={value}')
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f'argument {flag}' in err
    assert re.search(message, err), err
    _assert_nothing_written(out)


@pytest.mark.parametrize('flag, value, message', [
    ('--params', '10M', r'params=10,000,000 is above the dense model \(256,832\)'),
    ('--flops', '1G', r'macs=1,000,000,000 is above the dense model'),  # the older name
    ('--macs', '1G', r'macs=1,000,000,000 is above the dense model'),
])
def test_budget_above_the_dense_model(search_ckpt, tmp_path, capsys, flag, value, message):
    out = tmp_path / 'out'
    assert _export(search_ckpt, out, flag, value) == 1
    err = capsys.readouterr().err
    assert re.search(message, err), err
    _assert_nothing_written(out)


def _subnet_dict() -> dict:
    return Subnet.dense(64, 4, 4, 256).to_dict()


@pytest.mark.parametrize('content, message', [
    ('{"format": "sidt-subnet", "version": 1, ', 'not valid JSON'),
    (json.dumps({**_subnet_dict(), 'version': 99}), 'unknown subnet version 99'),
    (json.dumps({**_subnet_dict(), 'format': 'other'}), '"format" must be'),
    (json.dumps({**_subnet_dict(), 'arch': dict(embed_dims=64, num_layers=4, num_heads=4)}),
     r"missing keys \['arch.mlp_hidden'\]"),
    (json.dumps(Subnet.dense(64, 3, 4, 256).to_dict()),
     'does not fit the architecture: num_layers: subnet has 3, model has 4'),
    (json.dumps({**_subnet_dict(), 'blocks': [dict(qk=[[0]] * 4, v=[[99]] * 4, mlp=[0])] * 4}),
     r'blocks\[0\]\.v\[0\]: indices must lie in \[0, 16\)'),
])
def test_bad_subnet_file(search_ckpt, tmp_path, capsys, content, message):
    subnet_path = tmp_path / 'bad_subnet.json'
    subnet_path.write_text(content)
    out = tmp_path / 'out'
    assert _export(search_ckpt, out, '--subnet', str(subnet_path)) == 1
    err = capsys.readouterr().err
    assert str(subnet_path) in err or 'does not fit' in err
    assert re.search(message, err), err
    _assert_nothing_written(out)


def test_checkpoint_without_masks_is_refused(dense_ckpt, tmp_path, capsys):
    out = tmp_path / 'out'
    assert _export(dense_ckpt, out, '--keep-ratio', '0.6') == 1
    err = capsys.readouterr().err
    assert f'{dense_ckpt} has no search mask parameters' in err
    assert "backbone mode='search'" in err
    _assert_nothing_written(out)


def test_config_that_is_not_a_search_config(search_ckpt, tmp_path, capsys):
    out = tmp_path / 'out'
    assert _export(search_ckpt, out, '--keep-ratio', '0.6', config=DENSE_CFG) == 1
    err = capsys.readouterr().err
    assert "model.backbone.mode is 'dense'; export needs the search config" in err
    _assert_nothing_written(out)


def test_missing_checkpoint(tmp_path, capsys):
    out = tmp_path / 'out'
    assert _export(tmp_path / 'nope.pth', out, '--keep-ratio', '0.6') == 1
    assert f'checkpoint not found: {tmp_path / "nope.pth"}' in capsys.readouterr().err
    _assert_nothing_written(out)


def test_output_under_a_file(search_ckpt, tmp_path, capsys):
    blocker = tmp_path / 'a_file'
    blocker.write_text('')
    out = blocker / 'out'
    assert _export(search_ckpt, out, '--keep-ratio', '0.6') == 1
    assert f'cannot create {out}: {blocker} is not a directory' in capsys.readouterr().err
    assert blocker.read_text() == ''


def test_output_dir_without_write_permission(search_ckpt, tmp_path, capsys, monkeypatch):
    parent = tmp_path / 'read_only'
    parent.mkdir()
    parent.chmod(0o555)
    if os.geteuid() == 0:  # root may write anywhere: make the permission check see 0o555
        real_access = os.access
        monkeypatch.setattr(os, 'access', lambda p, mode: real_access(p, mode) and
                            Path(p) != parent)
    out = parent / 'out'
    try:
        assert _export(search_ckpt, out, '--keep-ratio', '0.6') == 1
        assert f'cannot write to {parent} (permission denied)' in capsys.readouterr().err
        assert list(parent.iterdir()) == []
    finally:
        parent.chmod(0o755)


def test_failure_while_writing_leaves_nothing(search_ckpt, tmp_path, capsys, monkeypatch):
    def broken_plot(*args, **kwargs):
        raise OSError(28, 'No space left on device')

    monkeypatch.setattr(tool, 'plot_widths', broken_plot)
    out = tmp_path / 'deep' / 'out'
    assert _export(search_ckpt, out, '--keep-ratio', '0.6') == 1
    assert 'No space left on device' in capsys.readouterr().err
    assert not (tmp_path / 'deep').exists()  # the parent it created is gone too


def test_older_macs_flags_still_export_with_a_warning(search_ckpt, tmp_path, capsys):
    """``--flops N --macs executed`` (the older spelling) selects what ``--macs N`` selects
    and says so once each; ``--macs`` with another budget, or no budget, is refused."""
    target = '2.5e6'  # of 4,096,000 dense MACs at 64 x 64
    assert _export(search_ckpt, tmp_path / 'new', '--macs', target, '--input-size', '64',
                   '64') == 0
    assert 'deprecated' not in capsys.readouterr().err
    assert _export(search_ckpt, tmp_path / 'old', '--flops', target, '--macs', 'executed',
                   '--input-size', '64', '64') == 0
    err = capsys.readouterr().err
    assert '--macs executed is deprecated' in err and '--flops is deprecated' in err
    new = Subnet.load(tmp_path / 'new' / 'subnet.json')
    old = Subnet.load(tmp_path / 'old' / 'subnet.json')
    assert new.blocks == old.blocks and new.budget['kind'] == old.budget['kind'] == 'macs'
    assert new.budget['head_widths'] == 'free' and old.budget['macs'] == 'executed'
    with pytest.raises(SystemExit):
        _export(search_ckpt, tmp_path / 'bad', '--macs', target, '--params', '1M')
    assert 'argument --macs: not allowed with argument --params' in capsys.readouterr().err
    # no budget flag and none in the config (its sidt_export section cleared)
    assert _export(search_ckpt, tmp_path / 'bad', '--cfg-options', 'sidt_export=None') == 1
    assert 'no budget: give one (--keep-ratio' in capsys.readouterr().err
    _assert_nothing_written(tmp_path / 'bad')


def test_the_config_sidt_export_section_is_the_default_selection(search_ckpt, tmp_path,
                                                                 capsys):
    """Selection settings live in the search config, as mmdet's tools read theirs: with no
    flag the export uses the config's ``sidt_export`` (here keep_ratio 0.6) and selects what
    ``--keep-ratio 0.6`` selects; a setting of the section applies, a flag replaces it; an
    unknown key is refused by name."""
    assert _export(search_ckpt, tmp_path / 'cfg') == 0
    assert _export(search_ckpt, tmp_path / 'flag', '--keep-ratio', '0.6') == 0
    from_cfg = Subnet.load(tmp_path / 'cfg' / 'subnet.json')
    from_flag = Subnet.load(tmp_path / 'flag' / 'subnet.json')
    assert from_cfg.blocks == from_flag.blocks and from_cfg.budget == from_flag.budget
    assert from_cfg.budget['kind'] == 'keep_ratio' and from_cfg.budget['value'] == 0.6
    assert _export(search_ckpt, tmp_path / 'r16', '--cfg-options', 'sidt_export.round_to=16',
                   'sidt_export.keep_ratio=0.5') == 0
    r16 = Subnet.load(tmp_path / 'r16' / 'subnet.json')
    assert r16.budget['round_to'] == 16 and r16.budget['value'] == 0.5
    assert all(len(b['mlp']) % 16 == 0 for b in r16.blocks)
    assert _export(search_ckpt, tmp_path / 'r4', '--round-to', '4', '--params', '150000',
                   '--cfg-options', 'sidt_export.round_to=16') == 0
    r4 = Subnet.load(tmp_path / 'r4' / 'subnet.json')
    assert r4.budget['round_to'] == 4 and r4.budget['kind'] == 'params'
    capsys.readouterr()
    assert _export(search_ckpt, tmp_path / 'bad', '--cfg-options',
                   'sidt_export.roundto=16') == 1
    err = capsys.readouterr().err
    assert 'sidt_export.roundto is not an export setting' in err and 'round_to' in err
    _assert_nothing_written(tmp_path / 'bad')


def _flat_table(backbone, path: Path) -> Path:
    """A hand-made latency table for ``backbone`` at its img_size: every block one kind,
    1 ms per MLP unit and per head dim (linear in the widths), the stem free."""
    from sidt_mmdet.search.latency import LatencyTable, latency_key
    d, hidden = backbone.head_dim, backbone.mlp_hidden
    H, L = backbone.num_heads, backbone.num_layers
    kind = dict(width=[1, d], hidden=[1, hidden],
                attn=[[[2.0 * H + hidden, H * (d + 1.0) + hidden],
                       [H * (d + 1.0) + hidden, 2.0 * H * d + hidden]]],
                mlp=[[2.0 * H * d + 1, 2.0 * H * d + hidden]], base=[2.0 * H * d + hidden],
                group=[0.0])
    table = LatencyTable(key=latency_key(backbone, tuple(backbone.img_size), 1),
                         embed=[backbone.embed_dims_dense], stem=[0.0], kinds={'k': kind},
                         blocks=['k'] * L)
    table.save(str(path))
    return path


def test_latency_budget_through_the_tool_records_its_queue(search_ckpt, tmp_path):
    """The tool takes a latency budget with its table and the unit order: the subnet meets
    the predicted budget, records the table and the queue (score per millisecond by default,
    ``--unit-order score`` when asked)."""
    table = _flat_table(_build(SEARCH_CFG).backbone, tmp_path / 'table.json')
    assert _export(search_ckpt, tmp_path / 'ms', '--latency', '0.6', '--latency-table',
                   str(table)) == 0
    assert _export(search_ckpt, tmp_path / 'score', '--latency', '0.6', '--latency-table',
                   str(table), '--unit-order', 'score') == 0
    for name, order in (('ms', 'score_per_ms'), ('score', 'score')):
        sub = Subnet.load(tmp_path / name / 'subnet.json')
        assert sub.budget['kind'] == 'latency' and sub.budget['unit_order'] == order
        assert sub.stats['latency_ms_after'] <= 0.6 * sub.stats['latency_ms_before']
        assert sub.budget['latency_table']['path'] == str(table)



def _fake_table_measure(backbone, table, iters=5, warmup=2):
    """A deterministic timing in place of the real one: the table's prediction, slower the
    narrower the subnet (1.5x at nothing kept, exact at dense)."""
    dense = table.predict(None)
    return lambda sub: (table.predict(sub) * (1.5 - 0.5 * table.predict(sub) / dense)
                        if sub is not None else dense)


def test_latency_measure_flag_corrects_the_budget_on_this_machine(search_ckpt, tmp_path,
                                                                  monkeypatch, capsys):
    """``--latency-measure`` reaches the closed loop: with the deterministic timing the
    exported subnet records its rounds and meets the measured target the open loop misses;
    the flag without a latency budget is refused before any work."""
    from sidt_mmdet.search import latency_loop
    monkeypatch.setattr(latency_loop, 'table_measure', _fake_table_measure)
    table = _flat_table(_build(SEARCH_CFG).backbone, tmp_path / 'table.json')
    assert _export(search_ckpt, tmp_path / 'loop', '--latency', '0.5', '--latency-table',
                   str(table), '--latency-measure', '--round-to', '1') == 0
    sub = Subnet.load(tmp_path / 'loop' / 'subnet.json')
    loop = sub.budget['closed_loop']
    assert loop['target'] == 0.5 and loop['history'][0]['budget'] == 0.5
    assert abs(loop['history'][0]['error']) > 0.03 and len(loop['history']) >= 2
    assert loop['converged'] and abs(loop['measured_ratio'] / 0.5 - 1) <= 0.03
    assert sub.budget['value'] < 0.5  # selected at the corrected predicted budget
    assert '[export] closed loop round 2' in capsys.readouterr().out
    assert _export(search_ckpt, tmp_path / 'kr', '--keep-ratio', '0.5',
                   '--latency-measure') == 1
    assert '--latency-measure' in capsys.readouterr().err
    _assert_nothing_written(tmp_path / 'kr')


@pytest.mark.slow
def test_latency_measure_refuses_a_table_of_another_machine(search_ckpt, tmp_path,
                                                            monkeypatch, capsys):
    """A table whose key names another CPU is refused naming the key (nothing written); the
    config's ``sidt_export.latency_measure=True`` turns the loop on as the flag does."""
    from sidt_mmdet.search import latency_loop
    monkeypatch.setattr(latency_loop, 'table_measure', _fake_table_measure)
    table = _flat_table(_build(SEARCH_CFG).backbone, tmp_path / 'table.json')
    data = json.loads(table.read_text())
    data['key']['device'] = 'cpu: Some other CPU'
    other = tmp_path / 'other.json'
    other.write_text(json.dumps(data))
    assert _export(search_ckpt, tmp_path / 'other', '--latency', '0.5', '--latency-table',
                   str(other), '--latency-measure') == 1
    assert "device: table 'cpu: Some other CPU'" in capsys.readouterr().err
    _assert_nothing_written(tmp_path / 'other')
    assert _export(search_ckpt, tmp_path / 'cfg', '--latency', '0.5', '--latency-table',
                   str(table), '--round-to', '1', '--cfg-options',
                   'sidt_export.latency_measure=True') == 0
    assert 'closed_loop' in Subnet.load(tmp_path / 'cfg' / 'subnet.json').budget
