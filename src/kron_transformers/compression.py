# Copyright 2026 The kron-transformers Authors. Licensed under the Apache License, Version 2.0.
"""``compress``: a dense Transformers model in, the matching Kronecker model out, NKP-initialised, with a report."""

from __future__ import annotations

import copy
import dataclasses
import math
import re
import warnings

import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import PreTrainedModel
from transformers import initialization as init

from .calibration import collect_input_moments
from .configuration_kronecker import KroneckerGenericConfigMixin
from .kronecker import check_kronecker_shape, kronecker_embedding_factor, kronecker_shapes, output_error
from .layers import KroneckerEmbedding, KroneckerLinear, _dense_weight
from .modeling_kronecker import KRONECKER_FAMILIES, KroneckerModelMixin, register_kronecker_family
from .modeling_kronecker_bert import KRONECKER_BERT_CLASSES
from .modeling_kronecker_gpt2 import KRONECKER_GPT2_CLASSES


# Which modules each built-in family factors, by module-name pattern (PEFT's `target_modules` convention: a module is
# targeted when its name equals a pattern, ends with "." + the pattern, or fully matches it as a regular expression).
# An `nn.Embedding` target is the word embedding (`A ⊗ b` rows); a tied output head is never factored on its own (it
# computes its logits from the embedding's factors). BERT and GPT-2 keep their field-based configs
# (KroneckerBertConfig, KroneckerGPT2Config). A new built-in family is an entry here plus a `register_kronecker_family`
# call in modeling_kronecker.py.
_LLAMA_LIKE = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "embed_tokens", "lm_head")
_BERT_LIKE = (
    "query", "key", "value", "attention.output.dense", "intermediate.dense", "output.dense", "word_embeddings"
)
KRONECKER_TARGET_MODULES = {
    "llama": _LLAMA_LIKE,
    "mistral": _LLAMA_LIKE,
    "qwen2": _LLAMA_LIKE,
    "qwen3": _LLAMA_LIKE,
    "roberta": _BERT_LIKE,
    "distilbert": ("q_lin", "k_lin", "v_lin", "out_lin", "lin1", "lin2", "word_embeddings"),
}

# Presets of the generic families, resolved against each model's sizes. "kngpt2": Edalati et al. (ACL 2022), the word
# embedding and every odd-numbered layer compressed 2x, for any decoder.
KRONECKER_PRESETS = {"kngpt2": {"compression": 2.0, "layers": "odd"}}

# Every Kronecker class of the families registered at import (BERT, GPT-2 and the generic ones).
KRONECKER_MODEL_CLASSES: list[type[PreTrainedModel]] = [*KRONECKER_BERT_CLASSES, *KRONECKER_GPT2_CLASSES]
KRONECKER_MODEL_CLASSES.extend(
    cls
    for family in KRONECKER_FAMILIES.values()
    for cls in family.classes.values()
    if cls not in KRONECKER_MODEL_CLASSES
)


def kronecker_class_for(dense_model: nn.Module, target_modules=None) -> type[PreTrainedModel]:
    """The Kronecker class that replaces ``type(dense_model)``, looked up by the dense ``model_type``; a family is
    built on the fly for another architecture when ``target_modules`` says what to factor."""
    if isinstance(dense_model, KroneckerModelMixin):
        raise ValueError(f"The model is already a {type(dense_model).__name__}; compress the dense model instead.")
    model_type = getattr(getattr(dense_model, "config", None), "model_type", None)
    family = KRONECKER_FAMILIES.get(model_type)
    if family is None and target_modules is not None and isinstance(dense_model, PreTrainedModel):
        try:
            family = register_kronecker_family(model_type)
        except (ValueError, KeyError, AttributeError) as error:
            raise ValueError(f"Cannot build Kronecker classes for model_type {model_type!r}: {error}") from None
    if family is not None and type(dense_model) in family.classes:
        return family.classes[type(dense_model)]
    raise ValueError(_unsupported(dense_model))


