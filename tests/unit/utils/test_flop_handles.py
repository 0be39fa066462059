"""mmengine's FLOP analyzer (behind mmdet's get_flops.py) counts SIDTViT as our exact counter
does once ``sidt_mmdet`` is imported: the attention call through the registered handle, the
packed (pruned) and masked (search) projections as calls of their modules."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers import build_pruned, random_masks_, subnet_from_masks
from mmengine.analysis import FlopAnalyzer
from torch import nn

import sidt_mmdet  # noqa: F401  (registers the handles, as custom_imports does)
from sidt_mmdet.models import SIDTViT
from sidt_mmdet.models.complexity import backbone_complexity
from sidt_mmdet.utils.flop_handles import SDPA, register_flop_handles

TINY = dict(arch=dict(embed_dims=48, num_layers=3, num_heads=3), img_size=64, window_size=3,
            global_attn_indexes=[1], use_rel_pos=True, drop_path_rate=0.1)
SIZE = (80, 64)  # 5x4 tokens: windows of 3 pad them to 6x6


def _analyze(model, x):
    analyzer = FlopAnalyzer(model, (x,))
    analyzer.unsupported_ops_warnings(False)
    analyzer.uncalled_modules_warnings(False)
    analyzer.total()
    return analyzer


def _backbones():
    torch.manual_seed(0)
    search = SIDTViT(mode='search', search_dims=('attn', 'mlp', 'embed'), **TINY).eval()
    random_masks_(search)
    sub = subnet_from_masks(search)
    pruned = build_pruned(search, sub, **TINY).eval()
    padded = SIDTViT(mode='pruned', subnet=sub, pruned_layout='padded', **TINY).eval()
    padded.load_state_dict(pruned.state_dict())
    return dict(dense=SIDTViT(**TINY).eval(), search=search, pruned=pruned, padded=padded)


BACKBONES = _backbones()


def test_attention_handle_counts_q_kT_and_attn_v():
    class Attn(nn.Module):
        def forward(self, q, k, v):
            return F.scaled_dot_product_attention(q, k, v)

    B, H, L, S, E, Ev = 2, 3, 5, 7, 4, 6
    q, k, v = torch.randn(B, H, L, E), torch.randn(B, H, S, E), torch.randn(B, H, S, Ev)
    analyzer = FlopAnalyzer(Attn(), (q, k, v))
    # q k^T: L x S dot products of length E; attn @ v: L x Ev dot products of length S
    assert analyzer.total() == B * H * (L * S * E + L * Ev * S)
    assert not analyzer.unsupported_ops()


@pytest.mark.parametrize('mode', ['dense', 'search', 'pruned'])
def test_analyzer_equals_exact_counter(mode):
    """Every MAC of our counter, attributed to the module that runs it: the packed and masked
    projections are counted under ``qkv`` / ``proj`` / ``fc2`` and no module is left uncalled."""
    model = BACKBONES[mode]
    a = _analyze(model, torch.randn(1, 3, *SIZE))
    ours = backbone_complexity(model, SIZE)
    ops = a.by_operator()
    assert SDPA not in a.unsupported_ops()
    # layer norms are elementwise for our counter (mmengine counts 5 per element)
    theirs = a.total() - ops['layer_norm']
    # the rel-pos einsums go through numpy's einsum_path, whose FLOP count mmengine reads
    # from a printout with 4 significant digits
    rel_pos = sum(r['macs_parts']['rel_pos'] for r in ours.blocks)
    assert rel_pos > 0 and ops['einsum'] == pytest.approx(rel_pos, rel=1e-3)
    assert theirs - ops['einsum'] == ours.macs_executed - rel_pos
    by_mod = a.by_module()
    assert by_mod['patch_embed.proj'] == ours.stem['macs']
    for i, row in enumerate(ours.blocks):
        p = f'blocks.{i}.'
        parts = row['macs_parts']
        assert by_mod[p + 'attn.qkv'] == parts['qkv']
        assert by_mod[p + 'attn.proj'] == parts['proj']
        assert by_mod[p + 'mlp.fc1'] + by_mod[p + 'mlp.fc2'] == parts['mlp']
    never = {n for n in a.uncalled_modules()
             if not isinstance(model.get_submodule(n), nn.Identity)}
    assert never == set()


def test_padded_layout_counts_what_runs():
    """The padded layout runs zero-padded heads: the analyzer sees the executed MACs."""
    model = BACKBONES['padded']
    a = _analyze(model, torch.randn(1, 3, *SIZE))
    ours = backbone_complexity(model, SIZE)
    assert ours.macs_executed > ours.macs
    theirs = a.total() - a.by_operator()['layer_norm']
    assert theirs == pytest.approx(ours.macs_executed, rel=1e-4)
    assert {n for n in a.uncalled_modules()
            if not isinstance(model.get_submodule(n), nn.Identity)} == set()


@pytest.mark.parametrize('mode', ['search', 'pruned', 'padded'])
def test_traced_forward_equals_eager(mode):
    """The module calls made while tracing compute what the eager weight-side path does."""
    model = BACKBONES[mode]
    x = torch.randn(1, 3, *SIZE)
    with torch.no_grad():
        traced = torch.jit.trace(model, (x,), check_trace=False)
        torch.testing.assert_close(traced(x)[0], model(x)[0])


def test_registration_is_idempotent_and_keeps_mmengine_handles():
    from mmengine.analysis import complexity_analysis as ca
    before = dict(ca._DEFAULT_SUPPORTED_FLOP_OPS)
    assert register_flop_handles()
    assert ca._DEFAULT_SUPPORTED_FLOP_OPS == before
    assert before['aten::linear'] is not None and SDPA in before
