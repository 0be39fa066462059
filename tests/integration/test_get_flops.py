"""mmdet's stock get_flops.py (unmodified, from the mmdet package) counts the toy detectors'
backbones as our exact counter does, dense and pruned, once the config's custom_imports
imports sidt_mmdet: the attention matmuls, the rel-pos terms and the packed projections
included, and no backbone or neck module reported as never called."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import mmdet
import pytest
from helpers import REPO, run_command
from mmengine.config import Config
from mmengine.registry import MODELS, init_default_scope
from torch import nn

from sidt_mmdet.models import Subnet
from sidt_mmdet.models.complexity import backbone_complexity

pytestmark = pytest.mark.slow

TOY = REPO / 'configs/toy'
DENSE_CFG = TOY / 'sidt-dense_mask-rcnn_sidtvit-toy-vitdet_simplefpn_lsj-100it_toy-coco.py'
PRUNED_CFG = TOY / 'sidt-retrain_mask-rcnn_sidtvit-toy-vitdet-kr0.6_simplefpn_lsj-100it_toy-coco.py'


def _toy_subnet() -> Subnet:
    """Unequal head widths (several attention calls per block), a dropped head, MLP units
    and embedding channels pruned: every packed path of the pruned attention runs."""
    sub = Subnet.dense(64, 4, 4, 256)
    blocks = []
    for i in range(4):
        qk = [list(range(16)), list(range(0, 16, 2)), list(range(4 + i)), []]
        v = [list(range(16)), list(range(8)), list(range(1, 9)), []]
        blocks.append(dict(qk=qk, v=v, mlp=list(range(0, 256, 3))))
    return Subnet(sub.embed_dims, sub.num_layers, sub.num_heads, sub.mlp_hidden, blocks=blocks,
                  embed=list(range(0, 64, 2)) + [1, 3, 5])


def test_stock_get_flops_counts_backbones_exactly(tmp_path, toy_coco_dir):
    subnet = tmp_path / 'subnet.json'
    _toy_subnet().save(subnet)
    data = [f'{k}.dataset.data_root={toy_coco_dir}/' for k in ('val_dataloader',)]
    runs = {'dense': (DENSE_CFG, []), 'pruned': (PRUNED_CFG, [f'model.backbone.subnet={subnet}'])}
    tool = Path(mmdet.__file__).parent / '.mim/tools/analysis_tools/get_flops.py'
    records = []
    for name, (cfg, extra) in runs.items():
        out = tmp_path / f'{name}.json'
        # the tool's own process; the spy (tests/flops_spy) records its analyzer's counts
        result = run_command(
            [sys.executable, str(tool), str(cfg), '--num-images', '1', '--cfg-options',
             *data, *extra],
            env={'SIDT_FLOPS_SPY_OUT': str(out),
                 'PYTHONPATH': os.pathsep.join([str(REPO / 'tests/flops_spy'),
                                                os.environ.get('PYTHONPATH', '')])})
        log = result.stdout + result.stderr
        assert 'Flops:' in log, log[-3000:]
        assert 'aten::scaled_dot_product_attention' not in log
        records += json.loads(out.read_text())
    assert len(records) == 2
    init_default_scope('mmdet')
    for (name, (cfg_path, extra)), rec in zip(runs.items(), records):
        cfg = Config.fromfile(str(cfg_path))
        if extra:
            cfg.merge_from_dict(dict(e.split('=', 1) for e in extra))
        model = MODELS.build(cfg.model)
        ours = backbone_complexity(model.backbone, tuple(rec['input_size']))
        ops = rec['modules']['backbone']
        theirs = sum(ops.values())
        assert ops['scaled_dot_product_attention'] > 0 and ops['einsum'] > 0
        # mmengine counts a LayerNorm as 5 per element, our counter as elementwise (no MACs);
        # the rel-pos einsums it reads from numpy's rounded einsum_path printout
        assert theirs - ops['layer_norm'] == pytest.approx(ours.macs_executed, rel=1e-4), name
        # Identity modules hold no op, and mmengine does not warn about them
        never = [m for m in rec['uncalled'] if m.startswith(('backbone.', 'neck.'))
                 and not isinstance(model.get_submodule(m), nn.Identity)]
        assert never == [], f'{name}: reported never called: {never}'
