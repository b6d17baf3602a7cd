# Copyright 2026 The kron-transformers Authors. Licensed under the Apache License, Version 2.0.
"""Kronecker models for any Transformers architecture: one mixin and a factory.

``kronecker_model_class(DenseClass, config_class)`` builds ``Kronecker<Dense>``: a subclass of the dense Transformers
class (its first base, so its forward passes, attention backends, caches, ``generate`` and output capture are used
unchanged) that, after the dense constructor, swaps the modules named by ``config.kronecker_targets()`` for
``KroneckerLinear``/``KroneckerEmbedding``. ``KroneckerModelMixin`` holds everything else a family shares:
initialisation through ``transformers.initialization``, tied output heads computing logits from the embedding's
factors (``KroneckerTiedLogits``, found through ``get_input_embeddings``/``get_output_embeddings``), embedding
resizing, and the loading checks (a checkpoint whose factors or factored maps disagree with its config fails naming
them instead of loading random weights).

``register_kronecker_family(dense_model_type)`` builds the config class and one class per head Transformers has,
registers them with the Auto classes, and records them in ``KRONECKER_FAMILIES`` (keyed by the dense ``model_type``).
A family nobody registered is built on demand, so checkpoints of any architecture load with ``trust_remote_code``.

This file travels with every checkpoint saved with ``save_pretrained`` (``trust_remote_code``): it imports only torch,
transformers and its siblings.
"""

import torch
import transformers
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.models.auto import modeling_auto

try:
    from transformers.utils.output_capturing import _CAN_RECORD_REGISTRY
except ImportError:  # transformers without the output-capture registry
    _CAN_RECORD_REGISTRY = None

from .configuration_kronecker import KRONECKER_AUTO_CLASSES, dense_head_names, kronecker_config_class
from .kronecker_utils import finalize_kronecker_loading, register_kronecker_family as _register_auto_classes
from .layers import KroneckerEmbedding, KroneckerLinear, KroneckerTiedLogits, _dense_weight


def _initializer_std(config) -> float:
    for name in ("initializer_range", "init_std"):
        value = getattr(config, name, None)
        if isinstance(value, (int, float)) and value > 0:
            return float(value)
    return 0.02  # Transformers' default across the library


