# Copyright 2026 The kron-transformers Authors. Licensed under the Apache License, Version 2.0.
"""The generic Kronecker config: a dense Transformers config plus the table of its Kronecker-factored modules.

``KroneckerConfigMixin`` is what every Kronecker config shares (the model-type check, the resolved target table, the
``auto_map`` written on save); ``kronecker_config_class(dense_model_type)`` builds ``Kronecker<Dense>Config`` for any
dense config class, e.g. ``KroneckerLlamaConfig(KroneckerConfigMixin, LlamaConfig)`` with ``model_type``
``"kronecker_llama"`` and one extra field, ``kronecker_modules``::

    {"layers.0.self_attn.q_proj": {"a_shape": [24, 32], "rank": 1},   # W (out x in) = sum_r a[r] ⊗ b[r]
     "embed_tokens": {"factor": 4, "rank": 1},                          # V x d embedding = A (V x d/f) ⊗ b (1 x f)
     "lm_head": {"a_shape": [64, 1], "rank": 1}}                        # an untied head

Paths are relative to the base model (``LlamaModel``) for the modules inside it and to the head class for the others
(``lm_head``, ``score``), so one config serves every head. The table is resolved from module-name patterns against the
real module tree when a model is compressed (``kron_transformers.compress``); a config only replays it.
``KroneckerBertConfig`` and ``KroneckerGPT2Config`` are the same mixin over field-based tables.

This file travels with every checkpoint saved with ``save_pretrained`` (``trust_remote_code``): it imports only
transformers and its siblings.
"""

import re

import transformers
from huggingface_hub.dataclasses import strict
from transformers.models.auto import modeling_auto
from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

from .kronecker_utils import check_model_type


# The Auto classes a family registers, each with the head Transformers has for the dense model_type (if any).
KRONECKER_AUTO_CLASSES = {
    "AutoModel": "MODEL_MAPPING_NAMES",
    "AutoModelForCausalLM": "MODEL_FOR_CAUSAL_LM_MAPPING_NAMES",
    "AutoModelForMaskedLM": "MODEL_FOR_MASKED_LM_MAPPING_NAMES",
    "AutoModelForSequenceClassification": "MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES",
    "AutoModelForTokenClassification": "MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING_NAMES",
    "AutoModelForQuestionAnswering": "MODEL_FOR_QUESTION_ANSWERING_MAPPING_NAMES",
    "AutoModelForMultipleChoice": "MODEL_FOR_MULTIPLE_CHOICE_MAPPING_NAMES",
}

MODELING_MODULE = "modeling_kronecker"  # the sibling that defines the generic families' model classes


def dense_head_names(dense_model_type: str) -> dict[str, str]:
    """``{Auto class name: dense class name}`` for every head Transformers has for ``dense_model_type``."""
    heads = {}
    for auto_name, mapping_name in KRONECKER_AUTO_CLASSES.items():
        name = getattr(modeling_auto, mapping_name).get(dense_model_type)
        if isinstance(name, (list, tuple)):
            name = name[0]
        if name is not None:
            heads[auto_name] = name
    return heads


class KroneckerConfigMixin:
    """What every Kronecker config shares; mixed in before the dense config class.

    Subclasses define ``kronecker_targets()``: ``{path: {"a_shape": (m1, n1), "rank": r}}`` for each factored linear
    map and ``{path: {"factor": f, "rank": r}}`` for each factored word embedding.
    """

    dense_model_type: str = None
    # Auto class -> "module.Class", written into every saved config.json so that each AutoModel* class loads the
    # checkpoint with trust_remote_code=True, whichever head saved it. Set when the family is registered.
    KRONECKER_AUTO_MAP: dict = None

    def __post_init__(self, **kwargs):
        # from_pretrained passes the checkpoint's model_type: a dense checkpoint, or one of another Kronecker family,
        # would otherwise load with a warning and silently random factors.
        check_model_type(
            kwargs.pop("model_type", self.model_type), self.model_type, type(self).__name__[: -len("Config")],
            self.dense_model_type,
        )
        super().__post_init__(**kwargs)
        self._check_kronecker_fields()

    def kronecker_targets(self) -> dict[str, dict]:
        raise NotImplementedError

    @property
    def word_embedding_rank(self) -> int:
        """Number of summed Kronecker products in the word embedding, for the families that factor it (BERT, GPT-2:
        ``embedding_rank``, else ``kronecker_rank``)."""
        return self.kronecker_rank if self.embedding_rank is None else self.embedding_rank

    def _check_kronecker_fields(self) -> None:
        pass

    def kronecker_field_of(self, factor_key: str) -> str:
        """The config field(s) that set the shape of a factor such as ``model.layers.0.mlp.up_proj.a``."""
        return "kronecker_modules"

    def kronecker_settings(self) -> str:
        """The Kronecker fields, for error messages."""
        return "kronecker_modules"

    def save_pretrained(self, save_directory, push_to_hub: bool = False, **kwargs):
        # Name every head in auto_map (entries already there, e.g. from a Hub repository, win).
        self.auto_map = {**(self.KRONECKER_AUTO_MAP or {}), **(getattr(self, "auto_map", None) or {})}
        return super().save_pretrained(save_directory, push_to_hub=push_to_hub, **kwargs)


