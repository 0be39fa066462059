"""ONNX export of SIDTViT (+ SIDTSimpleFPN): onnxruntime parity for dense and pruned models,
fixed-size refusal, bad inputs, and no file left by a failed export.

A tiny ViTDet-style backbone (patch 4, windows of 3 with one global block, decomposed
relative positions, a 32 px pretraining grid) exported at 40 x 44: the position embedding
is resampled, every windowed block pads its grid (10 x 11 -> 12 x 12) and the global
block's relative-position tables are interpolated, so each of these paths is in the graph.
"""
from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
import torch
from helpers import perturb_, random_masks_
from mmengine.registry import init_default_scope

from sidt_mmdet.export import prune_backbone, prune_model_state_dict
from sidt_mmdet.export.onnx import (
    DEFAULT_OPSET,
    SUPPORTED_OPSETS,
    ExportModel,
    OnnxExportError,
    OnnxRunner,
    build_export_model,
    export_onnx,
    export_onnx_from_config,
    second_check_size,
)
from sidt_mmdet.export.onnx_bench import onnx_latency
from sidt_mmdet.models import SIDTSimpleFPN, SIDTViT
from sidt_mmdet.search.select import select_subnet

pytestmark = pytest.mark.usefixtures('one_torch_thread')

PACKAGE = Path(__file__).resolve().parents[3] / 'sidt_mmdet'
ARCH = dict(arch=dict(embed_dims=32, num_layers=3, num_heads=4), patch_size=4, img_size=32,
            window_size=3, global_attn_indexes=[2], use_rel_pos=True)
SIZE = (40, 44)
ATOL = 1e-4


@pytest.fixture
def deploy():
    for name in ('onnx', 'onnxruntime', 'onnxscript'):
        pytest.importorskip(name, reason=f"{name} missing: install the deploy group "
                                         "(pip install 'sidt-mmdet[deploy]')")


def dense_backbone(seed=0) -> SIDTViT:
    torch.manual_seed(seed)
    return perturb_(SIDTViT(**ARCH), seed=seed).eval()


def pruned_backbone(granularity: str, seed=0) -> SIDTViT:
    torch.manual_seed(seed)
    search = SIDTViT(mode='search', search_dims=('attn', 'mlp', 'embed'), **ARCH)
    perturb_(search, seed=seed)
    random_masks_(search, seed=seed)
    subnet = select_subnet(search, keep_ratio=0.6, granularity=granularity, round_to=1,
                           min_mlp=1)
    pruned = prune_backbone(search, subnet).eval()
    assert pruned.embed_dims < 32
    return pruned


def neck_for(backbone: SIDTViT) -> SIDTSimpleFPN:
    init_default_scope('mmdet')  # the neck's norm layer is registered in mmdet
    neck = SIDTSimpleFPN(backbone_channel=32, in_channels=[8, 16, 32, 32], out_channels=16,
                         num_outs=5, input_channels=backbone.embed_dims)
    return perturb_(neck, seed=3).eval()


def independent_max_diff(path: str, model: ExportModel, shape) -> float:
    """onnxruntime vs PyTorch on a fresh input, outside export_onnx's own check."""
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(123))
    with torch.no_grad():
        expected = model(x)
    got = OnnxRunner(path)(x)
    assert len(got) == len(expected)
    return max(float((torch.from_numpy(o) - e).abs().max()) for o, e in zip(got, expected))


@pytest.mark.slow  # three fixed-size exports (5-8 s each)
@pytest.mark.parametrize('kind', ['dense', 'dim', 'head_uniform'])
def test_parity_fixed_size(deploy, tmp_path, kind):
    """The dense graph is written at the highest supported opset (23), the pruned ones at
    the default: one export checks both the parity and that the opset is the one asked for."""
    import onnx

    backbone = dense_backbone() if kind == 'dense' else pruned_backbone(kind)
    equal = [len(set(b.attn.qk_dims)) == 1 and len(set(b.attn.v_dims)) == 1
             for b in backbone.blocks]
    if kind == 'dim':
        assert not all(equal)  # unequal heads
    if kind == 'head_uniform':
        assert all(equal)
    model = ExportModel(backbone).eval()
    path = tmp_path / f'{kind}.onnx'
    opset = SUPPORTED_OPSETS[-1] if kind == 'dense' else DEFAULT_OPSET
    result = export_onnx(model, str(path), SIZE, opset=opset, log=lambda _: None)
    assert path.is_file() and result.output_names == ['feat']
    assert [c.input_shape for c in result.checks] == [[1, 3, *SIZE]]
    assert result.checks[0].max_diff < ATOL
    assert independent_max_diff(str(path), model, (1, 3, *SIZE)) < ATOL
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no temporary left
    runner = OnnxRunner(str(path))
    assert runner.input_shape == [1, 3, *SIZE]
    assert runner.metadata['sidt_mmdet.input_size'] == '40x44'
    assert runner.metadata['sidt_mmdet.mode'] == ('dense' if kind == 'dense' else 'pruned')
    assert {o.domain: o.version for o in onnx.load(str(path)).opset_import}[''] == opset


