# Copyright 2026 The kron-transformers Authors. Licensed under the Apache License, Version 2.0.
"""Intermediate-layer knowledge distillation: the losses, the attention-score recorder and ``IlkdTrainer``."""

from .attention import (
    ATTENTION_RECORDING_IMPLEMENTATION,
    AttentionRecord,
    record_attention_scores,
    recording_attention_forward,
)
from .losses import attention_kl_loss, attention_score_loss, hidden_state_loss, logit_mse_loss, soft_target_loss
from .trainer import (
    PROJECTION_WEIGHTS_NAME,
    HiddenStateProjection,
    IlkdTrainer,
    IlkdTrainingArguments,
    default_layer_map,
    last_complete_checkpoint,
)


__all__ = [
    "ATTENTION_RECORDING_IMPLEMENTATION",
    "AttentionRecord",
    "HiddenStateProjection",
    "IlkdTrainer",
    "IlkdTrainingArguments",
    "PROJECTION_WEIGHTS_NAME",
    "attention_kl_loss",
    "attention_score_loss",
    "default_layer_map",
    "hidden_state_loss",
    "last_complete_checkpoint",
    "logit_mse_loss",
    "record_attention_scores",
    "recording_attention_forward",
    "soft_target_loss",
]
