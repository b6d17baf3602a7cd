# Copyright 2026 The kron-transformers Authors. Licensed under the Apache License, Version 2.0.
"""KroneckerBERT (Tahaei et al., NAACL 2022): the Transformers BERT classes with Kronecker-factored maps.

Each class subclasses the Transformers class it replaces and calls its constructor; ``KroneckerBertModel`` then swaps
the query/key/value/attention-output and FFN ``nn.Linear``s and the word ``nn.Embedding`` named by the config for
``KroneckerLinear``/``KroneckerEmbedding`` (``replace_with_kronecker_modules``), and the heads swap their dense
``BertModel`` for a ``KroneckerBertModel``. Forward passes, attention backends and output capture (hidden states,
attentions) stay Transformers'. Position/token-type embeddings, LayerNorms, the pooler and the heads stay dense; the
masked-LM decoder computes its logits from the word embedding's factors (``KroneckerTiedLogits``).

This file travels with every checkpoint saved with ``save_pretrained`` (``trust_remote_code``): it imports only torch,
transformers and its siblings.
"""

import torch
from transformers import initialization as init
from transformers.models.bert.modeling_bert import (
    BertForMaskedLM,
    BertForMultipleChoice,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertForTokenClassification,
    BertModel,
    BertPreTrainedModel,
)

from .configuration_kronecker_bert import KRONECKER_BERT_AUTO_MAP, KRONECKER_BERT_FIELDS, KroneckerBertConfig
from .kronecker_utils import finalize_kronecker_loading, register_kronecker_family
from .layers import KroneckerEmbedding, KroneckerLinear, KroneckerTiedLogits, replace_with_kronecker_modules


class KroneckerBertPreTrainedModel(BertPreTrainedModel):
    """Weight initialisation and embedding resizing for the Kronecker modules; mixed into every KroneckerBert class."""

    config_class = KroneckerBertConfig

    @torch.no_grad()
    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, (KroneckerLinear, KroneckerEmbedding)):
            # sum_r a[r] ⊗ b[r] has entries of standard deviation `initializer_range` (BERT's init of the dense
            # weight) when each factor has (initializer_range**2 / rank) ** (1/4).
            factor_std = (self.config.initializer_range**2 / module.rank) ** 0.25
            init.normal_(module.a, mean=0.0, std=factor_std)
            init.normal_(module.b, mean=0.0, std=factor_std)
            if getattr(module, "bias", None) is not None:
                init.zeros_(module.bias)
            # As for nn.Embedding: the slice loses the "already loaded" flag, so check it on the whole factor.
            padding_idx = getattr(module, "padding_idx", None)
            if padding_idx is not None and not getattr(module.a, "_is_hf_initialized", False):
                init.zeros_(module.a[:, padding_idx])

    def resize_token_embeddings(self, new_num_tokens=None, pad_to_multiple_of=None, mean_resizing=True):
        if isinstance(self.get_input_embeddings(), KroneckerEmbedding):
            raise NotImplementedError(
                f"{type(self).__name__} cannot resize its Kronecker-factored word embedding (vocab_size="
                f"{self.config.vocab_size}). Resize the dense model's embeddings before compressing it, or build the "
                "model with embedding_factor=None to keep a dense embedding."
            )
        return super().resize_token_embeddings(new_num_tokens, pad_to_multiple_of, mean_resizing)

    @staticmethod
    def _finalize_model_loading(model, load_config, loading_info):
        return finalize_kronecker_loading(
            BertPreTrainedModel, model, load_config, loading_info, KRONECKER_BERT_FIELDS, _config_field
        )


def _config_field(factor_key: str) -> str:
    """The config fields that set the shape of a factor, e.g. ``bert.encoder.layer.0.output.dense.a``."""
    if "word_embeddings" in factor_key:
        return "embedding_factor, kronecker_rank"
    if ".attention." in factor_key:
        return "attention_a_shape, kronecker_rank"
    return "ffn_a_shape, kronecker_rank"


class KroneckerBertModel(BertModel, KroneckerBertPreTrainedModel):
    config_class = KroneckerBertConfig

    def __init__(self, config: KroneckerBertConfig, add_pooling_layer: bool = True):
        super().__init__(config, add_pooling_layer=add_pooling_layer)
        replace_with_kronecker_modules(
            self,
            config.kronecker_linear_shapes(),
            rank=config.kronecker_rank,
            embeddings=config.kronecker_embedding_factors(),
        )
        # Initialise the new modules (the others are marked as done) and recompute the tied-weight map.
        self.post_init()


