# Copyright 2026 The kron-transformers Authors. Licensed under the Apache License, Version 2.0.
"""Extractive question answering helpers for ``run_qa.py``: SQuAD files, span post-processing, a QA trainer.

After Transformers' ``examples/pytorch/question-answering/utils_qa.py`` and ``trainer_qa.py``:

* ``load_squad_file`` reads the official nested SQuAD v1.1/v2.0 JSON or the Hub's flat records (JSON lines);
* ``postprocess_qa_predictions`` turns per-feature start/end logits into one answer text per question;
* ``QuestionAnsweringTrainer`` / ``QuestionAnsweringIlkdTrainer`` evaluate with that post-processing, so EM/F1 are
  reported wherever the ``Trainer`` evaluates (``--do_eval``, ``--eval_strategy steps``, ``predict``).
"""

from __future__ import annotations

import collections
import json
import logging
import math
import os
import time
from typing import Any

import datasets
import numpy as np
from transformers import Trainer
from transformers.trainer_utils import PredictionOutput, speed_metrics

from kron_transformers.distillation import IlkdTrainer


logger = logging.getLogger(__name__)

SQUAD_FEATURES = datasets.Features(
    {
        "id": datasets.Value("string"),
        "title": datasets.Value("string"),
        "context": datasets.Value("string"),
        "question": datasets.Value("string"),
        "answers": {
            "text": datasets.List(datasets.Value("string")),
            "answer_start": datasets.List(datasets.Value("int32")),
        },
    }
)


# ---- SQuAD files ---------------------------------------------------------------------------------------------


def flatten_squad(squad: dict) -> list[dict[str, Any]]:
    """The official nested SQuAD JSON -> one record per question, in the Hub's ``squad``/``squad_v2`` layout.

    ``{"data": [{"title", "paragraphs": [{"context", "qas": [{"id", "question", "answers", "is_impossible"}]}]}]}``
    becomes ``{"id", "title", "context", "question", "answers": {"text": [...], "answer_start": [...]}}``.
    Unanswerable v2.0 questions (``is_impossible``) get empty answer lists; their ``plausible_answers`` are dropped.
    """
    records = []
    for article_index, article in enumerate(squad["data"]):
        if "paragraphs" not in article:
            raise ValueError(f"SQuAD article {article_index} has no 'paragraphs' (keys: {sorted(article)}).")
        for paragraph in article["paragraphs"]:
            context = paragraph["context"]
            for qa in paragraph["qas"]:
                answers = [] if qa.get("is_impossible", False) else qa.get("answers", [])
                for answer in answers:
                    start, text = answer["answer_start"], answer["text"]
                    # A misplaced answer would silently train the model on the wrong span.
                    if context[start:start + len(text)] != text:
                        raise ValueError(
                            f"Question {qa['id']!r}: answer {text!r} is not at answer_start={start} of its context "
                            f"(found {context[start:start + len(text)]!r})."
                        )
                records.append(
                    {
                        "id": str(qa["id"]),
                        "title": article.get("title", ""),
                        "context": context,
                        "question": qa["question"],
                        "answers": {
                            "text": [answer["text"] for answer in answers],
                            "answer_start": [answer["answer_start"] for answer in answers],
                        },
                    }
                )
    return records


def load_squad_file(path: str, cache_dir: str | None = None) -> datasets.Dataset:
    """A SQuAD-format file as a flat ``datasets.Dataset`` (columns id, title, context, question, answers).

    ``.json`` holding the official nested ``{"data": [...]}`` document is flattened with ``flatten_squad``; any other
    ``.json``/``.jsonl`` (JSON lines or a list of flat records, as the Hub's ``squad`` is exported) goes to
    ``datasets``' JSON builder.
    """
    if path.endswith(".json"):
        try:
            with open(path, encoding="utf-8") as file:
                document = json.load(file)
        except json.JSONDecodeError:  # JSON lines
            document = None
        if isinstance(document, dict) and "data" in document:
            return datasets.Dataset.from_list(flatten_squad(document), features=SQUAD_FEATURES)
    return datasets.load_dataset("json", data_files=path, split="train", cache_dir=cache_dir)


# ---- post-processing -----------------------------------------------------------------------------------------


