"""Every config under configs/ parses and builds its model on CPU; no data set is needed.

Retrain configs get a generated subnet file through the same override a user passes as
``--cfg-options model.backbone.subnet=...``. The recipes (ViTDet's numbers, the stage
naming scheme, search/retrain pairs) are checked against what the configs really resolve to.
"""
from __future__ import annotations

import ast
import functools
import math
import random
import re
from pathlib import Path
from unittest import mock

import mmengine.config.utils as mmengine_config_utils
import pytest
import torch
from helpers import REPO
from mmengine.config import Config
from mmengine.registry import MODELS, init_default_scope

from sidt_mmdet.models import SIDTViT, Subnet
from sidt_mmdet.models.backbones.vit_spec import resolve_arch

CONFIG_DIR = REPO / 'configs'
CONFIGS = sorted(p for p in CONFIG_DIR.rglob('*.py') if '_base_' not in p.parts)
BASE_PIECES = sorted((CONFIG_DIR / '_base_').rglob('*.py'))
CUSTOM_IMPORTS = dict(imports=['sidt_mmdet'], allow_failed_imports=False)
# mmpretrain configs also import the module that registers ToyCIFAR100 (import sidt_mmdet
# alone leaves mmpretrain out)
CLS_CUSTOM_IMPORTS = dict(imports=['sidt_mmdet', 'sidt_mmdet.datasets.toy_cifar100'],
                          allow_failed_imports=False)
# The detection configs; other folders (e.g. classification) are built generically.
DETECTION_DIRS = ('vit', 'vitdet', 'sidt', 'toy')
# The dense ResNet toy detector (no SIDTViT in it), a reference for the tools.
NOT_SIDT = {'toy/sidt-dense_retinanet_r18-tiny_fpn_300it_toy-coco.py'}
# Every config in every folder: {stage}_{algorithm}_{backbone}_{neck}_{schedule}_{dataset}.py
# (mmdet's scheme with a stage prefix; a classifier's "neck" field names its head, `linear`).
CONFIG_NAME = re.compile(
    r'(?P<stage>sidt-(?:dense|search|retrain|lowrank-retrain|hybrid-search|hybrid-retrain))_'
    r'(?P<algorithm>[a-z0-9-]+)_(?P<backbone>[a-z0-9.-]+)_(?P<neck>[a-z0-9-]+)_'
    r'(?P<schedule>[a-z0-9.-]+)_(?P<dataset>[a-z0-9-]+)\.py')
# what the stage prefix says about the backbone's mode
STAGE_MODE = {'sidt-dense': 'dense', 'sidt-search': 'search', 'sidt-hybrid-search': 'search',
              'sidt-retrain': 'pruned', 'sidt-lowrank-retrain': 'pruned',
              'sidt-hybrid-retrain': 'pruned'}
STAGE_NAME = re.compile(
    r'sidt-(?P<stage>search|retrain)_(?P<detector>mask-rcnn|faster-rcnn|retinanet)_'
    r'(?P<backbone>sidtvit-[a-z0-9-]+?)-kr(?P<ratio>0\.\d+|1\.0)_(?P<neck>simplefpn)_'
    r'(?P<sched>[a-z0-9-]+)_(?P<dataset>coco|toy-coco|toy-coco-hard|toy-coco-harder)\.py')
VITDET_RECIPE = {  # ViTDet (Li et al. 2022), Mask R-CNN on COCO
    'b': dict(width=768, depth=12, global_blocks=[2, 5, 8, 11], drop_path=0.1, decay=0.7),
    'l': dict(width=1024, depth=24, global_blocks=[5, 11, 17, 23], drop_path=0.4, decay=0.8),
    'h': dict(width=1280, depth=32, global_blocks=[7, 15, 23, 31], drop_path=0.5, decay=0.9),
}


def _rel(path: Path) -> str:
    return str(path.relative_to(CONFIG_DIR))


@pytest.fixture(scope='module', autouse=True)
def _fast_mmdet_base_lookup():
    """mmengine reads ~400 YAML metafiles of mmdet for every ``mmdet::`` base it resolves
    (0.6 s each); the answer depends only on its arguments, so cache it for this module."""
    original = mmengine_config_utils._get_cfg_metainfo

    @functools.cache
    def cached(package_path, cfg_path):
        try:
            return original(package_path, cfg_path), None
        except ValueError as e:
            return None, e

    def lookup(package_path, cfg_path):
        result, error = cached(package_path, cfg_path)
        if error is not None:
            raise error
        return result

    with mock.patch.object(mmengine_config_utils, '_get_cfg_metainfo', lookup):
        yield


