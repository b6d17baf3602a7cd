# Copyright 2026 The kron-transformers Authors. Licensed under the Apache License, Version 2.0.
"""``KroneckerGPT2Config``: a ``GPT2Config`` plus the shapes of the Kronecker factors (KnGPT2, Edalati et al. 2022).

Every linear map of a GPT-2 block is stored as ``W = sum_r a[r] ⊗ b[r]``. A shape field gives ``a``'s
``(rows, cols)`` in the ``(out_features, in_features)`` convention of ``KroneckerLinear``, whatever the ``(in, out)``
storage of GPT-2's ``Conv1D``; ``b``'s shape follows from the dense one. The word embedding ``wte`` (``V x d``) is
``A ⊗ b`` with ``A`` of ``V x d/f`` and ``b`` a ``1 x f`` row, ``f = embedding_factor``.

This file travels with every checkpoint saved with ``save_pretrained`` (``trust_remote_code``): it imports only
transformers and its siblings ``kronecker.py`` and ``kronecker_utils.py``.
"""


from huggingface_hub.dataclasses import strict
from transformers import GPT2Config

from .configuration_kronecker import KroneckerConfigMixin
from .kronecker import kronecker_embedding_factor, kronecker_shapes
from .kronecker_utils import (
    architecture_mismatches,
    check_kronecker_fields,
    check_model_type,
    normalise_kronecker_options,
)


# Config field -> the factored submodule inside each block ``h.{i}``.
KRONECKER_GPT2_MAPS = {
    "c_attn_a_shape": "attn.c_attn",
    "attn_c_proj_a_shape": "attn.c_proj",
    "c_fc_a_shape": "mlp.c_fc",
    "mlp_c_proj_a_shape": "mlp.c_proj",
}
KRONECKER_GPT2_FIELDS = (
    *KRONECKER_GPT2_MAPS, "embedding_factor", "embedding_rank", "kronecker_rank", "kronecker_layers"
)

# Presets resolved against the dense config's sizes, so they apply to every GPT-2 size.
#   compression: parameter compression of each factored linear map; embedding_compression: of the word embedding;
#   layers: "all" or "odd" (0-based indices h.1, h.3, ...).
KRONECKER_GPT2_PRESETS = {
    # Edalati et al. (ACL 2022), KnGPT2: the word embedding and every odd-numbered layer compressed 2x
    # (83M parameters from GPT-2 small's 124M, the size of DistilGPT2).
    "kngpt2": {"compression": 2.0, "embedding_compression": 2.0, "layers": "odd"},
}

# Dimensions a Kronecker config must share with the dense config it was made for.
_ARCHITECTURE_FIELDS = ("vocab_size", "n_embd", "n_layer", "n_head", "n_positions")

# Written into every saved config.json, so that each AutoModel* class loads the checkpoint with trust_remote_code=True,
# whichever head saved it (save_pretrained alone names only the saved class). Module names are the file names that
# save_pretrained copies beside the weights.
KRONECKER_GPT2_AUTO_MAP = {
    "AutoConfig": "configuration_kronecker_gpt2.KroneckerGPT2Config",
    "AutoModel": "modeling_kronecker_gpt2.KroneckerGPT2Model",
    "AutoModelForCausalLM": "modeling_kronecker_gpt2.KroneckerGPT2LMHeadModel",
    "AutoModelForSequenceClassification": "modeling_kronecker_gpt2.KroneckerGPT2ForSequenceClassification",
    "AutoModelForTokenClassification": "modeling_kronecker_gpt2.KroneckerGPT2ForTokenClassification",
}