def postprocess_qa_predictions(
    examples: datasets.Dataset,
    features: datasets.Dataset,
    predictions: tuple[np.ndarray, np.ndarray],
    version_2_with_negative: bool = False,
    n_best_size: int = 20,
    max_answer_length: int = 30,
    null_score_diff_threshold: float = 0.0,
    output_dir: str | None = None,
    prefix: str | None = None,
) -> tuple[dict[str, str], dict[str, float]]:
    """Best answer text per question from the start/end logits of its features (the windows of its context).

    Args:
        examples: the questions (columns ``id``, ``context``).
        features: the tokenised windows, one row per row of the logits, with ``example_id``, ``offset_mapping``
            (``(start, end)`` character offsets into the context for context tokens, ``None`` for question, special
            and padding tokens) and ``cls_index`` (the position whose score means "no answer").
        predictions: ``(start_logits, end_logits)``, each ``(num_features, seq_len)``; positions past a feature's
            length may hold padding (the ``Trainer`` pads with -100 when batches have different lengths).
        version_2_with_negative: questions may have no answer (SQuAD v2.0).
        n_best_size: start and end positions considered per feature (top logits), and answers kept per question.
        max_answer_length: longest answer in tokens.
        null_score_diff_threshold: v2.0 predicts no answer when ``null score - best span score`` exceeds it.
        output_dir: if given, ``{prefix}_predictions.json``, ``{prefix}_nbest_predictions.json`` and (v2.0)
            ``{prefix}_null_odds.json`` are written there.
        prefix: file name prefix (e.g. ``eval``).

    Returns:
        ``(answers, no_answer_probabilities)``: ``{id: text}`` (``""`` is "no answer") and ``{id: p}``, the softmax
        probability of "no answer" among it and the n-best spans (all 0 for v1.1).

    A span ``(s, e)`` scores ``start_logits[s] + end_logits[e]``; valid spans lie in the context, with ``s <= e`` and
    at most ``max_answer_length`` tokens. The no-answer score of a question is the lowest ``cls`` score over its
    features (the window that most believes an answer is there), as in the BERT reference implementation.
    """
    if len(predictions) != 2:
        raise ValueError(f"predictions must be (start_logits, end_logits); got a tuple of {len(predictions)} arrays.")
    all_start_logits, all_end_logits = predictions
    if len(all_start_logits) != len(features) or len(all_end_logits) != len(features):
        raise ValueError(
            f"Got {len(all_start_logits)} start and {len(all_end_logits)} end logit rows for {len(features)} features."
        )

    features_per_example = collections.defaultdict(list)
    for feature_index, example_id in enumerate(features["example_id"]):
        features_per_example[example_id].append(feature_index)
    # Materialised once: indexing a lazy column row by row would decode Arrow data on every access.
    offset_mappings, cls_indices = list(features["offset_mapping"]), list(features["cls_index"])

    answers: dict[str, str] = {}
    no_answer_probabilities: dict[str, float] = {}
    all_nbest: dict[str, list[dict[str, Any]]] = {}
    null_odds: dict[str, float] = {}
    for example in examples:
        example_id, context = example["id"], example["context"]
        candidates = []
        null_score = None
        for feature_index in features_per_example[example_id]:
            start_logits, end_logits = all_start_logits[feature_index], all_end_logits[feature_index]
            offsets = offset_mappings[feature_index]
            cls_index = cls_indices[feature_index]
            feature_null = float(start_logits[cls_index] + end_logits[cls_index])
            null_score = feature_null if null_score is None else min(null_score, feature_null)
            # Logit rows are padded to the longest batch: only the feature's own positions are candidates.
            length = len(offsets)
            top_starts = np.argsort(start_logits[:length])[::-1][:n_best_size]
            top_ends = np.argsort(end_logits[:length])[::-1][:n_best_size]
            for start in top_starts:
                for end in top_ends:
                    if offsets[start] is None or offsets[end] is None:
                        continue
                    if end < start or end - start + 1 > max_answer_length:
                        continue
                    char_start, char_end = offsets[start][0], offsets[end][1]
                    candidates.append(
                        {
                            "text": context[char_start:char_end],
                            "offsets": (int(char_start), int(char_end)),
                            "start_logit": float(start_logits[start]),
                            "end_logit": float(end_logits[end]),
                            "score": float(start_logits[start] + end_logits[end]),
                        }
                    )
        if null_score is None:
            raise ValueError(f"Question {example_id!r} has no features: were examples and features made together?")

        nbest = sorted(candidates, key=lambda c: c["score"], reverse=True)[:n_best_size]
        best = nbest[0] if nbest else None
        if version_2_with_negative:
            null = {"text": "", "offsets": (0, 0), "start_logit": None, "end_logit": None, "score": null_score}
            nbest = nbest + [null]
            nbest.sort(key=lambda c: c["score"], reverse=True)
        if nbest:
            scores = np.array([c["score"] for c in nbest])
            probabilities = np.exp(scores - scores.max())
            probabilities /= probabilities.sum()
            for candidate, probability in zip(nbest, probabilities):
                candidate["probability"] = float(probability)
        all_nbest[example_id] = nbest

        if version_2_with_negative:
            score_diff = null_score - best["score"] if best is not None else math.inf
            null_odds[example_id] = score_diff
            answers[example_id] = "" if score_diff > null_score_diff_threshold else best["text"]
            no_answer_probabilities[example_id] = next(c["probability"] for c in nbest if c["start_logit"] is None)
        else:
            # No valid span at all (a context cut away entirely, say) scores as an empty answer.
            answers[example_id] = best["text"] if best is not None else ""
            no_answer_probabilities[example_id] = 0.0

    if output_dir is not None:
        if not os.path.isdir(output_dir):
            raise OSError(f"output_dir {output_dir!r} is not a directory.")
        name = f"{prefix}_" if prefix else ""
        files = {"predictions": answers, "nbest_predictions": all_nbest}
        if version_2_with_negative:
            files["null_odds"] = null_odds
        for kind, content in files.items():
            path = os.path.join(output_dir, f"{name}{kind}.json")
            logger.info(f"Saving {kind.replace('_', ' ')} to {path}.")
            with open(path, "w", encoding="utf-8") as writer:
                writer.write(json.dumps(content, indent=2, ensure_ascii=False) + "\n")
    return answers, no_answer_probabilities


