"""Low-rank pipeline: tools/lowrank.py -> subnet file + checkpoint -> retrain config.

Dense and SiDT-pruned toy Mask R-CNN backbones (windows + relative positions) are factorized by
the tool, rebuilt by a configs/lowrank/ retrain config from the subnet file alone, loaded with
no missing or unexpected keys, and must compute what the factorized model computes. The toy
classifier is fine-tuned through tools/train.py. Bad input fails with the flag named and
leaves no files behind.
"""
from __future__ import annotations

import copy
import csv
import json
import math
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from helpers import REPO, perturb_, random_masks_, run_command, subnet_from_masks
from mmengine.config import Config
from mmengine.registry import MODELS, init_default_scope

from sidt_mmdet.apis import lowrank
from sidt_mmdet.cli import lowrank as lowrank_cli
from sidt_mmdet.export import prune_model_state_dict
from sidt_mmdet.export.lowrank import lowrank_model
from sidt_mmdet.models import SIDTViT, Subnet
from sidt_mmdet.models.complexity import backbone_complexity
from sidt_mmdet.models.layers import LowRankLinear
from sidt_mmdet.utils import load_checkpoint_safe
from sidt_mmdet.utils.cli import EXIT_ERROR, EXIT_USAGE

DET_DENSE = REPO / 'configs/toy/sidt-dense_mask-rcnn_sidtvit-toy_simplefpn_100it_toy-coco.py'
DET_SEARCH = (REPO / 'configs/toy/'
              'sidt-search_mask-rcnn_sidtvit-toy-kr0.6_simplefpn_100it_toy-coco.py')
DET_RETRAIN = (REPO / 'configs/lowrank/'
               'sidt-lowrank-retrain_mask-rcnn_sidtvit-toy_simplefpn_100it_toy-coco.py')
CLS_DENSE = REPO / 'configs/cifar100/sidt-dense_cls_vit-toy-p4_linear_6e_toy-cifar100.py'
CLS_RETRAIN = REPO / 'configs/lowrank/sidt-lowrank-retrain_cls_vit-toy-p4_linear_4e_toy-cifar100.py'
TINY = dict(embed_dims=48, num_layers=3, num_heads=3)


pytestmark = pytest.mark.usefixtures('one_torch_thread')


@pytest.fixture(scope='module')
def tool():
    """tools/lowrank.py in-process: ``main`` gives its exit code, ``run`` the summary."""
    def run(argv):
        return lowrank.lowrank_export(**vars(lowrank_cli.build_parser().parse_args(argv))).summary

    return SimpleNamespace(main=lowrank_cli.main, run=run)


def build(config: Path, subnet=None, load_from=None) -> tuple[torch.nn.Module, Config]:
    cfg = Config.fromfile(str(config))
    if subnet is not None:
        cfg.merge_from_dict({'model.backbone.subnet': str(subnet)})
    if load_from is not None:
        cfg.load_from = str(load_from)
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    cfg.model.backbone.init_cfg = None
    return MODELS.build(cfg.model), cfg


def save(model, path: Path) -> Path:
    torch.save({'state_dict': model.state_dict(), 'meta': {'dataset_meta': {'classes': ['a']}}},
               path)
    return path


def reload_retrain(config: Path, out_dir: Path) -> torch.nn.Module:
    """What a retrain run does: build from the config + subnet file, load ``load_from``."""
    model, cfg = build(config, subnet=out_dir / 'subnet.json', load_from=out_dir / 'lowrank.pth')
    ckpt = load_checkpoint_safe(cfg.load_from)
    missing, unexpected = model.load_state_dict(ckpt['state_dict'], strict=False)
    assert not missing and not unexpected, (missing, unexpected)
    return model.eval()


def assert_same_features(model, ref, size=(160, 128)):
    x = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        got, want = model.extract_feat(x), ref.extract_feat(x)
    for g, w in zip(got, want, strict=True):
        assert (g - w).abs().max() <= 1e-5


def assert_complexity_exact(backbone):
    params = sum(p.numel() for p in backbone.parameters())
    assert backbone_complexity(backbone, backbone.img_size).params == params