@pytest.mark.slow  # a fixed-size export (about 9 s)
def test_parity_pruned_with_neck_and_fixed_size_refuses_another_size(deploy, tmp_path):
    backbone = pruned_backbone('dim', seed=1)
    model = ExportModel(backbone, neck_for(backbone)).eval()
    path = tmp_path / 'neck.onnx'
    result = export_onnx(model, str(path), SIZE, log=lambda _: None)
    # named by log2 of the stride: patch 4 gives strides 1..16 (patch 16 gives p2..p6)
    assert result.output_names == ['p0', 'p1', 'p2', 'p3', 'p4']
    assert result.checks[0].max_diff < ATOL
    assert independent_max_diff(str(path), model, (1, 3, *SIZE)) < ATOL
    runner = OnnxRunner(str(path))
    with pytest.raises(OnnxExportError, match=r'fixed-size graph for input 1x3x40x44; got '
                                              r'1x3x48x48: re-export with --input-size 48 48'):
        runner(torch.zeros(1, 3, 48, 48))
    with pytest.raises(OnnxExportError, match='fixed-size graph for input 1x3x40x44; got 2x3'):
        runner(torch.zeros(2, 3, *SIZE))
    timing = onnx_latency(str(path), (1, 3, *SIZE), threads=1, warmup=1, repeats=3)
    assert timing['repeats'] == 3 and 0 < timing['min_ms'] <= timing['median_ms']
    with pytest.raises(OnnxExportError, match='fixed-size graph'):
        onnx_latency(str(path), (1, 3, 48, 48), repeats=1)