# ---- trainers ------------------------------------------------------------------------------------------------


class QuestionAnsweringMixin:
    """``evaluate``/``predict`` that run the model on the features, post-process the logits into answer texts for the
    examples and score those (Transformers' ``QuestionAnsweringTrainer``). Mix it in before a ``Trainer`` class.

    ``post_process_function(examples, features, predictions, stage) -> EvalPrediction`` gives what
    ``compute_metrics`` scores. Only the main process post-processes and scores.
    """

    def __init__(self, *args, eval_examples=None, post_process_function=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.eval_examples = eval_examples
        self.post_process_function = post_process_function

    def _run_and_score(self, dataset, examples, ignore_keys, metric_key_prefix, description):
        if description == "Evaluation":
            dataloader = self.get_eval_dataloader(dataset)
        else:
            dataloader = self.get_test_dataloader(dataset)
        # Metrics need the examples, which evaluation_loop does not see: score after the loop instead of inside it.
        compute_metrics, self.compute_metrics = self.compute_metrics, None
        start_time = time.time()
        try:
            output = self.evaluation_loop(dataloader, description=description, prediction_loss_only=False,
                                          ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix)
        finally:
            self.compute_metrics = compute_metrics
        total_batch_size = self.args.eval_batch_size * self.args.world_size
        if f"{metric_key_prefix}_model_preparation_time" in output.metrics:
            start_time += output.metrics[f"{metric_key_prefix}_model_preparation_time"]
        output.metrics.update(
            speed_metrics(metric_key_prefix, start_time, num_samples=output.num_samples,
                          num_steps=math.ceil(output.num_samples / total_batch_size))
        )
        metrics, post_processed = dict(output.metrics), None
        if self.post_process_function is not None and self.args.should_save:
            post_processed = self.post_process_function(examples, dataset, output.predictions, metric_key_prefix)
            if compute_metrics is not None and post_processed.label_ids is not None:
                for key, value in compute_metrics(post_processed).items():
                    metrics[key if key.startswith(f"{metric_key_prefix}_") else f"{metric_key_prefix}_{key}"] = value
        return output, metrics, post_processed

    def evaluate(self, eval_dataset=None, eval_examples=None, ignore_keys=None, metric_key_prefix: str = "eval"):
        eval_dataset = self.eval_dataset if eval_dataset is None else eval_dataset
        eval_examples = self.eval_examples if eval_examples is None else eval_examples
        if eval_dataset is None or eval_examples is None:
            raise ValueError("Evaluation needs eval_dataset (the features) and eval_examples (the questions).")
        _, metrics, _ = self._run_and_score(eval_dataset, eval_examples, ignore_keys, metric_key_prefix, "Evaluation")
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics

    def predict(self, predict_dataset, predict_examples, ignore_keys=None, metric_key_prefix: str = "test"):
        output, metrics, post_processed = self._run_and_score(
            predict_dataset, predict_examples, ignore_keys, metric_key_prefix, "Prediction"
        )
        self.control = self.callback_handler.on_predict(self.args, self.state, self.control, metrics)
        predictions = post_processed.predictions if post_processed is not None else output.predictions
        label_ids = post_processed.label_ids if post_processed is not None else None
        return PredictionOutput(predictions=predictions, label_ids=label_ids, metrics=metrics)


class QuestionAnsweringTrainer(QuestionAnsweringMixin, Trainer):
    """``Trainer`` (fine-tuning on the answer spans) with SQuAD post-processing in evaluation."""


class QuestionAnsweringIlkdTrainer(QuestionAnsweringMixin, IlkdTrainer):
    """``IlkdTrainer`` (distilling a teacher's layers and start/end logits), with SQuAD post-processing in
    evaluation."""
