"""build_model: the model a Runner builds (scope, top-level preprocessor, pruned backbone),
the checkpoint loaded in full or refused by name."""
from __future__ import annotations

import pytest
import torch
from helpers import REPO

from sidt_mmdet.apis import build_model
from sidt_mmdet.apis.runtime import ModelLoadError
from sidt_mmdet.models import Subnet
from sidt_mmdet.utils import save_checkpoint_atomic

DET = REPO / 'configs/toy/sidt-dense_mask-rcnn_sidtvit-toy_simplefpn_100it_toy-coco.py'
CLS = REPO / 'configs/cifar100/sidt-dense_cls_vit-toy-p4_linear_6e_toy-cifar100.py'

pytestmark = [pytest.mark.usefixtures('one_torch_thread'), pytest.mark.slow]  # builds 5 detectors


def test_weights_load_in_full_and_a_partial_checkpoint_is_refused(tmp_path):
    torch.manual_seed(0)
    model = build_model(str(DET))
    assert not model.training
    state = model.state_dict()
    path = tmp_path / 'a.pth'
    save_checkpoint_atomic({'state_dict': state}, path)
    torch.manual_seed(1)
    again = build_model(str(DET), checkpoint=path, device='cpu')
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in state.items())
    partial = {k: v for k, v in state.items() if not k.startswith('roi_head.')}
    save_checkpoint_atomic({'state_dict': partial}, tmp_path / 'b.pth')
    with pytest.raises(ModelLoadError, match=rf'checkpoint {tmp_path / "b.pth"} does not fit '
                                         rf'{DET}: \d+ missing keys \(first: \[\'roi_head'):
        build_model(str(DET), checkpoint=tmp_path / 'b.pth')
    build_model(str(DET), checkpoint=tmp_path / 'b.pth', strict=False)


def test_preprocessor_and_subnet_as_a_runner_builds_them(tmp_path):
    cls = build_model(str(CLS), scope='mmpretrain')
    mean = cls.data_preprocessor.mean.flatten().tolist()
    assert mean != [0.0, 0.0, 0.0]  # the config's top-level normalisation, merged in
    bb = build_model(str(DET)).backbone
    sub = Subnet.dense(bb.embed_dims_dense, bb.num_layers, bb.num_heads, bb.mlp_hidden)
    for b in sub.blocks:
        b['mlp'] = b['mlp'][:8]
    sub.save(tmp_path / 'subnet.json')
    pruned = build_model(str(DET), subnet=str(tmp_path / 'subnet.json'))
    assert pruned.backbone.mode == 'pruned'
    assert pruned.backbone.blocks[0].mlp.fc1.out_features == 8
    with pytest.raises(FileNotFoundError, match='subnet file nowhere.json: no such file'):
        build_model(str(DET), subnet='nowhere.json')
