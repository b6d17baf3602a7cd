# Copyright 2026 The kron-transformers Authors. Licensed under the Apache License, Version 2.0.
"""SQuAD v1.1 and v2.0 exact match and F1 as an ``evaluate`` module, shipped with the package to load offline by path.

    >>> import evaluate
    >>> from kron_transformers.metrics import metric_path
    >>> squad = evaluate.load(str(metric_path("squad")))          # v1.1 (configuration "v1" or "default")
    >>> squad_v2 = evaluate.load(str(metric_path("squad")), "v2")  # v2.0

The scores are those of the official evaluation scripts (``evaluate-v1.1.py``, ``evaluate-v2.0.py``, Rajpurkar et
al. 2016, 2018): answers are normalised (lowercase, punctuation and the articles a/an/the removed, whitespace
collapsed), each question scores the maximum over its gold answers, and results are percentages. The inputs and
result keys are those of the Hub's ``squad`` and ``squad_v2`` metrics, so ``run_qa.py``-style post-processing works
unchanged.
"""

import collections
import re
import string

import datasets
import evaluate


_CITATION = """\
@inproceedings{rajpurkar2016squad,
  title={{SQuAD}: 100,000+ Questions for Machine Comprehension of Text},
  author={Rajpurkar, Pranav and Zhang, Jian and Lopyrev, Konstantin and Liang, Percy},
  booktitle={Proceedings of EMNLP},
  year={2016}
}
@inproceedings{rajpurkar2018know,
  title={Know What You Don't Know: Unanswerable Questions for {SQuAD}},
  author={Rajpurkar, Pranav and Jia, Robin and Liang, Percy},
  booktitle={Proceedings of ACL},
  year={2018}
}
"""

_DESCRIPTION = "Exact match and token F1 of the official SQuAD v1.1 / v2.0 evaluation scripts."

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of {"id": str, "prediction_text": str} (v2 adds "no_answer_probability": float; an
        unanswerable prediction is the empty string).
    references: list of {"id": str, "answers": {"text": list[str], "answer_start": list[int]}} (v2: empty lists for
        an unanswerable question). answer_start is not scored.
    no_answer_threshold (v2 only, default 1.0): a question whose no_answer_probability is above it counts as
        answered with "no answer".
Returns:
    v1: {"exact_match", "f1"} in percent.
    v2: {"exact", "f1", "total"}, the same for "HasAns_*" and "NoAns_*" (when such questions exist), and
        "best_exact", "best_exact_thresh", "best_f1", "best_f1_thresh" (the no-answer threshold that maximises each).
"""

CONFIG_NAMES = ("default", "v1", "v2")
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """Lowercase, drop punctuation and the articles a/an/the, and collapse whitespace (the official normalisation)."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def token_f1(prediction: str, gold: str, *, empty_matches_empty: bool = False) -> float:
    """Bag-of-tokens F1 between two normalised answers.

    v2.0 scores an empty answer ("no answer") 1 against an empty gold answer and 0 against any other
    (``empty_matches_empty=True``); v1.1 has no empty answers and scores an empty prediction 0.
    """
    prediction_tokens, gold_tokens = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if empty_matches_empty and (not prediction_tokens or not gold_tokens):
        return float(prediction_tokens == gold_tokens)
    common = sum((collections.Counter(prediction_tokens) & collections.Counter(gold_tokens)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(prediction_tokens), common / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def _best_threshold(predictions, scores, no_answer_probabilities, has_answer):
    """The no-answer threshold maximising the total score (``find_best_thresh`` of evaluate-v2.0.py).

    Start from "every question answered with no answer" (the unanswerable ones score 1), then lower the threshold
    past one question at a time, in increasing order of no-answer probability, letting it keep its prediction.
    """
    current = best = sum(not has for has in has_answer.values())
    best_threshold = 0.0
    for qid in sorted(no_answer_probabilities, key=no_answer_probabilities.get):
        if has_answer[qid]:
            current += scores[qid]
        elif predictions[qid]:
            current -= 1
        if current > best:
            best, best_threshold = current, no_answer_probabilities[qid]
    return 100.0 * best / len(scores), best_threshold


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Squad(evaluate.Metric):
    def _info(self):
        if self.config_name not in CONFIG_NAMES:
            raise ValueError(
                f"Unknown SQuAD configuration {self.config_name!r}: expected one of {', '.join(CONFIG_NAMES)} "
                "('default' and 'v1' are SQuAD v1.1, 'v2' is SQuAD v2.0)."
            )
        prediction = {"id": datasets.Value("string"), "prediction_text": datasets.Value("string")}
        if self.config_name == "v2":
            prediction["no_answer_probability"] = datasets.Value("float32")
        reference = {
            "id": datasets.Value("string"),
            "answers": datasets.Sequence({"text": datasets.Value("string"), "answer_start": datasets.Value("int32")}),
        }
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": prediction, "references": reference}),
            reference_urls=["https://rajpurkar.github.io/SQuAD-explorer/"],
        )

    def _compute(self, predictions, references, no_answer_threshold: float = 1.0):
        texts = {p["id"]: p["prediction_text"] for p in predictions}
        missing = [r["id"] for r in references if r["id"] not in texts]
        if missing:
            raise ValueError(f"No prediction for {len(missing)} question(s), e.g. ids {missing[:5]}.")
        if self.config_name != "v2":
            em = [max(exact_match(texts[r["id"]], gold) for gold in r["answers"]["text"]) for r in references]
            f1 = [max(token_f1(texts[r["id"]], gold) for gold in r["answers"]["text"]) for r in references]
            return {"exact_match": 100.0 * sum(em) / len(em), "f1": 100.0 * sum(f1) / len(f1)}

        no_answer_probabilities = {p["id"]: p["no_answer_probability"] for p in predictions}
        has_answer, exact_raw, f1_raw = {}, {}, {}
        for r in references:
            qid = r["id"]
            # A question with no non-empty gold answer is unanswerable: its only correct answer is "".
            golds = [text for text in r["answers"]["text"] if normalize_answer(text)] or [""]
            has_answer[qid] = bool(r["answers"]["text"])
            exact_raw[qid] = max(exact_match(texts[qid], gold) for gold in golds)
            f1_raw[qid] = max(token_f1(texts[qid], gold, empty_matches_empty=True) for gold in golds)

        def thresholded(raw):
            return {
                qid: float(not has_answer[qid]) if no_answer_probabilities[qid] > no_answer_threshold else score
                for qid, score in raw.items()
            }

        exact, f1 = thresholded(exact_raw), thresholded(f1_raw)
        results = {}
        for prefix, qids in (
            ("", list(has_answer)),
            ("HasAns_", [q for q, has in has_answer.items() if has]),
            ("NoAns_", [q for q, has in has_answer.items() if not has]),
        ):
            if qids:
                results[f"{prefix}exact"] = 100.0 * sum(exact[q] for q in qids) / len(qids)
                results[f"{prefix}f1"] = 100.0 * sum(f1[q] for q in qids) / len(qids)
                results[f"{prefix}total"] = len(qids)
        probabilities = {q: no_answer_probabilities[q] for q in has_answer}
        results["best_exact"], results["best_exact_thresh"] = _best_threshold(texts, exact_raw, probabilities, has_answer)
        results["best_f1"], results["best_f1_thresh"] = _best_threshold(texts, f1_raw, probabilities, has_answer)
        return results
