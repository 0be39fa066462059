#!/usr/bin/env bash
# Fill a wheel folder (default wheels/gpu, git-ignored) with the pure-Python wheels of
# tools/deploy/gpu_wheels.txt: what a lent GPU machine, which reaches no registry, needs for
# the GPU check beside its own torch and timm. Run here, where a registry is reachable:
#
#     bash tools/deploy/build_gpu_wheels.sh [DIR]
#
# The wheels are fetched for Python 3.12 as py3-none-any only (a compiled one is refused),
# the folder is emptied of older wheels first (two versions of one package stop an install),
# and its size is printed (the working tree and what travels with it: 64 MiB at most).
# PYTHON picks the interpreter whose pip downloads (default: python3).
set -euo pipefail
cd "$(dirname "$0")/../.."
DIR=${1:-wheels/gpu}
PYTHON=${PYTHON:-python3}
mkdir -p "$DIR"
# Nothing to do when the folder holds exactly the listed wheels (make install runs this).
wanted=$(grep -v '^#' tools/deploy/gpu_wheels.txt | sed '/^$/d' | tr 'A-Z-' 'a-z_' | sed 's/==/-/')
have=$(cd "$DIR" && ls *.whl 2>/dev/null | tr 'A-Z' 'a-z' | sed 's/-py[23].*//' || true)
if [ -n "$have" ] && [ "$(echo "$wanted" | sort)" = "$(echo "$have" | sort)" ]; then
    echo "$DIR: the $(echo "$have" | wc -l) wheels of tools/deploy/gpu_wheels.txt, already there"
    exit 0
fi
rm -f "$DIR"/*.whl
"$PYTHON" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
    --python-version 3.12 --implementation py --abi none --platform any \
    -d "$DIR" -r tools/deploy/gpu_wheels.txt
for f in "$DIR"/*; do
    case "$f" in
        *-py3-none-any.whl | *-py2.py3-none-any.whl) ;;
        *) echo "build_gpu_wheels.sh: $f is not a pure-Python (py3-none-any) wheel" >&2
           exit 1 ;;
    esac
done
ls -1 "$DIR"
echo "$DIR: $(ls "$DIR" | wc -l) wheels, $(du -sk "$DIR" | cut -f1) KiB"
