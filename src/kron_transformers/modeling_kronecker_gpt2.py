# Copyright 2026 The kron-transformers Authors. Licensed under the Apache License, Version 2.0.
"""KroneckerGPT2 (KnGPT2, Edalati et al., ACL 2022): the Transformers GPT-2 classes with Kronecker-factored maps.

Each class subclasses the Transformers class it replaces and calls its constructor; ``KroneckerGPT2Model`` then swaps
the ``Conv1D`` maps of the blocks and the word ``nn.Embedding`` named by the config for
``KroneckerLinear``/``KroneckerEmbedding`` (``replace_with_kronecker_modules``), and the heads swap their dense
``GPT2Model`` for a ``KroneckerGPT2Model``. Forward passes, attention backends, the KV cache, ``generate`` and output
capture (hidden states, attentions) stay Transformers'. Position embeddings, LayerNorms and the classification heads
stay dense; the language-model head computes its logits from the word embedding's factors (``KroneckerTiedLogits``),
so the ``vocab x d`` matrix is never built and the checkpoint holds the factors once.

This file travels with every checkpoint saved with ``save_pretrained`` (``trust_remote_code``): it imports only torch,
transformers and its siblings.
"""

import math

import torch
from transformers import initialization as init
from transformers.models.gpt2.modeling_gpt2 import (
    GPT2MLP,
    GPT2Attention,
    GPT2ForSequenceClassification,
    GPT2ForTokenClassification,
    GPT2LMHeadModel,
    GPT2Model,
    GPT2PreTrainedModel,
)

from .configuration_kronecker_gpt2 import (
    KRONECKER_GPT2_AUTO_MAP,
    KRONECKER_GPT2_FIELDS,
    KRONECKER_GPT2_MAPS,
    KroneckerGPT2Config,
)
from .kronecker_utils import finalize_kronecker_loading, register_kronecker_family
from .layers import KroneckerEmbedding, KroneckerLinear, KroneckerTiedLogits, replace_with_kronecker_modules


class KroneckerGPT2PreTrainedModel(GPT2PreTrainedModel):
    """Weight initialisation and embedding resizing for the Kronecker modules; mixed into every KroneckerGPT2 class."""

    config_class = KroneckerGPT2Config

    @torch.no_grad()
    def _init_weights(self, module):
        std = self.config.initializer_range
        if isinstance(module, (KroneckerLinear, KroneckerEmbedding)):
            # sum_r a[r] ⊗ b[r] gets entries of standard deviation `initializer_range`, GPT-2's for the dense weight.
            module.reset_parameters(std=std)
        elif isinstance(module, (GPT2Attention, GPT2MLP)) and isinstance(module.c_proj, KroneckerLinear):
            # GPT-2's scaled init of the residual projections, 1/sqrt(2 * n_layer) (two per block), which the parent
            # class applies through `c_proj.weight`, a tensor a Kronecker map does not have.
            module.c_proj.reset_parameters(std=std / math.sqrt(2 * self.config.n_layer))
        else:
            super()._init_weights(module)

    def _initialize_weights(self, module, is_custom_code: bool = False):
        # For a class defined outside transformers, Transformers marks every module without parameters of its own
        # (GPT2Attention, GPT2MLP) as initialised without calling `_init_weights`, in case custom code writes loaded
        # tensors in place; that would drop GPT-2's scaled init of `c_proj`, Kronecker or dense. Every write above
        # goes through the init functions Transformers guards against overwriting loaded tensors, so take the path
        # of its own models.
        super()._initialize_weights(module, is_custom_code=False)

    @staticmethod
    def _finalize_model_loading(model, load_config, loading_info):
        return finalize_kronecker_loading(
            GPT2PreTrainedModel, model, load_config, loading_info, KRONECKER_GPT2_FIELDS, _config_field
        )

    def resize_token_embeddings(self, new_num_tokens=None, pad_to_multiple_of=None, mean_resizing=True):
        if isinstance(self.get_input_embeddings(), KroneckerEmbedding):
            raise NotImplementedError(
                f"{type(self).__name__} cannot resize its Kronecker-factored word embedding (vocab_size="
                f"{self.config.vocab_size}). Resize the dense model's embeddings before compressing it, or build the "
                "model with embedding_factor=None to keep a dense embedding."
            )
        return super().resize_token_embeddings(new_num_tokens, pad_to_multiple_of, mean_resizing)


