"""A MACs budget holds at the input size it was selected at: re-exporting the subnet for
another size (``export_subnet`` with ``budget=dict(subnet=...)`` and ``input_size``)
reports the complexity at that size and keeps the budget it was selected for, with its size."""
from __future__ import annotations

import pytest
from tiny_search import SEARCH_CFG, build_search_model, write_search_checkpoint

from sidt_mmdet.apis.export import export_subnet
from sidt_mmdet.export import prune_backbone
from sidt_mmdet.models import Subnet
from sidt_mmdet.models.complexity import backbone_complexity

pytestmark = pytest.mark.usefixtures('one_torch_thread')


@pytest.mark.slow  # two exports (about 4 s)
def test_subnet_reported_at_another_input_size_than_selected(tmp_path):
    """Catches stats of the selection size reported for another size (the MACs would look
    within budget where they are not), a budget rewritten to the new size, and params that
    change with the size."""
    model = build_search_model()
    selected_at, other = (32, 32), (48, 64)
    dense = backbone_complexity(model.backbone, selected_at)
    budget = dense.macs // 2
    ckpt = write_search_checkpoint(tmp_path / 'search.pth', model=model)
    first = export_subnet(str(SEARCH_CFG), str(ckpt), dict(macs=budget), str(tmp_path / 'a'),
                          input_size=selected_at, round_to=1)
    chosen = Subnet.load(tmp_path / 'a' / 'subnet.json')
    assert chosen.budget['kind'] == 'macs' and chosen.budget['value'] == budget
    assert chosen.budget['input_size'] == list(selected_at)
    assert chosen.stats['input_size'] == list(selected_at)
    assert chosen.stats['macs_after'] <= budget == first.subnet.budget['value']

    export_subnet(str(SEARCH_CFG), str(ckpt), dict(subnet=str(tmp_path / 'a' / 'subnet.json')),
                  str(tmp_path / 'b'), input_size=other)
    again = Subnet.load(tmp_path / 'b' / 'subnet.json')
    assert again.budget == chosen.budget  # what it was selected for, at its own size
    assert again.blocks == chosen.blocks and again.embed == chosen.embed
    assert again.stats['input_size'] == list(other)
    # counted independently, on the pruned backbone rebuilt from the subnet file
    pruned = prune_backbone(model.backbone, again)
    assert backbone_complexity(pruned, other).macs == again.stats['macs_after']
    assert sum(p.numel() for p in pruned.parameters()) == again.stats['params_after']
    at_other = again.stats['macs_after']
    assert again.stats['params_after'] == chosen.stats['params_after']
    assert at_other > chosen.stats['macs_after'] and at_other > budget
    dense_other = backbone_complexity(model.backbone, other)
    assert again.stats['macs_before'] == dense_other.macs
    assert at_other / dense_other.macs == pytest.approx(
        chosen.stats['macs_after'] / dense.macs, rel=0.2)
