# Copyright 2026 The kron-transformers Authors. Licensed under the Apache License, Version 2.0.
"""The distillation losses, one pure function each: student tensor, teacher tensor, mask in; a scalar out.

Every function counts *items* (a token, a sequence) and returns their mean (``reduction="mean"``) or their sum
(``reduction="sum"``). ``IlkdTrainer`` takes the sum and divides by the number of items in the whole accumulated,
all-device batch, so that gradient accumulation and data parallelism give the update of one large batch even when
micro-batches hold different numbers of real tokens.

Masks are boolean (or 0/1) and ``True`` where a position is real. Masked attention entries never reach an arithmetic
operation: they are selected away with ``torch.where`` before any square or logarithm, so a masked pre-softmax score of
``torch.finfo(dtype).min`` (about -3.4e38 in float32) or ``-inf`` cannot overflow a square or turn a product into NaN.
Hidden states and logits at padding positions are dropped per token, after the reduction over the feature dimension
(one pass fewer over the largest tensors): any finite value there is ignored, value and gradient.
Everything is computed in at least float32, whatever the dtype of the models.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


_REDUCTIONS = ("mean", "sum")


def _compute_dtype(*tensors: torch.Tensor) -> torch.dtype:
    dtype = torch.float32
    for tensor in tensors:
        dtype = torch.promote_types(dtype, tensor.dtype)
    return dtype


def _check_pair(name: str, student: torch.Tensor, teacher: torch.Tensor) -> None:
    if student.shape != teacher.shape:
        raise ValueError(
            f"{name}: student and teacher tensors must have the same shape; got {tuple(student.shape)} and "
            f"{tuple(teacher.shape)}."
        )


def _reduce(per_item: torch.Tensor, item_mask: torch.Tensor | None, reduction: str) -> torch.Tensor:
    """Sum or mean of ``per_item`` over the items where ``item_mask`` is true (all items if it is ``None``)."""
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}; got {reduction!r}.")
    if item_mask is None:
        return per_item.sum() if reduction == "sum" else per_item.mean()
    item_mask = item_mask.to(device=per_item.device, dtype=torch.bool).expand_as(per_item)
    total = torch.where(item_mask, per_item, torch.zeros((), dtype=per_item.dtype, device=per_item.device)).sum()
    if reduction == "sum":
        return total
    return total / item_mask.sum().clamp(min=1)


def _mean_square(difference: torch.Tensor) -> torch.Tensor:
    """Mean of the squares over the last dimension, as one fused dot product per item."""
    return torch.linalg.vecdot(difference, difference) / difference.shape[-1]


def _select(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``values`` zeroed where the (broadcastable) ``mask`` is false, *before* any square: whatever is there reaches
    neither the value nor the gradient."""
    return torch.where(mask, values, torch.zeros((), dtype=values.dtype, device=values.device))


