"""Checkpoint conversion, one test per family, each against the family's own reference model.

Every checkpoint is built from a timm model whose weights were moved off their init
(``perturb_``), laid out as the family releases it (wrappers, prefixes, extra parts),
saved to disk and loaded with ``init_cfg=dict(type='Pretrained')`` as a config would.
The features are compared with the reference model, and the log lines that the README
promises ("logs every change and every missing/unexpected key") are checked.
"""
import importlib

import pytest
import torch
import torch.nn.functional as F
from helpers import perturb_
from timm.models.deit import VisionTransformerDistilled
from timm.models.vision_transformer import VisionTransformer
from timm.models.vision_transformer_sam import VisionTransformerSAM

from sidt_mmdet.models import SIDTViT

pytestmark = pytest.mark.usefixtures('one_torch_thread')

SIDT_VIT = importlib.import_module('sidt_mmdet.models.backbones.sidt_vit')
VIT = dict(embed_dim=48, depth=3, num_heads=3)
TINY = dict(embed_dims=48, num_layers=3, num_heads=3)
SAM_KW = dict(img_size=128, patch_size=16, window_size=4, global_attn_indexes=(1,),
              use_rel_pos=True, num_classes=0, neck_chans=0, **VIT)


def timm_vit(seed=0, **kw):
    torch.manual_seed(seed)
    kw = dict(dict(img_size=64, patch_size=16, num_classes=10, dynamic_img_size=True, **VIT), **kw)
    return perturb_(VisionTransformer(**kw), seed=seed).eval()


def load(tmp_path, monkeypatch, ckpt, name='ckpt.pth', **kw):
    """SIDTViT built from a config-style Pretrained init: (model, its log lines)."""
    path = tmp_path / name
    torch.save(ckpt, path)
    lines = []
    monkeypatch.setattr(SIDT_VIT, 'print_log', lambda msg, **_: lines.append(msg))
    model = SIDTViT(init_cfg=dict(type='Pretrained', checkpoint=str(path)), **kw)
    model.init_weights()
    return model.eval(), lines


def assert_logged(lines, *wants):
    for want in wants:
        assert any(want in line for line in lines), f'{want!r} not in log:\n' + '\n'.join(lines)


def clean_load(lines, n_tensors, path_name='ckpt.pth'):
    last = lines[-1]
    assert last.startswith(f'SIDTViT: loaded {n_tensors} tensors from ') and path_name in last
    assert last.endswith('missing none; unexpected none'), last


def features(model, x):
    with torch.no_grad():
        return model(x)[0]


def timm_map(ref, x, norm):
    """timm's patch tokens after the last block as an NCHW map (norm: the final norm)."""
    with torch.no_grad():
        return ref.forward_intermediates(x, indices=[len(ref.blocks) - 1], norm=norm,
                                         intermediates_only=True)[0]


# ---------------------------------------------------------------------------------- timm
@pytest.mark.parametrize('layout', ['raw', 'model', 'ddp', 'mmdet'])
def test_timm_checkpoint_in_every_wrapping(tmp_path, monkeypatch, layout):
    """Catches a wrapper or prefix that is not unwrapped (the weights would stay random and
    only 'missing' lines would tell), a head that leaks into the backbone, and a wrapping
    that is changed without a log line."""
    ref = timm_vit()
    state = ref.state_dict()
    ckpt = {
        'raw': state,
        'model': {'model': state, 'epoch': 300},
        'ddp': {'state_dict': {f'module.{k}': v for k, v in state.items()}},
        'mmdet': {'state_dict': {**{f'backbone.{k}': v for k, v in state.items()},
                                 'neck.conv.weight': torch.zeros(4, 48, 1, 1)},
                  'meta': {}},
    }[layout]
    model, lines = load(tmp_path, monkeypatch, ckpt, arch=TINY, img_size=64, with_cls_token=True,
                        final_norm=True)
    x = torch.randn(2, 3, 80, 48)  # 5x3 grid: pos_embed resampled at run time
    want = timm_map(ref, x, norm=True)
    assert (features(model, x) - want).abs().max() <= 1e-4
    n_backbone = len(state) - 2  # all but head.weight / head.bias
    clean_load(lines, n_backbone)
    if layout == 'mmdet':
        assert_logged(lines, f"kept the {len(state)} keys under 'backbone.' (prefix stripped); "
                             'dropped 1 keys outside it (e.g. neck.conv.weight)')
    else:
        assert_logged(lines, 'dropped 2 keys of parts SIDTViT has no use for '
                             '(e.g. head.bias, head.weight)')
    if layout == 'ddp':
        assert_logged(lines, "read the weights under 'state_dict'",
                      f"stripped 'module.' from {len(state)} keys")
    if layout == 'model':
        assert_logged(lines, "read the weights under 'model'")


