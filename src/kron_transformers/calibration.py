# Copyright 2026 The kron-transformers Authors. Licensed under the Apache License, Version 2.0.
"""Input statistics of a dense model's linear maps on calibration data, for the activation-aware initialisation.

``compress(model, ratio, calibration_data=...)`` runs the dense model over the calibration batches once, records
``C = sum_t x_t x_t.T`` over the real (unpadded) tokens ``x_t`` reaching each linear map to be factored, and starts
each map's factors at ``calibrated_nearest_kronecker_product(W, a_shape, C)`` instead of the plain nearest Kronecker
product: the factors that minimise the error of the map's *outputs* on those inputs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import nn
from tqdm.auto import tqdm


def _pad(examples: list[Mapping], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a list of tokenised examples (``input_ids`` and optionally ``attention_mask``) into a batch."""
    longest = max(len(example["input_ids"]) for example in examples)
    input_ids = torch.full((len(examples), longest), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), longest), dtype=torch.long)
    for row, example in enumerate(examples):
        ids = torch.as_tensor(example["input_ids"], dtype=torch.long)
        input_ids[row, : len(ids)] = ids
        mask = example.get("attention_mask")
        attention_mask[row, : len(ids)] = torch.as_tensor(mask, dtype=torch.long) if mask is not None else 1
    return {"input_ids": input_ids, "attention_mask": attention_mask}


def calibration_batches(calibration_data, pad_token_id: int = 0, batch_size: int = 8) -> Iterable[dict]:
    """Batches of model inputs from ``calibration_data``: an iterable of batches (dicts of tensors), or a dataset
    (``datasets.Dataset`` or a list) of tokenised examples with ``input_ids`` (padded here, ``batch_size`` at a
    time)."""
    if hasattr(calibration_data, "column_names") or isinstance(calibration_data, list):
        examples = list(calibration_data) if isinstance(calibration_data, list) else calibration_data
        if len(examples) == 0:
            raise ValueError("calibration_data is empty.")
        first = examples[0]
        if not isinstance(first, Mapping) or "input_ids" not in first:
            raise ValueError(
                "calibration_data must hold tokenised examples with `input_ids` (or be an iterable of batches of "
                f"model inputs); its first item is a {type(first).__name__}"
                + (f" with keys {sorted(first)}." if isinstance(first, Mapping) else ".")
            )
        if torch.is_tensor(first["input_ids"]) and first["input_ids"].dim() == 2:
            yield from examples  # a list of ready batches
            return
        for start in range(0, len(examples), batch_size):
            chunk = [examples[i] for i in range(start, min(start + batch_size, len(examples)))]
            yield _pad(chunk, pad_token_id)
        return
    yield from calibration_data


@torch.no_grad()
def collect_input_moments(
    model: nn.Module, module_names: list[str], calibration_data, show_progress: bool = True
) -> dict[str, torch.Tensor]:
    """``{name: sum_t x_t x_t.T}`` (float64, ``(in_features, in_features)``) over the real tokens ``x_t`` entering each
    named linear map of ``model`` (``nn.Linear`` or GPT-2's ``Conv1D``) while it runs on ``calibration_data``.

    Positions where the batch's ``attention_mask`` is 0 (padding) are left out. ``model`` is run in eval mode and
    left in the mode it was in.
    """
    if not module_names:
        return {}
    device = next(model.parameters()).device
    moments: dict[str, torch.Tensor] = {}
    current_mask: list[torch.Tensor | None] = [None]
    handles = []

    def record(name):
        def hook(module, args, kwargs):
            x = args[0] if args else kwargs["input"]
            mask = current_mask[0]
            if mask is not None and tuple(x.shape[:-1]) == tuple(mask.shape):
                x = x[mask]
            x = x.reshape(-1, x.shape[-1]).double()
            moments[name] = moments[name] + x.T @ x if name in moments else x.T @ x

        return hook

    for name in module_names:
        handles.append(model.get_submodule(name).register_forward_pre_hook(record(name), with_kwargs=True))
    was_training = model.training
    model.eval()
    pad_token_id = getattr(model.config, "pad_token_id", None) or 0
    batches = 0
    try:
        for batch in tqdm(calibration_batches(calibration_data, pad_token_id), desc="Calibration", unit="batch",
                          disable=not show_progress):
            if not isinstance(batch, Mapping) or "input_ids" not in batch:
                raise ValueError(f"Each calibration batch must be a dict of model inputs with `input_ids`; got "
                                 f"{type(batch).__name__}.")
            inputs = {key: value.to(device) if torch.is_tensor(value) else value for key, value in batch.items()
                      if key not in ("labels", "label", "start_positions", "end_positions")}
            mask = inputs.get("attention_mask")
            current_mask[0] = mask.bool() if mask is not None else None
            model(**inputs)
            batches += 1
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    if batches == 0:
        raise ValueError("calibration_data gave no batches.")
    missing = [name for name in module_names if name not in moments]
    if missing:
        raise ValueError(f"The calibration data never reached {missing}: those maps cannot be calibrated.")
    return moments
