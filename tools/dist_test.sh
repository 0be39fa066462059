#!/usr/bin/env bash
# Usage: tools/dist_test.sh CONFIG CHECKPOINT GPUS [test.py flags...]
# Also on CPU: the toy configs use gloo; SIDT_DIST_BACKEND overrides a config's backend.
exec "$(dirname "$0")/dist_run.sh" "$3" "$(dirname "$0")/test.py" "$1" "$2" \
    --launcher pytorch "${@:4}"
