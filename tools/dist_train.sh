#!/usr/bin/env bash
# Usage: tools/dist_train.sh CONFIG GPUS [train.py flags...]
# Also on CPU: the toy configs use gloo; SIDT_DIST_BACKEND overrides a config's backend.
exec "$(dirname "$0")/dist_run.sh" "$2" "$(dirname "$0")/train.py" "$1" --launcher pytorch \
    "${@:3}"