def _built_in(model_type: str) -> bool:
    """Whether a registered family compresses without ``target_modules`` (a field-based config or a target table)."""
    family = KRONECKER_FAMILIES[model_type]
    return not issubclass(family.config_class, KroneckerGenericConfigMixin) or model_type in KRONECKER_TARGET_MODULES


def _unsupported(model: nn.Module) -> str:
    supported = ", ".join(
        sorted(dense.__name__ for t, f in KRONECKER_FAMILIES.items() if _built_in(t) for dense in f.classes)
    )
    return (
        f"Cannot compress a {type(model).__name__}: supported architectures are {supported}. For another "
        "Transformers architecture with nn.Linear/Conv1D maps, pass target_modules=[...] (module-name patterns)."
    )


def _check_ratio(value, name: str = "compression") -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 1:
        raise ValueError(
            f"{name} must be a finite parameter compression ratio above 1 (e.g. 2.0 for a model about half the size); "
            f"got {value!r}."
        )
    return float(value)


def _normalise_targets(target_modules) -> list[tuple[str, dict]]:
    """``[(pattern, spec)]`` from a list of patterns or a ``{pattern: ratio | a_shape | spec dict}`` mapping."""
    if isinstance(target_modules, str):
        target_modules = [target_modules]
    if isinstance(target_modules, dict):
        items = list(target_modules.items())
    elif isinstance(target_modules, (list, tuple)) and target_modules:
        items = [(pattern, {}) for pattern in target_modules]
    else:
        raise ValueError(f"target_modules must be a non-empty list of module-name patterns or a dict; got "
                         f"{target_modules!r}.")
    normalised = []
    for pattern, spec in items:
        if not isinstance(pattern, str) or not pattern:
            raise ValueError(f"target_modules: a pattern must be a non-empty string; got {pattern!r}.")
        if isinstance(spec, (int, float)) and not isinstance(spec, bool):
            spec = {"compression": spec}
        elif isinstance(spec, (list, tuple)):
            spec = {"a_shape": tuple(spec)}
        elif spec is None:
            spec = {}
        if not isinstance(spec, dict) or set(spec) - {"compression", "a_shape", "factor", "rank"}:
            raise ValueError(
                f"target_modules[{pattern!r}] = {spec!r}: expected a ratio, an a_shape (m1, n1) or a dict with keys "
                "among compression, a_shape, factor, rank."
            )
        if "compression" in spec:
            _check_ratio(spec["compression"], f"target_modules[{pattern!r}]['compression']")
        normalised.append((pattern, spec))
    return normalised


def _matches(name: str, pattern: str) -> bool:
    if name == pattern or name.endswith("." + pattern):
        return True
    try:
        return re.fullmatch(pattern, name) is not None
    except re.error:
        return False


def _layer_index(name: str) -> int | None:
    """The first numeric component of a module path (``model.layers.3.mlp.up_proj`` -> 3), if any."""
    match = re.search(r"(?:^|\.)(\d+)(?:\.|$)", name)
    return int(match.group(1)) if match else None


