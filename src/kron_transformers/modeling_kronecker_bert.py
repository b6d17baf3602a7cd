# Copyright 2026 The kron-transformers Authors. Licensed under the Apache License, Version 2.0.
"""KroneckerBERT (Tahaei et al., NAACL 2022): the Transformers BERT classes with Kronecker-factored maps.

Built by the generic factory (``modeling_kronecker.py``): each class subclasses the Transformers class it replaces,
calls its constructor, then swaps the query/key/value/attention-output and FFN ``nn.Linear``s and the word
``nn.Embedding`` named by the ``KroneckerBertConfig`` fields for ``KroneckerLinear``/``KroneckerEmbedding``. Forward
passes, attention backends and output capture (hidden states, attentions) stay Transformers'. Position/token-type
embeddings, LayerNorms, the pooler and the heads stay dense; the masked-LM decoder computes its logits from the word
embedding's factors (``KroneckerTiedLogits``).

This file travels with every checkpoint saved with ``save_pretrained`` (``trust_remote_code``): it imports only
transformers and its siblings.
"""

from transformers.models.bert.modeling_bert import (
    BertForMaskedLM,
    BertForMultipleChoice,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertForTokenClassification,
    BertModel,
)

from .configuration_kronecker_bert import KroneckerBertConfig
from .modeling_kronecker import register_kronecker_family


_FAMILY = register_kronecker_family(
    "bert",
    KroneckerBertConfig,
    {
        "AutoModel": BertModel,
        "AutoModelForMaskedLM": BertForMaskedLM,
        "AutoModelForSequenceClassification": BertForSequenceClassification,
        "AutoModelForQuestionAnswering": BertForQuestionAnswering,
        "AutoModelForTokenClassification": BertForTokenClassification,
        "AutoModelForMultipleChoice": BertForMultipleChoice,
    },
    module=__name__,
    namespace=globals(),
)
# Defined by the call above (named here for readers and linters): every head, keyed by the class it replaces.
KroneckerBertPreTrainedModel = _FAMILY.pretrained_class
KroneckerBertModel = _FAMILY.classes[BertModel]
KroneckerBertForMaskedLM = _FAMILY.classes[BertForMaskedLM]
KroneckerBertForSequenceClassification = _FAMILY.classes[BertForSequenceClassification]
KroneckerBertForQuestionAnswering = _FAMILY.classes[BertForQuestionAnswering]
KroneckerBertForTokenClassification = _FAMILY.classes[BertForTokenClassification]
KroneckerBertForMultipleChoice = _FAMILY.classes[BertForMultipleChoice]
KRONECKER_BERT_CLASSES = tuple(_FAMILY.classes.values())


def register_kronecker_bert() -> None:
    """Kept for callers of the previous API: the family registers itself with the Auto classes on import."""
