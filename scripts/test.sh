#!/usr/bin/env bash
# Runs the test suite on a fresh machine: makes (or reuses) .venv, installs the CPU build of torch 2.13.0 and the
# package with its test extra, then runs pytest offline. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS="test,examples"
source scripts/venv.sh
exec "$VENV/bin/python" -m pytest "$@"