def resolve_targets(
    model: PreTrainedModel, target_modules, compression: float | None, rank: int = 1, layers=None
) -> tuple[dict[str, dict], list[str]]:
    """Resolve module-name patterns against the real module tree (sizes read from the modules).

    Args:
        model: the dense model (real or on the meta device).
        target_modules: patterns (see ``KRONECKER_TARGET_MODULES``) or ``{pattern: ratio | a_shape | spec}``.
        compression: the default parameter compression of each factored map (shapes from ``kronecker_shapes``).
        rank: the default number of summed Kronecker products.
        layers: ``None`` (all), ``"odd"``, ``"even"`` or a list of layer indices (the first number in a path); modules
            outside numbered layers (embeddings, heads) are not filtered.

    Returns:
        ``kronecker_modules`` (``{path: spec}``, paths relative to the base model for its modules) and one line per
        matched map that could not be factored (and why).
    """
    if isinstance(rank, bool) or not (isinstance(rank, int) and rank >= 1):
        raise ValueError(f"rank must be a positive integer; got {rank!r}.")
    if not (layers is None or layers in ("odd", "even") or isinstance(layers, (list, tuple))):
        raise ValueError(f"kronecker_layers must be None, 'odd', 'even' or a list of layer indices; got {layers!r}.")
    patterns = _normalise_targets(target_modules)
    base = model.base_model
    prefix = f"{model.base_model_prefix}." if base is not model else ""
    output = model.get_output_embeddings()
    tied = bool(getattr(model.config, "tie_word_embeddings", False))
    resolved, skipped, matched = {}, [], set()
    for name, module in model.named_modules():
        if not (isinstance(module, (nn.Linear, nn.Embedding)) or type(module).__name__ == "Conv1D"):
            continue
        found = next(((pattern, spec) for pattern, spec in patterns if _matches(name, pattern)), None)
        if found is None:
            continue
        pattern, spec = found
        matched.add(pattern)
        index = _layer_index(name)
        if index is not None and layers is not None:
            wanted = index % 2 == 1 if layers == "odd" else index % 2 == 0 if layers == "even" else index in layers
            if not wanted:
                continue
        if module is output and tied:
            continue  # shares the word embedding's weight: factored with it (logits from its factors) or not at all
        path = name[len(prefix):] if prefix and name.startswith(prefix) else name
        map_rank = spec.get("rank", rank)
        ratio = spec.get("compression", compression)
        if isinstance(module, nn.Embedding):
            factor = spec.get("factor")
            if factor is None:
                if ratio is None:
                    raise ValueError(f"target_modules[{pattern!r}]: give a factor or a compression for `{name}`.")
                factor = kronecker_embedding_factor(module.num_embeddings, module.embedding_dim, ratio, map_rank)
            if factor == 1:  # 1 x 1 b: no compression, one extra parameter and slower logits
                skipped.append(f"{name}: no embedding factor reaches {ratio}x for width {module.embedding_dim}")
                continue
            resolved[path] = {"factor": factor, "rank": map_rank}
            continue
        out_features, in_features = _dense_weight(module).shape
        a_shape = spec.get("a_shape")
        if a_shape is None:
            if ratio is None:
                raise ValueError(f"target_modules[{pattern!r}]: give an a_shape or a compression for `{name}`.")
            shapes = kronecker_shapes(out_features, in_features, ratio, map_rank, max_results=1)
            a_shape = shapes[0] if shapes else None
            if a_shape is None or a_shape in ((1, 1), (out_features, in_features)):
                skipped.append(f"{name} ({out_features}x{in_features}): no Kronecker shape of rank {map_rank} "
                               "compresses it")
                continue
        else:
            try:
                check_kronecker_shape(out_features, in_features, tuple(a_shape), name=f"a_shape of `{name}`")
            except ValueError as error:
                raise ValueError(f"target_modules[{pattern!r}]: {error}") from None
        resolved[path] = {"a_shape": [int(a_shape[0]), int(a_shape[1])], "rank": map_rank}
    unmatched = [pattern for pattern, _ in patterns if pattern not in matched]
    if not resolved:
        linear = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) or type(m).__name__ == "Conv1D"]
        raise ValueError(
            f"target_modules {[p for p, _ in patterns]} factor no nn.Linear/Conv1D/nn.Embedding module of "
            f"{type(model).__name__}" + (f" ({'; '.join(skipped)})" if skipped else "")
            + f"; its linear maps are named like {linear[:4]}."
        )
    if unmatched:
        warnings.warn(f"target_modules patterns {unmatched} match no module of {type(model).__name__}.", stacklevel=3)
    return resolved, skipped


