# Copyright 2026 The kron-transformers Authors. Licensed under the Apache License, Version 2.0.
"""``evaluate`` metric modules shipped with the package, loaded by path so they work without the Hub.

``evaluate.load("glue")`` fetches the metric script from the Hub; the same metrics live here::

    import evaluate
    from kron_transformers.metrics import metric_path

    glue = evaluate.load(str(metric_path("glue")), "mrpc")    # or load_metric("glue", "mrpc")
    squad_v2 = evaluate.load(str(metric_path("squad")), "v2")
"""

from __future__ import annotations

from pathlib import Path


METRICS_DIR = Path(__file__).resolve().parent
METRIC_NAMES = ("glue", "squad")
# What each metric script imports beyond the package's own dependencies (the `metrics` extra).
_METRIC_NEEDS = {"glue": {"numpy": "numpy", "scipy": "scipy", "sklearn": "scikit-learn"}, "squad": {}}


def metric_path(name: str) -> Path:
    """The folder of the shipped metric ``name`` ("glue" or "squad"), for ``evaluate.load(str(path), config)``."""
    if name not in METRIC_NAMES:
        raise ValueError(f"Unknown metric {name!r}: the package ships {', '.join(METRIC_NAMES)}.")
    return METRICS_DIR / name


def load_metric(name: str, config_name: str | None = None, **kwargs):
    """``evaluate.load`` of a shipped metric by path: ``load_metric("glue", "cola")``, ``load_metric("squad", "v2")``.

    ``kwargs`` go to ``evaluate.load`` (``experiment_id``, ``num_process``, ...).
    """
    import importlib

    path = metric_path(name)
    missing = []
    for module, distribution in _METRIC_NEEDS[name].items():
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(distribution)
    if missing:
        raise ImportError(
            f"The {name} metric needs {' and '.join(missing)}, which kron-transformers does not install by default: "
            "pip install 'kron-transformers[metrics]'."
        )
    import evaluate

    return evaluate.load(str(path), config_name, **kwargs)


__all__ = ["METRIC_NAMES", "load_metric", "metric_path"]
