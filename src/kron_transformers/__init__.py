# Copyright 2026 The kron-transformers Authors. Licensed under the Apache License, Version 2.0.
"""kron-transformers: Kronecker-compressed Transformers models (BERT, GPT-2, Llama, Mistral, Qwen2/3, RoBERTa,
DistilBERT, and any other architecture through ``target_modules``)."""

from .kronecker import (
    kron_flops,
    kron_linear,
    kron_weight,
    kronecker_compression,
    kronecker_shapes,
    nearest_kronecker_product,
)
from .compression import KRONECKER_TARGET_MODULES, CompressionReport, ModuleReport, compress
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
from .configuration_kronecker import (
    KroneckerConfigMixin,
    KroneckerDistilBertConfig,
    KroneckerLlamaConfig,
    KroneckerMistralConfig,
    KroneckerQwen2Config,
    KroneckerQwen3Config,
    KroneckerRobertaConfig,
    kronecker_config_class,
)
from .modeling_kronecker import KRONECKER_FAMILIES, KroneckerModelMixin, register_kronecker_family
from .gpt2_tokenizer import load_gpt2_tokenizer
from .model_card import DistillationStage, push_to_hub_with_card, save_pretrained_with_card, write_model_card
from .distillation import IlkdTrainer, IlkdTrainingArguments


# Importing the modeling files registered every built-in family with AutoConfig/AutoModel*; save_pretrained copies
# their code beside the weights. The generic families' classes (KroneckerLlamaForCausalLM, ...) are in
# `kron_transformers.modeling_kronecker` and in KRONECKER_FAMILIES[dense model_type].classes.


__version__ = "0.1.0.dev0"

__all__ = [
    "CompressionReport",
    "ModuleReport",
    "compress",
    "KRONECKER_FAMILIES",
    "KRONECKER_TARGET_MODULES",
    "KroneckerConfigMixin",
    "KroneckerModelMixin",
    "KroneckerDistilBertConfig",
    "KroneckerLlamaConfig",
    "KroneckerMistralConfig",
    "KroneckerQwen2Config",
    "KroneckerQwen3Config",
    "KroneckerRobertaConfig",
    "kronecker_config_class",
    "register_kronecker_family",
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