# ---------------------------------------------------------------------------------- DeiT
def test_deit_checkpoint_classifies_as_timm(tmp_path, monkeypatch):
    """DeiT (non-distilled) is timm's VisionTransformer: the class token after the final norm
    must be timm's pre-logits. Catches a class-token position lost from pos_embed."""
    ref = timm_vit(seed=1, img_size=224)
    model, lines = load(tmp_path, monkeypatch, {'model': ref.state_dict()}, arch=TINY,
                        img_size=224, with_cls_token=True, final_norm=True, out_type='cls_token')
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        want = ref.forward_head(ref.forward_features(x), pre_logits=True)
    assert (features(model, x) - want).abs().max() <= 1e-4
    clean_load(lines, len(ref.state_dict()) - 2)


def test_distilled_deit_drops_the_distillation_token(tmp_path, monkeypatch):
    """A distilled DeiT loads as a plain ViT: the distillation token, its head and its
    pos_embed position go (and are logged); what stays equals timm's VisionTransformer given
    the same weights. Catches the distillation position kept in place of a patch position,
    or the class position dropped instead of the distillation one."""
    torch.manual_seed(2)
    dist = perturb_(VisionTransformerDistilled(img_size=64, patch_size=16, num_classes=10,
                                               **VIT), seed=2).eval()
    state = dist.state_dict()
    assert state['pos_embed'].shape == (1, 2 + 16, 48)
    plain = timm_vit(seed=3)
    plain_state = {k: v for k, v in state.items() if k not in ('dist_token', 'head_dist.weight',
                                                              'head_dist.bias')}
    pe = state['pos_embed']
    plain_state['pos_embed'] = torch.cat([pe[:, :1], pe[:, 2:]], dim=1)
    plain.load_state_dict(plain_state)
    model, lines = load(tmp_path, monkeypatch, {'model': state}, arch=TINY, img_size=64,
                        with_cls_token=True, final_norm=True, out_type='cls_token')
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        want = plain.forward_features(x)[:, 0]
    assert (features(model, x) - want).abs().max() <= 1e-4
    assert_logged(lines, 'dropped 5 keys of parts SIDTViT has no use for (e.g. dist_token, '
                         'head.bias, head.weight)',
                  'dropped 1 prefix-token position(s) of pos_embed (2 in the checkpoint, 1 in '
                  'the model)')
    clean_load(lines, len(state) - 5)


# ----------------------------------------------------------------------------------- MAE
def mae_checkpoint(encoder):
    """MAE's release layout: the encoder (with class token) plus mask token and decoder."""
    state = dict(encoder.state_dict())
    for k in ('head.weight', 'head.bias'):
        state.pop(k)
    g = torch.Generator().manual_seed(7)
    dec = 32
    state.update({
        'mask_token': torch.randn(1, 1, dec, generator=g),
        'decoder_embed.weight': torch.randn(dec, 48, generator=g),
        'decoder_embed.bias': torch.randn(dec, generator=g),
        'decoder_pos_embed': torch.randn(1, 197, dec, generator=g),
        'decoder_blocks.0.norm1.weight': torch.randn(dec, generator=g),
        'decoder_blocks.0.attn.qkv.weight': torch.randn(3 * dec, dec, generator=g),
        'decoder_norm.weight': torch.randn(dec, generator=g),
        'decoder_pred.weight': torch.randn(16 * 16 * 3, dec, generator=g),
    })
    return {'model': state}


