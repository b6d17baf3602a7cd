# Copyright 2026 The kron-transformers Authors. Licensed under the Apache License, Version 2.0.
"""What every Kronecker family shares: option checking, Auto-class registration and the factor-shape check on load.

This file travels with every checkpoint saved with ``save_pretrained`` (``trust_remote_code``): it imports only
the standard library, transformers and its siblings ``kronecker.py`` and ``layers.py``.
"""

import difflib

import transformers

from .kronecker import check_kronecker_shape, divisors
from .layers import KroneckerEmbedding, KroneckerLinear


def check_model_type(model_type: str, expected: str, family: str, dense_name: str) -> None:
    """``from_pretrained`` passes the checkpoint's ``model_type``: a dense checkpoint, or one of the other Kronecker
    family, would otherwise load with a warning and silently random Kronecker factors."""
    if model_type != expected:
        raise ValueError(
            f"This is a `{model_type}` config, not a `{expected}` one, so it cannot build a {family} model. To "
            f"compress a dense {dense_name} checkpoint, load it with transformers and call "
            "kron_transformers.compress(model, compression); to load a Kronecker checkpoint of another family, use "
            "its own class or an AutoModel class."
        )


def normalise_kronecker_options(options: dict, fields: tuple[str, ...], family: str) -> dict:
    """``options`` with ``rank`` renamed ``kronecker_rank``; a ``ValueError``, with hints, for unknown ones."""
    options = dict(options)
    if "rank" in options:
        if "kronecker_rank" in options:
            raise ValueError("Pass either rank or kronecker_rank, not both.")
        options["kronecker_rank"] = options.pop("rank")
    unknown = [key for key in options if key not in fields]
    if unknown:
        hints = {key: difflib.get_close_matches(key, fields, n=1) for key in unknown}
        raise ValueError(
            f"Unknown {family} option(s) {unknown}"
            + "".join(f" (did you mean {hint[0]!r} for {key!r}?)" for key, hint in hints.items() if hint)
            + f"; the options are {list(fields)} (and rank for kronecker_rank)."
        )
    return options


def architecture_mismatches(dense_config, kronecker_config, fields: tuple[str, ...]) -> list[str]:
    """One line per size in ``fields`` that differs between a dense config and a Kronecker config."""
    return [
        f"{name}: {getattr(dense_config, name)} in the dense config but {getattr(kronecker_config, name)} in the "
        "Kronecker config"
        for name in fields
        if getattr(dense_config, name) != getattr(kronecker_config, name)
    ]


def register_kronecker_family(config_class, model_classes, auto_map: dict[str, str]) -> None:
    """Register ``config_class`` and each model class with the Auto classes named in ``auto_map``, and mark them so
    that ``save_pretrained`` copies their code beside the weights (``auto_map``: Auto class -> ``"module.Class"``)."""
    transformers.AutoConfig.register(config_class.model_type, config_class, exist_ok=True)
    config_class.register_for_auto_class("AutoConfig")
    classes = {cls.__name__: cls for cls in model_classes}
    for auto_name, reference in auto_map.items():
        if auto_name == "AutoConfig":
            continue
        model_class = classes[reference.rsplit(".", 1)[1]]
        getattr(transformers, auto_name).register(config_class, model_class, exist_ok=True)
        model_class.register_for_auto_class(auto_name)


