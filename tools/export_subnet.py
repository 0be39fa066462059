"""Export a searched SIDTViT model: select a subnet for a budget, prune it, write the result.

    python tools/export_subnet.py CONFIG CHECKPOINT --keep-ratio 0.6 -o OUT_DIR
    python tools/export_subnet.py CONFIG CHECKPOINT --params 60M -o OUT_DIR
    python tools/export_subnet.py CONFIG CHECKPOINT --flops 150G --input-size 1024 1024 -o OUT_DIR

CONFIG is the search config the CHECKPOINT was trained with (backbone ``mode='search'``).
OUT_DIR receives, all or nothing (built in a hidden directory beside it, then renamed):

    subnet.json   kept dims per block, budget, params/MACs before and after, source files
    pruned.pth    the whole model's weights sliced to the subnet, masks folded in
                  (``{'state_dict': ..., 'meta': ...}``, loads with weights_only=True)
    widths.md     per-layer table: heads, q/k and v widths, MLP width, params, MACs
    widths.csv    the same table as CSV
    widths.png    kept width per layer

The retrain config of the same name reads them; for another OUT_DIR pass
``--cfg-options model.backbone.subnet=OUT_DIR/subnet.json load_from=OUT_DIR/pruned.pth``.
"""
import sys

from sidt_mmdet.apis.export import main

if __name__ == '__main__':
    sys.exit(main(prog='export_subnet.py', doc=__doc__))
