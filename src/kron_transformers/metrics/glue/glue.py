# Copyright 2026 The kron-transformers Authors. Licensed under the Apache License, Version 2.0.
"""GLUE metric as an ``evaluate`` module, shipped with the package so it loads offline by path.

    >>> import evaluate
    >>> from kron_transformers.metrics import metric_path
    >>> metric = evaluate.load(str(metric_path("glue")), "mrpc")
    >>> metric.compute(predictions=[0, 1, 1, 0], references=[0, 1, 0, 0])
    {'accuracy': 0.75, 'f1': 0.666...}

Same configuration names and result keys as the official ``glue`` metric (Wang et al., ICLR 2019): Matthews
correlation for CoLA, accuracy and binary F1 (positive label 1) for MRPC and QQP, Pearson and Spearman correlation
for STS-B, accuracy for every other task.
"""

import datasets
import evaluate
import numpy as np
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import f1_score, matthews_corrcoef


_CITATION = """\
@inproceedings{wang2019glue,
  title={{GLUE}: A Multi-Task Benchmark and Analysis Platform for Natural Language Understanding},
  author={Wang, Alex and Singh, Amanpreet and Michael, Julian and Hill, Felix and Levy, Omer and Bowman, Samuel R.},
  booktitle={International Conference on Learning Representations},
  year={2019}
}
"""

_DESCRIPTION = "The metric of each GLUE task (https://gluebenchmark.com/)."

_KWARGS_DESCRIPTION = """
Args:
    predictions: predicted labels, shape (n,) (int; float scores for stsb).
    references: gold labels, shape (n,) (int; float scores for stsb).
Returns: depending on the configuration, a dict with one or more of "matthews_correlation" (cola), "accuracy" and
    "f1" (mrpc, qqp), "pearson" and "spearmanr" (stsb), "accuracy" (every other task), as Python floats in [-1, 1].
"""

ACCURACY_TASKS = ("sst2", "mnli", "mnli_mismatched", "mnli_matched", "qnli", "rte", "wnli", "hans")
CONFIG_NAMES = ("cola", "stsb", "mrpc", "qqp", *ACCURACY_TASKS)


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Glue(evaluate.Metric):
    def _info(self):
        if self.config_name not in CONFIG_NAMES:
            raise ValueError(
                f"Unknown GLUE configuration {self.config_name!r}: expected one of {', '.join(CONFIG_NAMES)}."
            )
        dtype = "float32" if self.config_name == "stsb" else "int64"
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value(dtype), "references": datasets.Value(dtype)}),
            reference_urls=["https://gluebenchmark.com/"],
            format="numpy",
        )

    def _compute(self, predictions, references):
        predictions, references = np.asarray(predictions), np.asarray(references)
        if self.config_name == "cola":
            return {"matthews_correlation": float(matthews_corrcoef(references, predictions))}
        if self.config_name == "stsb":
            return {
                "pearson": float(pearsonr(predictions, references)[0]),
                "spearmanr": float(spearmanr(predictions, references)[0]),
            }
        accuracy = float((predictions == references).mean())
        if self.config_name in ("mrpc", "qqp"):
            return {"accuracy": accuracy, "f1": float(f1_score(references, predictions))}
        return {"accuracy": accuracy}