def kronecker_config_for(model: PreTrainedModel, compression, target_modules=None, **options):
    """The Kronecker config for a dense model, validated against its module tree before any weight is read.

    BERT and GPT-2 use their field-based configs (``from_dense_config``); every other family a generic config whose
    ``kronecker_modules`` comes from ``resolve_targets`` (``target_modules`` or the family's default table).
    Returns ``(config, skipped)``: ``skipped`` lists the matched maps that could not be factored.
    """
    config_class = kronecker_class_for(model, target_modules).config_class
    if isinstance(compression, (int, float)):
        _check_ratio(compression)
    if not issubclass(config_class, KroneckerGenericConfigMixin):
        if target_modules is not None:
            raise ValueError(
                f"{config_class.__name__} picks its maps with its own fields (attention_a_shape, ..., "
                "kronecker_layers); target_modules applies to the other architectures."
            )
        return config_class.from_dense_config(model.config, compression, **options), []
    options = dict(options)
    if "rank" in options and "kronecker_rank" in options:
        raise ValueError("Pass either rank or kronecker_rank, not both.")
    rank = options.pop("kronecker_rank", options.pop("rank", 1))
    layers = options.pop("kronecker_layers", None)
    if options:
        raise ValueError(
            f"Unknown option(s) {sorted(options)}; the options are rank, kronecker_layers and target_modules."
        )
    if isinstance(compression, config_class):
        resolved, skipped = dict(compression.kronecker_modules or {}), []
    else:
        if isinstance(compression, str):
            if compression not in KRONECKER_PRESETS:
                raise ValueError(f"Unknown preset {compression!r}; the presets for {type(model).__name__} are "
                                 f"{sorted(KRONECKER_PRESETS)}. Pass a compression ratio (e.g. 2.0) instead.")
            preset = KRONECKER_PRESETS[compression]
            compression, layers = preset["compression"], layers if layers is not None else preset["layers"]
        elif not isinstance(compression, (int, float)) or isinstance(compression, bool):
            raise ValueError(f"compression must be a preset name {sorted(KRONECKER_PRESETS)}, a ratio or a "
                             f"{config_class.__name__}; got {compression!r}.")
        compression = _check_ratio(compression)
        targets = target_modules if target_modules is not None else KRONECKER_TARGET_MODULES.get(
            model.config.model_type
        )
        if targets is None:  # a family built earlier for target_modules has no table of its own
            raise ValueError(_unsupported(model))
        resolved, skipped = resolve_targets(model, targets, compression, rank, layers)
    config_dict = model.config.to_dict()
    for key in ("model_type", "transformers_version", "architectures", "auto_map", "_name_or_path"):
        config_dict.pop(key, None)
    # Keep the dense model's attention backend (eager, sdpa, ...), as the model outputs are compared against it.
    config_dict["attn_implementation"] = model.config._attn_implementation
    return config_class(**{**config_dict, "kronecker_modules": resolved}), skipped


@dataclasses.dataclass
class ModuleReport:
    name: str
    kind: str  # "linear" or "embedding"
    dense_shape: tuple[int, int]
    a_shape: tuple[int, int]
    b_shape: tuple[int, int]
    rank: int
    dense_parameters: int
    kronecker_parameters: int
    relative_error: float  # ||W - sum a ⊗ b||_F / ||W||_F
    output_error: float | None = None  # ||X (W - sum a ⊗ b).T||_F / ||X W.T||_F on the calibration inputs X

    @property
    def compression(self) -> float:
        return self.dense_parameters / self.kronecker_parameters


