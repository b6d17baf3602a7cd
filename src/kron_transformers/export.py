# Copyright 2026 The kron-transformers Authors. Licensed under the Apache License, Version 2.0.
"""ONNX export and int8 quantisation of Transformers models, Kronecker or dense, for onnxruntime.

    from kron_transformers.export import export_onnx, quantize_onnx_int8

    export_onnx(model, "model.onnx")                         # dynamic batch and sequence, checked in onnxruntime
    quantize_onnx_int8("model.onnx", "model.int8.onnx")      # int8 weights (the Kronecker factors), dynamic activations

The export goes through ``torch.onnx.export(dynamo=True)``. While it traces, ``kron_linear`` switches to a form made
of plain matmuls against the 2-D factors (``kronecker._kron_linear_2d``): one GEMM over all tokens or one broadcast
``MatMul`` per factor, never a factor expanded over the batch, and only 2-D transposes of activations, which
onnxruntime runs fast on several threads. Nothing here is needed to load a checkpoint, so this module is not copied
beside saved models.
"""

from __future__ import annotations

import inspect
import math
import os
import tempfile
from pathlib import Path

import torch
from torch import nn


# Inputs taken by the exported graph, in this order, when the model's forward accepts them (token_type_ids only for
# models that have token types).
_INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
# Outputs never exported: optional extras and the KV cache (the graph runs full sequences, use_cache=False); the cache
# is `cache` from Transformers 5.24, `past_key_values` before.
_SKIPPED_OUTPUTS = {"cache", "past_key_values", "hidden_states", "attentions", "cross_attentions", "loss"}


def _is_multiple_choice(model: nn.Module) -> bool:
    return type(model).__name__.endswith("ForMultipleChoice")


def onnx_input_names(model: nn.Module) -> list[str]:
    """The inputs ``export_onnx`` gives the graph for ``model``: ``input_ids``, ``attention_mask`` and, for models
    with token types (BERT), ``token_type_ids``."""
    parameters = inspect.signature(model.forward).parameters
    names = [name for name in _INPUT_NAMES if name in parameters]
    if "token_type_ids" in names and not getattr(model.config, "type_vocab_size", 0):
        names.remove("token_type_ids")
    if "input_ids" not in names:
        raise ValueError(f"{type(model).__name__}.forward takes no input_ids; export_onnx exports text models only.")
    return names


def example_inputs(model: nn.Module, batch_size: int = 2, sequence_length: int = 8, seed: int = 0) -> dict:
    """Random inputs for ``model``: ``(batch, sequence)`` int64 tensors (``(batch, choices, sequence)`` for
    multiple-choice heads), with the last positions of the first row padded out in ``attention_mask``."""
    generator = torch.Generator().manual_seed(seed)
    shape = (batch_size, 2, sequence_length) if _is_multiple_choice(model) else (batch_size, sequence_length)
    inputs = {}
    for name in onnx_input_names(model):
        if name == "input_ids":
            inputs[name] = torch.randint(0, model.config.vocab_size, shape, generator=generator)
        elif name == "attention_mask":
            mask = torch.ones(shape, dtype=torch.long)
            mask[0, ..., max(1, sequence_length - 2):] = 0  # padding must stay masked out in the graph
            inputs[name] = mask
        else:
            inputs[name] = torch.randint(0, model.config.type_vocab_size, shape, generator=generator)
    return inputs


class _OnnxWrapper(nn.Module):
    """Calls ``model`` with named inputs and returns its exported outputs as a tuple (what the exporter traces)."""

    def __init__(self, model: nn.Module, input_names: list[str], output_names: list[str]):
        super().__init__()
        self.model, self.input_names, self.output_names = model, input_names, output_names
        self.extra = {"use_cache": False} if "use_cache" in inspect.signature(model.forward).parameters else {}

    def forward(self, *inputs):
        outputs = self.model(**dict(zip(self.input_names, inputs)), **self.extra, return_dict=True)
        return tuple(outputs[name] for name in self.output_names)