def _config_field(factor_key: str) -> str:
    """The config fields that set the shape of a factor, e.g. ``transformer.h.1.mlp.c_fc.a``."""
    if factor_key.split(".")[-2] == "wte":
        return "embedding_factor, kronecker_rank"
    field = next(field for field, path in KRONECKER_GPT2_MAPS.items() if f".{path}." in f".{factor_key}")
    return f"{field}, kronecker_rank"


class KroneckerGPT2Model(GPT2Model, KroneckerGPT2PreTrainedModel):
    config_class = KroneckerGPT2Config

    def __init__(self, config: KroneckerGPT2Config):
        # The dense maps are replaced right away: skip their initialisation (the 50257x768 embedding alone is 38M
        # draws), then initialise everything once, GPT-2's way, in `post_init`. Initialising first would also mark
        # each attention/MLP block as done, and the scaled init of a Kronecker `c_proj` would be skipped.
        with init.no_init_weights():
            super().__init__(config)
        replace_with_kronecker_modules(
            self,
            config.kronecker_linear_shapes(),
            rank=config.kronecker_rank,
            embeddings=config.kronecker_embedding_factors(),
        )
        self.post_init()


def _use_kronecker_gpt2(model: GPT2PreTrainedModel) -> None:
    """Swap the dense ``GPT2Model`` a Transformers head constructor built for a ``KroneckerGPT2Model``."""
    model.transformer = KroneckerGPT2Model(model.config)


class KroneckerGPT2LMHeadModel(GPT2LMHeadModel, KroneckerGPT2PreTrainedModel):
    config_class = KroneckerGPT2Config

    def __init__(self, config: KroneckerGPT2Config):
        with init.no_init_weights():
            super().__init__(config)
        _use_kronecker_gpt2(self)
        embedding = self.transformer.get_input_embeddings()
        if isinstance(embedding, KroneckerEmbedding) and config.tie_word_embeddings:
            # Logits straight from the factors: no `lm_head.weight` exists, so nothing is tied by name (with a dense
            # embedding, or with tie_word_embeddings=False, GPT-2's dense head and tying rules apply unchanged).
            self.lm_head = KroneckerTiedLogits(embedding)
            self._tied_weights_keys = {}
        self.post_init()

    def tie_weights(self, missing_keys=None, recompute_mapping: bool = True):
        super().tie_weights(missing_keys=missing_keys, recompute_mapping=recompute_mapping)
        if isinstance(self.lm_head, KroneckerTiedLogits):
            # The head reads the embedding module it holds; follow a swapped-in one (set_input_embeddings).
            self.lm_head.tie_to(self.transformer.get_input_embeddings())

    def set_output_embeddings(self, new_embeddings):
        if isinstance(self.lm_head, KroneckerTiedLogits) and not isinstance(new_embeddings, KroneckerTiedLogits):
            raise ValueError(
                "The word embedding is Kronecker-factored and the LM head is tied to it, so the new output embeddings "
                f"must be a KroneckerTiedLogits over it; got a {type(new_embeddings).__name__}."
            )
        super().set_output_embeddings(new_embeddings)


class KroneckerGPT2ForSequenceClassification(GPT2ForSequenceClassification, KroneckerGPT2PreTrainedModel):
    config_class = KroneckerGPT2Config

    def __init__(self, config: KroneckerGPT2Config):
        with init.no_init_weights():
            super().__init__(config)
        _use_kronecker_gpt2(self)
        self.post_init()


class KroneckerGPT2ForTokenClassification(GPT2ForTokenClassification, KroneckerGPT2PreTrainedModel):
    config_class = KroneckerGPT2Config

    def __init__(self, config: KroneckerGPT2Config):
        with init.no_init_weights():
            super().__init__(config)
        _use_kronecker_gpt2(self)
        self.post_init()


# The dense class each Kronecker class replaces is its first base (`compress` reads `__mro__[1]`).
KRONECKER_GPT2_CLASSES = (
    KroneckerGPT2Model,
    KroneckerGPT2LMHeadModel,
    KroneckerGPT2ForSequenceClassification,
    KroneckerGPT2ForTokenClassification,
)


def register_kronecker_gpt2() -> None:
    """Register the config and every head with the Auto classes, and mark them for ``save_pretrained`` to copy this
    code beside the weights (``KRONECKER_GPT2_AUTO_MAP`` names each class; the package calls this on import)."""
    register_kronecker_family(KroneckerGPT2Config, KRONECKER_GPT2_CLASSES, KRONECKER_GPT2_AUTO_MAP)