@pytest.mark.slow  # the only dynamic trace of the suite: 40 s idle, a minute or more loaded
def test_parity_dynamic_pruned(deploy, tmp_path):
    """A pruned backbone with its pyramid, exported at 32 x 44, whose height is the grid the
    global block's table was made for (where timm skips resampling it): the graph must still
    resample at every other size, and every level must follow."""
    backbone = pruned_backbone('dim', seed=2)
    model = ExportModel(backbone, neck_for(backbone)).eval()
    size = (32, 44)
    assert backbone.blocks[2].attn.rel_pos_size == (8, 8)
    second = second_check_size(model, size)
    grid = [-(-s // 4) for s in second]
    assert grid != [8, 11] and all(g % 3 for g in grid)  # windows pad at the second size
    assert all(s % 4 for s in second)  # and so does the patch embedding
    path = tmp_path / 'dyn.onnx'
    result = export_onnx(model, str(path), size, dynamic=True, log=lambda _: None)
    assert [c.input_shape for c in result.checks] == [[1, 3, *size], [2, 3, *second]]
    assert all(c.max_diff < ATOL for c in result.checks)
    assert result.output_names == ['p0', 'p1', 'p2', 'p3', 'p4']
    runner = OnnxRunner(str(path))
    assert not runner.fixed_shape
    assert runner.metadata['sidt_mmdet.input_size'] == 'dynamic'
    # a third size, larger than any traced or checked one
    assert independent_max_diff(str(path), model, (3, 3, 60, 52)) < ATOL


# Patch 16 on a 160 px pretraining grid (10 x 10), as the toy configs: at 224 px the grid is
# 14, and resampling 10 -> 14 is where onnx's reference Resize (which the graph optimizer
# used to fold a fixed graph's constant resampling with) picks the wrong neighbours.
ARCH_P16 = dict(ARCH, patch_size=16, img_size=160)


def _has_resize(path) -> bool:
    """The resampling runs in onnxruntime rather than being folded into a constant."""
    import onnx

    return 'Resize' in {n.op_type for n in onnx.load(str(path)).graph.node}


@pytest.mark.slow  # one fixed-size export
def test_parity_fixed_size_at_224_pruned(deploy, tmp_path):
    """A pruned backbone (unequal heads, fewer embedding channels) at 224 x 224: its
    position embedding is resampled 10 -> 14 and its global block's tables 19 -> 27, in both
    directions at once. The dense model with its pyramid at 224 x 320 (one side at 224) is
    the next test's first export."""
    torch.manual_seed(0)
    search = SIDTViT(mode='search', search_dims=('attn', 'mlp', 'embed'), **ARCH_P16)
    random_masks_(perturb_(search))
    subnet = select_subnet(search, keep_ratio=0.6, granularity='dim', round_to=1, min_mlp=1)
    backbone = prune_backbone(search, subnet).eval()
    assert backbone.embed_dims < 32
    model = ExportModel(backbone).eval()
    path = tmp_path / 'dim_224x224.onnx'
    result = export_onnx(model, str(path), (224, 224), log=lambda _: None)
    assert result.checks[0].max_diff < ATOL
    assert independent_max_diff(str(path), model, (1, 3, 224, 224)) < ATOL
    assert _has_resize(path)


@pytest.mark.slow  # two fixed-size exports
def test_fixed_size_advice_is_an_export_that_works(deploy, tmp_path):
    """A dense backbone and pyramid at 224 x 320 (position embedding resampled 10 -> 14 x 20)
    matches PyTorch; the size its refusal suggests exports, and the zero-padded input it
    says to feed gives what PyTorch gives on the unpadded one."""
    torch.manual_seed(0)
    backbone = perturb_(SIDTViT(**ARCH_P16)).eval()
    model = ExportModel(backbone, neck_for(backbone)).eval()
    path = tmp_path / 'fixed.onnx'
    result = export_onnx(model, str(path), (224, 320), log=lambda _: None)
    assert result.checks[0].max_diff < ATOL
    assert independent_max_diff(str(path), model, (1, 3, 224, 320)) < ATOL
    assert _has_resize(path)
    with pytest.raises(OnnxExportError, match=r'got 2x3x230x330: re-export with --batch 2 '
                                              r'--input-size 240 336 and zero-pad the input '
                                              r'at the bottom and right to 240x336'):
        OnnxRunner(str(path))(torch.zeros(2, 3, 230, 330))
    other = tmp_path / 'advised.onnx'
    result = export_onnx(model, str(other), (240, 336), batch=2, log=lambda _: None)
    assert result.checks[0].max_diff < ATOL
    x = torch.randn(2, 3, 230, 330, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        expected = model(x)
    got = OnnxRunner(str(other))(torch.nn.functional.pad(x, (0, 6, 0, 10)))
    assert max(float((torch.from_numpy(o) - e).abs().max())
               for o, e in zip(got, expected)) < ATOL


@pytest.mark.slow  # one fixed-size export
def test_p3_p7_pyramid_exports_named_by_stride(deploy, tmp_path):
    """start_level=1: levels 8..128; at 224 x 320 the two deepest are both 1 x 1 wide, so
    only the strides, not the shapes, tell p6 from p7."""
    torch.manual_seed(0)
    backbone = perturb_(SIDTViT(**ARCH_P16)).eval()
    init_default_scope('mmdet')
    neck = perturb_(SIDTSimpleFPN(32, [8, 16, 32, 32], 16, num_outs=5, start_level=1)).eval()
    model = ExportModel(backbone, neck).eval()
    path = tmp_path / 'p3p7.onnx'
    result = export_onnx(model, str(path), (224, 320), log=lambda _: None)
    assert result.output_names == ['p3', 'p4', 'p5', 'p6', 'p7']
    assert result.checks[0].max_diff < ATOL
    assert independent_max_diff(str(path), model, (1, 3, 224, 320)) < ATOL


@pytest.mark.slow  # a fixed-size export (about 3 s)
def test_failed_check_leaves_no_file(deploy, tmp_path):
    path = tmp_path / 'strict.onnx'
    path.write_bytes(b'previous export')
    model = ExportModel(dense_backbone()).eval()
    # float32 rounding differs from PyTorch by more than 1e-12: the check must refuse
    with pytest.raises(OnnxExportError, match=r'onnxruntime does not reproduce PyTorch: input '
                                              r'1x3x40x44: max abs diff .* > 1e-12'):
        export_onnx(model, str(path), SIZE, atol=1e-12, log=lambda _: None)
    assert path.read_bytes() == b'previous export'  # the old file is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ['strict.onnx']


@pytest.mark.parametrize('opset', [11, 17, 99])
def test_unsupported_opset(tmp_path, opset):
    model = ExportModel(dense_backbone()).eval()
    with pytest.raises(OnnxExportError, match=f'opset {opset} is not supported: expected one '
                                              'of 18..23'):
        export_onnx(model, str(tmp_path / 'x.onnx'), SIZE, opset=opset)
    assert not list(tmp_path.iterdir())


def test_fixed_size_not_a_multiple_of_the_patch(tmp_path):
    model = ExportModel(dense_backbone()).eval()
    with pytest.raises(OnnxExportError, match=r'input size 42x44 is not a multiple of the patch '
                                              r'size 4: .*\(try 44 44, or --dynamic'):
        export_onnx(model, str(tmp_path / 'x.onnx'), (42, 44))
    assert not list(tmp_path.iterdir())


# ----------------------------------------------------------------- from a config + checkpoint
CONFIG = """
model = dict(
    type='SIDTModel', model_type='RetinaNet',
    backbone=dict(type='SIDTViT', arch=dict(embed_dims=32, num_layers=3, num_heads=4),
                  patch_size=4, img_size=32, window_size=3, global_attn_indexes=[2],
                  use_rel_pos=True, init_cfg=None),
    neck=dict(type='SIDTSimpleFPN', backbone_channel=32, in_channels=[8, 16, 32, 32],
              out_channels=16, num_outs=5))
"""


@pytest.fixture
def config(tmp_path) -> str:
    path = tmp_path / 'tiny.py'
    path.write_text(CONFIG)
    return str(path)


def save_ckpt(path, backbone, neck=None, extra=None) -> str:
    state = {f'backbone.{k}': v for k, v in backbone.state_dict().items()}
    if neck is not None:
        state.update({f'neck.{k}': v for k, v in neck.state_dict().items()})
    state.update(extra or {})
    torch.save(dict(state_dict=state, meta=dict(epoch=1)), path)
    return str(path)


def pruned_files(tmp_path):
    """A subnet file and the checkpoint of backbone + neck pruned to it (embedding too)."""
    torch.manual_seed(0)
    search = SIDTViT(mode='search', search_dims=('attn', 'mlp', 'embed'), **ARCH)
    random_masks_(perturb_(search))
    subnet = select_subnet(search, keep_ratio=0.6, round_to=1, min_mlp=1)
    init_default_scope('mmdet')
    neck = perturb_(SIDTSimpleFPN(32, [8, 16, 32, 32], 16, 5))
    state = {f'backbone.{k}': v for k, v in search.state_dict().items()}
    state.update({f'neck.{k}': v for k, v in neck.state_dict().items()})
    subnet.save(str(tmp_path / 'subnet.json'))
    torch.save(dict(state_dict=prune_model_state_dict(state, subnet)), tmp_path / 'pruned.pth')
    return str(tmp_path / 'subnet.json'), str(tmp_path / 'pruned.pth'), subnet


def test_build_from_config_loads_backbone_and_neck(config, tmp_path):
    subnet_path, ckpt, subnet = pruned_files(tmp_path)
    model = build_export_model(config, ckpt, subnet=subnet_path, with_neck=True)
    assert model.backbone.mode == 'pruned'
    assert model.backbone.embed_dims == len(subnet.kept_embed) < 32
    assert model.neck.input_channels == model.backbone.embed_dims
    state = torch.load(ckpt, weights_only=True)['state_dict']
    assert torch.equal(model.backbone.blocks[1].attn.qkv.weight,
                       state['backbone.blocks.1.attn.qkv.weight'])
    assert torch.equal(model.neck.fpn2[0].weight, state['neck.fpn2.0.weight'])


def test_checkpoint_that_does_not_fit_the_config(config, tmp_path):
    other = SIDTViT(arch=dict(embed_dims=48, num_layers=3, num_heads=4), patch_size=4,
                    img_size=32, window_size=3, global_attn_indexes=[2], use_rel_pos=True)
    ckpt = save_ckpt(tmp_path / 'other.pth', other)
    out = tmp_path / 'x.onnx'
    with pytest.raises(OnnxExportError, match=r'other\.pth does not fit the backbone of the '
                                              r'config; shape mismatches: .*blocks\.0\.attn\.qkv'
                                              r'\.weight: checkpoint \(144, 48\) vs model '
                                              r'\(96, 32\)'):
        export_onnx_from_config(config, ckpt, str(out), input_size=SIZE, log=lambda _: None)
    assert not out.exists()


def test_pruned_checkpoint_without_its_subnet(config, tmp_path):
    _, ckpt, _ = pruned_files(tmp_path)
    with pytest.raises(OnnxExportError, match=r'pruned\.pth does not fit the backbone of the '
                                              r'config; shape mismatches: .*needs the config '
                                              r'\(or --subnet\)'):
        build_export_model(config, ckpt)


def test_checkpoint_that_does_not_fit_the_subnet(config, tmp_path):
    subnet_path, _, subnet = pruned_files(tmp_path)
    dense_ckpt = save_ckpt(tmp_path / 'dense.pth', dense_backbone())
    with pytest.raises(OnnxExportError, match=r'dense\.pth does not fit the backbone of the '
                                              r'config; shape mismatches'):
        build_export_model(config, dense_ckpt, subnet=subnet_path)
    other = json.loads(Path(subnet_path).read_text())
    other['arch']['num_layers'] = 2
    other['blocks'] = other['blocks'][:2]
    (tmp_path / 'other.json').write_text(json.dumps(other))
    with pytest.raises(OnnxExportError, match=r'cannot build the backbone: .*num_layers'):
        build_export_model(config, dense_ckpt, subnet=str(tmp_path / 'other.json'))


def test_search_checkpoint_and_missing_neck(config, tmp_path):
    search = SIDTViT(mode='search', search_dims=('attn', 'mlp'), **ARCH)
    ckpt = save_ckpt(tmp_path / 'search.pth', search)
    with pytest.raises(OnnxExportError, match=r'unexpected keys: blocks\.0\.attn\.dim_mask.*'
                                              r'this is a search checkpoint: export a subnet'):
        build_export_model(config, ckpt)
    dense_only = save_ckpt(tmp_path / 'backbone_only.pth', dense_backbone())
    with pytest.raises(OnnxExportError, match=r'--with-neck but the checkpoint has no neck\.\* '
                                              'tensors'):
        build_export_model(config, dense_only, with_neck=True)


def test_bad_values_fail_before_building(config, tmp_path):
    out = tmp_path / 'x.onnx'
    with pytest.raises(OnnxExportError, match='opset 13 is not supported'):
        export_onnx_from_config(config, 'missing.pth', str(out), opset=13)
    with pytest.raises(OnnxExportError, match='checkpoint not found: missing.pth'):
        export_onnx_from_config(config, 'missing.pth', str(out), input_size=SIZE)
    assert not out.exists()


def test_deploy_packages_are_imported_lazily():
    """``import sidt_mmdet`` must work without the deploy group: no module-level import of
    onnx, onnxruntime or onnxscript anywhere in the package."""
    deploy_modules = {'onnx', 'onnxruntime', 'onnxscript'}
    offenders = []
    for path in PACKAGE.rglob('*.py'):
        for node in ast.parse(path.read_text(encoding='utf-8')).body:
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or '']
            offenders += [f'{path.name}: {n}' for n in names
                          if n.split('.')[0] in deploy_modules]
    assert not offenders


def test_moved_benchmark_names_still_resolve_from_the_export_module():
    """The benchmark and the latency table moved to onnx_bench.py; the older import path
    gives the same objects, and an unknown name still raises AttributeError."""
    from sidt_mmdet.export import onnx, onnx_bench

    for name in ('onnx_latency', 'benchmark_onnx', 'latency_readme_block',
                 'update_latency_readme', 'README_BEGIN', 'README_END', 'README_PAGE'):
        assert getattr(onnx, name) is getattr(onnx_bench, name)
    with pytest.raises(AttributeError, match='no_such_name'):
        onnx.no_such_name  # noqa: B018
