# Copyright 2026 The kron-transformers Authors. Licensed under the Apache License, Version 2.0.
"""An attention function, registered in Transformers' ``AttentionInterface``, that records pre-softmax scores.

Attention-score distillation needs ``QK^T / sqrt(d)`` before the softmax, which no Transformers backend returns
(eager returns probabilities, sdpa and flash nothing). Rather than copy any modeling code, we register one more
attention backend under ``ATTENTION_RECORDING_IMPLEMENTATION``: eager attention that, inside
``record_attention_scores(model)``, appends each layer's softmax input and the positions it attends to. Any model whose
attention dispatches through ``ALL_ATTENTION_FUNCTIONS`` (BERT, GPT-2 and their Kronecker subclasses) can use it,
whatever backend it was loaded with; ``record_attention_scores`` switches the model to it for the duration of the
block and then restores the model's own backend, so evaluation and saved configs keep the user's choice.

The matching mask function, registered in ``AttentionMaskInterface`` under the same name, makes the model build a
boolean ``(batch, 1, query, key)`` mask with causality materialised (sdpa's mask may leave causality to the kernel's
``is_causal`` flag), so the record always says exactly which entries the softmax saw.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F
from transformers import AttentionInterface, PreTrainedModel
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask


ATTENTION_RECORDING_IMPLEMENTATION = "kron_ilkd_recording"


@dataclass(frozen=True)
class AttentionRecord:
    """One attention call. ``scores`` ``(batch, heads, query, key)``: the softmax's input, ``QK^T * scaling`` (plus
    any additive bias the model passes), with ``torch.finfo(dtype).min`` where masked. ``mask``: boolean,
    broadcastable to the scores, true where the query attends to the key (``None``: every pair)."""

    scores: torch.Tensor
    mask: torch.Tensor | None


_active_records: ContextVar[list[AttentionRecord] | None] = ContextVar("kron_ilkd_attention_records", default=None)


def _attended_positions(
    module: nn.Module, attention_mask: torch.Tensor | None, is_causal: bool | None, scores: torch.Tensor
) -> torch.Tensor | None:
    """Boolean ``(batch or 1, heads or 1, query, key)`` mask of the entries the softmax sees, or ``None`` for all."""
    if attention_mask is None:
        is_causal = is_causal if is_causal is not None else getattr(module, "is_causal", False)
        query_length, key_length = scores.shape[-2:]
        if not is_causal or query_length == 1:
            return None
        # With a cache the queries are the last `query_length` positions of the keys.
        return torch.ones(query_length, key_length, dtype=torch.bool, device=scores.device).tril(
            key_length - query_length
        )[None, None]
    if attention_mask.dtype == torch.bool:
        return attention_mask
    # An additive float mask: `finfo.min` (or -inf) where masked, small finite biases elsewhere.
    return attention_mask > torch.finfo(attention_mask.dtype).min / 2


def recording_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    is_causal: bool | None = None,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eager attention that also records its scores inside ``record_attention_scores``.

    Args:
        module: the calling attention module (its ``training`` and ``is_causal`` are read).
        query: ``(batch, heads, query, head_dim)``.
        key, value: ``(batch, kv_heads, key, head_dim)``; ``kv_heads`` divides ``heads`` (grouped-query attention).
        attention_mask: boolean (true = attend) or additive float, broadcastable to ``(batch, heads, query, key)``.
        scaling: score scale, ``head_dim ** -0.5`` if ``None``.
        dropout: dropout probability on the attention probabilities (applied only in training mode).
        is_causal: used only when ``attention_mask`` is ``None``; defaults to ``module.is_causal``.

    Returns:
        ``(attn_output (batch, query, heads, head_dim), attn_weights (batch, heads, query, key))`` like eager.
    """
    if key.shape[1] != query.shape[1]:
        groups = query.shape[1] // key.shape[1]
        key = key.repeat_interleave(groups, dim=1)
        value = value.repeat_interleave(groups, dim=1)
    if scaling is None:
        scaling = query.shape[-1] ** -0.5

    # Scaling the query rather than the scores: a pass over (query, head_dim) instead of (query, key).
    scores = torch.matmul(query * scaling, key.transpose(-1, -2))  # (batch, heads, query, key)
    attended = _attended_positions(module, attention_mask, is_causal, scores)

    if attention_mask is not None and attention_mask.dtype != torch.bool:
        scores = scores + attention_mask  # keeps any finite additive bias, as eager does
    if attended is not None:
        # `where` rather than `masked_fill`, which clones first: one pass over the scores instead of two.
        scores = torch.where(attended, scores, torch.finfo(scores.dtype).min)
    # The softmax runs in at least float32, like GPT-2's upcast path, for half-precision students.
    weights = F.softmax(scores, dim=-1, dtype=torch.promote_types(scores.dtype, torch.float32)).to(value.dtype)
    weights = F.dropout(weights, p=dropout, training=module.training)
    attn_output = torch.matmul(weights, value).transpose(1, 2).contiguous()

    records = _active_records.get()
    if records is not None:
        records.append(AttentionRecord(scores=scores, mask=attended))
    return attn_output, weights


def recording_attention_mask(*args, **kwargs) -> torch.Tensor | None:
    """sdpa's boolean mask, with causality always materialised instead of left to an ``is_causal`` flag."""
    kwargs["allow_is_causal_skip"] = False
    return sdpa_mask(*args, **kwargs)


AttentionInterface.register(ATTENTION_RECORDING_IMPLEMENTATION, recording_attention_forward)
AttentionMaskInterface.register(ATTENTION_RECORDING_IMPLEMENTATION, recording_attention_mask)


@contextlib.contextmanager
def record_attention_scores(model: PreTrainedModel) -> Iterator[list[AttentionRecord]]:
    """Run ``model``'s attention through ``recording_attention_forward`` inside the block.

    Yields the list that each attention call appends its ``AttentionRecord`` to, in call order (for BERT and GPT-2:
    one per layer). The model's own attention implementation is restored on exit, even on error.

    Raises:
        ValueError: if the model does not dispatch its attention through Transformers' ``AttentionInterface``.
    """
    previous = model.config._attn_implementation
    if previous != ATTENTION_RECORDING_IMPLEMENTATION:
        model.set_attn_implementation(ATTENTION_RECORDING_IMPLEMENTATION)
        if model.config._attn_implementation != ATTENTION_RECORDING_IMPLEMENTATION:
            raise ValueError(
                f"{type(model).__name__} does not route its attention through transformers' AttentionInterface, so "
                "its attention scores cannot be recorded; set alpha_attention=0 to distil it without them."
            )
    records: list[AttentionRecord] = []
    token = _active_records.set(records)
    try:
        yield records
    finally:
        _active_records.reset(token)
        if previous != ATTENTION_RECORDING_IMPLEMENTATION:
            model.set_attn_implementation(previous)
