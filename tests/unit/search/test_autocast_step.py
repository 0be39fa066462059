"""A search step under bf16 autocast on CPU (the mixed precision a GPU search would use):
the masks stay fp32 parameters with fp32, finite gradients close to the fp32 step's, and the
optimizer step keeps them fp32 and finite."""
from __future__ import annotations

import pytest
import torch
from helpers import perturb_

from sidt_mmdet.models import SIDTViT
from sidt_mmdet.search import SparsityLoss

pytestmark = pytest.mark.usefixtures('one_torch_thread')

ARCH = dict(arch=dict(embed_dims=48, num_layers=3, num_heads=3), img_size=32, patch_size=8,
            window_size=2, global_attn_indexes=[2], use_rel_pos=True, mode='search',
            search_dims=('attn', 'mlp', 'embed'))


def _step(amp: bool):
    torch.manual_seed(0)
    model = perturb_(SIDTViT(**ARCH), seed=1).train()
    masks = model.mask_parameters()
    others = [p for n, p in model.named_parameters() if n not in masks]
    opt = torch.optim.AdamW([dict(params=others), dict(params=list(masks.values()),
                                                      weight_decay=0.0, lr=1e-2)], lr=1e-3)
    x = torch.randn(2, 3, 40, 48, generator=torch.Generator().manual_seed(2))
    sparsity = SparsityLoss(lambda_attn=1e-3, lambda_mlp=1e-3, lambda_embed=1e-3,
                            macs_weighted=True, input_size=(40, 48))
    dtypes = set()
    hooks = [m.register_forward_hook(lambda _m, _i, out: dtypes.add(out.dtype))
             for m in model.blocks.modules() if isinstance(m, torch.nn.Linear)]
    with torch.autocast('cpu', dtype=torch.bfloat16, enabled=amp):
        feat = model(x)[0]
        loss = feat.float().square().mean() + sparsity(model)['loss_sparsity']
    loss.backward()
    grads = {n: m.grad.clone() for n, m in masks.items()}
    before = {n: m.detach().clone() for n, m in masks.items()}
    opt.step()
    for h in hooks:
        h.remove()
    return dtypes, grads, before, masks


def test_bf16_autocast_search_step_keeps_fp32_masks_and_finite_gradients():
    """Catches a mask cast to bf16 (its small updates would round away), a mask gradient
    lost, not finite or in another dtype under autocast, and a step that breaks the masks."""
    dtypes, grads, before, masks = _step(amp=True)
    assert torch.bfloat16 in dtypes, f'autocast ran no layer of the blocks in bf16: {dtypes}'
    ref_dtypes, ref_grads, _, _ = _step(amp=False)
    assert ref_dtypes == {torch.float32}
    assert len(masks) == 3 * 2 + 1  # attn (joint q/k/v) and mlp per block, the embedding
    for name, m in masks.items():
        g = grads[name]
        assert m.dtype == g.dtype == torch.float32, name
        assert torch.isfinite(g).all() and g.abs().max() > 0, name
        assert (g - ref_grads[name]).abs().max() <= 0.1 * ref_grads[name].abs().max(), name
        assert torch.isfinite(m).all() and not torch.equal(m.detach(), before[name]), name