@strict
class KroneckerGPT2Config(KroneckerConfigMixin, GPT2Config):
    r"""
    GPT-2 with Kronecker-factored linear maps and word embedding. All fields of ``GPT2Config``, plus:

    c_attn_a_shape (`tuple[int, int]`, *optional*):
        ``a``'s shape for the query/key/value map ``attn.c_attn`` (``3d x d``). ``None`` keeps it dense.
    attn_c_proj_a_shape (`tuple[int, int]`, *optional*):
        ``a``'s shape for the attention output ``attn.c_proj`` (``d x d``).
    c_fc_a_shape (`tuple[int, int]`, *optional*):
        ``a``'s shape for the MLP input ``mlp.c_fc`` (``inner x d``, ``inner = n_inner or 4d``).
    mlp_c_proj_a_shape (`tuple[int, int]`, *optional*):
        ``a``'s shape for the MLP output ``mlp.c_proj`` (``d x inner``).
    embedding_factor (`int`, *optional*):
        ``f``: ``wte = sum_r A[r] ⊗ b[r]`` with ``A[r]`` of ``vocab_size x d/f`` and ``b[r]`` of ``1 x f``. ``None``
        keeps it dense. The language-model head stays tied to it.
    embedding_rank (`int`, *optional*):
        Number of summed Kronecker products in ``wte``, at most ``embedding_factor``; ``None`` takes
        ``kronecker_rank``. At ``f = n_embd`` the embedding is its rank-``r`` truncated SVD.
    kronecker_rank (`int`, *optional*, defaults to 1):
        Number of summed Kronecker products in every factored weight (the word embedding's unless
        ``embedding_rank`` is set).
    kronecker_layers (`list[int]`, *optional*):
        0-based indices of the blocks whose maps are factored; ``None`` means all of them.

    ```python
    >>> from transformers import GPT2Config
    >>> config = KroneckerGPT2Config.from_dense_config(GPT2Config(), "kngpt2")
    >>> config.kronecker_layers, config.c_fc_a_shape, config.embedding_factor
    ([1, 3, 5, 7, 9, 11], (1, 2), 2)
    ```
    """

    model_type = "kronecker_gpt2"
    dense_model_type = "gpt2"
    PRESETS = KRONECKER_GPT2_PRESETS
    KRONECKER_AUTO_MAP = KRONECKER_GPT2_AUTO_MAP

    # Untyped containers: JSON gives lists, Python callers tuples; `_check_kronecker_fields` checks the entries.
    c_attn_a_shape: list | tuple | None = None
    attn_c_proj_a_shape: list | tuple | None = None
    c_fc_a_shape: list | tuple | None = None
    mlp_c_proj_a_shape: list | tuple | None = None
    embedding_factor: int | None = None
    embedding_rank: int | None = None
    kronecker_rank: int = 1
    kronecker_layers: list | tuple | None = None

    def __post_init__(self, **kwargs):
        # from_pretrained passes the checkpoint's model_type: a dense `gpt2` or a `kronecker_bert` checkpoint would
        # otherwise load with a warning and silently random Kronecker factors.
        check_model_type(kwargs.pop("model_type", self.model_type), self.model_type, "KroneckerGPT2", "GPT-2")
        for name in KRONECKER_GPT2_MAPS:
            if isinstance(getattr(self, name), (list, tuple)):
                setattr(self, name, tuple(getattr(self, name)))
        if isinstance(self.kronecker_layers, (list, tuple)):
            self.kronecker_layers = list(self.kronecker_layers)
        super().__post_init__(**kwargs)
        self._check_kronecker_fields()

    def dense_shapes(self) -> dict[str, tuple[int, int]]:
        """``(out_features, in_features)`` of the map each shape field factors."""
        return _dense_shapes(self)

    @property
    def factored_layers(self) -> list[int]:
        """0-based indices of the blocks whose linear maps are factored."""
        return list(range(self.n_layer)) if self.kronecker_layers is None else sorted(self.kronecker_layers)

    def kronecker_linear_shapes(self) -> dict[str, tuple[int, int]]:
        """``{submodule path inside GPT2Model: a_shape}`` for every factored map, e.g. ``{"h.1.mlp.c_fc": (1, 2)}``."""
        return {
            f"h.{layer}.{path}": getattr(self, field)
            for layer in self.factored_layers
            for field, path in KRONECKER_GPT2_MAPS.items()
            if getattr(self, field) is not None
        }

    def kronecker_embedding_factors(self) -> dict[str, int]:
        """``{submodule path inside GPT2Model: factor}`` for the factored word embedding, if any."""
        # A factor of 1 (b is 1x1) would cost one extra parameter and slower logits: kept dense, as in BERT.
        return {"wte": self.embedding_factor} if self.embedding_factor not in (None, 1) else {}

    def kronecker_targets(self) -> dict[str, dict]:
        """The generic target table (``{path inside GPT2Model: spec}``) these fields describe."""
        rank = self.kronecker_rank
        targets = {path: {"a_shape": shape, "rank": rank} for path, shape in self.kronecker_linear_shapes().items()}
        targets.update({path: {"factor": f, "rank": self.word_embedding_rank}
                        for path, f in self.kronecker_embedding_factors().items()})
        return targets

    def kronecker_field_of(self, factor_key: str) -> str:
        """The config fields that set the shape of a factor, e.g. ``transformer.h.1.mlp.c_fc.a``."""
        if factor_key.split(".")[-2] == "wte":
            return "embedding_factor, embedding_rank, kronecker_rank"
        field = next(field for field, path in KRONECKER_GPT2_MAPS.items() if f".{path}." in f".{factor_key}")
        return f"{field}, kronecker_rank"

    def kronecker_settings(self) -> str:
        return ", ".join(f"{name}={getattr(self, name)}" for name in KRONECKER_GPT2_FIELDS)

    def _check_kronecker_fields(self) -> None:
        check_kronecker_fields(self, self.dense_shapes(), "n_embd", "n_layer")

    @classmethod
    def from_dense_config(cls, dense_config: GPT2Config, compression, **kwargs) -> "KroneckerGPT2Config":
        """The Kronecker config for a dense ``GPT2Config``.

        Args:
            dense_config: the config of the dense GPT-2 to compress; every field is kept.
            compression: a preset name (``"kngpt2"``), a parameter compression ratio for every factored map and the
                word embedding (``4.0``: shapes from ``kronecker_shapes`` for the dense sizes), or a
                ``KroneckerGPT2Config`` whose Kronecker fields are taken (its sizes must match ``dense_config``'s).
            **kwargs: overrides for the Kronecker fields (``kronecker_rank=2``, ``kronecker_layers=[0, 2]``,
                ``embedding_factor=None``, ...); ``rank`` is accepted for ``kronecker_rank``. A ratio or a preset
                picks shapes for the requested rank.
        """
        if isinstance(dense_config, KroneckerGPT2Config) or not isinstance(dense_config, GPT2Config):
            raise ValueError(
                f"dense_config must be the GPT2Config of a dense model; got a {type(dense_config).__name__}."
            )
        kwargs = normalise_kronecker_options(kwargs, KRONECKER_GPT2_FIELDS, "KroneckerGPT2")
        rank = kwargs.get("kronecker_rank", 1)
        embedding_rank = kwargs.get("embedding_rank") or rank
        if isinstance(compression, KroneckerGPT2Config):
            mismatched = architecture_mismatches(dense_config, compression, _ARCHITECTURE_FIELDS)
            dense_inner = _dense_shapes(dense_config)["c_fc_a_shape"][0]
            kronecker_inner = compression.dense_shapes()["c_fc_a_shape"][0]
            if dense_inner != kronecker_inner:
                mismatched.append(
                    f"MLP inner size: {dense_inner} in the dense config but {kronecker_inner} in the Kronecker config"
                )
            if mismatched:
                raise ValueError(f"The Kronecker config does not fit the dense model: {'; '.join(mismatched)}.")
            fields = {name: getattr(compression, name) for name in KRONECKER_GPT2_FIELDS}
        elif isinstance(compression, str):
            if compression not in KRONECKER_GPT2_PRESETS:
                raise ValueError(
                    f"Unknown preset {compression!r}; the GPT-2 presets are {sorted(KRONECKER_GPT2_PRESETS)}. "
                    "Pass a compression ratio (e.g. 4.0) or a KroneckerGPT2Config instead."
                )
            preset = KRONECKER_GPT2_PRESETS[compression]
            fields = _fields_for_ratio(
                dense_config, preset["compression"], preset["embedding_compression"], rank, preset["layers"],
                embedding_rank,
            )
        elif isinstance(compression, (int, float)) and not isinstance(compression, bool) and compression > 0:
            ratio = float(compression)
            fields = _fields_for_ratio(dense_config, ratio, ratio, rank, "all", embedding_rank)
        else:
            raise ValueError(
                f"compression must be a preset name {sorted(KRONECKER_GPT2_PRESETS)}, a positive ratio or a "
                f"KroneckerGPT2Config; got {compression!r}."
            )
        config_dict = dense_config.to_dict()
        for key in ("model_type", "transformers_version", "architectures", "auto_map", "_name_or_path"):
            config_dict.pop(key, None)
        # Keep the dense model's attention backend (eager, sdpa, ...), as the model outputs are compared against it.
        config_dict["attn_implementation"] = dense_config._attn_implementation
        return cls(**{**config_dict, **fields, **kwargs})