@pytest.fixture(autouse=True)
def _toy_data_root(monkeypatch, tmp_path):
    # Toy configs read their data root from SIDT_TOY_COCO; building needs no files there.
    monkeypatch.setenv('SIDT_TOY_COCO', str(tmp_path / 'toy_coco'))


def _backbone_cfg(cfg: Config) -> dict:
    model = cfg.model
    return (model.model if 'model' in model else model).backbone


def _arch(backbone_cfg: dict) -> tuple[int, int, int, int]:
    bb = resolve_arch(backbone_cfg.get('arch'), backbone_cfg.get('embed_dim'),
                      backbone_cfg.get('depth'), backbone_cfg.get('num_heads'),
                      backbone_cfg.get('mlp_ratio'))
    return (bb['embed_dims'], bb['num_layers'], bb['num_heads'],
            int(bb['embed_dims'] * bb['mlp_ratio']))


def random_subnet(embed_dims: int, num_layers: int, num_heads: int, mlp_hidden: int,
                  seed: int = 0) -> Subnet:
    """Unequal head widths, a head dropped in block 0, pruned MLP and embedding."""
    rng = random.Random(seed)
    d = embed_dims // num_heads

    def some(n, low):
        return sorted(rng.sample(range(n), rng.randint(low, n)))

    blocks = []
    for i in range(num_layers):
        v = [some(d, 1) for _ in range(num_heads)]
        if i == 0 and num_heads > 1:
            v[1] = []
        blocks.append(dict(qk=[some(d, 1) for _ in range(num_heads)], v=v,
                           mlp=some(mlp_hidden, 1)))
    return Subnet(embed_dims, num_layers, num_heads, mlp_hidden, blocks=blocks,
                  embed=some(embed_dims, num_heads))


def _skip_random_init(t, *args, **kwargs):
    return t


def build_model(cfg: Config, random_init: bool = False):
    """Build ``cfg.model`` as the Runner does. Unless ``random_init``, random initialisation
    is skipped (weights stay uninitialised): it is the slow part for ViT-L/H (15 s for H),
    and only shapes and structure are checked then."""
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    if random_init:
        return MODELS.build(cfg.model)
    with mock.patch('torch.nn.init.trunc_normal_', _skip_random_init), \
            mock.patch('torch.nn.init.kaiming_uniform_', _skip_random_init), \
            mock.patch('torch.nn.init.uniform_', _skip_random_init), \
            mock.patch('torch.nn.init.normal_', _skip_random_init):
        return MODELS.build(cfg.model)


def test_there_is_a_config_for_every_detector_arch_and_stage():
    names = {_rel(p) for p in CONFIGS}
    for det in ('mask-rcnn', 'faster-rcnn', 'retinanet'):
        for arch in 'tsb':
            assert f'vit/sidt-dense_{det}_sidtvit-{arch}_simplefpn_1x_coco.py' in names
        assert f'toy/sidt-dense_{det}_sidtvit-toy_simplefpn_100it_toy-coco.py' in names
    for stage_dir in ('sidt/search', 'sidt/retrain'):
        assert len([n for n in names if n.startswith(stage_dir + '/')]) == 9
    for arch in 'blh':
        assert f'vitdet/sidt-dense_mask-rcnn_sidtvit-{arch}_simplefpn_lsj-100e_coco.py' in names
        assert any(n.startswith(f'vitdet/sidt-search_mask-rcnn_sidtvit-{arch}-') for n in names)
        assert any(n.startswith(f'vitdet/sidt-retrain_mask-rcnn_sidtvit-{arch}-') for n in names)


@pytest.mark.parametrize('path', BASE_PIECES, ids=_rel)
def test_base_pieces_parse(path):
    cfg = Config.fromfile(str(path))
    assert cfg._cfg_dict, f'{path} defines nothing'