def test_mae_into_a_featmap_backbone_at_1024(tmp_path, monkeypatch):
    """The MAE -> ViTDet path: decoder and mask token dropped, the class token and its
    position dropped (a feature-map backbone has none), pos_embed resampled 14x14 -> 64x64
    at conversion. Reference: timm's ViT without class token given MAE's patch positions,
    resampling at run time to the 1024 input. Catches the class position read as a patch
    position (the grid would shift by one), a resampling of another kind than timm's, and
    decoder keys reaching the model."""
    enc = timm_vit(seed=4, img_size=224)  # 14x14 grid + class token, as MAE ViT-B
    ckpt = mae_checkpoint(enc)
    ref = timm_vit(seed=5, img_size=224, class_token=False, global_pool='avg',
                   fc_norm=False)
    ref_state = {k: v for k, v in enc.state_dict().items() if k != 'cls_token'}
    ref_state['pos_embed'] = enc.state_dict()['pos_embed'][:, 1:]
    ref.load_state_dict(ref_state)
    model, lines = load(tmp_path, monkeypatch, ckpt, arch=TINY, img_size=1024, final_norm=True)
    assert model.pos_embed.shape == (1, 64 * 64, 48)
    x = torch.randn(1, 3, 1024, 1024)
    assert (features(model, x) - timm_map(ref, x, norm=True)).abs().max() <= 1e-4
    assert_logged(lines, 'dropped 8 keys of parts SIDTViT has no use for (e.g. decoder_blocks.0.'
                         'attn.qkv.weight, decoder_blocks.0.norm1.weight, decoder_embed.bias)',
                  'resized pos_embed grid (14, 14) -> (64, 64) (bicubic)',
                  'dropped 1 prefix-token position(s) of pos_embed (1 in the checkpoint, 0 in '
                  'the model)')
    # the class token has nowhere to go: it is reported, not silently lost
    assert lines[-1].endswith("missing none; unexpected ['cls_token']"), lines[-1]
    assert not any('mask_token' in k or 'decoder' in k for k in model.state_dict())


# ----------------------------------------------------------------------------------- SAM
def sam_reference(seed=0, **kw):
    torch.manual_seed(seed)
    return perturb_(VisionTransformerSAM(**dict(SAM_KW, **kw)), seed=seed).eval()


def sam_backbone_kw():
    return dict(embed_dim=48, depth=3, num_heads=3, pretrain_img_size=128, window_size=4,
                window_block_indexes=[0, 2], use_rel_pos=True,
                norm_cfg=dict(type='LN', eps=1e-5))  # SAM uses nn.LayerNorm's default


def test_sam_image_encoder_checkpoint(tmp_path, monkeypatch):
    """SAM's own layout: everything under ``image_encoder.``, the MLP named lin1/lin2, a neck,
    and the prompt encoder / mask decoder beside it. Catches the MLP left random under
    SAM's names (it would only show as missing/unexpected keys), the neck or the prompt
    parts reaching the backbone, and a (1, H, W, C) pos_embed read as a token list."""
    ref = sam_reference(neck_chans=32)
    state = {f'image_encoder.{k.replace("mlp.fc", "mlp.lin")}': v
             for k, v in ref.state_dict().items()}
    assert 'image_encoder.blocks.0.mlp.lin1.weight' in state
    n_encoder = len(state)
    state['prompt_encoder.pe_layer.positional_encoding_gaussian_matrix'] = torch.randn(2, 16)
    state['mask_decoder.iou_token.weight'] = torch.randn(1, 32)
    model, lines = load(tmp_path, monkeypatch, state, **sam_backbone_kw())
    x = torch.randn(1, 3, 112, 176)  # 7x11: windows padded, pos_embed and tables resampled
    with torch.no_grad():
        want = ref.forward_intermediates(x, indices=[2], intermediates_only=True)[0]
    assert (features(model, x) - want).abs().max() <= 1e-4
    assert_logged(lines, f"kept the {n_encoder} keys under 'image_encoder.' (prefix stripped); "
                         'dropped 2 keys outside it (e.g. mask_decoder.iou_token.weight, '
                         'prompt_encoder.pe_layer.positional_encoding_gaussian_matrix)',
                  'renamed 12 SAM MLP keys (mlp.lin1/lin2 -> mlp.fc1/fc2)',
                  'dropped 6 keys of parts SIDTViT has no use for (e.g. neck.0.weight, '
                  'neck.1.bias, neck.1.weight)')
    clean_load(lines, n_encoder - 6)


