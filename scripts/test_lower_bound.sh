#!/usr/bin/env bash
# CI's second job: the oldest transformers that pyproject.toml declares (the lower bound of `transformers>=X`), in a
# separate virtual environment, on the tests that exercise the Transformers internals the package relies on
# (Trainer.loss_is_scaled_for_ga, _finalize_model_loading, _initialize_weights(is_custom_code=),
# sdpa_mask(allow_is_causal_skip=)), with the export extra at its lower bounds too (onnx, onnxscript, onnxruntime) for
# the ONNX tests. The environment is layered on $KRON_VENV (default .venv, made by test.sh): its site-packages (torch,
# the editable package, ...) are visible, and only those packages are replaced, so the job costs a few wheel downloads
# and a few minutes of tests. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
BASE="${KRON_VENV:-.venv}"
LOWER="${KRON_LOWER_VENV:-.venv-lower}"
if [ ! -x "$BASE/bin/python" ]; then
    echo "test_lower_bound.sh: $BASE does not exist; run scripts/test.sh first" >&2
    exit 1
fi
VERSION=$("$BASE/bin/python" - <<'PY'
import re, tomllib
dependencies = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]
[spec] = [d for d in dependencies if re.match(r"transformers\b", d)]
print(re.search(r">=\s*([0-9][0-9.]*)", spec).group(1))
PY
)
if [ ! -x "$LOWER/bin/python" ]; then
    "$BASE/bin/python" -m venv --without-pip "$LOWER"
fi
BASE_SITE=$("$BASE/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
LOWER_SITE=$("$LOWER/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
# Appended after the job's own site-packages, so its transformers wins; addsitedir also runs the base's .pth files
# (the editable install of this package).
echo "import site; site.addsitedir('$(cd "$BASE_SITE" && pwd)')" > "$LOWER_SITE/zz_base_venv.pth"
"$BASE/bin/python" -m pip install --quiet --no-deps --upgrade --target "$LOWER_SITE" "transformers==$VERSION"
# The export extra's lower bounds too (onnx, onnxscript, onnxruntime), for tests/test_export.py.
EXPORT_PINS=$("$BASE/bin/python" - <<'PY'
import re, tomllib
extra = tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["export"]
print(" ".join(re.sub(r"\s*>=\s*", "==", spec) for spec in extra))
PY
)
"$BASE/bin/python" -m pip install --quiet --no-deps --upgrade --target "$LOWER_SITE" $EXPORT_PINS
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
INSTALLED=$("$LOWER/bin/python" -c "import transformers; print(transformers.__version__)")
if [ "$INSTALLED" != "$VERSION" ]; then
    echo "test_lower_bound.sh: expected transformers $VERSION in $LOWER, got $INSTALLED" >&2
    exit 1
fi
echo "Lower-bound job: transformers $INSTALLED; $EXPORT_PINS"
exec "$LOWER/bin/python" -m pytest -q tests/test_packaging.py tests/test_layers.py tests/test_modeling_bert.py \
    tests/test_modeling_gpt2.py tests/test_export.py \
    "tests/test_trainer.py::test_gradient_accumulation_matches_one_large_batch" \
    "tests/test_trainer.py::test_micro_batches_without_labelled_items_add_nothing_to_the_task_loss" \
    "tests/test_trainer.py::test_recorder_records_bert_scores_and_padding_and_restores_sdpa" \
    "tests/test_trainer.py::test_recorder_records_gpt2_scores_with_causality_and_padding" \
    "$@"
