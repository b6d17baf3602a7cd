# Copyright 2026 The kron-transformers Authors. Licensed under the Apache License, Version 2.0.
"""``compress``: a dense Transformers model in, the matching Kronecker model out, NKP-initialised, with a report."""

from __future__ import annotations

import dataclasses

import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import PreTrainedModel

from .calibration import collect_input_moments
from .kronecker import output_error
from .layers import KroneckerEmbedding, KroneckerLinear, _dense_weight
from .modeling_kronecker_bert import KRONECKER_BERT_CLASSES
from .modeling_kronecker_gpt2 import KRONECKER_GPT2_CLASSES


# The one table of supported architectures: each Kronecker class subclasses the dense class it replaces.
# Model families append their classes here (see modeling_kronecker_*.py).
KRONECKER_MODEL_CLASSES: list[type[PreTrainedModel]] = []
KRONECKER_MODEL_CLASSES.extend(KRONECKER_BERT_CLASSES)
KRONECKER_MODEL_CLASSES.extend(KRONECKER_GPT2_CLASSES)


def kronecker_class_for(dense_model: nn.Module) -> type[PreTrainedModel]:
    """The Kronecker class that replaces ``type(dense_model)``, or a ``ValueError`` listing the supported ones."""
    table = {cls.__mro__[1]: cls for cls in KRONECKER_MODEL_CLASSES}
    if type(dense_model) in table:
        return table[type(dense_model)]
    if type(dense_model) in table.values():
        raise ValueError(f"The model is already a {type(dense_model).__name__}; compress the dense model instead.")
    supported = ", ".join(sorted(dense.__name__ for dense in table))
    raise ValueError(f"Cannot compress a {type(dense_model).__name__}: supported architectures are {supported}.")


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
    model: PreTrainedModel, compression, *, calibration_data=None, show_progress: bool = True, **config_kwargs
) -> PreTrainedModel:
    """Compress a dense Transformers model into its Kronecker counterpart.

    Args:
        model: a dense model of a supported class (``BertModel``, ``BertForSequenceClassification``,
            ``GPT2LMHeadModel``, ...); it is not modified.
        compression: a preset name (``"kronecker-bert-8"``, ``"kngpt2"``, ...), a parameter compression ratio for the
            factored matrices (``8.0``), or a Kronecker config instance.
        calibration_data: optional inputs on which the factored linear maps should behave like the dense ones: an
            iterable of batches (dicts of model inputs) or a dataset/list of tokenised examples (``input_ids``).
            The dense model runs over them once; each linear map then starts at the factors minimising its output
            error on its real (unpadded) inputs (``calibrated_nearest_kronecker_product``) instead of its weight
            error, and the report gains each map's relative output error. Embeddings keep the plain NKP.
        show_progress: show a progress bar over the factored modules.
        **config_kwargs: overrides for the Kronecker config (``rank=2``, ``kronecker_layers=[1, 3]``, ...).

    Returns:
        The Kronecker model, on the dense model's device and in its dtype, in the dense model's train/eval mode.
        Every factored weight is the nearest Kronecker product of the dense one (Van Loan & Pitsianis 1993);
        every other tensor is copied exactly. ``model.compression_report`` holds a ``CompressionReport``.
    """
    kronecker_class = kronecker_class_for(model)
    config = kronecker_class.config_class.from_dense_config(model.config, compression, **config_kwargs)
    reference = next(model.parameters())
    kronecker_model = kronecker_class(config).to(device=reference.device, dtype=reference.dtype)

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
            error = torch.linalg.matrix_norm(weight.float() - module.dense_weight().float())
            norm = torch.linalg.matrix_norm(weight.float())
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
                relative_error=(error / norm).item() if norm > 0 else 0.0,
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
    kronecker_model.compression_report = CompressionReport(
        modules=rows,
        dense_model_parameters=model.num_parameters(),
        kronecker_model_parameters=kronecker_model.num_parameters(),
    )
    return kronecker_model
