# Copyright 2026 The kron-transformers Authors. Licensed under the Apache License, Version 2.0.
"""``KroneckerBertConfig``: a ``BertConfig`` plus the shapes of the Kronecker factors (KroneckerBERT, Tahaei et al.,
NAACL 2022).

Every factored weight is stored as ``W = sum_r a[r] ⊗ b[r]``. A shape field gives ``a``'s ``(rows, cols)`` in the
``(out_features, in_features)`` convention of ``nn.Linear``; ``b``'s shape follows from the dense one. The word
embedding (``V x d``) is ``A ⊗ b`` with ``A`` of ``V x d/f`` and ``b`` a ``1 x f`` row, ``f = embedding_factor``.

This file travels with every checkpoint saved with ``save_pretrained`` (``trust_remote_code``): it imports only
transformers and its siblings ``kronecker.py`` and ``kronecker_utils.py``.
"""


from huggingface_hub.dataclasses import strict
from transformers import BertConfig

from .configuration_kronecker import KroneckerConfigMixin
from .kronecker import kronecker_embedding_factor, kronecker_shapes
from .kronecker_utils import (
    architecture_mismatches,
    check_kronecker_fields,
    check_model_type,
    normalise_kronecker_options,
)


KRONECKER_BERT_FIELDS = (
    "attention_a_shape", "ffn_a_shape", "embedding_factor", "embedding_rank", "kronecker_rank", "kronecker_layers"
)

# KroneckerBERT Table 1. The shapes are the paper's, for BERT_BASE's sizes only (hidden 768, intermediate 3072); other
# sizes are compressed with a ratio instead.
KRONECKER_BERT_PRESETS = {
    # attention A 384x384 / B 2x2, FFN A 8x2 / B 384x384, embedding V x 96 ⊗ 1 x 8: 14.3M parameters in the paper
    "kronecker-bert-8": {"attention_a_shape": (384, 384), "ffn_a_shape": (8, 2), "embedding_factor": 8},
    # attention A 384x48 / B 2x16, FFN A 16x2 / B 192x384, embedding V x 48 ⊗ 1 x 16: 5.2M parameters in the paper
    "kronecker-bert-21": {"attention_a_shape": (384, 48), "ffn_a_shape": (16, 2), "embedding_factor": 16},
}
PRESET_SIZES = {"hidden_size": 768, "intermediate_size": 3072}

# Sizes a Kronecker config must share with the dense config it factors.
_ARCHITECTURE_FIELDS = (
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "max_position_embeddings",
    "type_vocab_size",
)

# Written into every saved config.json, so that each AutoModel* class loads the checkpoint with trust_remote_code=True,
# whichever head saved it (save_pretrained alone names only the saved class). Module names are the file names that
# save_pretrained copies beside the weights.
KRONECKER_BERT_AUTO_MAP = {
    "AutoConfig": "configuration_kronecker_bert.KroneckerBertConfig",
    "AutoModel": "modeling_kronecker_bert.KroneckerBertModel",
    "AutoModelForMaskedLM": "modeling_kronecker_bert.KroneckerBertForMaskedLM",
    "AutoModelForSequenceClassification": "modeling_kronecker_bert.KroneckerBertForSequenceClassification",
    "AutoModelForQuestionAnswering": "modeling_kronecker_bert.KroneckerBertForQuestionAnswering",
    "AutoModelForTokenClassification": "modeling_kronecker_bert.KroneckerBertForTokenClassification",
    "AutoModelForMultipleChoice": "modeling_kronecker_bert.KroneckerBertForMultipleChoice",
}

_ATTENTION_MAPS = ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense")


