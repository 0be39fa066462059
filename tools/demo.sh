#!/usr/bin/env bash
# The embedded end-to-end job behind `make demo`, on the generated toy COCO set, CPU only.
# Today: a real dense training of the toy RetinaNet and its COCO evaluation. The search ->
# select -> export -> retrain stages are appended here as they land.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTHON=${PYTHON:-python}
WORK_DIR=${WORK_DIR:-work_dirs/demo}
DATA=data/toy_coco
DENSE_CFG=configs/toy/retinanet_r18-tiny_fpn_300it_toy-coco.py

if [ ! -f "$DATA/annotations/instances_val2017.json" ]; then
    "$PYTHON" tools/dataset/make_toy_coco.py --out-dir "$DATA"
fi

echo "== demo 1/2: dense training ($DENSE_CFG)"
"$PYTHON" tools/train.py "$DENSE_CFG" --work-dir "$WORK_DIR/dense"
CKPT=$(cat "$WORK_DIR/dense/last_checkpoint")

echo "== demo 2/2: COCO evaluation of $CKPT"
"$PYTHON" tools/test.py "$DENSE_CFG" "$CKPT" --work-dir "$WORK_DIR/dense_test" \
    --out "$WORK_DIR/dense_test/predictions.pkl"
echo "== demo done: logs and checkpoints in $WORK_DIR"