def hidden_state_loss(
    student_hidden: torch.Tensor,
    teacher_hidden: torch.Tensor,
    mask: torch.Tensor | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """Mean squared error between hidden states, over real tokens (TinyBERT Eq. 7, KroneckerBERT Eq. 9).

    Args:
        student_hidden: ``(batch, seq, hidden)``, already projected to the teacher's width if they differ.
        teacher_hidden: ``(batch, seq, hidden)``.
        mask: ``(batch, seq)``, true on real tokens; ``None`` counts every token.
        reduction: ``"mean"`` over real tokens, or ``"sum"``.

    A token's loss is the mean over the hidden dimension of the squared difference. Also used for the embedding
    output (the input of the first layer).
    """
    _check_pair("hidden_state_loss", student_hidden, teacher_hidden)
    dtype = _compute_dtype(student_hidden, teacher_hidden)
    return _reduce(_mean_square(student_hidden.to(dtype) - teacher_hidden.to(dtype)), mask, reduction)


def _check_4d(mask: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    if mask.dim() != 4:
        raise ValueError(
            f"The attention mask must be 4-D (batch, heads or 1, query, key); got shape {tuple(mask.shape)}."
        )
    return mask.to(device=scores.device, dtype=torch.bool)


def _row_mask(mask: torch.Tensor | None, scores: torch.Tensor) -> torch.Tensor | None:
    return None if mask is None else _check_4d(mask, scores).expand_as(scores)


def attention_score_loss(
    student_scores: torch.Tensor,
    teacher_scores: torch.Tensor,
    mask: torch.Tensor | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """Mean squared error between pre-softmax attention scores ``QK^T / sqrt(d)`` (KroneckerBERT Eq. 10).

    Args:
        student_scores: ``(batch, heads, query, key)``.
        teacher_scores: ``(batch, heads, query, key)``.
        mask: boolean ``(batch, heads or 1, query, key)``, true where the query attends to the key (padding and,
            for causal models, the future are false); ``None`` counts every pair.
        reduction: ``"mean"`` over query tokens, or ``"sum"``.

    A query token's loss is the mean squared error over the keys it attends to, averaged over heads; query rows
    that attend to no key (padding queries) do not count. Masked entries may hold any value, ``-inf`` included.
    """
    _check_pair("attention_score_loss", student_scores, teacher_scores)
    dtype = _compute_dtype(student_scores, teacher_scores)
    difference = student_scores.to(dtype) - teacher_scores.to(dtype)
    if mask is None:
        per_row = _mean_square(difference)  # (batch, heads, query)
        return _reduce(per_row.mean(dim=1), None, reduction)
    mask = _check_4d(mask, student_scores)
    # The mask broadcasts over heads: counting keys before expanding it saves a pass over the scores.
    keys_per_row = mask.sum(dim=-1)  # (batch, heads or 1, query)
    selected = _select(difference, mask)
    per_row = torch.linalg.vecdot(selected, selected) / keys_per_row.clamp(min=1)
    row_valid = keys_per_row.gt(0).any(dim=1)  # (batch, query)
    return _reduce(per_row.mean(dim=1), row_valid, reduction)


def attention_kl_loss(
    student_scores: torch.Tensor,
    teacher_scores: torch.Tensor,
    mask: torch.Tensor | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """``KL(teacher || student)`` between attention probabilities (KnGPT2), from pre-softmax scores.

    Args:
        student_scores: ``(batch, heads, query, key)`` pre-softmax scores.
        teacher_scores: ``(batch, heads, query, key)`` pre-softmax scores.
        mask: boolean ``(batch, heads or 1, query, key)``, true where the query attends to the key; ``None`` lets
            every query attend to every key.
        reduction: ``"mean"`` over query tokens, or ``"sum"``.

    Each row is a softmax over the keys its query attends to, as in the model; a query token's loss is the row's KL
    divergence averaged over heads, and query rows that attend to no key do not count.
    """
    _check_pair("attention_kl_loss", student_scores, teacher_scores)
    dtype = _compute_dtype(student_scores, teacher_scores)
    mask = _row_mask(mask, student_scores)
    student_log_probs = _masked_log_softmax(student_scores.to(dtype), mask)
    teacher_log_probs = _masked_log_softmax(teacher_scores.to(dtype), mask)
    per_row = _kl_rows(student_log_probs, teacher_log_probs, mask)  # (batch, heads, query)
    row_valid = None if mask is None else mask.any(dim=-1).any(dim=1)  # (batch, query)
    return _reduce(per_row.mean(dim=1), row_valid, reduction)


def _masked_log_softmax(logits: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if mask is not None:
        # finfo.min rather than -inf keeps fully masked rows finite (they are dropped later).
        logits = torch.where(mask, logits, torch.finfo(logits.dtype).min)
    return F.log_softmax(logits, dim=-1)


def _kl_rows(
    student_log_probs: torch.Tensor, teacher_log_probs: torch.Tensor, mask: torch.Tensor | None
) -> torch.Tensor:
    """``sum_c p_t (log p_t - log p_s)`` over the last dimension, skipping masked classes."""
    # kl_div's fused kernel: one pass over a (batch, seq, vocab) tensor instead of three.
    terms = F.kl_div(student_log_probs, teacher_log_probs, reduction="none", log_target=True)
    if mask is not None:
        terms = torch.where(mask, terms, torch.zeros((), dtype=terms.dtype, device=terms.device))
    return terms.sum(dim=-1)


def soft_target_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float = 1.0,
    mask: torch.Tensor | None = None,
    class_mask: torch.Tensor | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """``T^2 KL(softmax(teacher / T) || softmax(student / T))`` (Hinton et al. 2015), per item.

    Args:
        student_logits: ``(..., classes)``: ``(batch, classes)`` for a sequence classifier, ``(batch, seq, vocab)``
            for a language model, ``(batch, seq)`` for a span start or end over positions.
        teacher_logits: same shape.
        temperature: ``T > 0``; the ``T^2`` factor keeps gradients comparable across temperatures.
        mask: ``(...)`` without the class dimension, true on the items that count (real tokens); ``None``: all.
        class_mask: broadcastable to the logits, true on the classes that exist (e.g. the real positions of a
            question-answering span); masked classes get probability zero for both models.
        reduction: ``"mean"`` over items, or ``"sum"``.
    """
    _check_pair("soft_target_loss", student_logits, teacher_logits)
    if not temperature > 0:
        raise ValueError(f"temperature must be positive; got {temperature!r}.")
    dtype = _compute_dtype(student_logits, teacher_logits)
    if class_mask is not None:
        class_mask = class_mask.to(device=student_logits.device, dtype=torch.bool).expand_as(student_logits)
    student_log_probs = _masked_log_softmax(student_logits.to(dtype) / temperature, class_mask)
    teacher_log_probs = _masked_log_softmax(teacher_logits.to(dtype) / temperature, class_mask)
    per_item = _kl_rows(student_log_probs, teacher_log_probs, class_mask) * temperature**2
    return _reduce(per_item, mask, reduction)


def logit_mse_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    mask: torch.Tensor | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """Mean squared error between logits, per item: for regression heads (``num_labels == 1``) and multi-label ones.

    Args:
        student_logits: ``(..., outputs)``.
        teacher_logits: same shape.
        mask: ``(...)`` without the last dimension, true on the items that count; ``None``: all.
        reduction: ``"mean"`` over items, or ``"sum"``.
    """
    _check_pair("logit_mse_loss", student_logits, teacher_logits)
    dtype = _compute_dtype(student_logits, teacher_logits)
    return _reduce(_mean_square(student_logits.to(dtype) - teacher_logits.to(dtype)), mask, reduction)