# ------------------------------------------------------------------- round trips
@pytest.fixture(scope='module')
def dense_detector(tmp_path_factory):
    torch.manual_seed(0)
    model, _ = build(DET_DENSE)
    perturb_(model.eval())  # non-zero rel-pos tables and biases
    return model, save(model, tmp_path_factory.mktemp('dense') / 'dense.pth')


def test_dense_detector_round_trip_and_training(tool, dense_detector, tmp_path):
    dense, ckpt = dense_detector
    assert dense.backbone.use_rel_pos and dense.backbone.window_size > 0
    out = tmp_path / 'out'
    summary = tool.run([str(DET_DENSE), str(ckpt), '--method', 'svd', '--energy', '0.9',
                         '-o', str(out)])
    ref = copy.deepcopy(dense)
    report = lowrank_model(ref.backbone, 'svd', energy=0.9)

    subnet = Subnet.load(out / 'subnet.json')
    assert subnet.embed is None and all(len(b['mlp']) == 256 for b in subnet.blocks)
    assert subnet.lowrank['method'] == 'svd'
    assert subnet.lowrank['ranks'] == {n: e['rank'] for n, e in report.items() if e['replaced']}
    assert subnet.lowrank['ranks']  # something was factorized

    model = reload_retrain(DET_RETRAIN, out)
    assert isinstance(model.backbone.blocks[0].attn.qkv, LowRankLinear)
    assert_same_features(model, ref.eval())
    assert_complexity_exact(model.backbone)
    assert summary['params_after'] == sum(p.numel() for p in model.backbone.parameters())

    with open(out / 'lowrank_table.csv', newline='') as f:
        rows = list(csv.DictReader(f))
    assert [r['layer'] for r in rows] == list(report)
    for r in rows:
        e = report[r['layer']]
        assert int(r['rank']) == e['rank'] and int(r['params_after']) == e['params_after']
        assert math.isclose(float(r['rel_error']), e['rel_error'], rel_tol=1e-9)
    assert '| blocks.0.attn.qkv |' in (out / 'lowrank_table.md').read_text()
    meta = load_checkpoint_safe(out / 'lowrank.pth')['meta']
    assert meta['lowrank']['method'] == 'svd' and meta['dataset_meta'] == {'classes': ['a']}

    # A few optimizer steps: every factor gets a gradient and moves, nothing turns NaN.
    model.train()
    params = [p for p in model.backbone.parameters() if p.requires_grad]
    before = [p.detach().clone() for p in params]
    opt = torch.optim.AdamW(params, lr=1e-3)
    x = torch.randn(2, 3, 96, 80)
    for _ in range(3):
        opt.zero_grad()
        loss = sum(f.square().mean() for f in model.extract_feat(x))
        loss.backward()
        assert all(p.grad is not None for p in params)
        opt.step()
    assert torch.isfinite(loss)
    assert all(not torch.equal(b, p) for b, p in zip(before, params))


@pytest.fixture(scope='module')
def searched_detector(tmp_path_factory):
    torch.manual_seed(0)
    model, _ = build(DET_SEARCH)
    perturb_(model.eval())
    random_masks_(model.backbone, seed=3, zero_frac=0.3)
    return model, save(model, tmp_path_factory.mktemp('search') / 'search.pth')