def _output_names(model: nn.Module, inputs: dict, extra: dict) -> list[str]:
    with torch.no_grad():
        outputs = model(**inputs, **extra, return_dict=True)
    return [name for name, value in outputs.items() if name not in _SKIPPED_OUTPUTS and torch.is_tensor(value)]


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    batch_size: int = 2,
    sequence_length: int = 8,
    opset_version: int = 23,
    verify: bool = True,
    atol: float = 1e-4,
) -> Path:
    """Export a Transformers text model (any head; Kronecker or dense) to one ONNX file for onnxruntime.

    Args:
        model: a ``PreTrainedModel`` in float32 on CPU, e.g. ``KroneckerBertForSequenceClassification``.
        path: the ``.onnx`` file to write (its folder is created).
        batch_size, sequence_length: the size of the example the exporter traces; the graph takes any batch and
            any sequence length up to the model's position limit (``batch``, ``sequence`` dynamic axes).
        opset_version: ONNX opset. From 23 (the default; onnxruntime >= 1.23) attention and GELU export as one
            ``Attention`` and one ``Gelu`` node each, which onnxruntime runs as fused kernels; at 18 they are a
            dozen elementwise nodes (scores, mask ``Where``, ``Softmax``; ``Div``/``Erf``/``Add``/``Mul``), the same
            work in the dense model and the Kronecker one, which weighs most on the smallest models (onnxruntime
            1.32, 2 threads, batch 8 x 128: KroneckerBERT_21 2.37x -> 2.68x, KroneckerBERT_8 1.72x -> 1.88x over
            BERT_BASE at opset 18 -> 23, in one process).
        verify: run the file in onnxruntime on inputs of another size than the traced ones (with padding) and raise
            a ``RuntimeError`` if any output differs from PyTorch's by more than ``atol * max(1, max |output|)``.
        atol: the verification tolerance.

    Returns:
        ``path``. The graph's inputs are ``onnx_input_names(model)`` (int64, ``(batch, sequence)``; multiple-choice
        heads ``(batch, choices, sequence)``); its outputs are the model output's tensors by name (``logits``,
        ``last_hidden_state``, ``pooler_output``, ``start_logits``/``end_logits``), without the KV cache.
    """
    path = Path(path)
    if path.suffix != ".onnx":
        raise ValueError(f"path must name a .onnx file; got {str(path)!r}.")
    if not isinstance(model, nn.Module) or not hasattr(model, "config"):
        raise ValueError(f"model must be a Transformers PreTrainedModel; got a {type(model).__name__}.")
    parameter = next(model.parameters())
    if parameter.dtype != torch.float32 or parameter.device.type != "cpu":
        raise ValueError(
            f"export_onnx expects a float32 model on CPU; got {parameter.dtype} on {parameter.device}. "
            "Call model.float().cpu() first."
        )
    for name, size in (("batch_size", batch_size), ("sequence_length", sequence_length)):
        if not (isinstance(size, int) and size >= 2):
            # torch.export specialises sizes 0 and 1, which would make the axis static.
            raise ValueError(f"{name} must be an integer >= 2 (sizes 0 and 1 cannot be exported as dynamic); got "
                             f"{size!r}.")
    max_positions = getattr(model.config, "max_position_embeddings", None) or getattr(model.config, "n_positions", None)
    if max_positions is not None and sequence_length >= max_positions:
        raise ValueError(f"sequence_length must be below the model's {max_positions} positions; got {sequence_length}.")

    was_training = model.training
    model.eval()
    try:
        inputs = example_inputs(model, batch_size, sequence_length)
        input_names = list(inputs)
        wrapper = _OnnxWrapper(model, input_names, []).eval()  # a new module trains by default: export warns
        wrapper.output_names = _output_names(model, inputs, wrapper.extra)
        axes = {0: "batch", 2: "sequence"} if _is_multiple_choice(model) else {0: "batch", 1: "sequence"}
        path.parent.mkdir(parents=True, exist_ok=True)
        with torch.no_grad():
            torch.onnx.export(
                wrapper,
                tuple(inputs.values()),
                str(path),
                input_names=input_names,
                output_names=wrapper.output_names,
                dynamic_shapes=(tuple(dict(axes) for _ in input_names),),  # one entry: forward(*inputs)
                opset_version=opset_version,
                dynamo=True,
                external_data=False,
                optimize=True,
                verbose=False,
            )
        if verify:
            check_onnx(model, path, atol=atol, batch_size=batch_size + 1, sequence_length=max(2, sequence_length - 3))
    finally:
        model.train(was_training)
    return path