class KroneckerModelMixin:
    """What every Kronecker model shares; mixed in after the dense Transformers class."""

    @torch.no_grad()
    def _init_weights(self, module):
        if isinstance(module, (KroneckerLinear, KroneckerEmbedding)):
            # sum_r a[r] ⊗ b[r] has entries of standard deviation `std` (the dense weight's init) when each factor
            # has (std**2 / rank) ** (1/4). The init functions skip tensors loaded from a checkpoint.
            factor_std = (_initializer_std(self.config) ** 2 / module.rank) ** 0.25
            init.normal_(module.a, mean=0.0, std=factor_std)
            init.normal_(module.b, mean=0.0, std=factor_std)
            if getattr(module, "bias", None) is not None:
                init.zeros_(module.bias)
            # As for nn.Embedding: the slice loses the "already loaded" flag, so check it on the whole factor.
            padding_idx = getattr(module, "padding_idx", None)
            if padding_idx is not None and not getattr(module.a, "_is_hf_initialized", False):
                init.zeros_(module.a[:, padding_idx])
        elif isinstance(module, KroneckerTiedLogits):
            if module.bias is not None:
                init.zeros_(module.bias)
        else:
            super()._init_weights(module)

    def _initialize_weights(self, module, is_custom_code: bool = False):
        # For a class defined outside transformers, Transformers marks every module without parameters of its own
        # (an attention block, an MLP) as initialised without calling `_init_weights`, in case custom code writes
        # loaded tensors in place; that would skip the parent-level inits some models do (GPT-2's scaled `c_proj`).
        # Every write here goes through the init functions that never overwrite loaded tensors, so take the path
        # of Transformers' own models.
        super()._initialize_weights(module, is_custom_code=False)

    def tie_weights(self, missing_keys=None, recompute_mapping: bool = True):
        super().tie_weights(missing_keys=missing_keys, recompute_mapping=recompute_mapping)
        output = self.get_output_embeddings()
        if isinstance(output, KroneckerTiedLogits):
            # The head reads the embedding module it holds; follow a swapped-in one (set_input_embeddings).
            output.tie_to(self.get_input_embeddings())

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
        _check_factored_maps_match(model, load_config, loading_info)
        return finalize_kronecker_loading(
            PreTrainedModel, model, load_config, loading_info, model.config.kronecker_settings(),
            model.config.kronecker_field_of,
        )

    def _swap_in_kronecker_modules(self) -> None:
        """Replace the modules ``config.kronecker_targets()`` names (after the dense constructor)."""
        config = self.config
        base = self.base_model
        family = KRONECKER_FAMILIES.get(config.dense_model_type)
        if base is not self and family is not None and type(base) in family.classes:
            # The head's dense base model becomes the Kronecker base class (same modules, the Kronecker methods).
            base.__class__ = family.classes[type(base)]
            if _CAN_RECORD_REGISTRY is not None:
                # Transformers keys a model's output capture (hidden states, attentions) by its class, registered in
                # `PreTrainedModel.__init__`: register the new class too, or `output_hidden_states` returns None.
                _CAN_RECORD_REGISTRY[base] = base._can_record_outputs
        for path, spec in config.kronecker_targets().items():
            owner = base if _has_submodule(base, path) else self if _has_submodule(self, path) else None
            if owner is None:
                continue  # a head module of another head class (e.g. `lm_head` when loading the base model)
            dense = owner.get_submodule(path)
            if isinstance(dense, (KroneckerLinear, KroneckerEmbedding)):
                continue  # built by the Kronecker base class (heads that build theirs through AutoModel.from_config)
            try:
                if "factor" in spec:
                    if not isinstance(dense, nn.Embedding):
                        raise ValueError(f"it is a {type(dense).__name__}, not an nn.Embedding")
                    new = KroneckerEmbedding(
                        dense.num_embeddings, dense.embedding_dim, spec["factor"], spec["rank"], dense.padding_idx,
                        device=dense.weight.device, dtype=dense.weight.dtype,
                    )
                else:
                    weight = _dense_weight(dense)
                    new = KroneckerLinear(
                        weight.shape[1], weight.shape[0], tuple(spec["a_shape"]), spec["rank"],
                        bias=dense.bias is not None, device=weight.device, dtype=weight.dtype,
                    )
            except (ValueError, TypeError) as error:
                raise ValueError(f"Cannot factor `{path}` as {config.kronecker_field_of(path + '.a')} asks: {error}")
            owner.set_submodule(path, new)

        embedding = self.get_input_embeddings() if _has_input_embeddings(self) else None
        output = self.get_output_embeddings()
        if (
            isinstance(embedding, KroneckerEmbedding)
            and getattr(config, "tie_word_embeddings", False)
            and isinstance(output, nn.Linear)
        ):
            # Logits straight from the factors (KroneckerBERT Sec. 3.2): the vocab x hidden matrix is never built and
            # the checkpoint holds the factors once. A bias the dense head ties elsewhere stays tied by name.
            path = next(name for name, module in self.named_modules() if module is output)
            self.set_submodule(path, KroneckerTiedLogits(embedding, bias=output.bias is not None))
            tied = type(self)._tied_weights_keys or {}
            self._tied_weights_keys = {k: v for k, v in tied.items() if k != f"{path}.weight"}


def _has_submodule(module: nn.Module, path: str) -> bool:
    try:
        module.get_submodule(path)
    except AttributeError:
        return False
    return True


def _has_input_embeddings(model) -> bool:
    try:
        model.get_input_embeddings()
    except NotImplementedError:
        return False
    return True