@dataclasses.dataclass
class CompressionReport:
    """What ``compress`` did, module by module, and the whole-model parameter counts."""

    modules: list[ModuleReport]
    dense_model_parameters: int
    kronecker_model_parameters: int

    @property
    def compression(self) -> float:
        return self.dense_model_parameters / self.kronecker_model_parameters

    @property
    def calibrated(self) -> bool:
        """Whether the factors were fitted to calibration inputs (the report then has output errors)."""
        return any(m.output_error is not None for m in self.modules)

    def to_dict(self) -> dict:
        return {
            "modules": [dataclasses.asdict(m) | {"compression": m.compression} for m in self.modules],
            "dense_model_parameters": self.dense_model_parameters,
            "kronecker_model_parameters": self.kronecker_model_parameters,
            "compression": self.compression,
        }

    def to_markdown(self) -> str:
        lines = [
            "| module | shape | A | B | rank | params before | params after | compression | rel. error |"
            + (" output error |" if self.calibrated else ""),
            "|---|---|---|---|---|---|---|---|---|" + ("---|" if self.calibrated else ""),
        ]
        for m in self.modules:
            output_error = "" if m.output_error is None else f"{m.output_error:.4f}"
            lines.append(
                f"| {m.name} | {m.dense_shape[0]}x{m.dense_shape[1]} | {m.a_shape[0]}x{m.a_shape[1]} | "
                f"{m.b_shape[0]}x{m.b_shape[1]} | {m.rank} | {m.dense_parameters:,} | {m.kronecker_parameters:,} | "
                f"{m.compression:.1f}x | {m.relative_error:.4f} |" + (f" {output_error} |" if self.calibrated else "")
            )
        lines.append(
            f"| **total (whole model)** | | | | | {self.dense_model_parameters:,} | "
            f"{self.kronecker_model_parameters:,} | {self.compression:.2f}x | |" + (" |" if self.calibrated else "")
        )
        return "\n".join(lines)

    __str__ = to_markdown