@pytest.mark.parametrize('path', CONFIGS, ids=_rel)
def test_config_builds(path, tmp_path):
    cfg = Config.fromfile(str(path))
    detection = _rel(path).split('/')[0] in DETECTION_DIRS
    want = CLS_CUSTOM_IMPORTS if cfg.get('default_scope') == 'mmpretrain' else CUSTOM_IMPORTS
    assert cfg.get('custom_imports') == want
    if _rel(path) not in NOT_SIDT:
        stage = CONFIG_NAME.fullmatch(path.name)['stage']
        assert _backbone_cfg(cfg).get('mode', 'dense') == STAGE_MODE[stage], stage
    if not detection or _rel(path) in NOT_SIDT:
        backbone_cfg = _backbone_cfg(cfg)
        if backbone_cfg.get('mode') == 'pruned':
            subnet_path = tmp_path / 'subnet.json'
            random_subnet(*_arch(backbone_cfg)).save(subnet_path)
            cfg.merge_from_dict({'model.backbone.subnet': str(subnet_path)})
        assert build_model(cfg) is not None
        return
    assert cfg.get('default_scope') == 'mmdet'
    # custom_imports comes from the root of the chain: test_custom_imports_declared_once_per_chain
    backbone_cfg = _backbone_cfg(cfg)
    mode = backbone_cfg.get('mode', 'dense')
    subnet = None
    if mode == 'pruned':
        subnet = random_subnet(*_arch(backbone_cfg))
        subnet_path = tmp_path / 'subnet.json'
        subnet.save(subnet_path)
        cfg.merge_from_dict({'model.backbone.subnet': str(subnet_path)})
    toy = path.parent.name == 'toy'
    model = build_model(cfg, random_init=toy)
    backbone = model.backbone
    assert isinstance(backbone, SIDTViT) and backbone.mode == mode
    assert bool(backbone.mask_parameters()) == (mode == 'search')
    if mode == 'search':
        assert 'sparsity' in cfg.model and hasattr(model, 'sidt_sparsity')
    neck = model.neck
    assert type(neck).__name__ == 'SIDTSimpleFPN'
    assert neck.input_channels == backbone.out_channels
    assert neck.backbone_channel == backbone.embed_dims_dense
    if subnet is not None:
        assert backbone.out_channels == len(subnet.kept_embed) < subnet.embed_dims
        assert neck.fpn1[0].in_channels == neck.fpn2[0].in_channels == len(subnet.kept_embed)
    if toy:  # small enough to run backbone + pyramid
        model.init_weights()
        model.eval()
        with torch.no_grad():
            feats = model.extract_feat(torch.randn(1, 3, 96, 128))
        assert [tuple(f.shape) for f in feats] == [
            (1, neck.out_channels, math.ceil(96 / s), math.ceil(128 / s))
            for s in (4, 8, 16, 32, 64)]
        assert all(torch.isfinite(f).all() for f in feats)


STAGE_CONFIGS = [p for p in CONFIGS if p.name.startswith(('sidt-search_', 'sidt-retrain_'))
                 and _rel(p).split('/')[0] in DETECTION_DIRS]


def _local_bases(path: Path) -> list[Path]:
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, 'id', None) == '_base_'
                                                for t in node.targets):
            value = ast.literal_eval(node.value)
            names = [value] if isinstance(value, str) else list(value)
            return [(path.parent / n).resolve() for n in names if '::' not in n]
    return []


def _chain(path: Path) -> list[Path]:
    return [path] + [a for b in _local_bases(path) for a in _chain(b)]


@pytest.mark.parametrize('path', CONFIGS, ids=_rel)
def test_custom_imports_declared_once_per_chain(path):
    declaring = [_rel(p) for p in _chain(path)
                 if re.search(r'^custom_imports\s*=', p.read_text(), re.M)]
    assert len(declaring) == 1, f'{_rel(path)}: custom_imports declared in {declaring}'


def test_every_config_name_follows_the_scheme():
    bad = [_rel(p) for p in CONFIGS if not CONFIG_NAME.fullmatch(p.name)]
    assert not bad, f'not following {{stage}}_{{algorithm}}_{{backbone}}_{{neck}}_' \
        f'{{schedule}}_{{dataset}}.py: {bad}'
    assert len({p.name for p in CONFIGS}) == len(CONFIGS), 'two folders hold the same name'


def test_stage_config_names():
    """sidt-{stage}_{detector}_{backbone}-kr{ratio}_{neck}_{sched}_{dataset}.py"""
    bad = [_rel(p) for p in STAGE_CONFIGS if not STAGE_NAME.fullmatch(p.name)]
    assert not bad, f'not following the stage naming scheme: {bad}'
    stages = [STAGE_NAME.fullmatch(p.name)['stage'] for p in STAGE_CONFIGS]
    assert stages.count('search') == stages.count('retrain') > 0


