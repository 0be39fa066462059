"""CIFAR-100 through mmpretrain: SIDTViT inside an ImageClassifier, from config to metric.

- the backbone is reached from mmpretrain configs across scopes (``mmdet.SIDTViT``) and
  ``SIDTModel`` builds mmpretrain's ImageClassifier with the head following the kept width;
- exactness: the exported classifier equals the hard-masked supernet (logits);
- a tiny dense -> search -> export -> retrain -> test chain through the tools on the toy set;
- bad input: missing ``cifar-100-python/``, a subnet of another architecture.
"""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch
from helpers import REPO, hard_mask_, perturb_, random_masks_, subnet_from_masks
from mmengine.config import Config
from mmengine.registry import DATASETS, MODELS, init_default_scope
from mmpretrain.models import ImageClassifier

from sidt_mmdet.export import prune_model_state_dict
from sidt_mmdet.models import SIDTViT, Subnet
from sidt_mmdet.models.subnet import SubnetError
from sidt_mmdet.search import select_subnet
from sidt_mmdet.utils import load_checkpoint_safe
from sidt_mmdet.utils.fileio import replace_marked_block

CFG_DIR = REPO / 'configs/cifar100'
TOY_DENSE = CFG_DIR / 'sidt-dense_cls_vit-toy-p4_linear_6e_toy-cifar100.py'
TOY_SEARCH = CFG_DIR / 'sidt-search_cls_vit-toy-p4-kr0.6_linear_2e_toy-cifar100.py'
TOY_RETRAIN = CFG_DIR / 'sidt-retrain_cls_vit-toy-p4-kr0.6_linear_4e_toy-cifar100.py'
REAL_DENSE = CFG_DIR / 'sidt-dense_cls_vit-tiny-p4_linear_200e_cifar100.py'
DEIT_DENSE = CFG_DIR / 'sidt-dense_cls_deit-small-p16_linear_224px-30e_cifar100.py'
TINY_ARCH = dict(embed_dims=48, num_layers=2, num_heads=3)


pytestmark = pytest.mark.usefixtures('one_torch_thread')


def load_cfg(path: Path, **options) -> Config:
    cfg = Config.fromfile(str(path))
    if options:
        cfg.merge_from_dict(options)
    return cfg


def build_model(cfg: Config):
    """Build ``cfg.model`` as the Runner does (default scope, top-level data_preprocessor)."""
    init_default_scope(cfg.default_scope)
    model_cfg = cfg.model.copy()
    model_cfg.setdefault('data_preprocessor', cfg.get('data_preprocessor'))
    return MODELS.build(model_cfg)


def classifier_cfg(mode: str, out_type: str = 'cls_token', subnet=None) -> dict:
    """A small classifier through SIDTModel, written as an mmpretrain config would be."""
    backbone = dict(type='mmdet.SIDTViT', arch=TINY_ARCH, patch_size=4, img_size=32,
                    with_cls_token=out_type == 'cls_token', final_norm=True, out_type=out_type,
                    mode=mode)
    if mode == 'search':
        backbone['search_dims'] = ('attn', 'mlp')
    if subnet is not None:
        backbone['subnet'] = subnet
    sparsity = dict(lambda_attn=1e-3, lambda_mlp=1e-3) if mode == 'search' else None
    return dict(type='mmdet.SIDTModel', model_type='ImageClassifier', sparsity=sparsity,
                backbone=backbone, neck=None,
                head=dict(type='LinearClsHead', num_classes=100, in_channels=48, topk=(1, 5)),
                data_preprocessor=dict(num_classes=100, mean=[129.3, 124.1, 112.4],
                                       std=[68.2, 65.4, 70.4]))


def build_classifier(cfg: dict):
    init_default_scope('mmpretrain')
    return MODELS.build(cfg)


def _samples(labels):
    from mmpretrain.structures import DataSample
    return [DataSample().set_gt_label(label) for label in labels]


