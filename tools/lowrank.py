"""Factorize the Linear layers of a trained model's SIDTViT backbone (low rank).

    python tools/lowrank.py CONFIG CHECKPOINT --method svd --energy 0.95 -o OUT_DIR

CONFIG/CHECKPOINT: any trained model with a SIDTViT backbone (detector or classifier):
- a dense model, factorized as it is (a dense-width subnet is written);
- a pruned (retrain) model: CONFIG has ``mode='pruned', subnet=...``; its subnet is kept;
- a searched model (``mode='search'``): with ``--subnet SUBNET_JSON`` it is pruned to that
  subnet first, with ``--mlp-keep-ratio K`` to an MLP-only subnet (attention kept whole,
  the hybrid (arXiv 2203.13444)), otherwise the masks are folded into a dense-width backbone.
  Pruning always comes first (it slices dense weights), factorization second.

One rank rule: ``--energy E`` (per layer, kept fraction of sum sigma^2), ``--params-budget N``
(parameters of the targeted layers after factorization), ``--backbone-ratio F`` (the whole
backbone ends at F x the params of its dense architecture; the targeted layers absorb what
pruning has not removed), ``--rank R`` (every targeted layer) or ``--ranks-from SUBNET_JSON``
(the ranks another run chose: equal params across methods).

The hybrid (arXiv 2203.13444), low-rank attention + lighter MLP pruning, 50% of the backbone's
params::

    python tools/lowrank.py SEARCH_CONFIG SEARCH_CKPT --mlp-keep-ratio 0.5 \\
        --targets attn.qkv attn.proj --backbone-ratio 0.5 --method svd -o OUT_DIR

OUT_DIR receives, all or nothing: ``subnet.json`` (the subnet with ``lowrank`` ranks),
``lowrank.pth`` (the whole factorized model, ``{'state_dict', 'meta'}``), and a per-layer
table ``lowrank_table.md`` / ``.csv`` (rank, params before/after, ``|W - AB|_F / |W|_F``)
plus ``lowrank_report.json``. A retrain config rebuilds the model from the subnet alone
(``SIDTViT(mode='pruned', subnet=OUT_DIR/subnet.json)``, see configs/lowrank/) and loads
``lowrank.pth`` with no missing or unexpected keys.
"""
import sys

from sidt_mmdet.cli.lowrank import main

if __name__ == '__main__':
    sys.exit(main(sys.argv[1:], prog='lowrank.py'))