def _use_kronecker_bert(model: BertPreTrainedModel) -> None:
    """Swap the dense ``BertModel`` a Transformers head constructor built for a ``KroneckerBertModel``."""
    model.bert = KroneckerBertModel(model.config, add_pooling_layer=model.bert.pooler is not None)


class KroneckerBertForMaskedLM(BertForMaskedLM, KroneckerBertPreTrainedModel):
    config_class = KroneckerBertConfig
    # With a factored word embedding the decoder holds no weight: only its bias stays tied to `cls.predictions.bias`
    # (set per instance in __init__). With a dense one, BERT's map applies unchanged.
    _kronecker_tied_weights_keys = {"cls.predictions.decoder.bias": "cls.predictions.bias"}

    def __init__(self, config: KroneckerBertConfig):
        super().__init__(config)
        _use_kronecker_bert(self)
        embedding = self.bert.get_input_embeddings()
        if isinstance(embedding, KroneckerEmbedding) and config.tie_word_embeddings:
            # Logits straight from the factors (KroneckerBERT Sec. 3.2): the vocab x hidden matrix is never built.
            self.cls.predictions.decoder = KroneckerTiedLogits(embedding, bias=True)
            self._tied_weights_keys = dict(self._kronecker_tied_weights_keys)
        self.post_init()

    def tie_weights(self, missing_keys=None, recompute_mapping: bool = True):
        super().tie_weights(missing_keys=missing_keys, recompute_mapping=recompute_mapping)
        decoder = self.cls.predictions.decoder
        if isinstance(decoder, KroneckerTiedLogits):
            # The decoder reads the embedding module it holds; follow a swapped-in one (set_input_embeddings).
            decoder.tie_to(self.bert.get_input_embeddings())

    def set_output_embeddings(self, new_embeddings):
        if isinstance(self.cls.predictions.decoder, KroneckerTiedLogits) and not isinstance(
            new_embeddings, KroneckerTiedLogits
        ):
            raise ValueError(
                "The word embedding is Kronecker-factored and the masked-LM decoder is tied to it, so the new output "
                f"embeddings must be a KroneckerTiedLogits over it; got a {type(new_embeddings).__name__}."
            )
        super().set_output_embeddings(new_embeddings)


class KroneckerBertForSequenceClassification(BertForSequenceClassification, KroneckerBertPreTrainedModel):
    config_class = KroneckerBertConfig

    def __init__(self, config: KroneckerBertConfig):
        super().__init__(config)
        _use_kronecker_bert(self)
        self.post_init()


class KroneckerBertForQuestionAnswering(BertForQuestionAnswering, KroneckerBertPreTrainedModel):
    config_class = KroneckerBertConfig

    def __init__(self, config: KroneckerBertConfig):
        super().__init__(config)
        _use_kronecker_bert(self)
        self.post_init()


class KroneckerBertForTokenClassification(BertForTokenClassification, KroneckerBertPreTrainedModel):
    config_class = KroneckerBertConfig

    def __init__(self, config: KroneckerBertConfig):
        super().__init__(config)
        _use_kronecker_bert(self)
        self.post_init()


class KroneckerBertForMultipleChoice(BertForMultipleChoice, KroneckerBertPreTrainedModel):
    config_class = KroneckerBertConfig

    def __init__(self, config: KroneckerBertConfig):
        super().__init__(config)
        _use_kronecker_bert(self)
        self.post_init()


# The dense class each Kronecker class replaces is its first base (`compress` reads `__mro__[1]`).
KRONECKER_BERT_CLASSES = (
    KroneckerBertModel,
    KroneckerBertForMaskedLM,
    KroneckerBertForSequenceClassification,
    KroneckerBertForQuestionAnswering,
    KroneckerBertForTokenClassification,
    KroneckerBertForMultipleChoice,
)


def register_kronecker_bert() -> None:
    """Register the config and every head with the Auto classes, and mark them for ``save_pretrained`` to copy this
    code beside the weights (``KRONECKER_BERT_AUTO_MAP`` names each class; the package calls this on import)."""
    register_kronecker_family(KroneckerBertConfig, KRONECKER_BERT_CLASSES, KRONECKER_BERT_AUTO_MAP)
