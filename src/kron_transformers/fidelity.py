# Copyright 2026 The kron-transformers Authors. Licensed under the Apache License, Version 2.0.
"""Does the student behave like its teacher beyond its distillation data?

Accuracy on a held-out set only shows the inputs the student was distilled on. These functions measure the
student against its teacher on other inputs: unlabelled text of several lengths (the fraction of identical
predictions and the mean KL divergence of the output distributions), and labelled inputs at several lengths
(accuracy of both). A student distilled on short inputs can keep the teacher's accuracy there and fall to one class
on inputs a few times longer; these numbers show it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F


def usable_lengths(lengths: Sequence[int], models, tokenizer) -> list[int]:
    """``lengths`` capped at the longest input every model and the tokenizer accept (e.g. 512 for BERT), without
    duplicates."""
    limits = [getattr(m.config, "max_position_embeddings", None) or getattr(m.config, "n_positions", None)
              for m in models]
    # Tokenizers without a limit report a huge sentinel (int(1e30)).
    limits.append(tokenizer.model_max_length if tokenizer.model_max_length < 10**9 else None)
    cap = min((limit for limit in limits if limit), default=max(lengths))
    return sorted({min(int(length), cap) for length in lengths})


def with_special_tokens(tokenizer, ids: list[int]) -> list[int]:
    """``ids`` wrapped in the special tokens the tokenizer adds to a single text (BERT: ``[CLS] ... [SEP]``; GPT-2:
    none)."""
    probe = tokenizer.convert_tokens_to_ids(tokenizer.tokenize("a"))
    around = tokenizer("a")["input_ids"]
    start = next(i for i in range(len(around)) if around[i:i + len(probe)] == probe)
    return around[:start] + list(ids) + around[start + len(probe):]


def encode_at_length(tokenizer, texts: Sequence[str], length: int, keep: str = "start") -> list[list[int]]:
    """Each text that has at least ``length`` tokens (special tokens included), cut to exactly ``length``.

    ``keep="start"`` keeps the first tokens, ``"end"`` the last ones; the special tokens the tokenizer adds (BERT's
    ``[CLS]``/``[SEP]``) stay at both ends. Texts that are too short are left out, so every input is truly
    ``length`` tokens long.
    """
    if keep not in ("start", "end"):
        raise ValueError(f"keep must be 'start' or 'end'; got {keep!r}.")
    n_special = tokenizer.num_special_tokens_to_add(pair=False)
    body = length - n_special
    if body < 1:
        raise ValueError(f"length={length} leaves no room for text beside {n_special} special tokens.")
    encoded = []
    for ids in tokenizer(list(texts), add_special_tokens=False, verbose=False)["input_ids"]:
        if len(ids) < body:
            continue
        ids = ids[:body] if keep == "start" else ids[-body:]
        encoded.append(with_special_tokens(tokenizer, ids))
    return encoded


def _batches(tokenizer, sequences: list[list[int]], batch_size: int, device):
    for start in range(0, len(sequences), batch_size):
        chunk = sequences[start:start + batch_size]
        batch = tokenizer.pad({"input_ids": chunk}, return_tensors="pt")
        yield {key: value.to(device) for key, value in batch.items()}


def _distributions(model, batch) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probabilities ``(items, classes)`` of a model's outputs and the mask of items that count.

    Sequence-level heads (``logits`` of ``(batch, labels)``) give one item per sequence; token-level heads
    (``(batch, seq, vocab)``) one per real token.
    """
    logits = model(**batch).logits.float()
    if logits.dim() == 2:
        return logits.log_softmax(-1), torch.ones(logits.shape[0], dtype=torch.bool, device=logits.device)
    mask = batch.get("attention_mask")
    mask = torch.ones(logits.shape[:2], dtype=torch.bool, device=logits.device) if mask is None else mask.bool()
    return logits.log_softmax(-1)[mask], mask[mask]


@torch.inference_mode()
def compare_outputs(teacher, student, batches) -> dict[str, float]:
    """Agreement of ``student`` with ``teacher`` over ``batches`` (dicts of model inputs).

    Returns ``agreement`` (fraction of items whose top prediction is the teacher's), ``kl`` (mean
    ``KL(teacher || student)`` of the output distributions, in nats) and ``items``. Items are sequences for
    classification heads and real tokens for language-model heads.
    """
    teacher_was_training, student_was_training = teacher.training, student.training
    teacher.eval()
    student.eval()
    agree = kl = items = 0.0
    try:
        for batch in batches:
            teacher_logp, mask = _distributions(teacher, batch)
            student_logp, _ = _distributions(student, batch)
            agree += (teacher_logp.argmax(-1) == student_logp.argmax(-1)).sum().item()
            kl += F.kl_div(student_logp, teacher_logp, log_target=True, reduction="sum").item()
            items += mask.sum().item()
    finally:
        teacher.train(teacher_was_training)
        student.train(student_was_training)
    if items == 0:
        return {"agreement": math.nan, "kl": math.nan, "items": 0}
    return {"agreement": agree / items, "kl": kl / items, "items": int(items)}


def agreement_by_length(
    teacher,
    student,
    tokenizer,
    texts: Sequence[str],
    lengths: Sequence[int] = (64, 128, 256, 512),
    keep: str = "start",
    batch_size: int = 16,
    max_texts: int | None = None,
) -> dict[int, dict[str, float]]:
    """``compare_outputs`` on unlabelled ``texts`` cut to each of ``lengths`` tokens (capped at the models' maximum).

    At each length only texts with at least that many tokens are used (at most ``max_texts`` of them), so every input
    has exactly that length. Returns ``{length: {"agreement", "kl", "items"}}``.
    """
    device = next(student.parameters()).device
    results = {}
    for length in usable_lengths(lengths, (teacher, student), tokenizer):
        sequences = encode_at_length(tokenizer, texts, length, keep=keep)[:max_texts]
        results[length] = compare_outputs(teacher, student, _batches(tokenizer, sequences, batch_size, device))
    return results