def compress(
    model: PreTrainedModel,
    compression,
    *,
    target_modules=None,
    calibration_data=None,
    show_progress: bool = True,
    **config_kwargs,
) -> PreTrainedModel:
    """Compress a dense Transformers model into its Kronecker counterpart.

    Args:
        model: a dense Transformers model (``BertForSequenceClassification``, ``GPT2LMHeadModel``,
            ``LlamaForCausalLM``, ...); it is not modified. Built-in families: BERT, GPT-2, Llama (SmolLM2), Mistral,
            Qwen2, Qwen3, RoBERTa, DistilBERT; any other architecture with ``target_modules``.
        compression: a preset name (``"kronecker-bert-8"``, ``"kngpt2"``, ...), a parameter compression ratio above 1
            for the factored matrices (``8.0``), or a Kronecker config instance.
        target_modules: which maps to factor, as module-name patterns (``["q_proj", "v_proj"]``: a name equal to a
            pattern, ending with "." + it, or fully matching it as a regex) or ``{pattern: ratio | (m1, n1) |
            {"compression"|"a_shape"|"factor", "rank"}}``; default: the family's table (``KRONECKER_TARGET_MODULES``).
        calibration_data: optional inputs on which the factored linear maps should behave like the dense ones: an
            iterable of batches (dicts of model inputs) or a dataset/list of tokenised examples (``input_ids``).
            The dense model runs over them once; each linear map then starts at the factors minimising its output
            error on its real (unpadded) inputs (``calibrated_nearest_kronecker_product``) instead of its weight
            error, and the report gains each map's relative output error. Embeddings keep the plain NKP.
        show_progress: show a progress bar over the factored modules.
        **config_kwargs: overrides for the Kronecker config (``rank=2``, ``kronecker_layers=[1, 3]``, ...).

    Returns:
        The Kronecker model, on the dense model's device and in its dtype, in the dense model's train/eval mode, with
        its generation config. Every factored weight is the nearest Kronecker product of the dense one (Van Loan &
        Pitsianis 1993); every other tensor is copied exactly. ``model.compression_report`` holds a
        ``CompressionReport``. A warning names the maps that could not be factored and says when the whole-model
        ratio is far from a requested one.
    """
    config, skipped = kronecker_config_for(model, compression, target_modules, **config_kwargs)
    kronecker_class = kronecker_class_for(model, target_modules)
    _check_finite(model)
    reference = next(model.parameters())
    # Every tensor is overwritten below: skip the random initialisation (and its peak memory on big models).
    with init.no_init_weights():
        kronecker_model = kronecker_class(config)
    kronecker_model.to(device=reference.device, dtype=reference.dtype)
    kronecker_model.tie_weights()

    dense_state = model.state_dict()
    kronecker_state = kronecker_model.state_dict()
    filled: set[str] = set()
    consumed: set[str] = set()
    rows: list[ModuleReport] = []
    factored = [
        (name, module)
        for name, module in kronecker_model.named_modules()
        if isinstance(module, (KroneckerLinear, KroneckerEmbedding))
    ]
    moments = {}
    if calibration_data is not None:
        linear_names = [name for name, module in factored if isinstance(module, KroneckerLinear)]
        moments = collect_input_moments(model, linear_names, calibration_data, show_progress=show_progress)
    for name, module in tqdm(factored, desc="Kronecker factorisation", disable=not show_progress, unit="module"):
        dense_module = model.get_submodule(name)
        if isinstance(module, KroneckerLinear):
            new = KroneckerLinear.from_linear(dense_module, module.a_shape, module.rank, moments.get(name))
            weight, kind = _dense_weight(dense_module), "linear"
        else:
            new = KroneckerEmbedding.from_embedding(dense_module, module.factor, module.rank)
            weight, kind = dense_module.weight, "embedding"
        with torch.no_grad():
            for key, value in new.state_dict().items():
                module.get_parameter(key).copy_(value)
                filled.add(f"{name}.{key}")
            relative_error = _relative_error(weight, module.a, module.b)
        consumed.update(f"{name}.{key}" for key in dense_module.state_dict())
        rows.append(
            ModuleReport(
                name=name,
                kind=kind,
                dense_shape=tuple(weight.shape),
                a_shape=module.a_shape,
                b_shape=module.b_shape,
                rank=module.rank,
                dense_parameters=weight.numel(),
                kronecker_parameters=module.a.numel() + module.b.numel(),
                relative_error=relative_error,
                output_error=output_error(weight, module.dense_weight(), moments[name]).item()
                if name in moments else None,
            )
        )

    # Everything else is copied by name. A dense tensor with no home must be a tied alias of a factored weight
    # (BERT's MLM decoder, GPT-2's lm_head): anything else is a bug in the class table, so fail loudly.
    factored_storages = {dense_state[key].untyped_storage().data_ptr() for key in consumed}
    missing_in_dense = []
    with torch.no_grad():
        for key, value in kronecker_state.items():
            if key in filled:
                continue
            if key not in dense_state:
                missing_in_dense.append(key)
                continue
            if value.shape != dense_state[key].shape:
                raise ValueError(
                    f"Cannot copy `{key}`: shape {tuple(dense_state[key].shape)} in the dense model but "
                    f"{tuple(value.shape)} in the Kronecker model."
                )
            value.copy_(dense_state[key])
            consumed.add(key)
        # Non-persistent buffers (rotary frequencies, position ids) are not in the state dicts: copy them too.
        dense_buffers = dict(model.named_buffers())
        for key, buffer in kronecker_model.named_buffers():
            if key not in kronecker_state and key in dense_buffers and buffer.shape == dense_buffers[key].shape:
                buffer.copy_(dense_buffers[key])
    left_over = [
        key
        for key in dense_state
        if key not in consumed and dense_state[key].untyped_storage().data_ptr() not in factored_storages
    ]
    if missing_in_dense or left_over:
        raise ValueError(
            f"compress() could not map every tensor between {type(model).__name__} and {kronecker_class.__name__}: "
            f"missing in the dense model: {missing_in_dense or 'none'}; "
            f"dense tensors left over: {left_over or 'none'}."
        )

    kronecker_model.train(model.training)
    if getattr(model, "generation_config", None) is not None and kronecker_model.can_generate():
        # eos ids and sampling settings of the dense model (from_pretrained read them from generation_config.json).
        kronecker_model.generation_config = copy.deepcopy(model.generation_config)
    report = CompressionReport(
        modules=rows,
        dense_model_parameters=model.num_parameters(),
        kronecker_model_parameters=kronecker_model.num_parameters(),
    )
    kronecker_model.compression_report = report
    # Shapes given explicitly (attention_a_shape=..., target_modules={"q_proj": (m1, n1)}) override the ratio.
    explicit = any(key.endswith("a_shape") for key in config_kwargs) or (
        isinstance(target_modules, dict)
        and any(isinstance(spec, (list, tuple)) or isinstance(spec, dict) and {"a_shape", "factor"} & set(spec)
                for spec in target_modules.values())
    )
    if not explicit:
        _warn_about_the_ratio(compression, report, skipped)
    return kronecker_model


