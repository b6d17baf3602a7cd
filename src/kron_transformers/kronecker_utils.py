# Copyright 2026 The kron-transformers Authors. Licensed under the Apache License, Version 2.0.
"""What the KroneckerBERT and KroneckerGPT2 families share: option checking and Auto-class registration.

This file travels with every checkpoint saved with ``save_pretrained`` (``trust_remote_code``): it imports only
the standard library and transformers.
"""

import difflib

import transformers


def normalise_kronecker_options(options: dict, fields: tuple[str, ...], family: str) -> dict:
    """``options`` with ``rank`` renamed ``kronecker_rank``; a ``ValueError`` (with a "did you mean") for unknown ones."""
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