def test_pruned_detector_round_trip(tool, searched_detector, tmp_path):
    search, ckpt = searched_detector
    subnet = subnet_from_masks(search.backbone)
    subnet.save(tmp_path / 'prune.json')
    out = tmp_path / 'out'
    tool.run([str(DET_SEARCH), str(ckpt), '--subnet', str(tmp_path / 'prune.json'),
               '--method', 'qr_pivoted', '--rank', '4', '--targets', 'attn.qkv', 'mlp.fc2',
               '-o', str(out)])

    # Reference: prune (slice + fold masks), then factorize with the same ranks.
    ref, _ = build(DET_SEARCH.parent / 'sidt-retrain_mask-rcnn_sidtvit-toy-kr0.6_simplefpn_'
                   '100it_toy-coco.py', subnet=tmp_path / 'prune.json')
    ref.load_state_dict(prune_model_state_dict(search.state_dict(), subnet), strict=True)
    names = [n for n, m in ref.backbone.named_modules() if isinstance(m, torch.nn.Linear)
             and n.endswith(('attn.qkv', 'mlp.fc2'))]
    lowrank_model(ref.backbone, 'qr_pivoted', ranks=dict.fromkeys(names, 4))

    written = Subnet.load(out / 'subnet.json')
    assert written.blocks == subnet.blocks
    assert written.lowrank['ranks'] == dict.fromkeys(names, 4)
    model = reload_retrain(DET_RETRAIN, out)
    assert_same_features(model, ref.eval())
    assert_complexity_exact(model.backbone)


def test_hybrid_hits_the_backbone_target(tool, searched_detector, tmp_path):
    _, ckpt = searched_detector
    out = tmp_path / 'out'
    summary = tool.run([str(DET_SEARCH), str(ckpt), '--mlp-keep-ratio', '0.5', '--targets',
                         'attn.qkv', 'attn.proj', '--backbone-ratio', '0.6', '--method', 'svd',
                         '-o', str(out)])
    subnet = Subnet.load(out / 'subnet.json')
    assert all(len(q) == 16 for b in subnet.blocks for q in b['qk'] + b['v'])  # attention whole
    kept = sum(len(b['mlp']) for b in subnet.blocks)
    assert 0.5 * 4 * 256 <= kept <= 0.5 * 4 * 256 + 4 * 8  # keep ratio, rounded up to 8s
    assert subnet.lowrank['ranks'] and all(n.endswith(('attn.qkv', 'attn.proj'))
                                           for n in subnet.lowrank['ranks'])
    target = 0.6 * summary['params_dense']
    step = 64 + 192  # params of one more rank of the widest targeted layer
    assert target - 2 * step <= summary['params_after'] <= target
    model = reload_retrain(DET_RETRAIN, out)
    assert sum(p.numel() for p in model.backbone.parameters()) == summary['params_after']


# ------------------------------------------------------------------- real training
@pytest.fixture(scope='module')
def dense_classifier(tmp_path_factory):
    torch.manual_seed(0)
    model, _ = build(CLS_DENSE)
    perturb_(model, std=0.02)
    return model, save(model, tmp_path_factory.mktemp('cls') / 'dense.pth')


@pytest.mark.slow
def test_classifier_fine_tunes_through_train_py(tool, dense_classifier, toy_cifar_dir,
                                               tmp_path):
    _, ckpt = dense_classifier
    out = tmp_path / 'out'
    tool.run([str(CLS_DENSE), str(ckpt), '--method', 'lu', '--params-budget', '60K',
               '-o', str(out)])
    work = tmp_path / 'work'
    data = str(toy_cifar_dir)
    run_command([sys.executable, 'tools/train.py', str(CLS_RETRAIN), '--work-dir', str(work),
                 '--cfg-options', f'model.backbone.subnet={out}/subnet.json',
                 f'load_from={out}/lowrank.pth', f'train_dataloader.dataset.data_root={data}',
                 f'val_dataloader.dataset.data_root={data}', 'train_dataloader.batch_size=4',
                 'train_dataloader.dataset.indices=8', 'val_dataloader.dataset.indices=8',
                 'train_cfg.max_epochs=1', 'train_cfg.val_interval=1',
                 'default_hooks.checkpoint.interval=1', 'default_hooks.logger.interval=1'],
                timeout=240)
    log = next(work.glob('*/*.log')).read_text()
    assert 'Epoch(train) [1][2/2]' in log and 'accuracy/top1' in log
    assert 'missing keys' not in log and 'unexpected key' not in log
    trained = load_checkpoint_safe(work / 'epoch_1.pth')['state_dict']
    start = load_checkpoint_safe(out / 'lowrank.pth')['state_dict']
    assert trained.keys() == start.keys()
    factors = [k for k in start if k.endswith(('.down.weight', '.up.weight'))]
    assert factors and all(not torch.equal(trained[k], start[k]) for k in factors)