def onnx_session(path: str | os.PathLike, threads: int | None = None, force_spinning_stop: bool = True):
    """An onnxruntime CPU ``InferenceSession`` for ``path`` with all graph optimisations (``threads`` intra-op
    threads; onnxruntime's default when ``None``).

    Unless ``force_spinning_stop=False``, its threads stop busy-waiting when a run ends (onnxruntime's
    ``session.force_spinning_stop``): otherwise they keep spinning after ``run`` returns and take the cores from
    whatever runs next, e.g. another session. Three MiniLM-sized sessions timed in turns on 2 cores: a dense one's
    batch-1 run took 46.7 ms with onnxruntime's default, 16.0 ms with this, 16.3 ms alone.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if force_spinning_stop:
        options.add_session_config_entry("session.force_spinning_stop", "1")
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def check_onnx(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    atol: float = 1e-4,
    batch_size: int = 3,
    sequence_length: int = 5,
    session=None,
) -> float:
    """Run the ONNX file in onnxruntime and ``model`` in PyTorch on the same random inputs; return the largest
    output difference relative to ``max(1, max |output|)``, or raise a ``RuntimeError`` above ``atol``."""
    session = session or onnx_session(path)
    inputs = example_inputs(model, batch_size, sequence_length, seed=1)
    extra = {"use_cache": False} if "use_cache" in inspect.signature(model.forward).parameters else {}
    with torch.no_grad():
        expected = model(**inputs, **extra, return_dict=True)
    feeds = {arg.name: inputs[arg.name].numpy() for arg in session.get_inputs()}
    worst = 0.0
    for arg, actual in zip(session.get_outputs(), session.run(None, feeds)):
        reference = expected[arg.name].float()
        scale = max(1.0, reference.abs().max().item())
        difference = (torch.from_numpy(actual) - reference).abs().max().item() / scale
        if not math.isfinite(difference) or difference > atol:
            raise RuntimeError(
                f"onnxruntime's `{arg.name}` differs from PyTorch's by {difference:.3g} (relative to max(1, "
                f"max |output|) = {scale:.3g}), above atol={atol} ({path})."
            )
        worst = max(worst, difference)
    return worst


def quantize_onnx_int8(
    path: str | os.PathLike, output_path: str | os.PathLike, *, per_channel: bool = False, min_weight_side: int = 32
) -> Path:
    """Dynamic int8 quantisation (onnxruntime's ``quantize_dynamic``) of an exported model.

    Every ``MatMul``/``Gemm`` whose weight is a constant matrix with both sides at least ``min_weight_side`` (for a
    Kronecker model: the larger factors ``A`` and ``B``; for a dense one: the weight matrices) gets int8 weights with
    one scale per tensor (per column with ``per_channel``); activations are quantised on the fly per call. Products
    with a smaller weight stay float32: for a factor with a side of 2 or 16 (KroneckerBERT_8's and _21's attention
    ``B``), quantising the activations on every call costs more than the tiny product saves (quantising every factor
    made KroneckerBERT_8 1.06x slower than in float32). ``min_weight_side=1`` quantises every one. Embedding lookups
    stay float32.

    The file is first run through onnxruntime's quantisation pre-processing (``quant_pre_process``: constant folding),
    which turns the exported graph's reshaped views of each factor into constant weights: without it
    ``quantize_dynamic`` sees no constant operand in a Kronecker product and leaves every factor in float32. A product
    whose constant is its left operand (a wide map's ``a @ X``, ``kronecker._kron_linear_2d``) stays float32. Written
    through a temporary file beside ``output_path``: nothing is left there on failure. Returns ``output_path``.
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    path, output_path = Path(path), Path(output_path)
    if not path.is_file():
        raise OSError(f"No ONNX file at {str(path)!r} to quantise.")
    if output_path.resolve() == path.resolve():
        raise ValueError(f"output_path must differ from path; both are {str(path)!r}.")
    if not (isinstance(min_weight_side, int) and min_weight_side >= 1):
        raise ValueError(f"min_weight_side must be a positive integer; got {min_weight_side!r}.")
    output_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=output_path.parent, prefix=f".{output_path.name}.") as staging:
        folded, quantized = Path(staging) / "folded.onnx", Path(staging) / output_path.name
        # Symbolic shape inference gives up on the exporter's dynamic shapes; constant folding is what matters here.
        quant_pre_process(str(path), str(folded), skip_symbolic_shape=True)
        quantize_dynamic(
            folded, quantized, op_types_to_quantize=["MatMul", "Gemm"], per_channel=per_channel,
            weight_type=QuantType.QInt8, nodes_to_exclude=_small_weight_products(onnx.load(folded), min_weight_side),
        )
        os.replace(quantized, output_path)
    return output_path


def _small_weight_products(model, min_weight_side: int) -> list[str]:
    """Names of the ``MatMul``/``Gemm`` nodes of an ONNX ``model`` whose constant weight has a side below
    ``min_weight_side``."""
    shapes = {init.name: tuple(init.dims) for init in model.graph.initializer}
    small = []
    for node in model.graph.node:
        if node.op_type in ("MatMul", "Gemm") and len(node.input) > 1 and node.input[1] in shapes:
            shape = shapes[node.input[1]]
            if len(shape) == 2 and min(shape) < min_weight_side:
                small.append(node.name)
                if node.op_type == "Gemm":  # quantize_dynamic first rewrites a Gemm as `<name>_MatMul` + Add
                    small.append(f"{node.name}_MatMul")
    return small