def _check_factored_maps_match(model, load_config, loading_info) -> None:
    """A checkpoint holding a map dense where the config factors it, or factored where the config keeps it dense (an
    edited ``kronecker_modules``, ``attention_a_shape: null``, a shrunk ``kronecker_layers``), would load with those
    maps randomly initialised: fail naming them."""
    # Checkpoint keys of a head loaded into its base model (or the reverse) differ by the base-model prefix.
    prefix = f"{model.base_model_prefix}."

    def strip(key: str) -> str:
        return key[len(prefix):] if key.startswith(prefix) else key

    unexpected, missing = set(map(strip, loading_info.unexpected_keys)), set(map(strip, loading_info.missing_keys))
    factored_in_checkpoint_only, dense_in_checkpoint_only = [], []
    for name, module in model.named_modules():
        key = strip(name)
        if isinstance(module, (KroneckerLinear, KroneckerEmbedding)):
            if f"{key}.a" in missing and f"{key}.weight" in unexpected:
                dense_in_checkpoint_only.append(name)
        elif isinstance(module, (nn.Linear, nn.Embedding)) or type(module).__name__ == "Conv1D":
            if f"{key}.a" in unexpected and f"{key}.weight" in missing:
                factored_in_checkpoint_only.append(name)
    if not (factored_in_checkpoint_only or dense_in_checkpoint_only):
        return
    lines = [f"{name}: Kronecker factors in the checkpoint, dense in the model"
             for name in factored_in_checkpoint_only]
    lines += [f"{name}: dense in the checkpoint, factored by the config" for name in dense_in_checkpoint_only]
    raise ValueError(
        f"The checkpoint {load_config.pretrained_model_name_or_path} does not match the maps its config factors "
        f"({model.config.kronecker_settings()}):\n  " + "\n  ".join(lines)
        + "\nWas config.json edited after saving? Restore the values the weights were saved with."
    )


def kronecker_pretrained_class(dense_pretrained: type, config_class: type, module: str, mixins: tuple = ()) -> type:
    """``Kronecker<Dense>PreTrainedModel``: ``KroneckerModelMixin`` (and family ``mixins``) over the dense family's
    pre-trained class, so that the mixin's methods win over the dense ones; every head class derives from it."""
    name = f"Kronecker{dense_pretrained.__name__}"
    namespace = {"__module__": module, "__qualname__": name, "config_class": config_class}
    return type(name, (*mixins, KroneckerModelMixin, dense_pretrained), namespace)


def kronecker_model_class(dense_class: type, pretrained_class: type, module: str) -> type:
    """``Kronecker<Dense>``: ``dense_class`` (its first base) whose constructor swaps in the Kronecker modules that
    the config names, over the family's ``Kronecker<Dense>PreTrainedModel`` (see ``kronecker_pretrained_class``).

    ``module`` is where the class is defined: ``save_pretrained`` copies that file and ``auto_map`` names it.
    """

    def __init__(self, config, *args, **kwargs):
        # The dense modules that are replaced right away need no initialisation (a 50k x 768 embedding alone is 38M
        # draws): build without it, swap, then initialise everything once in `post_init`.
        with init.no_init_weights():
            dense_class.__init__(self, config, *args, **kwargs)
        self._swap_in_kronecker_modules()
        self.post_init()

    def set_output_embeddings(self, new_embeddings):
        if isinstance(self.get_output_embeddings(), KroneckerTiedLogits) and not isinstance(
            new_embeddings, KroneckerTiedLogits
        ):
            raise ValueError(
                "The word embedding is Kronecker-factored and the output head is tied to it, so the new output "
                f"embeddings must be a KroneckerTiedLogits over it; got a {type(new_embeddings).__name__}."
            )
        dense_class.set_output_embeddings(self, new_embeddings)

    name = f"Kronecker{dense_class.__name__}"
    namespace = {
        "__module__": module,
        "__qualname__": name,
        "__doc__": f"{dense_class.__name__} with the Kronecker-factored modules its config names.",
        "__init__": __init__,
        "set_output_embeddings": set_output_embeddings,
        "config_class": pretrained_class.config_class,
        "dense_class": dense_class,
    }
    return type(name, (dense_class, pretrained_class), namespace)