# ---------------------------------------------------------------------- bad input
# (argv, flag named, text, exit code): argparse refuses the command line itself (2); the
# library refuses what only the files or the model can tell (1), see sidt_mmdet.utils.cli.
BAD_ARGS = [
    (['--energy', '0'], '--energy', '(0, 1]', EXIT_USAGE),
    (['--energy', '1.5'], '--energy', '(0, 1]', EXIT_USAGE),
    (['--energy', 'nan'], '--energy', '(0, 1]', EXIT_USAGE),
    (['--rank', '0'], '--rank', 'positive', EXIT_USAGE),
    (['--rank', '1000'], '--rank 1000', 'min(in, out)', EXIT_ERROR),
    (['--energy', '0.9', '--method', 'svdd'], '--method', 'invalid choice', EXIT_USAGE),
    (['--energy', '0.9', '--targets', 'attn.q'], '--targets', 'invalid choice', EXIT_USAGE),
    (['--params-budget', '100'], '--params-budget', 'below the minimum', EXIT_ERROR),
    (['--backbone-ratio', '0.02'], '--backbone-ratio 0.02', 'target', EXIT_ERROR),
    (['--backbone-ratio', '0.5', '--targets', 'attn.proj'], '--backbone-ratio', 'prune more',
     EXIT_ERROR),
    (['--energy', '0.9', '--mlp-keep-ratio', '0.5'], '--mlp-keep-ratio', 'mode="search"',
     EXIT_ERROR),
    (['--energy', '0.9', '--subnet', 'missing.json'], '--subnet', 'not found', EXIT_ERROR),
    (['--energy', '0.9', '--energy', '0.8', '--rank', '3'], '--rank', 'not allowed with',
     EXIT_USAGE),
]


def exit_code(main, argv) -> int:
    try:
        return main(argv)
    except SystemExit as exc:  # argparse's usage error
        return exc.code


@pytest.mark.parametrize('extra,flag,text,code', BAD_ARGS,
                         ids=[' '.join(a[0]) for a in BAD_ARGS])
def test_bad_input_names_the_flag_and_writes_nothing(tool, dense_classifier, tmp_path, capsys,
                                                     extra, flag, text, code):
    _, ckpt = dense_classifier
    out = tmp_path / 'out'
    argv = [str(CLS_DENSE), str(ckpt), '-o', str(out)]
    if '--method' not in extra:
        argv += ['--method', 'svd']
    assert exit_code(tool.main, argv + extra) == code
    err = capsys.readouterr().err
    assert flag in err and text in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no OUT_DIR, no temp dir


def test_refuses_a_non_empty_out_dir_and_missing_files(tool, dense_classifier, tmp_path,
                                                       capsys):
    _, ckpt = dense_classifier
    out = tmp_path / 'out'
    out.mkdir()
    (out / 'keep.txt').write_text('mine')
    assert tool.main([str(CLS_DENSE), str(ckpt), '--method', 'svd', '--energy', '0.9',
                      '-o', str(out)]) == EXIT_ERROR
    assert '--overwrite' in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ['keep.txt']
    assert tool.main([str(CLS_DENSE), str(tmp_path / 'nope.pth'), '--method', 'svd',
                      '--energy', '0.9', '-o', str(tmp_path / 'new')]) == EXIT_ERROR
    assert 'CHECKPOINT: file not found' in capsys.readouterr().err
    assert not (tmp_path / 'new').exists()