@strict
class KroneckerBertConfig(KroneckerConfigMixin, BertConfig):
    r"""
    BERT with Kronecker-factored linear maps and word embedding. All fields of ``BertConfig``, plus:

    attention_a_shape (`tuple[int, int]`, *optional*, defaults to `(384, 384)`):
        ``a``'s shape for the query, key, value and attention-output maps (each ``hidden x hidden``). ``None`` keeps
        them dense.
    ffn_a_shape (`tuple[int, int]`, *optional*, defaults to `(8, 2)`):
        ``a``'s shape ``(m1, n1)`` for the FFN input map ``intermediate.dense`` (``intermediate x hidden``). The FFN
        output map ``output.dense`` (``hidden x intermediate``) uses the transposed shape ``(n1, m1)``, as in the
        paper. ``None`` keeps both dense.
    embedding_factor (`int`, *optional*, defaults to 8):
        ``f``: word embedding ``sum_r A[r] ⊗ b[r]`` with ``A[r]`` of ``vocab_size x hidden/f`` and ``b[r]`` of ``1 x f``.
        ``None`` or 1 keeps it dense. The masked-LM decoder stays tied to it.
    embedding_rank (`int`, *optional*):
        Number of summed Kronecker products in the word embedding, at most ``embedding_factor``; ``None`` takes
        ``kronecker_rank``. Each token keeps ``rank * hidden / f`` numbers, so ``(f, r)`` and ``(k f, k r)`` cost the
        same; at ``f = hidden_size`` the embedding is its rank-``r`` truncated SVD (ALBERT's factorised embedding).
    kronecker_rank (`int`, *optional*, defaults to 1):
        Number of summed Kronecker products in every factored weight (the word embedding's unless
        ``embedding_rank`` is set).
    kronecker_layers (`list[int]`, *optional*):
        0-based indices of the encoder layers whose maps are factored; ``None`` means all of them.

    The defaults are the paper's KroneckerBERT8 on BERT_BASE. ``from_dense_config`` builds the config for a dense
    model from a preset, a compression ratio or another Kronecker config.

    ```python
    >>> from transformers import BertConfig
    >>> config = KroneckerBertConfig.from_dense_config(BertConfig(hidden_size=384, intermediate_size=1536), 4.0)
    >>> config.attention_a_shape, config.ffn_a_shape, config.embedding_factor
    ((1, 4), (1, 4), 4)
    ```
    """

    model_type = "kronecker_bert"
    dense_model_type = "bert"
    PRESETS = KRONECKER_BERT_PRESETS
    KRONECKER_AUTO_MAP = KRONECKER_BERT_AUTO_MAP

    # Untyped containers: JSON gives lists, Python callers tuples; `_check_kronecker_fields` checks the entries.
    attention_a_shape: list | tuple | None = (384, 384)
    ffn_a_shape: list | tuple | None = (8, 2)
    embedding_factor: int | None = 8
    embedding_rank: int | None = None
    kronecker_rank: int = 1
    kronecker_layers: list | tuple | None = None

    def __post_init__(self, **kwargs):
        # from_pretrained passes the checkpoint's model_type: a dense `bert` or a `kronecker_gpt2` checkpoint would
        # otherwise load with a warning and silently random Kronecker factors.
        check_model_type(kwargs.pop("model_type", self.model_type), self.model_type, "KroneckerBert", "BERT")
        for name in ("attention_a_shape", "ffn_a_shape"):
            if isinstance(getattr(self, name), (list, tuple)):
                setattr(self, name, tuple(getattr(self, name)))
        if self.kronecker_layers is not None and isinstance(self.kronecker_layers, (list, tuple)):
            self.kronecker_layers = list(self.kronecker_layers)
        super().__post_init__(**kwargs)
        self._check_kronecker_fields()

    @property
    def factored_layers(self) -> list[int]:
        """0-based indices of the encoder layers whose linear maps are factored."""
        return list(range(self.num_hidden_layers)) if self.kronecker_layers is None else sorted(self.kronecker_layers)

    def dense_shapes(self) -> dict[str, tuple[int, int]]:
        """``(out_features, in_features)`` of the map each shape field factors."""
        return {
            "attention_a_shape": (self.hidden_size, self.hidden_size),
            "ffn_a_shape": (self.intermediate_size, self.hidden_size),
        }

    def kronecker_linear_shapes(self) -> dict[str, tuple[int, int]]:
        """``{submodule path inside BertModel: a_shape}`` for every factored linear map.

        E.g. ``{"encoder.layer.0.attention.self.query": (384, 384), ..., "encoder.layer.0.output.dense": (2, 8)}``.
        """
        shapes = {}
        for layer in self.factored_layers:
            prefix = f"encoder.layer.{layer}"
            if self.attention_a_shape is not None:
                shapes.update({f"{prefix}.{name}": self.attention_a_shape for name in _ATTENTION_MAPS})
            if self.ffn_a_shape is not None:
                m1, n1 = self.ffn_a_shape
                shapes[f"{prefix}.intermediate.dense"] = (m1, n1)
                # output.dense is the transposed map (hidden x intermediate), factored with the transposed shapes.
                shapes[f"{prefix}.output.dense"] = (n1, m1)
        return shapes

    def kronecker_embedding_factors(self) -> dict[str, int]:
        """``{submodule path inside BertModel: factor}`` for the factored word embedding, if any."""
        if self.embedding_factor is None or self.embedding_factor == 1:
            return {}
        return {"embeddings.word_embeddings": self.embedding_factor}

    def kronecker_targets(self) -> dict[str, dict]:
        """The generic target table (``{path inside BertModel: spec}``) these fields describe."""
        rank = self.kronecker_rank
        targets = {path: {"a_shape": shape, "rank": rank} for path, shape in self.kronecker_linear_shapes().items()}
        targets.update({path: {"factor": f, "rank": self.word_embedding_rank}
                        for path, f in self.kronecker_embedding_factors().items()})
        return targets

    def kronecker_field_of(self, factor_key: str) -> str:
        """The config fields that set the shape of a factor, e.g. ``bert.encoder.layer.0.output.dense.a``."""
        if "word_embeddings" in factor_key:
            return "embedding_factor, embedding_rank, kronecker_rank"
        if ".attention." in factor_key:
            return "attention_a_shape, kronecker_rank"
        return "ffn_a_shape, kronecker_rank"

    def kronecker_settings(self) -> str:
        return ", ".join(f"{name}={getattr(self, name)}" for name in KRONECKER_BERT_FIELDS)

    def _check_kronecker_fields(self) -> None:
        check_kronecker_fields(
            self, self.dense_shapes(), "hidden_size", "num_hidden_layers",
            {"attention_a_shape": "hidden_size x hidden_size", "ffn_a_shape": "intermediate_size x hidden_size"},
        )

    @classmethod
    def from_dense_config(cls, dense_config: BertConfig, compression, **kwargs) -> "KroneckerBertConfig":
        """The Kronecker config for a dense ``BertConfig``.

        Args:
            dense_config: the config of the dense BERT to compress; every field is kept.
            compression: a preset name (``"kronecker-bert-8"``, ``"kronecker-bert-21"``: KroneckerBERT Table 1, for
                BERT_BASE sizes), a parameter compression ratio for every factored map and the word embedding
                (``8.0``: shapes from ``kronecker_shapes`` for the dense sizes, any BERT size), or a
                ``KroneckerBertConfig`` whose Kronecker fields are taken (its sizes must match ``dense_config``'s).
            **kwargs: overrides for the Kronecker fields (``kronecker_rank=2``, ``kronecker_layers=[0, 2]``,
                ``embedding_factor=None``, ...); ``rank`` is accepted for ``kronecker_rank``. A ratio picks shapes
                for the requested rank.
        """
        if isinstance(dense_config, KroneckerBertConfig) or not isinstance(dense_config, BertConfig):
            raise ValueError(
                f"dense_config must be the BertConfig of a dense model; got a {type(dense_config).__name__}."
            )
        kwargs = normalise_kronecker_options(kwargs, KRONECKER_BERT_FIELDS, "KroneckerBert")
        rank = kwargs.get("kronecker_rank", 1)
        embedding_rank = kwargs.get("embedding_rank") or rank
        if isinstance(compression, KroneckerBertConfig):
            mismatched = architecture_mismatches(dense_config, compression, _ARCHITECTURE_FIELDS)
            if mismatched:
                raise ValueError(f"The Kronecker config does not fit the dense model: {'; '.join(mismatched)}.")
            fields = {name: getattr(compression, name) for name in KRONECKER_BERT_FIELDS}
        elif isinstance(compression, str):
            if compression not in KRONECKER_BERT_PRESETS:
                raise ValueError(
                    f"Unknown preset {compression!r}; the BERT presets are {sorted(KRONECKER_BERT_PRESETS)}. "
                    "Pass a compression ratio (e.g. 8.0) or a KroneckerBertConfig instead."
                )
            different = {k: getattr(dense_config, k) for k, v in PRESET_SIZES.items() if getattr(dense_config, k) != v}
            if different:
                raise ValueError(
                    f"The preset {compression!r} holds the paper's factor shapes for BERT_BASE ({PRESET_SIZES}), but "
                    f"the dense model has {different}. Pass a compression ratio (e.g. 8.0) to pick shapes for its sizes."
                )
            fields = {**KRONECKER_BERT_PRESETS[compression], "kronecker_rank": rank, "kronecker_layers": None}
        elif isinstance(compression, (int, float)) and not isinstance(compression, bool) and compression > 0:
            fields = _fields_for_ratio(dense_config, float(compression), rank, embedding_rank)
        else:
            raise ValueError(
                f"compression must be a preset name {sorted(KRONECKER_BERT_PRESETS)}, a positive ratio or a "
                f"KroneckerBertConfig; got {compression!r}."
            )
        config_dict = dense_config.to_dict()
        for key in ("model_type", "transformers_version", "architectures", "auto_map", "_name_or_path"):
            config_dict.pop(key, None)
        # Keep the dense model's attention backend (eager, sdpa, ...), as the model outputs are compared against it.
        config_dict["attn_implementation"] = dense_config._attn_implementation
        return cls(**{**config_dict, **fields, **kwargs})


def _fields_for_ratio(dense_config: BertConfig, compression: float, rank: int, embedding_rank: int) -> dict:
    """Kronecker fields compressing every factored map and the word embedding (``embedding_rank`` summed products)
    about ``compression``x."""
    if isinstance(rank, bool) or not (isinstance(rank, int) and rank >= 1):
        raise ValueError(f"kronecker_rank must be a positive integer; got {rank!r}.")
    hidden, intermediate = dense_config.hidden_size, dense_config.intermediate_size
    fields = {}
    for field, (out_features, in_features) in (("attention_a_shape", (hidden, hidden)), ("ffn_a_shape", (intermediate, hidden))):
        shapes = kronecker_shapes(out_features, in_features, compression, rank, max_results=1)
        if not shapes:
            raise ValueError(f"No Kronecker shape of rank {rank} exists for the {out_features}x{in_features} maps ({field}).")
        fields[field] = shapes[0]
    factor = kronecker_embedding_factor(dense_config.vocab_size, hidden, compression, embedding_rank)
    fields.update(embedding_factor=None if factor == 1 else factor, kronecker_rank=rank, kronecker_layers=None)
    return fields