def _dense_shapes(config: GPT2Config) -> dict[str, tuple[int, int]]:
    d = config.n_embd
    inner = config.n_inner if config.n_inner is not None else 4 * d
    return {
        "c_attn_a_shape": (3 * d, d),
        "attn_c_proj_a_shape": (d, d),
        "c_fc_a_shape": (inner, d),
        "mlp_c_proj_a_shape": (d, inner),
    }


def _fields_for_ratio(
    dense_config: GPT2Config, compression: float, embedding_compression: float, rank: int, layers: str,
    embedding_rank: int,
) -> dict:
    """Kronecker fields compressing every map ``compression``x and the embedding (``embedding_rank`` summed products)
    ``embedding_compression``x."""
    if isinstance(rank, bool) or not (isinstance(rank, int) and rank >= 1):
        raise ValueError(f"kronecker_rank must be a positive integer; got {rank!r}.")
    fields = {}
    for field, (out_features, in_features) in _dense_shapes(dense_config).items():
        shapes = kronecker_shapes(out_features, in_features, compression, rank, max_results=1)
        if not shapes:
            raise ValueError(
                f"No Kronecker shape of rank {rank} exists for the {out_features}x{in_features} map ({field})."
            )
        fields[field] = shapes[0]
    fields["embedding_factor"] = kronecker_embedding_factor(
        dense_config.vocab_size, dense_config.n_embd, embedding_compression, embedding_rank
    )
    fields["kronecker_rank"] = rank
    fields["kronecker_layers"] = None if layers == "all" else list(range(1, dense_config.n_layer, 2))
    return fields