class KroneckerGenericConfigMixin(KroneckerConfigMixin):
    """The target table of a generic family: the ``kronecker_modules`` field, validated entry by entry."""

    def kronecker_targets(self) -> dict[str, dict]:
        targets = {}
        for path, spec in (self.kronecker_modules or {}).items():
            spec = dict(spec)
            if "a_shape" in spec:
                spec["a_shape"] = tuple(spec["a_shape"])
            targets[path] = spec
        return targets

    def _check_kronecker_fields(self) -> None:
        modules = self.kronecker_modules
        if modules is None:
            return
        if not isinstance(modules, dict):
            raise ValueError(f"kronecker_modules must map module paths to factor specs; got {modules!r}.")
        for path, spec in modules.items():
            ok = isinstance(path, str) and isinstance(spec, dict)
            ok = ok and set(spec) in ({"a_shape", "rank"}, {"factor", "rank"})
            ok = ok and _positive_int(spec.get("rank"))
            if ok and "a_shape" in spec:
                a_shape = spec["a_shape"]
                ok = isinstance(a_shape, (list, tuple)) and len(a_shape) == 2 and all(map(_positive_int, a_shape))
            if ok and "factor" in spec:
                ok = _positive_int(spec["factor"])
            if not ok:
                raise ValueError(
                    f"kronecker_modules[{path!r}] = {spec!r}: expected {{'a_shape': [m1, n1], 'rank': r}} for a "
                    "linear map or {'factor': f, 'rank': r} for a word embedding, with positive integers."
                )

    def kronecker_field_of(self, factor_key: str) -> str:
        module = factor_key.rsplit(".", 1)[0]
        for path in self.kronecker_modules or {}:
            if module == path or module.endswith("." + path):
                return f"kronecker_modules[{path!r}]"
        return "kronecker_modules"

    def kronecker_settings(self) -> str:
        return f"{len(self.kronecker_modules or {})} entries in kronecker_modules"


def _positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


# dense model_type -> its Kronecker config class (the generic ones; BERT and GPT-2 have their own front doors).
KRONECKER_CONFIG_CLASSES: dict[str, type] = {}


def kronecker_config_class(dense_model_type: str) -> type:
    """``Kronecker<Dense>Config`` for a dense ``model_type`` (built once, then cached): the dense config class with
    ``KroneckerGenericConfigMixin`` and a ``kronecker_modules`` field."""
    if dense_model_type in KRONECKER_CONFIG_CLASSES:
        return KRONECKER_CONFIG_CLASSES[dense_model_type]
    if dense_model_type not in CONFIG_MAPPING_NAMES:
        raise ValueError(f"Unknown dense model_type {dense_model_type!r}: transformers has no config class for it.")
    dense_config_class = transformers.CONFIG_MAPPING[dense_model_type]
    name = f"Kronecker{dense_config_class.__name__}"
    namespace = {
        "__module__": __name__,
        "__qualname__": name,
        "__doc__": f"{dense_config_class.__name__} with Kronecker-factored modules (``kronecker_modules``).",
        "model_type": f"kronecker_{dense_model_type}",
        "dense_model_type": dense_model_type,
        "__annotations__": {"kronecker_modules": dict | None},
        "kronecker_modules": None,
        "KRONECKER_AUTO_MAP": {
            "AutoConfig": f"{__name__.rsplit('.', 1)[-1]}.{name}",
            **{
                auto_name: f"{MODELING_MODULE}.Kronecker{dense_name}"
                for auto_name, dense_name in dense_head_names(dense_model_type).items()
            },
        },
    }
    config_class = strict(type(name, (KroneckerGenericConfigMixin, dense_config_class), namespace))
    KRONECKER_CONFIG_CLASSES[dense_model_type] = config_class
    globals()[name] = config_class
    return config_class


def __getattr__(name: str):
    # `trust_remote_code` loads `configuration_kronecker.Kronecker<Dense>Config` by name: build any family on demand.
    match = re.fullmatch(r"Kronecker(\w+Config)", name)
    dense_types = [key for key, value in CONFIG_MAPPING_NAMES.items() if match and value == match.group(1)]
    if not dense_types:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return kronecker_config_class(dense_types[0])


# The built-in generic families (see modeling_kronecker.py for their model classes and compression.py for targets).
KroneckerLlamaConfig = kronecker_config_class("llama")
KroneckerMistralConfig = kronecker_config_class("mistral")
KroneckerQwen2Config = kronecker_config_class("qwen2")
KroneckerQwen3Config = kronecker_config_class("qwen3")
KroneckerRobertaConfig = kronecker_config_class("roberta")
KroneckerDistilBertConfig = kronecker_config_class("distilbert")