@torch.inference_mode()
def predictions(model, tokenizer, sequences: list[list[int]], batch_size: int = 32) -> torch.Tensor:
    """Predicted class of a sequence-classification model for each token-id sequence: ``(n,)``."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        out = [model(**batch).logits.argmax(-1).cpu() for batch in _batches(tokenizer, sequences, batch_size, device)]
    finally:
        model.train(was_training)
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long)


def joined_reviews(
    texts: Sequence[str],
    labels: Sequence[int],
    groups: Sequence[str],
    tokenizer,
    length: int,
) -> tuple[list[list[int]], list[int]]:
    """Long labelled inputs built without leaking anything: consecutive same-label snippets of one group (e.g. one
    movie of the validation split) joined until they fill ``length`` tokens, then cut to exactly ``length``.

    Every snippet is used at most once; a group's leftover snippets that cannot fill ``length`` are dropped.
    Returns the token-id sequences (special tokens included) and their labels.
    """
    if not len(texts) == len(labels) == len(groups):
        raise ValueError(f"texts, labels and groups differ in length: {len(texts)}, {len(labels)}, {len(groups)}.")
    body = length - tokenizer.num_special_tokens_to_add(pair=False)
    ids = tokenizer(list(texts), add_special_tokens=False, verbose=False)["input_ids"]
    pending: dict[tuple[str, int], list[int]] = {}
    sequences, targets = [], []
    for token_ids, label, group in zip(ids, labels, groups):
        key = (group, int(label))
        joined = pending.setdefault(key, [])
        joined.extend(token_ids)
        if len(joined) >= body:
            sequences.append(with_special_tokens(tokenizer, joined[:body]))
            targets.append(int(label))
            pending[key] = []
    return sequences, targets


def accuracy_by_length(
    models: dict[str, object],
    tokenizer,
    texts: Sequence[str],
    labels: Sequence[int],
    groups: Sequence[str],
    lengths: Sequence[int] = (128, 256),
    batch_size: int = 32,
) -> dict[int, dict[str, float]]:
    """Accuracy of each model on ``joined_reviews`` of each length, with the fraction of positive (class 1)
    predictions and, for every model after the first (the teacher), its agreement with the first.

    Returns ``{length: {"examples": n, "<name>": accuracy, "<name>_positive": fraction,
    "<name>_agreement": fraction}}``.
    """
    names = list(models)
    results = {}
    for length in usable_lengths(lengths, models.values(), tokenizer):
        sequences, targets = joined_reviews(texts, labels, groups, tokenizer, length)
        target = torch.tensor(targets, dtype=torch.long)
        row: dict[str, float] = {"examples": len(targets)}
        reference = None
        for name in names:
            predicted = predictions(models[name], tokenizer, sequences, batch_size)
            row[name] = (predicted == target).float().mean().item() if len(targets) else math.nan
            row[f"{name}_positive"] = predicted.float().mean().item() if len(targets) else math.nan
            if reference is None:
                reference = predicted
            else:
                row[f"{name}_agreement"] = (predicted == reference).float().mean().item() if len(targets) else math.nan
        results[length] = row
    return results


def fidelity_warnings(
    accuracy: dict, reference: str = "teacher", one_class: float = 0.95, max_gap: float = 0.10
) -> list[str]:
    """Plain-language warnings for the failures accuracy on the distillation data hides.

    ``accuracy`` maps an input set's name (e.g. ``"reviews, 256 tokens"``) to a row as ``accuracy_by_length`` returns
    (``"<name>"``: accuracy, ``"<name>_positive"``: fraction predicted class 1). For every model other than
    ``reference``, a warning names each set on which it predicts one class for at least ``one_class`` of the inputs
    while the reference does not, and each set on which it is more than ``max_gap`` below the reference's accuracy.
    """
    if not 0.5 < one_class <= 1:
        raise ValueError(f"one_class must be in (0.5, 1], the fraction of inputs given one class; got {one_class}.")
    if not 0 <= max_gap <= 1:
        raise ValueError(f"max_gap must be in [0, 1], an accuracy difference; got {max_gap}.")

    def lopsided(fraction):
        return not math.isnan(fraction) and max(fraction, 1 - fraction) >= one_class

    lines = []
    for inputs, row in accuracy.items():
        if reference not in row:
            raise ValueError(f"the row for {inputs!r} has no accuracy of the reference model {reference!r}: "
                             f"it has {sorted(row)}.")
        reference_positive = row.get(f"{reference}_positive", math.nan)
        names = [key[: -len("_positive")] for key in row if key.endswith("_positive")]
        for name in names:
            if name == reference or name not in row:
                continue
            positive, accuracy_ = row[f"{name}_positive"], row[name]
            if lopsided(positive) and not lopsided(reference_positive):
                label = 1 if positive >= 0.5 else 0
                lines.append(f"{name} predicts class {label} for {max(positive, 1 - positive):.0%} of {inputs} "
                             f"({reference}: {reference_positive:.0%} class 1): it has fallen to one class there.")
            if accuracy_ < row[reference] - max_gap:
                lines.append(f"{name} is {100 * (row[reference] - accuracy_):.1f} accuracy points below {reference} "
                             f"on {inputs} ({accuracy_:.4f} vs {row[reference]:.4f}).")
    return lines