def test_refuses_to_factorize_twice(tool, dense_classifier, tmp_path, capsys):
    _, ckpt = dense_classifier
    out = tmp_path / 'out'
    tool.run([str(CLS_DENSE), str(ckpt), '--method', 'svd', '--rank', '8', '-o', str(out)])
    assert tool.main([str(CLS_RETRAIN), str(out / 'lowrank.pth'), '--method', 'svd',
                      '--rank', '4', '-o', str(tmp_path / 'again'), '--cfg-options',
                      f'model.backbone.subnet={out}/subnet.json']) == EXIT_ERROR
    assert 'already factorized' in capsys.readouterr().err
    assert not (tmp_path / 'again').exists()
    # --ranks-from: another method at exactly the same ranks (equal params).
    tool.run([str(CLS_DENSE), str(ckpt), '--method', 'qr', '--ranks-from',
               str(out / 'subnet.json'), '-o', str(tmp_path / 'qr')])
    a = json.loads((out / 'subnet.json').read_text())['lowrank']['ranks']
    b = json.loads((tmp_path / 'qr' / 'subnet.json').read_text())['lowrank']['ranks']
    assert a == b and set(a.values()) == {8}


def test_a_typed_rule_is_the_keyword_rule(dense_classifier, tmp_path):
    """The library takes a typed rank rule: ``rule=BackboneRatio(0.7)`` writes what
    ``backbone_ratio=0.7`` writes (same subnet and summary); giving both, none, an unknown
    name or another type is refused by name."""
    _, ckpt = dense_classifier
    a = lowrank.lowrank_export(str(CLS_DENSE), str(ckpt), str(tmp_path / 'kw'), method='svd',
                               backbone_ratio=0.7, targets=('attn.qkv', 'mlp.fc1'))
    b = lowrank.lowrank_export(str(CLS_DENSE), str(ckpt), str(tmp_path / 'typed'),
                               method='svd', rule=lowrank.BackboneRatio(0.7),
                               targets=('attn.qkv', 'mlp.fc1'))
    assert a.subnet.lowrank == b.subnet.lowrank and a.subnet.lowrank['ranks']
    assert a.summary['rule'] == b.summary['rule']
    assert a.summary['rule']['backbone_ratio'] == 0.7 and a.summary['params_after'] > 0
    assert lowrank.RankRule.of(energy=0.9) == lowrank.Energy(0.9)
    assert lowrank.Rank(4).flag == '--rank'
    for kwargs, text in ((dict(rule=lowrank.Rank(4), energy=0.9), 'not both'),
                         (dict(), 'exactly one rank rule'),
                         (dict(rule=dict(rank=4)), 'expected a RankRule')):
        with pytest.raises(lowrank.LowRankError, match=text):
            lowrank.lowrank_export(str(CLS_DENSE), str(ckpt), str(tmp_path / 'bad'),
                                   method='svd', **kwargs)
    with pytest.raises(lowrank.LowRankError, match="unknown rank rule \\['ranks'\\]"):
        lowrank.RankRule.of(ranks=3)
    assert not (tmp_path / 'bad').exists()


# ---------------------------------------------------- SIDTViT rebuilds from the subnet
def test_backbone_rebuilds_factorized_structure_from_subnet():
    kw = dict(arch=TINY, img_size=64, window_size=4, global_attn_indexes=[1], use_rel_pos=True)
    dense = perturb_(SIDTViT(**kw)).eval()
    ranks = {'blocks.0.attn.qkv': 5, 'blocks.2.mlp.fc1': 7}
    subnet = Subnet.dense(48, 3, 3, 192)
    subnet.lowrank = dict(method='svd', ranks=ranks)
    lowrank_model(dense, 'svd', ranks=ranks)
    pruned = SIDTViT(**kw, mode='pruned', subnet=subnet.to_dict(), frozen_stages=1).eval()
    pruned.load_state_dict(dense.state_dict(), strict=True)
    x = torch.randn(1, 3, 64, 48)
    with torch.no_grad():  # pruned mode gathers rel-pos columns: same sums, other order
        assert (pruned(x)[0] - dense(x)[0]).abs().max() <= 1e-5
    # frozen_stages freezes the rebuilt factors like any other layer of block 0
    assert not any(p.requires_grad for p in pruned.blocks[0].attn.qkv.parameters())
    assert all(p.requires_grad for p in pruned.blocks[2].mlp.fc1.parameters())
    assert_complexity_exact(pruned)


