# Copyright 2026 The kron-transformers Authors. Licensed under the Apache License, Version 2.0.
"""KroneckerGPT2 (KnGPT2, Edalati et al., ACL 2022): the Transformers GPT-2 classes with Kronecker-factored maps.

Built by the generic factory (``modeling_kronecker.py``): each class subclasses the Transformers class it replaces,
calls its constructor, then swaps the ``Conv1D`` maps of the blocks and the word ``nn.Embedding`` named by the
``KroneckerGPT2Config`` fields for ``KroneckerLinear``/``KroneckerEmbedding``. Forward passes, attention backends,
the KV cache, ``generate`` and output capture stay Transformers'. The language-model head computes its logits from the
word embedding's factors (``KroneckerTiedLogits``), so the ``vocab x d`` matrix is never built and the checkpoint
holds the factors once. The one GPT-2 specific piece is its scaled initialisation of the residual projections.

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
)

from .configuration_kronecker_gpt2 import KroneckerGPT2Config
from .layers import KroneckerLinear
from .modeling_kronecker import register_kronecker_family


class _ScaledResidualInit:
    @torch.no_grad()
    def _init_weights(self, module):
        if isinstance(module, (GPT2Attention, GPT2MLP)) and isinstance(module.c_proj, KroneckerLinear):
            # GPT-2's scaled init of the residual projections, 1/sqrt(2 * n_layer) (two per block), which the parent
            # class applies through `c_proj.weight`, a tensor a Kronecker map does not have.
            c_proj = module.c_proj
            std = self.config.initializer_range / math.sqrt(2 * self.config.n_layer)
            factor_std = (std**2 / c_proj.rank) ** 0.25
            init.normal_(c_proj.a, mean=0.0, std=factor_std)
            init.normal_(c_proj.b, mean=0.0, std=factor_std)
        else:
            super()._init_weights(module)


_FAMILY = register_kronecker_family(
    "gpt2",
    KroneckerGPT2Config,
    {
        "AutoModel": GPT2Model,
        "AutoModelForCausalLM": GPT2LMHeadModel,
        "AutoModelForSequenceClassification": GPT2ForSequenceClassification,
        "AutoModelForTokenClassification": GPT2ForTokenClassification,
    },
    module=__name__,
    mixins=(_ScaledResidualInit,),
    namespace=globals(),
)
KroneckerGPT2PreTrainedModel = _FAMILY.pretrained_class
KroneckerGPT2Model = _FAMILY.classes[GPT2Model]
KroneckerGPT2LMHeadModel = _FAMILY.classes[GPT2LMHeadModel]
KroneckerGPT2ForSequenceClassification = _FAMILY.classes[GPT2ForSequenceClassification]
KroneckerGPT2ForTokenClassification = _FAMILY.classes[GPT2ForTokenClassification]
KRONECKER_GPT2_CLASSES = tuple(_FAMILY.classes.values())


def register_kronecker_gpt2() -> None:
    """Kept for callers of the previous API: the family registers itself with the Auto classes on import."""