def _check_finite(model: nn.Module) -> None:
    """NaN/inf in any dense tensor would be copied into the checkpoint or break the SVD: name the module first."""
    for key, tensor in model.state_dict().items():
        if tensor.is_floating_point() and tensor.device.type != "meta" and not torch.isfinite(tensor).all():
            bad = (~torch.isfinite(tensor)).sum().item()
            module, _, name = key.rpartition(".")
            raise ValueError(
                f"The dense model's tensor `{name}` of module `{module or type(model).__name__}` ({key}) holds {bad} "
                "NaN/inf value(s); fix or retrain the checkpoint before compressing it."
            )


def _relative_error(weight: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> float:
    """``||W - sum_r a[r] ⊗ b[r]||_F / ||W||_F`` in float64 without overflow or a dense copy.

    Scaled by the largest entry (a 1e30 weight squared overflows float32's norm to inf and the ratio to nan), and
    summed over blocks of about 4M entries: float64 copies of a whole 30522x768 embedding, its approximation and their
    difference made the peak memory of compressing BERT_BASE ~750 MiB above the dense model's.
    """
    weight, a, b = weight.detach(), a.detach().double(), b.detach().double()
    scale = max(abs(weight.max().item()), abs(weight.min().item()))
    if scale == 0:
        return 0.0 if a.abs().max() * b.abs().max() == 0 else float("inf")
    block_rows = b.shape[1]  # W's rows i1 * m2 ... (i1 + 1) * m2 - 1 are sum_r a[r, i1] ⊗ b[r]
    step = max(1, 2**22 // (block_rows * weight.shape[1]))
    error, norm = (weight.new_zeros((), dtype=torch.float64) for _ in range(2))
    for start in range(0, a.shape[1], step):
        a_rows = a[:, start:start + step]
        approximation = torch.einsum("rij,rkl->ikjl", a_rows, b).reshape(-1, weight.shape[1]).div_(scale)
        rows = weight[start * block_rows:(start + a_rows.shape[1]) * block_rows].to(torch.float64, copy=True)
        rows.div_(scale)  # a copy: a float64 weight must not be changed in place
        norm += rows.square().sum()
        error += rows.sub_(approximation).square_().sum()
    return (error.sqrt() / norm.sqrt()).item()


def _warn_about_the_ratio(compression, report: CompressionReport, skipped: list[str]) -> None:
    lines = []
    if isinstance(compression, (int, float)) and not isinstance(compression, bool):
        achieved = report.compression
        # Maps kept dense (embeddings, norms, heads, unfactorable sizes) pull the whole-model ratio below the
        # per-map one; a factor of 2 either way means the request cannot be met with these sizes.
        if not compression / 2 <= achieved <= compression * 2:
            lines.append(
                f"compression={compression:g} was requested for each factored map, but the whole model is "
                f"{achieved:.2f}x smaller ({report.dense_model_parameters:,} -> {report.kronecker_model_parameters:,} "
                "parameters): the available factor shapes or the maps left dense limit it."
            )
    if skipped:
        lines.append("Maps kept dense: " + "; ".join(skipped) + ".")
    trivial = [m.name for m in report.modules if m.kind == "linear" and 1 in (m.a_shape[0] * m.a_shape[1],
                                                                             m.b_shape[0] * m.b_shape[1])]
    if trivial and isinstance(compression, (int, float)):
        lines.append(f"Maps whose sizes allow no compressing Kronecker shape (a 1x1 factor): {', '.join(trivial)}.")
    if lines:
        warnings.warn(" ".join(lines), stacklevel=3)