# ----------------------------------------------------------------- registry and configs
def test_cross_scope_backbone_in_mmpretrain_classifier():
    """``mmdet.SIDTViT`` under mmpretrain's scope is our class; the head follows the width."""
    from mmdet.registry import MODELS as MMDET_MODELS
    model = build_classifier(classifier_cfg('search'))
    assert isinstance(model, ImageClassifier)
    assert type(model.backbone) is MMDET_MODELS.get('SIDTViT') is SIDTViT
    assert model.backbone.mask_parameters()
    losses = model.loss(torch.randn(2, 3, 32, 32), _samples([3, 7]))
    assert {'loss', 'loss_sparsity', 'sparsity_kept_attn', 'sparsity_kept_mlp'} <= set(losses)
    assert torch.isfinite(losses['loss'])
    # masks start at 1: lambda_attn * (2 blocks x 3 heads x 16 dims) + lambda_mlp * (2 x 192)
    assert float(losses['loss_sparsity']) == pytest.approx(1e-3 * 96 + 1e-3 * 384, rel=1e-6)

    # A subnet that prunes the embedding: the head's in_channels follows it.
    search = SIDTViT(arch=TINY_ARCH, patch_size=4, img_size=32, mode='search',
                     search_dims=('attn', 'mlp', 'embed'))
    subnet = select_subnet(search, keep_ratio=0.5, round_to=1)
    assert len(subnet.kept_embed) == 24
    for out_type in ('cls_token', 'avg'):
        pruned = build_classifier(classifier_cfg('pruned', out_type, subnet=subnet.to_dict()))
        assert pruned.backbone.out_channels == pruned.head.fc.in_features == 24
        assert pruned(torch.randn(2, 3, 32, 32), mode='tensor').shape == (2, 100)


@pytest.mark.parametrize('path', sorted(CFG_DIR.glob('*.py')), ids=lambda p: p.name)
def test_cifar_config_recipe(path):
    """What every CIFAR-100 config must resolve to (tests/test_configs.py builds them all)."""
    cfg = load_cfg(path)
    assert cfg.default_scope == 'mmpretrain'
    assert cfg.custom_imports == dict(imports=['sidt_mmdet', 'sidt_mmdet.datasets.toy_cifar100'],
                                      allow_failed_imports=False)
    model = cfg.model
    assert model.get('model_type', model.type) == 'ImageClassifier'
    backbone = model.backbone
    assert backbone.type == 'mmdet.SIDTViT' and backbone.out_type in ('cls_token', 'avg')
    assert model.head.type == 'LinearClsHead' and model.head.num_classes == 100
    stage = path.name.split('_')[0]
    mode = dict(zip(('sidt-dense', 'sidt-search', 'sidt-retrain'), ('dense', 'search', 'pruned')))
    assert backbone.get('mode', 'dense') == mode[stage]
    if stage != 'sidt-dense':
        assert model.type == 'mmdet.SIDTModel'
        assert ('sparsity' in model) == (stage == 'sidt-search')
    if stage == 'sidt-retrain':  # reads the export of the search config of its backbone
        parts = path.stem.split('_')
        partners = [p for p in CFG_DIR.glob(f'sidt-search_cls_{parts[2]}_*')
                    if p.stem.endswith('_' + parts[-1])]
        assert len(partners) == 1, partners
        export_dir = f'work_dirs/{partners[0].stem}/export'
        assert backbone.subnet == export_dir + '/subnet.json'
        assert cfg.load_from == export_dir + '/pruned.pth'
    toy = '_toy-cifar100' in path.name  # the generated sets (toy-cifar100, toy-cifar100-hard)
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        dataset = cfg[loader].dataset
        assert dataset.type == ('ToyCIFAR100' if toy else 'CIFAR100')
        toy_root = f'data/toy_cifar100{"_hard" if path.stem.endswith("-hard") else ""}/'
        assert dataset.data_root == (toy_root if toy else 'data/cifar100/')
    assert tuple(cfg.test_evaluator.topk) == (1, 5) and cfg.test_evaluator.type == 'Accuracy'
    if '224px' in path.name:
        assert (backbone.patch_size, backbone.img_size) == (16, 224)
        resize = [t for t in cfg.test_dataloader.dataset.pipeline if t['type'] == 'Resize']
        assert resize and tuple(resize[0]['scale']) == (224, 224)
    else:
        assert (backbone.patch_size, backbone.img_size) == (4, 32)