# ------------------------------------------------------------------------ detectron2 ViTDet
def test_detectron2_vitdet_checkpoint(tmp_path, monkeypatch):
    """detectron2's ViTDet: numpy arrays under ``model``, the ViT under ``backbone.net.`` next
    to the pyramid (``backbone.simfp_*``) and the heads, pos_embed (1, 1 + HW, C) with a
    class-token position although the backbone has no class token. Reference: timm's
    VisionTransformerSAM, the same architecture. Catches ``backbone.`` stripped instead of
    ``backbone.net.``, the pyramid or the heads loaded into the backbone, and the class
    position taken for a patch position."""
    ref = sam_reference(seed=6)
    state = {}
    for k, v in ref.state_dict().items():
        if k.startswith('neck.'):  # timm's SAM-style output norm; detectron2's ViT has none
            continue
        if k == 'pos_embed':  # (1, 8, 8, C) -> (1, 1 + 64, C), class position first
            v = torch.cat([torch.randn(1, 1, 48), v.reshape(1, 64, 48)], dim=1)
        state[f'backbone.net.{k}'] = v.numpy()
    n_vit = len(state)
    state['backbone.simfp_2.0.weight'] = torch.randn(48, 24, 2, 2).numpy()
    state['roi_heads.box_predictor.cls_score.weight'] = torch.randn(81, 16).numpy()
    state['proposal_generator.rpn_head.conv.weight'] = torch.randn(16, 16, 3, 3).numpy()
    model, lines = load(tmp_path, monkeypatch, {'model': state, '__author__': 'detectron2'},
                        **sam_backbone_kw())
    x = torch.randn(1, 3, 128, 96)
    with torch.no_grad():
        want = ref.forward_intermediates(x, indices=[2], intermediates_only=True)[0]
    assert (features(model, x) - want).abs().max() <= 1e-4
    assert_logged(lines, f'converted {n_vit + 3} numpy arrays to tensors',
                  "read the weights under 'model'",
                  f"kept the {n_vit} keys under 'backbone.net.' (prefix stripped); dropped 3 "
                  'keys outside it (e.g. backbone.simfp_2.0.weight, proposal_generator.rpn_head.'
                  'conv.weight, roi_heads.box_predictor.cls_score.weight)',
                  'dropped 1 prefix-token position(s) of pos_embed (1 in the checkpoint, 0 in '
                  'the model)')
    clean_load(lines, n_vit)


# ------------------------------------------------------------------------- resampling
def test_patch_kernel_resampling_is_exact_on_resized_patches(tmp_path, monkeypatch):
    """A patch-8 checkpoint into a patch-16 model: the resampled kernel w16 must satisfy
    <resize(x), w16> = <x, w8> for every 8x8 patch x (FlexiViT's pseudo-inverse resize,
    exact when the kernel grows; resize = bicubic with antialias, as timm resamples).
    Derived from that identity, not from the function that does it; catches a plain
    interpolation of the kernel (off by the 4x area factor and the blur)."""
    ref = timm_vit(seed=8, img_size=32, patch_size=8)
    model, lines = load(tmp_path, monkeypatch, ref.state_dict(), arch=TINY, img_size=64,
                        patch_size=16, with_cls_token=True, final_norm=True)
    assert_logged(lines, 'resampled patch_embed kernel (8, 8) -> (16, 16)')
    patches = torch.randn(5, 3, 8, 8, dtype=torch.float64)
    big = F.interpolate(patches, size=(16, 16), mode='bicubic', antialias=True)
    w8 = ref.patch_embed.proj.weight.detach().double()
    w16 = model.patch_embed.proj.weight.detach().double()
    assert w16.shape == (48, 3, 16, 16)
    want = torch.einsum('pchw,ochw->po', patches, w8)
    got = torch.einsum('pchw,ochw->po', big, w16)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_position_embedding_of_no_square_grid_is_refused(tmp_path):
    """52 positions are no square grid after 0, 1 or 2 prefix tokens (52, 51, 50). Catches
    such a pos_embed silently cut or padded to a 7x7 grid, and an error that does not name
    the file."""
    state = timm_vit().state_dict()
    state['pos_embed'] = torch.randn(1, 52, 48)
    path = tmp_path / 'odd.pth'
    torch.save(state, path)
    model = SIDTViT(arch=TINY, img_size=64, with_cls_token=True,
                    init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    with pytest.raises(ValueError, match=r'odd\.pth: pos_embed: 52 positions form no square '
                                         r'grid with 0-2 prefix tokens'):
        model.init_weights()