class KroneckerFamily:
    """One registered family: its config class and ``{dense class: Kronecker class}`` for every head."""

    def __init__(self, dense_model_type: str, config_class: type, classes: dict[type, type], pretrained_class: type):
        self.dense_model_type, self.config_class, self.classes = dense_model_type, config_class, classes
        self.pretrained_class = pretrained_class

    def __repr__(self) -> str:
        return f"KroneckerFamily({self.dense_model_type!r}, {sorted(c.__name__ for c in self.classes.values())})"


# dense model_type -> KroneckerFamily; the one table `compress` and loading consult.
KRONECKER_FAMILIES: dict[str, KroneckerFamily] = {}


def register_kronecker_family(
    dense_model_type: str,
    config_class: type | None = None,
    dense_classes: dict[str, type] | None = None,
    module: str = __name__,
    mixins: tuple = (),
    namespace: dict | None = None,
) -> KroneckerFamily:
    """Build (once) and register the Kronecker classes of a dense architecture.

    Args:
        dense_model_type: e.g. ``"llama"``.
        config_class: the Kronecker config class; default the generic ``kronecker_config_class(dense_model_type)``.
        dense_classes: ``{Auto class name: dense class}``; default every head Transformers has for the model type.
        module: where the classes are defined (their names are set there too, for ``auto_map``).
        mixins: family-specific mixins for the pre-trained class (see ``kronecker_pretrained_class``).
        namespace: the module's globals to define the classes in (default this module's).
    """
    if dense_model_type in KRONECKER_FAMILIES:
        return KRONECKER_FAMILIES[dense_model_type]
    config_class = config_class or kronecker_config_class(dense_model_type)
    if dense_classes is None:
        dense_classes = {
            auto_name: getattr(transformers, dense_name)
            for auto_name, dense_name in dense_head_names(dense_model_type).items()
        }
    namespace = globals() if namespace is None else namespace
    # The family's `<Dense>PreTrainedModel`, which every head derives from.
    dense_pretrained = next(
        cls for cls in dense_classes["AutoModel"].__mro__
        if cls.__name__.endswith("PreTrainedModel") and cls is not PreTrainedModel
    )
    classes = {}
    pretrained = kronecker_pretrained_class(dense_pretrained, config_class, module, mixins)
    namespace[pretrained.__name__] = pretrained
    for dense_class in dense_classes.values():
        kronecker_class = kronecker_model_class(dense_class, pretrained, module)
        namespace[kronecker_class.__name__] = kronecker_class
        classes[dense_class] = kronecker_class
    auto_map = config_class.KRONECKER_AUTO_MAP
    _register_auto_classes(config_class, list(classes.values()), auto_map)
    family = KroneckerFamily(dense_model_type, config_class, classes, pretrained)
    KRONECKER_FAMILIES[dense_model_type] = family
    return family


def __getattr__(name: str):
    # `trust_remote_code` loads `modeling_kronecker.Kronecker<Dense>` by name: build any family on demand.
    dense_name = name[len("Kronecker"):] if name.startswith("Kronecker") else None
    for mapping_name in KRONECKER_AUTO_CLASSES.values():
        for model_type, value in getattr(modeling_auto, mapping_name).items():
            if dense_name is not None and dense_name in (value if isinstance(value, (list, tuple)) else (value,)):
                register_kronecker_family(model_type)
                if name in globals():
                    return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# The built-in generic families: the table of which modules to factor lives in compression.py
# (KRONECKER_TARGET_MODULES), keyed by the same model_type.
for _model_type in ("llama", "mistral", "qwen2", "qwen3", "roberta", "distilbert"):
    register_kronecker_family(_model_type)
