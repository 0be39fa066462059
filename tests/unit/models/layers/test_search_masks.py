"""Search masks applied on the weight side equal the activation form: outputs and every
gradient (masks included), with windows, relative positions, split q/k-v and the
embedding mask."""
import pytest
import torch
import torch.nn.functional as F
from helpers import perturb_, random_masks_
from timm.layers import resample_abs_pos_embed
from timm.models.vision_transformer_sam import get_rel_pos, window_partition, window_unpartition

from sidt_mmdet.models import SIDTViT

pytestmark = pytest.mark.usefixtures('one_torch_thread')

TINY = dict(embed_dims=48, num_layers=3, num_heads=3)


def _attention(attn, x, hw):
    """The activation form: masks multiply q, k and v after the projection."""
    B, N, _ = x.shape
    H, d = attn.num_heads, attn.head_dim
    q, k, v = attn.qkv(x).view(B, N, 3, H, d).permute(2, 0, 3, 1, 4)
    qk_m, v_m = attn.masks()
    if qk_m is not None:
        q, k, v = q * qk_m[:, None], k * qk_m[:, None], v * v_m[:, None]
    bias = None
    if attn.use_rel_pos:
        qh, qw = hw
        r_q = q.reshape(B, H, qh, qw, d)
        rel_h = torch.einsum('bnhwc,hkc->bnhwk', r_q, get_rel_pos(qh, qh, attn.rel_pos_h))
        rel_w = torch.einsum('bnhwc,wkc->bnhwk', r_q, get_rel_pos(qw, qw, attn.rel_pos_w))
        bias = (rel_h[..., :, None] + rel_w[..., None, :]).reshape(B, H, N, N)
    o = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=attn.scale)
    return attn.proj(o.transpose(1, 2).reshape(B, N, H * d))


def activation_form(model, x):
    """SIDTViT's search forward with every mask multiplied into activations."""
    B = x.shape[0]
    m = model.embed_mask
    t = model.patch_embed.proj(x)
    hw = tuple(t.shape[2:])
    t = t.flatten(2).transpose(1, 2)
    t = t + resample_abs_pos_embed(model.pos_embed, list(hw), old_size=model.pretrain_grid,
                                   num_prefix_tokens=0)

    def scale(y):
        return y if m is None else y * m

    t = scale(t)
    for blk in model.blocks:
        y = scale(blk.norm1(t))
        if blk.window_size:
            ws, C = blk.window_size, y.shape[-1]
            y, pad_hw = window_partition(y.view(B, *hw, C), ws)
            y = _attention(blk.attn, y.view(-1, ws * ws, C), (ws, ws))
            y = window_unpartition(y.view(-1, ws, ws, C), ws, hw, pad_hw).view(B, -1, C)
        else:
            y = _attention(blk.attn, y, hw)
        t = t + scale(y)
        h = blk.mlp.act(blk.mlp.fc1(scale(blk.norm2(t))))
        if blk.mlp.hidden_mask is not None:
            h = h * blk.mlp.hidden_mask
        t = t + scale(blk.mlp.fc2(h))
    return t.transpose(1, 2).reshape(B, -1, *hw)


@pytest.mark.parametrize('split', [False, True])
@pytest.mark.parametrize('dims', [('attn', 'mlp'), ('attn', 'mlp', 'embed'), ('mlp',)])
@pytest.mark.parametrize('rel_pos', [True, False])
def test_weight_side_masks_equal_activation_form(split, dims, rel_pos):
    torch.manual_seed(0)
    model = SIDTViT(arch=TINY, img_size=64, mode='search', search_dims=dims, split_qkv=split,
                    window_size=3, global_attn_indexes=[1], use_rel_pos=rel_pos)
    perturb_(model)
    random_masks_(model, seed=1, zero_frac=0.2)
    model.train()
    x = torch.randn(2, 3, 80, 64)  # 5x4 grid: window padding on one side
    grads = []
    outs = []
    for forward in (lambda: model(x)[0], lambda: activation_form(model, x)):
        model.zero_grad()
        out = forward()
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        outs.append(out.detach())
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    assert (outs[0] - outs[1]).abs().max() <= 1e-5
    masks = set(model.mask_parameters())
    assert masks
    for name, g in grads[1].items():
        tol = 1e-5 * max(1.0, float(g.abs().max()))
        assert (grads[0][name] - g).abs().max() <= tol, name
        if name in masks:
            assert g.abs().sum() > 0, name


@pytest.mark.parametrize('row, col, bias', [(True, True, True), (True, False, True),
                                            (False, True, False), (True, True, False)])
def test_scaled_linear_gradients(row, col, bias):
    from sidt_mmdet.models.layers.linear_ops import _ScaledLinear
    g = torch.Generator().manual_seed(0)

    def t(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64, requires_grad=True)
    args = (t(2, 3, 5), t(4, 5), t(4) if bias else None, t(4) if row else None,
            t(5) if col else None)
    assert torch.autograd.gradcheck(_ScaledLinear.apply, args)


def test_scaled_linear_under_autocast():
    """bf16 autocast (CPU here, fp16 on CUDA): the matmuls run in the autocast dtype and
    the gradients come back in each input's own dtype, close to the fp32 ones."""
    from sidt_mmdet.models.layers.linear_ops import _ScaledLinear
    g = torch.Generator().manual_seed(0)
    args = [torch.randn(*s, generator=g, requires_grad=True)
            for s in ((2, 7, 16), (8, 16), (8,), (8,), (16,))]
    grads = []
    for amp in (False, True):
        for a in args:
            a.grad = None
        with torch.autocast('cpu', dtype=torch.bfloat16, enabled=amp):
            out = _ScaledLinear.apply(*args)
        assert out.dtype == (torch.bfloat16 if amp else torch.float32)
        out.float().square().sum().backward()
        grads.append([a.grad.clone() for a in args])
    for a, b, arg in zip(*grads, args):
        assert a.dtype == b.dtype == arg.dtype
        assert (a - b).abs().max() <= 0.05 * a.abs().max()
