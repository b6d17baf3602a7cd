#!/usr/bin/env bash
# Runs the test suite on a fresh machine: makes (or reuses) .venv, installs the CPU build of torch 2.13.0 and the
# package with its test extra, then runs pytest offline. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${KRON_VENV:-.venv}"
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip
# Pinned so pip takes the CPU wheel (an unpinned torch pulls GBs of CUDA wheels).
"$VENV/bin/python" -m pip install --quiet "torch==2.13.0"
"$VENV/bin/python" -m pip install --quiet -e ".[test,examples]"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec "$VENV/bin/python" -m pytest "$@"
