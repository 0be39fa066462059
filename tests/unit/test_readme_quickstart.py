"""The README's "Prune your own mmdet config": its three configs build what they promise (at
a toy width), and its commands name tools and flags that exist."""
from __future__ import annotations

import re
import shlex

import pytest
from helpers import REPO
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import MODELS, init_default_scope

from sidt_mmdet.cli.export_subnet import build_parser
from sidt_mmdet.search import select_subnet

SMALL = {'model.backbone': dict(arch=dict(_delete_=True, embed_dims=64, num_layers=4,
                                          num_heads=4),
                                img_size=64, window_size=2, global_attn_indexes=[1, 3],
                                init_cfg=None),
         'model.neck': dict(backbone_channel=64, in_channels=[16, 32, 64, 64])}


def _section() -> str:
    text = (REPO / 'README.md').read_text(encoding='utf-8')
    start = text.index('## Prune your own mmdet config')
    return text[start:text.index('\n## ', start + 1)]


def _blocks(lang: str) -> list[str]:
    return re.findall(rf'```{lang}\n(.*?)```', _section(), re.S)


@pytest.fixture
def configs(tmp_path, monkeypatch):
    """The README's configs written where it says (my_configs/), run from tmp_path."""
    written = {}
    for block in _blocks('python'):
        name = re.match(r'# (my_configs/\w+\.py)\n', block).group(1)
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(block)
        written[name.split('/')[1][:-3]] = tmp_path / name
    monkeypatch.chdir(tmp_path)
    return written


def _cfg(path) -> Config:
    cfg = Config.fromfile(str(path))
    cfg.merge_from_dict(SMALL)
    return cfg


def test_the_three_configs_build_dense_search_and_pruned(configs, tmp_path):
    assert sorted(configs) == ['dense', 'retrain', 'search']
    init_default_scope('mmdet')
    dense = MODELS.build(_cfg(configs['dense']).model)
    assert type(dense.backbone).__name__ == 'SIDTViT' and dense.backbone.mode == 'dense'

    cfg = _cfg(configs['search'])
    search = MODELS.build(cfg.model)
    assert search.backbone.mode == 'search' and search.backbone.mask_parameters()
    wrapper = build_optim_wrapper(search, cfg.optim_wrapper)
    masks = set(map(id, search.backbone.mask_parameters().values()))
    groups = [g for g in wrapper.optimizer.param_groups
              if any(id(p) in masks for p in g['params'])]
    mask_lr = cfg.optim_wrapper.paramwise_cfg.mask_lr
    assert groups and all(g['lr'] == mask_lr and g['weight_decay'] == 0 for g in groups)
    assert all(id(p) in masks for g in groups for p in g['params'])  # a group of their own
    assert cfg.load_from == 'work_dirs/dense/epoch_12.pth'

    cfg = _cfg(configs['retrain'])
    subnet = select_subnet(search.backbone, keep_ratio=0.6)
    (tmp_path / 'work_dirs/export').mkdir(parents=True)
    subnet.save(cfg.model.backbone.subnet)
    retrain = MODELS.build(cfg.model)
    assert retrain.backbone.mode == 'pruned' and cfg.load_from == 'work_dirs/export/pruned.pth'
    assert cfg.model.backbone.subnet == 'work_dirs/export/subnet.json'


def test_commands_name_tools_and_flags_that_exist():
    commands = [shlex.split(line.split('#')[0]) for block in _blocks('bash')
                for line in block.replace('\\\n', ' ').splitlines() if line.strip()]
    assert [c[1] for c in commands] == ['tools/train.py', 'tools/train.py',
                                        'tools/export_subnet.py', 'tools/train.py',
                                        'tools/test.py']
    for c in commands:
        assert c[0] == 'python' and (REPO / c[1]).is_file(), c
    export = next(c for c in commands if c[1] == 'tools/export_subnet.py')
    args = build_parser().parse_args(export[2:])
    assert args.keep_ratio == 0.6 and args.out_dir == 'work_dirs/export'
    # the search's checkpoint is the one its schedule writes, the export is what retrain reads
    assert export[3] == 'work_dirs/search/epoch_4.pth'
    flags = set(re.findall(r'(--[a-z-]+)', _section()))
    known = {a for action in build_parser()._actions for a in action.option_strings}
    assert flags <= known, flags - known