def test_deit_config_loads_timm_weights_and_classifies_at_224(tmp_path):
    """The 224 fine-tuning config converts a timm/DeiT checkpoint (head dropped) on init.
    The reference weights are moved off their init, so a key left at its init (zero
    biases, unit norms) or a tensor loaded into the wrong place cannot pass."""
    timm = pytest.importorskip('timm')
    torch.manual_seed(0)
    ref = perturb_(timm.create_model('vit_small_patch16_224', pretrained=False,
                                     num_classes=1000))
    ckpt = tmp_path / 'deit_small_patch16_224.pth'
    torch.save({'model': ref.state_dict()}, ckpt)  # DeiT's release layout
    cfg = load_cfg(DEIT_DENSE, **{'model.backbone.init_cfg.checkpoint': str(ckpt)})
    model = build_model(cfg)
    model.init_weights()
    for name in ('blocks.0.attn.qkv.weight', 'blocks.11.mlp.fc2.bias', 'pos_embed', 'cls_token',
                 'norm.weight', 'patch_embed.proj.weight'):
        torch.testing.assert_close(model.backbone.state_dict()[name], ref.state_dict()[name],
                                   rtol=0, atol=0, msg=name)
    model.eval()
    ref.eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        ours = model.backbone(x)[0]
        theirs = ref.forward_head(ref.forward_features(x), pre_logits=True)
        logits = model(x, mode='tensor')
    assert ours.shape == theirs.shape == (1, 384) and logits.shape == (1, 100)
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------- exactness
@pytest.mark.parametrize('out_type', ['cls_token', 'avg'])
@pytest.mark.parametrize('size', [(32, 32), (36, 28)])
def test_pruned_classifier_equals_hard_masked_supernet(out_type, size):
    """Attention + MLP pruning of the whole classifier is exact, masks folded in."""
    torch.manual_seed(0)
    search = build_classifier(classifier_cfg('search', out_type))
    perturb_(search, seed=1)
    random_masks_(search.backbone, seed=2, zero_frac=0.4)
    subnet = subnet_from_masks(search.backbone)
    hard_mask_(search.backbone, subnet)
    widths = subnet.widths()
    assert any(sum(b['v']) < 48 for b in widths) and any(b['mlp'] < 192 for b in widths)
    assert any(len(set(b['qk'])) > 1 for b in widths)  # unequal head widths in a layer

    pruned = build_classifier(classifier_cfg('pruned', out_type, subnet=subnet.to_dict()))
    state = prune_model_state_dict(search.state_dict(), subnet)
    result = pruned.load_state_dict(state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    weights = sum(p.numel() for n, p in search.named_parameters() if not n.endswith('_mask'))
    assert sum(p.numel() for p in pruned.parameters()) < weights

    search.eval()
    pruned.eval()
    x = torch.randn(3, 3, *size)
    with torch.no_grad():
        want = search(x, mode='tensor')
        got = pruned(x, mode='tensor')
    assert want.shape == got.shape == (3, 100)
    assert (want - got).abs().max().item() <= 1e-5


# ----------------------------------------------------------------- chain through the tools
@pytest.fixture(scope='module')
def export_tool():
    from sidt_mmdet.cli import export_subnet

    return export_subnet


@pytest.fixture(scope='module')
def demo():
    from sidt_mmdet.apis import demo

    return demo


@pytest.fixture(scope='module')
def chain(tmp_path_factory, toy_cifar_dir, demo):
    """`make demo-cifar`'s chain, 1 epoch per stage on a slice of the toy set: dense ->
    test -> search -> export (keep 0.6) -> test -> retrain -> test, each a tool subprocess."""
    from sidt_mmdet.apis.chain import run_chain

    work = tmp_path_factory.mktemp('cifar_chain')
    small = ['train_dataloader.dataset.indices=256', 'val_dataloader.dataset.indices=100',
             'test_dataloader.dataset.indices=100', 'default_hooks.logger.interval=1']
    spec = demo.classification_spec(str(toy_cifar_dir), ['--keep-ratio', '0.6'],
                                    dict(dense=1, search=1, retrain=1), small, sys.executable)
    result = run_chain(spec, str(work)).to_dict()
    return dict(result, work=work, export=Path(result['dirs']['export']))


@pytest.mark.slow
def test_chain_through_the_tools_reports_top1(chain):
    assert Path(chain['retrain_ckpt']).name == 'epoch_1.pth'
    files = sorted(Path(chain['dirs']['retrain_test']).glob('*/*.json'))
    assert files, 'tools/test.py wrote no metric file'
    metrics = json.loads(files[-1].read_text().splitlines()[-1])
    assert {'accuracy/top1', 'accuracy/top5'} <= set(metrics)
    assert 0 <= metrics['accuracy/top1'] <= metrics['accuracy/top5'] <= 100
    assert chain['metrics']['pruned']['accuracy/top1'] == pytest.approx(metrics['accuracy/top1'])
    search_log = next(Path(chain['dirs']['search']).glob('*/*.log')).read_text()
    assert 'loss_sparsity' in search_log and 'sparsity_kept_attn' in search_log
    retrain_log = next(Path(chain['dirs']['retrain']).glob('*/*.log')).read_text()
    assert 'missing keys' not in retrain_log and 'unexpected key' not in retrain_log
    assert 'accuracy/top1' in retrain_log


@pytest.mark.slow
def test_demo_report_has_the_figures(chain, demo, tmp_path):
    figures = demo.measure_classifier(chain['subnet'], batch=2, iters=2, warmup=1)
    d, p = figures['dense'], figures['pruned']
    assert p['backbone_params'] < d['backbone_params'] and p['backbone_macs'] < d['backbone_macs']
    assert p['backbone_params'] == Subnet.load(chain['subnet']).stats['params_after']
    report = tmp_path / 'report.md'
    text = demo.write_classification_report(str(report), chain, figures,
                                            Subnet.load(chain['subnet']), 60.0, None)
    assert report.read_text() == text
    # the report shows the measured figures in their columns (not swapped, not stale)
    dl, pl = d['latency_ms'], p['latency_ms']
    assert math.isfinite(dl) and math.isfinite(pl)
    threads = figures['latency']['threads']
    assert (f'| backbone latency, ms / batch of 2 ({threads} thread) | {dl:.2f} | {pl:.2f} | '
            f'{pl / dl:.3f} |') in text
    for want in ('backbone params', 'backbone MACs', 'backbone latency', 'top-1 (%)',
                 'top-5 (%)', 'before retraining', 'kind=keep_ratio'):
        assert want in text, want
    # the README's table is generated from report.json: the same figures, in their columns
    result = demo.classification_report(chain, figures, Subnet.load(chain['subnet']), 1.0,
                                         dict(num_train=5, num_test=3),
                                         str(tmp_path / 'report.json'))
    readme = tmp_path / 'README.md'
    readme.write_text(f'a\n{demo.CIFAR_README_BEGIN}\nstale\n{demo.CIFAR_README_END}\nb\n')
    replace_marked_block(readme, demo.CIFAR_README_BEGIN, demo.CIFAR_README_END,
                         demo.classification_readme_block(result))
    table = readme.read_text()
    assert 'stale' not in table and table.startswith('a\n') and table.endswith('\nb\n')
    m = chain['metrics']
    top1 = [m[k]['accuracy/top1'] for k in ('dense', 'pruned_before_retrain', 'pruned')]
    ratios = [p[k] / d[k] for k in ('backbone_params', 'backbone_macs', 'latency_ms')]
    assert (f'| demo, keep ratio 0.6, granularity dim | {top1[0]:.2f} | {top1[1]:.2f} | '
            f'{top1[2]:.2f} | x{ratios[0]:.3f} | x{ratios[1]:.3f} | x{ratios[2]:.3f} |') in table
    assert '5/3 images' in table


@pytest.mark.slow
def test_chain_pruned_checkpoint_is_the_retrain_model(chain):
    export = chain['export']
    subnet = Subnet.load(export / 'subnet.json')
    assert subnet.budget['kind'] == 'keep_ratio' and subnet.budget['value'] == 0.6
    assert subnet.stats['params_after'] < subnet.stats['params_before']
    assert {'subnet.json', 'pruned.pth', 'widths.png'} <= {p.name for p in export.iterdir()}
    cfg = load_cfg(TOY_RETRAIN, **{'model.backbone.subnet': str(export / 'subnet.json')})
    model = build_model(cfg)
    start = load_checkpoint_safe(str(export / 'pruned.pth'))['state_dict']
    result = model.load_state_dict(start, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert sum(p.numel() for p in model.backbone.parameters()) == subnet.stats['params_after']
    trained = load_checkpoint_safe(chain['retrain_ckpt'])['state_dict']
    assert trained.keys() == start.keys()
    assert not torch.equal(trained['backbone.blocks.0.mlp.fc1.weight'],
                           start['backbone.blocks.0.mlp.fc1.weight'])


@pytest.mark.parametrize('budget', ['params', 'macs'])
@pytest.mark.slow
def test_export_budget_kinds_for_the_classifier(chain, export_tool, budget, tmp_path):
    before = Subnet.load(chain['export'] / 'subnet.json').stats
    key = 'params' if budget == 'params' else 'macs'
    target = int(0.6 * before[f'{key}_before'])
    out = tmp_path / budget
    assert export_tool.main([str(TOY_SEARCH), chain['search_ckpt'], f'--{budget}', str(target),
                             '-o', str(out)]) in (0, None)
    subnet = Subnet.load(out / 'subnet.json')
    assert subnet.budget['kind'] == budget
    assert 0.8 * target <= subnet.stats[f'{key}_after'] <= target
    cfg = load_cfg(TOY_RETRAIN, **{'model.backbone.subnet': str(out / 'subnet.json')})
    model = build_model(cfg)
    model.load_state_dict(load_checkpoint_safe(str(out / 'pruned.pth'))['state_dict'],
                          strict=True)


# ----------------------------------------------------------------------------- bad input
def test_toy_data_root_without_cifar_folder_names_the_missing_path(tmp_path):
    cfg = load_cfg(TOY_DENSE)
    init_default_scope('mmpretrain')
    dataset_cfg = dict(cfg.train_dataloader.dataset, data_root=str(tmp_path))
    with pytest.raises(FileNotFoundError) as err:
        DATASETS.build(dataset_cfg).full_init()
    missing = tmp_path / 'cifar-100-python' / 'train'
    assert str(missing) in str(err.value) and 'make_toy_cifar100.py' in str(err.value)


def test_real_data_root_without_cifar_folder_names_it_and_does_not_download(tmp_path):
    cfg = load_cfg(REAL_DENSE)
    init_default_scope('mmpretrain')
    dataset_cfg = dict(cfg.test_dataloader.dataset, data_root=str(tmp_path / 'cifar100'))
    with pytest.raises(RuntimeError, match='Cannot find CIFAR100 dataset in') as err:
        DATASETS.build(dataset_cfg).full_init()
    assert str(tmp_path / 'cifar100') in str(err.value)


def test_subnet_of_a_detector_backbone_of_another_arch_is_refused(tmp_path):
    detector_backbone = SIDTViT(arch=dict(embed_dims=96, num_layers=3, num_heads=3),
                                patch_size=16, window_size=4, global_attn_indexes=(2,),
                                use_rel_pos=True, out_type='featmap', mode='search')
    subnet = select_subnet(detector_backbone, keep_ratio=0.6)
    subnet.source = dict(config='configs/toy/sidt-search_mask-rcnn_sidtvit-toy-kr0.6_'
                                'simplefpn_100it_toy-coco.py')
    path = tmp_path / 'detector_subnet.json'
    subnet.save(path)
    cfg = load_cfg(TOY_RETRAIN, **{'model.backbone.subnet': str(path)})
    with pytest.raises(SubnetError) as err:
        build_model(cfg)
    message = str(err.value)
    assert str(path) in message and 'does not fit the architecture' in message
    assert 'embed_dims: subnet has 96, model has 64' in message
    assert 'num_layers: subnet has 3, model has 4' in message