def check_kronecker_fields(
    config, dense_shapes: dict[str, tuple[int, int]], width_name: str, layers_name: str, descriptions=None
) -> None:
    """Validate a Kronecker config's fields against its dense sizes; a ``ValueError`` naming the field, the bad value
    and what would work.

    Args:
        config: a Kronecker config (``kronecker_rank``, ``embedding_factor``, optionally ``embedding_rank``,
            ``kronecker_layers`` and the shape fields named in ``dense_shapes``).
        dense_shapes: ``{shape field: (out_features, in_features) of the maps it factors}``.
        width_name: the config field the embedding factor must divide (``hidden_size``, ``n_embd``).
        layers_name: the config field holding the number of layers (``num_hidden_layers``, ``n_layer``).
        descriptions: optional ``{shape field: what it factors}`` appended to shape errors.
    """
    rank = config.kronecker_rank
    if isinstance(rank, bool) or not (isinstance(rank, int) and rank >= 1):
        raise ValueError(f"kronecker_rank must be a positive integer; got {rank!r}.")
    for field, (out_features, in_features) in dense_shapes.items():
        a_shape = getattr(config, field)
        if a_shape is None:
            continue
        try:
            b_shape = check_kronecker_shape(out_features, in_features, a_shape, name=field)
        except ValueError as error:
            described = descriptions and field in descriptions
            suffix = f" ({field} factors the {descriptions[field]} maps.)" if described else ""
            raise ValueError(f"{error}{suffix}") from None
        max_rank = min(a_shape[0] * a_shape[1], b_shape[0] * b_shape[1])
        if rank > max_rank:
            raise ValueError(
                f"kronecker_rank={rank} exceeds the largest useful rank {max_rank} of {field}={a_shape} "
                f"(b_shape={b_shape}) for the {out_features}x{in_features} maps."
            )
    factor = config.embedding_factor
    if factor is not None:
        if isinstance(factor, bool) or not (isinstance(factor, int) and factor >= 1):
            raise ValueError(f"embedding_factor must be a positive integer or None; got {factor!r}.")
        width = getattr(config, width_name)
        if width % factor != 0:
            raise ValueError(
                f"embedding_factor={factor} does not divide {width_name}={width}. Divisors of {width} that would "
                f"work: {divisors(width)}."
            )
        embedding_rank = getattr(config, "embedding_rank", None)
        if embedding_rank is not None and (isinstance(embedding_rank, bool) or not isinstance(embedding_rank, int)
                                           or embedding_rank < 1):
            raise ValueError(f"embedding_rank must be a positive integer or None; got {embedding_rank!r}.")
        name = "kronecker_rank" if embedding_rank is None else "embedding_rank"
        if config.kronecker_embedding_factors() and config.word_embedding_rank > factor:
            raise ValueError(
                f"{name}={config.word_embedding_rank} exceeds embedding_factor={factor}, the word embedding's "
                "largest rank."
            )
    layers = config.kronecker_layers
    if layers is not None:
        if not isinstance(layers, list):
            raise ValueError(f"kronecker_layers must be a list of layer indices or None; got {layers!r}.")
        n = getattr(config, layers_name)
        bad = [i for i in layers if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < n]
        if bad or len(set(layers)) != len(layers):
            raise ValueError(
                f"kronecker_layers must list distinct layer indices in [0, {n}) ({layers_name}={n}); got {layers!r}"
                + (f" with invalid entries {bad!r}." if bad else " with duplicates.")
            )


def finalize_kronecker_loading(dense_base, model, load_config, loading_info, settings: str, field_of):
    """``dense_base._finalize_model_loading``, with a clear ``ValueError`` when the checkpoint's factors disagree with
    its config (an edited config.json, another rank) instead of Transformers' "look at the above report".

    Args:
        dense_base: the Transformers pre-trained class whose ``_finalize_model_loading`` does the work.
        settings: the config's Kronecker fields and their values, shown in the message.
        field_of: maps a factor's key (``bert.encoder.layer.0.output.dense.a``) to the config fields that shape it.
    """
    try:
        return dense_base._finalize_model_loading(model, load_config, loading_info)
    except RuntimeError as error:
        factors = {
            f"{name}.{factor}"
            for name, module in model.named_modules()
            if isinstance(module, (KroneckerLinear, KroneckerEmbedding))
            for factor in ("a", "b")
        }
        mismatched = sorted(
            (key, tuple(checkpoint_shape), tuple(model_shape))
            for key, checkpoint_shape, model_shape in getattr(loading_info, "mismatched_keys", ())
            if key in factors
        )
        if not mismatched:
            raise
        lines = [
            f"{key}: {checkpoint_shape} in the checkpoint, {model_shape} from {field_of(key)}"
            for key, checkpoint_shape, model_shape in mismatched
        ]
        raise ValueError(
            f"The Kronecker factors in {load_config.pretrained_model_name_or_path} do not have the shapes its config "
            f"asks for ({settings}; factor `a` has shape (rank, *a_shape)):\n  " + "\n  ".join(lines)
            + "\nWas config.json edited after saving? Restore the values the weights were saved with."
        ) from error
