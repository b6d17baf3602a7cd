# Copyright 2026 The kron-transformers Authors. Licensed under the Apache License, Version 2.0.
"""kron-transformers: Kronecker-compressed BERT and GPT-2 for Hugging Face Transformers."""

from .kronecker import (
    kron_flops,
    kron_linear,
    kron_weight,
    kronecker_compression,
    kronecker_shapes,
    nearest_kronecker_product,
)
from .compression import CompressionReport, ModuleReport, compress
from .layers import KroneckerEmbedding, KroneckerLinear, KroneckerTiedLogits, replace_with_kronecker_modules
from .configuration_kronecker_bert import KRONECKER_BERT_PRESETS, KroneckerBertConfig
from .modeling_kronecker_bert import (
    KroneckerBertForMaskedLM,
    KroneckerBertForMultipleChoice,
    KroneckerBertForQuestionAnswering,
    KroneckerBertForSequenceClassification,
    KroneckerBertForTokenClassification,
    KroneckerBertModel,
    KroneckerBertPreTrainedModel,
    register_kronecker_bert,
)
from .configuration_kronecker_gpt2 import KRONECKER_GPT2_PRESETS, KroneckerGPT2Config
from .modeling_kronecker_gpt2 import (
    KroneckerGPT2ForSequenceClassification,
    KroneckerGPT2ForTokenClassification,
    KroneckerGPT2LMHeadModel,
    KroneckerGPT2Model,
    KroneckerGPT2PreTrainedModel,
    register_kronecker_gpt2,
)
from .gpt2_tokenizer import load_gpt2_tokenizer
from .model_card import DistillationStage, push_to_hub_with_card, save_pretrained_with_card, write_model_card
from .distillation import IlkdTrainer, IlkdTrainingArguments


# AutoConfig/AutoModel* can build and load KroneckerBERT and KroneckerGPT2; save_pretrained copies their code beside
# the weights.
register_kronecker_bert()
register_kronecker_gpt2()


__version__ = "0.1.0.dev0"

__all__ = [
    "CompressionReport",
    "ModuleReport",
    "compress",
    "KroneckerEmbedding",
    "KroneckerLinear",
    "KroneckerTiedLogits",
    "KRONECKER_BERT_PRESETS",
    "KroneckerBertConfig",
    "KroneckerBertForMaskedLM",
    "KroneckerBertForMultipleChoice",
    "KroneckerBertForQuestionAnswering",
    "KroneckerBertForSequenceClassification",
    "KroneckerBertForTokenClassification",
    "KroneckerBertModel",
    "KroneckerBertPreTrainedModel",
    "KRONECKER_GPT2_PRESETS",
    "KroneckerGPT2Config",
    "KroneckerGPT2ForSequenceClassification",
    "KroneckerGPT2ForTokenClassification",
    "KroneckerGPT2LMHeadModel",
    "KroneckerGPT2Model",
    "KroneckerGPT2PreTrainedModel",
    "load_gpt2_tokenizer",
    "DistillationStage",
    "IlkdTrainer",
    "IlkdTrainingArguments",
    "push_to_hub_with_card",
    "save_pretrained_with_card",
    "write_model_card",
    "kron_flops",
    "kron_linear",
    "kron_weight",
    "kronecker_compression",
    "kronecker_shapes",
    "nearest_kronecker_product",
    "replace_with_kronecker_modules",
]
