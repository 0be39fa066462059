#!/usr/bin/env bash
# On a lent GPU machine (Python 3.12 with torch and timm, no mmengine, no registry): install
# the wheels of tools/deploy/build_gpu_wheels.sh offline, then run the GPU check.
#
#     bash tools/deploy/install_gpu_wheels.sh [WHEEL_DIR] [-- BENCHMARK_LATENCY_ARGS...]
#
# WHEEL_DIR defaults to wheels/gpu; the arguments of tools/analysis/benchmark_latency.py to
# --preset gpu --out-dir work_dirs/latency/gpu. The wheels go into a folder of their own
# (SITE, default work_dirs/gpu_site) put on PYTHONPATH with this checkout, not into the
# machine's site-packages: nothing of the machine's Python changes, and a Python whose
# packages the system manages (PEP 668) takes them too. PYTHON picks the interpreter
# (default: python3).
set -euo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
WHEELS=wheels/gpu
if [[ $# -gt 0 && $1 != -- ]]; then WHEELS=$1; shift; fi
if [[ $# -gt 0 && $1 == -- ]]; then shift; fi
ARGS=("$@")
if [[ ${#ARGS[@]} -eq 0 ]]; then ARGS=(--preset gpu --out-dir work_dirs/latency/gpu); fi
PYTHON=${PYTHON:-python3}
SITE=${SITE:-$REPO/work_dirs/gpu_site}
if ! compgen -G "$WHEELS/*.whl" >/dev/null; then
    echo "install_gpu_wheels.sh: no wheels in $WHEELS (build them with" \
         "tools/deploy/build_gpu_wheels.sh where a registry is reachable)" >&2
    exit 1
fi
"$PYTHON" -m pip install --quiet --disable-pip-version-check --no-index --no-deps \
    --no-compile --no-cache-dir --upgrade --target "$SITE" "$WHEELS"/*.whl
export PYTHONPATH="$SITE:$REPO${PYTHONPATH:+:$PYTHONPATH}"
exec "$PYTHON" "$REPO/tools/analysis/benchmark_latency.py" "${ARGS[@]}"