@pytest.mark.parametrize('path', [p for p in STAGE_CONFIGS if p.name.startswith('sidt-search')],
                         ids=_rel)
def test_search_config_has_a_retrain_config_reading_its_export(path):
    """Same detector, backbone and ratio; the retrain defaults are the search's export."""
    m = STAGE_NAME.fullmatch(path.name)
    prefix = f'sidt-retrain_{m["detector"]}_{m["backbone"]}-kr{m["ratio"]}_'
    top = _rel(path).split('/')[0]
    partners = [p for p in CONFIGS if _rel(p).split('/')[0] == top
                and p.name.startswith(prefix)
                and STAGE_NAME.fullmatch(p.name)['dataset'] == m['dataset']]
    assert len(partners) == 1, (path.name, partners)
    cfg = Config.fromfile(str(partners[0]))
    export_dir = f'work_dirs/{path.stem}/export'
    assert cfg.model.backbone.subnet == export_dir + '/subnet.json'
    assert cfg.load_from == export_dir + '/pruned.pth'
    assert f'--keep-ratio {m["ratio"]}' in path.read_text()


@pytest.mark.parametrize('arch', sorted(VITDET_RECIPE))
def test_vitdet_configs_follow_the_recipe(arch):
    recipe = VITDET_RECIPE[arch]
    cfg = Config.fromfile(str(CONFIG_DIR / f'vitdet/sidt-dense_mask-rcnn_sidtvit-{arch}_simplefpn_'
                                           'lsj-100e_coco.py'))
    bb = cfg.model.backbone
    # ViTDet's own argument names, resolved by SIDTViT
    assert {'embed_dim', 'depth', 'num_heads', 'window_block_indexes', 'pretrain_img_size',
            'pretrain_use_cls_token'} <= set(bb) and 'arch' not in bb
    assert (bb.embed_dim, bb.depth, bb.window_size, bb.use_rel_pos) == (
        recipe['width'], recipe['depth'], 14, True)
    assert sorted(set(range(bb.depth)) - set(bb.window_block_indexes)) == recipe['global_blocks']
    assert bb.drop_path_rate == recipe['drop_path']
    ow = cfg.optim_wrapper
    assert ow.constructor == 'SIDTLayerDecayOptimWrapperConstructor'
    assert ow.paramwise_cfg.layer_decay_rate == recipe['decay']
    assert (ow.optimizer.type, ow.optimizer.lr, ow.optimizer.weight_decay) == ('AdamW', 1e-4, 0.1)
    assert cfg.train_cfg.max_iters == 184375
    assert cfg.train_dataloader.batch_size * 16 == cfg.auto_scale_lr.base_batch_size == 64
    train_types = [t['type'] for t in cfg.train_dataloader.dataset.pipeline]
    assert train_types[2:4] == ['RandomResize', 'RandomCrop']
    assert cfg.train_dataloader.dataset.pipeline[2].ratio_range == (0.1, 2.0)
    assert cfg.train_dataloader.dataset.pipeline[3].crop_size == (1024, 1024)
    pad = cfg.model.data_preprocessor.batch_augments[0]
    assert (pad.type, tuple(pad.size)) == ('BatchFixedSizePad', (1024, 1024))
    test_pad = [t for t in cfg.test_dataloader.dataset.pipeline if t['type'] == 'Pad']
    assert tuple(test_pad[0]['size']) == (1024, 1024)
    assert cfg.val_evaluator.metric == ['bbox', 'segm']
    assert cfg.model.neck.backbone_channel == recipe['width']


def test_vitdet_b_backbone_parameters_match_the_hand_formula():
    cfg = Config.fromfile(str(CONFIG_DIR / 'vitdet'
                              / 'sidt-dense_mask-rcnn_sidtvit-b_simplefpn_lsj-100e_coco.py'))
    backbone = build_model(cfg).backbone
    D, d, grid, window = 768, 64, 1024 // 16, 14
    per_block = 12 * D * D + 9 * D + 4 * D  # qkv, proj, fc1, fc2 (+biases), two LayerNorms
    rel_pos = sum(2 * (2 * (grid if i in (2, 5, 8, 11) else window) - 1) * d for i in range(12))
    want = 3 * 16 * 16 * D + D + grid * grid * D + 12 * per_block + rel_pos
    assert sum(p.numel() for p in backbone.parameters()) == want