@pytest.mark.parametrize('ranks,text', [({'blocks.5.attn.qkv': 4}, "no module named"),
                                        ({'blocks.0.attn.proj': 48}, 'integer in [1, 47]'),
                                        ({'blocks.0.attn.proj': 30}, 'does not save')])
def test_backbone_rejects_ranks_that_do_not_fit(tmp_path, ranks, text):
    subnet = Subnet.dense(48, 3, 3, 192)
    subnet.lowrank = dict(method='svd', ranks=ranks)
    subnet.save(tmp_path / 'sub.json')
    with pytest.raises(ValueError, match='lowrank.ranks does not fit') as exc:
        SIDTViT(arch=TINY, mode='pruned', subnet=str(tmp_path / 'sub.json'))
    assert str(tmp_path / 'sub.json') in str(exc.value) and text in str(exc.value)


# ------------------------------------------------------------ activation-aware SVD
def test_svd_whitened_calibrates_on_train_batches(tool, dense_classifier, toy_cifar_dir,
                                                  tmp_path):
    """The tool draws calibration batches from the config's train_dataloader; the result has
    the ranks and params of plain SVD and rebuilds through the retrain config."""
    _, ckpt = dense_classifier
    data = [f'{k}.dataset.data_root={toy_cifar_dir}' for k in ('train_dataloader',)]
    common = [str(CLS_DENSE), str(ckpt), '--cfg-options', *data, 'train_dataloader.batch_size=8']
    plain = tool.run(common[:2] + ['--method', 'svd', '--rank', '8', '-o', str(tmp_path / 's')]
                     + common[2:])
    white = tool.run(common[:2] + ['--method', 'svd_whitened', '--rank', '8',
                                   '--calibration-batches', '2', '-o', str(tmp_path / 'w')]
                     + common[2:])
    assert plain['params_after'] == white['params_after']
    rows = json.loads((tmp_path / 'w' / 'lowrank_report.json').read_text())['layers']
    replaced = [r for r in rows if r['replaced']]
    assert replaced and all(0 <= r['out_rel_error'] < 1 for r in replaced)
    model = reload_retrain(CLS_RETRAIN, tmp_path / 'w')
    assert isinstance(model.backbone.blocks[0].attn.qkv, LowRankLinear)


def test_calibration_sees_the_pixels_the_runner_feeds(dense_classifier, toy_cifar_dir):
    """mmpretrain configs normalise in a top-level data_preprocessor: the models the tool
    builds (source and pruned) must take it, or svd_whitened calibrates on raw pixels."""
    _, ckpt = dense_classifier
    cfg = Config.fromfile(str(CLS_DENSE))
    cfg.merge_from_dict({'train_dataloader.dataset.data_root': str(toy_cifar_dir),
                         'train_dataloader.batch_size': 8})
    mean = torch.tensor(cfg.data_preprocessor.mean).view(-1, 1, 1)
    assert 'data_preprocessor' not in cfg.model  # the case this guards
    source, _ = lowrank.load_source_model(cfg, str(ckpt))
    pruned = lowrank.build_pruned_model(cfg, Subnet.dense(64, 4, 2, 256), source.state_dict(),
                                        str(ckpt))
    for model in (source, pruned):
        assert torch.equal(model.data_preprocessor.mean, mean)
    # what calibration feeds the backbone: the normalised batch (mean ~0), not raw pixels
    seen = []
    hook = pruned.backbone.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    try:
        lowrank.calibration_covariances(cfg, pruned, ['blocks.0.attn.qkv'], 1)
    finally:
        hook.remove()
    assert len(seen) == 1 and seen[0].mean().abs() < 1.0


def test_svd_whitened_refused_without_calibration_data(dense_classifier, tmp_path):
    _, ckpt = dense_classifier
    with pytest.raises(lowrank.LowRankError, match='svd_whitened needs calibration data'):
        lowrank.lowrank_export(str(CLS_DENSE), str(ckpt), str(tmp_path / 'o'),
                               method='svd_whitened', rank=8, calibration_batches=0)
    assert not (tmp_path / 'o').exists()
