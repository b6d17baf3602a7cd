# Sourced by test.sh and quickstart.sh: makes (or reuses) the virtual environment $VENV (default .venv), installs the
# CPU build of torch 2.13.0 and this package with the extras in $EXTRAS, and sets the offline environment.
VENV="${KRON_VENV:-.venv}"
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip
# Pinned so pip takes the CPU wheel (an unpinned torch pulls GBs of CUDA wheels).
"$VENV/bin/python" -m pip install --quiet "torch==2.13.0"
"$VENV/bin/python" -m pip install --quiet -e ".[$EXTRAS]"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
