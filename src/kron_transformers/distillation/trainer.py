# Copyright 2026 The kron-transformers Authors. Licensed under the Apache License, Version 2.0.
"""``IlkdTrainer``: intermediate-layer knowledge distillation (KroneckerBERT, KnGPT2) as a Transformers ``Trainer``.

One student forward and one teacher forward (no grad) per batch, both with hidden states and, when attention is
distilled, recorded pre-softmax attention scores; each loss of ``losses.py`` on its pair of tensors; the weighted sum
is the training loss and each term is logged under its own name. Everything else (optimisation, checkpoints, DDP,
logging backends) is the base ``Trainer``'s.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import PreTrainedModel, Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from transformers.training_args import ParallelMode

from .attention import AttentionRecord, record_attention_scores
from .losses import attention_kl_loss, attention_score_loss, hidden_state_loss, logit_mse_loss, soft_target_loss


PROJECTION_WEIGHTS_NAME = "ilkd_projection.safetensors"
LOSS_COMPONENTS = ("embedding", "hidden", "attention", "logits", "task")
# The Trainer writes trainer_state.json last in a checkpoint: its presence (and validity) marks a finished save.
TRAINER_STATE_NAME = "trainer_state.json"
_CHECKPOINT_PATTERN = re.compile(rf"{PREFIX_CHECKPOINT_DIR}-(\d+)")

logger = logging.getLogger(__name__)


def last_complete_checkpoint(output_dir: str | os.PathLike) -> str | None:
    """The newest ``checkpoint-N`` folder of ``output_dir`` that a ``Trainer`` finished writing, or ``None``.

    ``get_last_checkpoint`` takes the highest ``N`` even when a killed run left it half-written, and resuming from it
    then fails. A checkpoint is complete when its ``trainer_state.json`` (written last) parses; each newer incomplete
    one is skipped with a warning (and left in place: the next save of that step replaces it).
    """
    if not os.path.isdir(output_dir):
        return None
    numbered = []
    for name in os.listdir(output_dir):
        match = _CHECKPOINT_PATTERN.fullmatch(name)
        if match is not None and os.path.isdir(os.path.join(output_dir, name)):
            numbered.append((int(match.group(1)), os.path.join(output_dir, name)))
    skipped = []
    for _, path in sorted(numbered, reverse=True):
        try:
            with open(os.path.join(path, TRAINER_STATE_NAME), encoding="utf-8") as file:
                json.load(file)
        except (OSError, ValueError):
            skipped.append(path)
            continue
        for incomplete in skipped:
            logger.warning(f"Skipping the incomplete checkpoint {incomplete} (no valid {TRAINER_STATE_NAME}: a run "
                           f"stopped while writing it); resuming from {path}.")
        return path
    for incomplete in skipped:
        logger.warning(f"Skipping the incomplete checkpoint {incomplete} (no valid {TRAINER_STATE_NAME}): no "
                       "complete checkpoint to resume from.")
    return None


@dataclass
class IlkdTrainingArguments(TrainingArguments):
    """``TrainingArguments`` plus the weights and options of the distillation loss.

    The training loss is ``alpha_embedding * L_emb + alpha_hidden * L_hidden + alpha_attention * L_attn +
    alpha_logits * L_logits + alpha_task * L_task``, where the layer terms are averaged over the student's layers.
    """

    alpha_embedding: float = field(default=1.0, metadata={"help": "Weight of the embedding-output MSE."})
    alpha_hidden: float = field(default=1.0, metadata={"help": "Weight of the per-layer hidden-state MSE."})
    alpha_attention: float = field(default=1.0, metadata={"help": "Weight of the per-layer attention loss."})
    alpha_logits: float = field(
        default=1.0, metadata={"help": "Weight of the soft-target loss (KL with temperature, MSE for regression)."}
    )
    alpha_task: float = field(default=0.0, metadata={"help": "Weight of the student's own loss on the labels."})
    temperature: float = field(default=1.0, metadata={"help": "Softmax temperature of the soft-target loss."})
    attention_loss: Literal["mse_scores", "kl"] = field(
        default="mse_scores",
        metadata={
            "help": "mse_scores: MSE on pre-softmax scores QK^T/sqrt(d) (KroneckerBERT); kl: KL between attention "
            "probabilities (KnGPT2)."
        },
    )
    loss_normalization: Literal["none", "teacher"] = field(
        default="none",
        metadata={
            "help": "teacher: divide each squared-error term (the embedding output, every layer's hidden states and, "
            "with mse_scores, every layer's attention scores) by the teacher's own mean square of that tensor, "
            "measured once on the first training batch, so that no term dominates the loss by its scale alone "
            "(attention scores are 2-3 orders of magnitude above hidden states). KL terms are scale-free: unchanged."
        },
    )
    freeze_position_embeddings: bool = field(
        default=False,
        metadata={
            "help": "Keep the student's learned absolute position embeddings (BERT's position_embeddings, GPT-2's "
            "wpe) as they are. Distilled on inputs shorter than the model's maximum, only the positions seen move; "
            "those beyond keep the teacher's values while the layers adapt to the moved ones. Frozen, every "
            "position stays consistent with the others."
        },
    )
    layer_map: list[int] | None = field(
        default=None,
        metadata={
            "help": "Teacher layer (0-based) distilled into each student layer. Default: identity when the depths "
            "match, the uniform TinyBERT mapping when the student is shallower."
        },
    )

    def __post_init__(self):
        super().__post_init__()
        for name in ("alpha_embedding", "alpha_hidden", "alpha_attention", "alpha_logits", "alpha_task"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0; got {value!r}.")
        if not any(getattr(self, f"alpha_{name}") > 0 for name in LOSS_COMPONENTS):
            raise ValueError("At least one of alpha_embedding, alpha_hidden, alpha_attention, alpha_logits, "
                             "alpha_task must be positive; all are 0.")
        temperature = self.temperature
        if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0):
            raise ValueError(f"temperature must be a finite number > 0; got {self.temperature!r}.")
        if self.attention_loss not in ("mse_scores", "kl"):
            raise ValueError(f"attention_loss must be 'mse_scores' or 'kl'; got {self.attention_loss!r}.")
        if self.loss_normalization not in ("none", "teacher"):
            raise ValueError(f"loss_normalization must be 'none' or 'teacher'; got {self.loss_normalization!r}.")
        if self.layer_map is not None:
            self.layer_map = list(self.layer_map)
            bad = [layer for layer in self.layer_map if not (isinstance(layer, int) and layer >= 0)]
            if bad or not self.layer_map:
                raise ValueError(
                    f"layer_map must be a non-empty list of teacher layer indices >= 0; got {self.layer_map!r}."
                )


# Names Transformers gives learned absolute position embeddings: BERT/RoBERTa/DistilBERT, GPT-2, OPT/BART.
POSITION_EMBEDDING_NAMES = ("position_embeddings", "wpe", "embed_positions")


def learned_position_embeddings(model: nn.Module) -> dict[str, nn.Embedding]:
    """The model's learned absolute position embeddings by module name (empty for rotary or relative positions)."""
    return {name: module for name, module in model.named_modules()
            if isinstance(module, nn.Embedding) and name.rsplit(".", 1)[-1] in POSITION_EMBEDDING_NAMES}


def default_layer_map(student_layers: int, teacher_layers: int) -> list[int]:
    """Teacher layer for each student layer: identity for equal depths, else TinyBERT's uniform ``g(m) = m * T / S``.

    Student layer ``i`` (0-based) learns from teacher layer ``(i + 1) * teacher_layers // student_layers - 1``, so the
    last student layer always learns from the last teacher layer.
    """
    if student_layers > teacher_layers:
        raise ValueError(
            f"The student has more layers ({student_layers}) than the teacher ({teacher_layers}); pass layer_map "
            f"with one teacher layer in [0, {teacher_layers - 1}] for each of the {student_layers} student layers."
        )
    return [(i + 1) * teacher_layers // student_layers - 1 for i in range(student_layers)]


def _head_kind(model: nn.Module) -> str:
    """The task head named by the class (``ForMaskedLM``, ``LMHeadModel``, ``ForSequenceClassification``, ...)."""
    match = re.search(r"(For\w+|LMHeadModel|Model)$", type(model).__name__)
    return match.group(1) if match else type(model).__name__


class HiddenStateProjection(nn.Module):
    """Learned maps from the student's hidden width to the teacher's (TinyBERT's ``W_e`` and ``W_h``).

    ``embedding`` maps the embedding output and ``hidden`` every layer's output: ``(..., student) -> (..., teacher)``.
    Trained with the student, saved beside it as ``ilkd_projection.safetensors``, never part of the student.
    """

    def __init__(
        self, student_hidden: int, teacher_hidden: int, embedding: bool, hidden: bool, device=None, dtype=None
    ):
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.embedding = nn.Linear(student_hidden, teacher_hidden, **factory) if embedding else None
        self.hidden = nn.Linear(student_hidden, teacher_hidden, **factory) if hidden else None


class _ProjectionCallback(TrainerCallback):
    """Does for the projection what the training loop does for the model: average its gradients over processes,
    clip them, and clear them after each optimizer step."""

    def __init__(self, trainer: IlkdTrainer):
        self.trainer = trainer

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        parameters = [p for p in self.trainer.projection.parameters() if p.grad is not None]
        world_size = self.trainer.accelerator.num_processes
        if world_size > 1:
            for parameter in parameters:
                torch.distributed.all_reduce(parameter.grad)
                parameter.grad /= world_size
        if args.max_grad_norm is not None and args.max_grad_norm > 0 and parameters:
            # Runs after the loop's clipping of the model, so mixed-precision gradients are already unscaled.
            torch.nn.utils.clip_grad_norm_(parameters, args.max_grad_norm)

    def on_optimizer_step(self, args, state, control, **kwargs):
        self.trainer.projection.zero_grad(set_to_none=True)


class IlkdTrainer(Trainer):
    """A ``Trainer`` that distils ``teacher_model`` into ``model`` layer by layer.

    Args:
        model: the student (any Transformers model with a head: masked LM, causal LM, sequence classification,
            question answering, ...; dense or Kronecker).
        args: ``IlkdTrainingArguments``.
        teacher_model: the teacher, same vocabulary and head; frozen, put in eval mode and moved to the student's
            device (its dtype is kept: losses are computed in at least float32).
        *trainer_args, **kwargs: as for ``Trainer``.

    Raises:
        ValueError: at construction, when teacher and student cannot be distilled as configured (different
            vocabularies or heads, an attention loss across different head counts, a layer map out of range, ...).

    The loss is averaged exactly over the whole accumulated batch on all processes: each term is a sum over tokens
    (or sequences) divided by their number in the accumulated batch, so ``k`` accumulation steps of batch ``b`` give
    the update of one step of batch ``k * b`` even when micro-batches have different numbers of real tokens.
    Evaluation (``model.eval()``) uses the student's own loss, with the user's attention backend.
    """

    # `compute_loss` normalises by the item counts of the whole accumulated batch itself (see `get_batch_samples`).
    loss_is_scaled_for_ga = True

    def __init__(
        self, model=None, args: IlkdTrainingArguments | None = None, *trainer_args, teacher_model=None, **kwargs
    ):
        if args is None:
            args = IlkdTrainingArguments(output_dir="trainer_output")
        if not isinstance(args, IlkdTrainingArguments):
            raise TypeError(f"IlkdTrainer needs IlkdTrainingArguments; got {type(args).__name__}.")
        if teacher_model is None:
            raise ValueError("IlkdTrainer needs a teacher: pass teacher_model=.")
        if kwargs.get("compute_loss_func") is not None:
            raise ValueError("IlkdTrainer computes its own loss; compute_loss_func is not supported.")
        if args.label_smoothing_factor != 0:
            raise ValueError(
                f"label_smoothing_factor={args.label_smoothing_factor} is not supported: the task loss is the "
                "student's own loss; set it to 0."
            )
        if teacher_model is model and model is not None:
            raise ValueError(
                "teacher_model is the student itself: freezing the teacher would freeze the student. Pass a separate "
                "copy (copy.deepcopy(model)) or the dense model the student was compressed from."
            )
        if args.freeze_position_embeddings and model is not None:
            position_embeddings = learned_position_embeddings(model)
            if not position_embeddings:
                raise ValueError(
                    f"freeze_position_embeddings=True, but {type(model).__name__} has no learned absolute position "
                    f"embedding (an nn.Embedding named one of {', '.join(POSITION_EMBEDDING_NAMES)}); rotary or "
                    "relative positions have nothing to freeze."
                )
            for module in position_embeddings.values():
                module.requires_grad_(False)  # before Trainer builds the optimizer, which takes trainable tensors only
        super().__init__(model, args, *trainer_args, **kwargs)

        student = self.model
        self.layer_map = _check_distillable(student, teacher_model, args)
        device = next(student.parameters()).device
        self.teacher_model = teacher_model.to(device).eval().requires_grad_(False)
        if args.alpha_attention > 0:
            if getattr(args, "activation_checkpointing", False) or getattr(args, "gradient_checkpointing", False):
                raise ValueError(
                    "alpha_attention > 0 cannot be combined with activation checkpointing: the recorded attention "
                    "scores would not be recomputed in the backward pass. Disable one of them."
                )
            self._check_no_gradient_checkpointing(student)
            if args.parallel_mode == ParallelMode.NOT_DISTRIBUTED:
                raise ValueError(_DATA_PARALLEL_MESSAGE.format(n_gpu=args.n_gpu))
            for model_to_check in (student, self.teacher_model):
                with record_attention_scores(model_to_check):
                    pass

        self.projection = None
        student_hidden, teacher_hidden = student.config.hidden_size, self.teacher_model.config.hidden_size
        if student_hidden != teacher_hidden and (args.alpha_embedding > 0 or args.alpha_hidden > 0):
            self.projection = HiddenStateProjection(
                student_hidden, teacher_hidden, embedding=args.alpha_embedding > 0, hidden=args.alpha_hidden > 0,
                device=device, dtype=next(student.parameters()).dtype,
            )
            if self.optimizer is not None:
                raise ValueError(
                    f"The student's hidden size ({student_hidden}) differs from the teacher's ({teacher_hidden}), so "
                    "IlkdTrainer trains a projection that a user-built optimizer cannot include; pass "
                    "optimizer_cls_and_kwargs instead of optimizers."
                )
            self.add_callback(_ProjectionCallback(self))

        self._loss_scales: dict[str, list[torch.Tensor]] | None = None
        self._shift_labels = student.can_generate() and not getattr(student.config, "is_encoder_decoder", False)
        self._normalizers: dict[str, torch.Tensor] | None = None
        self._component_sums: dict[str, torch.Tensor] = {}
        self._component_window_start = 0

    # ---- optimisation ----------------------------------------------------------------------------------------

    def create_optimizer(self, model=None):
        optimizer = super().create_optimizer(model)
        in_optimizer = {id(p) for group in optimizer.param_groups for p in group["params"]}
        if self.projection is not None and not any(id(p) in in_optimizer for p in self.projection.parameters()):
            weights = [p for name, p in self.projection.named_parameters() if name.endswith("weight")]
            biases = [p for name, p in self.projection.named_parameters() if name.endswith("bias")]
            optimizer.add_param_group({"params": weights, "weight_decay": self.args.weight_decay})
            optimizer.add_param_group({"params": biases, "weight_decay": 0.0})
        return optimizer

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        batch_samples, num_items_in_batch = super().get_batch_samples(epoch_iterator, num_batches, device)
        counts = torch.zeros(3, dtype=torch.float64, device=device)
        for batch in batch_samples:
            counts += self._count_items(batch, device)
        world_size = self.accelerator.num_processes
        if world_size > 1:
            counts = self.accelerator.gather(counts[None]).sum(0)
        self._normalizers = {
            "tokens": counts[0], "sequences": counts[1], "task_items": counts[2],
            "world_size": torch.tensor(float(world_size), device=device),
        }
        return batch_samples, num_items_in_batch

    def _count_items(self, batch: dict[str, Any], device) -> torch.Tensor:
        """``[real tokens, sequences, label items]`` of one micro-batch, as a float64 tensor on ``device``."""
        input_ids = batch["input_ids"]
        mask = batch.get("attention_mask")
        tokens = mask.sum() if mask is not None else torch.tensor(input_ids.numel())
        task_items = torch.tensor(0)
        if "labels" in batch:
            labels = batch["labels"]
            if labels.is_floating_point():
                task_items = torch.tensor(labels.numel())
            else:
                task_items = (labels[..., 1:] if self._shift_labels else labels).ne(-100).sum()
        elif "start_positions" in batch:
            task_items = torch.tensor(input_ids.shape[0])
        values = [tokens, torch.tensor(input_ids.shape[0]), task_items]
        return torch.stack([value.to(device=device, dtype=torch.float64) for value in values])

    # ---- the loss --------------------------------------------------------------------------------------------

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if not model.training:
            return super().compute_loss(model, inputs, return_outputs=return_outputs)
        if self.args.alpha_attention > 0:
            if isinstance(model, nn.DataParallel):
                raise ValueError(_DATA_PARALLEL_MESSAGE.format(n_gpu=len(model.device_ids)))
            self._check_no_gradient_checkpointing(self.accelerator.unwrap_model(model))
        components, outputs = self.distillation_losses(model, inputs)
        # A component of weight 0 (the task loss when alpha_task=0) is logged but kept out of the backward pass.
        weighted = [getattr(self.args, f"alpha_{name}") * value for name, value in components.items()
                    if getattr(self.args, f"alpha_{name}") > 0]
        loss = sum(weighted)

        if not self._component_sums:
            self._component_window_start = self.state.global_step
        for name, value in components.items():
            value = value.detach()
            self._component_sums[name] = self._component_sums.get(name, torch.zeros_like(value)) + value
        return (loss, outputs) if return_outputs else loss

    def distillation_losses(self, model, inputs: dict[str, Any]) -> tuple[dict[str, torch.Tensor], Any]:
        """Each loss component (unweighted) and the student's outputs for one micro-batch.

        Components are already divided by the item counts of the accumulated batch (and multiplied by the number of
        processes, which data parallelism averages over), so they add up over micro-batches to the batch's loss.
        """
        args = self.args
        student = self.accelerator.unwrap_model(model)
        _token_mask(inputs)  # a mask the losses cannot read is refused before the forward passes
        want_hidden = args.alpha_embedding > 0 or args.alpha_hidden > 0
        want_attention = args.alpha_attention > 0
        teacher_inputs = {k: v for k, v in inputs.items() if k not in self.label_names}

        with torch.no_grad(), self._recording(self.teacher_model, want_attention) as teacher_records:
            teacher_outputs = self.teacher_model(**teacher_inputs, output_hidden_states=want_hidden)
        with self._recording(student, want_attention) as student_records:
            outputs = model(**inputs, output_hidden_states=want_hidden)

        device = inputs["input_ids"].device
        mask = _token_mask(inputs)
        if args.loss_normalization == "teacher" and self._loss_scales is None:
            # Outside train() (a direct call): measure on this batch.
            self._loss_scales = self.measure_teacher_scales([inputs])
        scales = self._loss_scales if args.loss_normalization == "teacher" else None
        normalizers = self._normalizers if self._normalizers is not None else self._count_local(inputs, device)
        world_size = normalizers["world_size"]
        # Losses are computed in at least float32 (float64 for a float64 student): scale them in that dtype.
        dtype = torch.promote_types(next(student.parameters()).dtype, torch.float32)
        per_token = (world_size / normalizers["tokens"].clamp(min=1)).to(dtype)
        per_sequence = (world_size / normalizers["sequences"].clamp(min=1)).to(dtype)
        num_layers = len(self.layer_map)

        components: dict[str, torch.Tensor] = {}
        if want_hidden:
            student_hidden, teacher_hidden = outputs.hidden_states, teacher_outputs.hidden_states
            projection = self.projection
        if args.alpha_embedding > 0:
            student_embedding = student_hidden[0]
            if projection is not None:
                student_embedding = projection.embedding(student_embedding)
            loss = hidden_state_loss(student_embedding, teacher_hidden[0], mask, reduction="sum")
            components["embedding"] = loss * per_token / (scales["hidden"][0] if scales else 1)
        if args.alpha_hidden > 0:
            total = 0
            for student_layer, teacher_layer in enumerate(self.layer_map):
                hidden = student_hidden[student_layer + 1]
                if projection is not None:
                    hidden = projection.hidden(hidden)
                loss = hidden_state_loss(hidden, teacher_hidden[teacher_layer + 1], mask, reduction="sum")
                total = total + loss / (scales["hidden"][teacher_layer + 1] if scales else 1)
            components["hidden"] = total * per_token / num_layers
        if want_attention:
            components["attention"] = (
                self._attention_loss(student_records, teacher_records, mask, scales) * per_token / num_layers
            )
        if args.alpha_logits > 0:
            if "logits" not in outputs and "start_logits" not in outputs:
                raise ValueError(
                    f"alpha_logits={args.alpha_logits} but {type(student).__name__} returns no logits (outputs: "
                    f"{list(outputs.keys())}); distil a model with a head or set alpha_logits=0."
                )
            per_item = per_sequence if self._is_sequence_level(outputs) else per_token
            components["logits"] = self._logit_loss(student, outputs, teacher_outputs, mask) * per_item
        if outputs.get("loss") is not None:
            # The student's loss is a mean over its micro-batch's label items: reweight it to the accumulated batch.
            local_items = self._count_items(inputs, device)[2]
            if local_items.item() > 0:
                share = (local_items * world_size / normalizers["task_items"].clamp(min=1)).to(outputs["loss"].dtype)
                components["task"] = outputs["loss"] * share
            else:
                # No labelled item here (an MLM micro-batch without a masked token): the mean is 0/0 = NaN, and
                # NaN x 0 is NaN. The term is an exact zero that stays connected to the graph (same parameters
                # reached on every process, as DDP expects) without carrying the NaN.
                head = outputs["logits"] if "logits" in outputs else outputs.get("start_logits")
                zero = torch.zeros((), dtype=outputs["loss"].dtype, device=outputs["loss"].device)
                components["task"] = zero if head is None else zero + head.sum() * 0
        elif args.alpha_task > 0:
            raise ValueError(
                f"alpha_task={args.alpha_task} but the student returned no loss: the batch has no labels "
                f"(keys: {sorted(inputs)})."
            )
        return components, outputs

    @staticmethod
    def _check_no_gradient_checkpointing(student: nn.Module) -> None:
        # `is_gradient_checkpointing` is the name before transformers 5.23 (a deprecated alias since).
        name = "is_activation_checkpointing" if hasattr(type(student), "is_activation_checkpointing") else (
            "is_gradient_checkpointing"
        )
        if getattr(student, name, False):
            raise ValueError(
                "alpha_attention > 0 but gradient checkpointing is enabled on the student: the recorded attention "
                "scores would not be recomputed in the backward pass (reentrant checkpointing drops their "
                "gradients). Call model.gradient_checkpointing_disable() or set alpha_attention=0."
            )

    def _count_local(self, inputs, device) -> dict[str, torch.Tensor]:
        counts = self._count_items(inputs, device)
        return {"tokens": counts[0], "sequences": counts[1], "task_items": counts[2],
                "world_size": torch.tensor(1.0, dtype=torch.float64, device=device)}

    @staticmethod
    def _recording(model, enabled: bool):
        return record_attention_scores(model) if enabled else contextlib.nullcontext()

    def _attention_loss(
        self,
        student_records: list[AttentionRecord],
        teacher_records: list[AttentionRecord],
        mask: torch.Tensor | None,
        scales: dict[str, list[torch.Tensor]] | None = None,
    ) -> torch.Tensor:
        student_layers, teacher_layers = len(self.layer_map), self.teacher_model.config.num_hidden_layers
        if len(student_records) != student_layers or len(teacher_records) != teacher_layers:
            raise RuntimeError(
                f"Expected one attention call per layer ({student_layers} in the student, {teacher_layers} in the "
                f"teacher); recorded {len(student_records)} and {len(teacher_records)}. Models with cross-attention "
                "are not supported."
            )
        loss_fn = attention_score_loss if self.args.attention_loss == "mse_scores" else attention_kl_loss
        # Padding queries attend to real keys in bidirectional models; they must not count either.
        query_mask = mask[:, None, :, None] if mask is not None else None
        pair_masks = {}  # every layer of a model receives the same mask tensor: combine each pair once
        total = 0
        for student_layer, teacher_layer in enumerate(self.layer_map):
            student_record, teacher_record = student_records[student_layer], teacher_records[teacher_layer]
            key = (id(student_record.mask), id(teacher_record.mask))
            if key not in pair_masks:
                pair_masks[key] = _and_masks(_and_masks(student_record.mask, teacher_record.mask), query_mask)
            loss = loss_fn(student_record.scores, teacher_record.scores, pair_masks[key], reduction="sum")
            if scales is not None and self.args.attention_loss == "mse_scores":
                loss = loss / scales["attention"][teacher_layer]
            total = total + loss
        return total

    def _attention_pair_mask(self, record: AttentionRecord, mask: torch.Tensor | None) -> torch.Tensor | None:
        return _and_masks(record.mask, mask[:, None, :, None] if mask is not None else None)

    @torch.no_grad()
    def measure_teacher_scales(self, batches: list[dict[str, Any]]) -> dict[str, list[torch.Tensor]]:
        """The teacher's mean square of each distilled tensor over ``batches`` (and all processes): ``hidden`` (the
        embedding output, then every layer's output, per real token) and ``attention`` (every layer's pre-softmax
        scores, per query row the loss counts). ``loss_normalization="teacher"`` divides each squared-error term by
        them."""
        args = self.args
        want_attention = args.alpha_attention > 0 and args.attention_loss == "mse_scores"
        sums, counts = 0, 0
        for inputs in batches:
            teacher_inputs = {k: v for k, v in inputs.items() if k not in self.label_names}
            with self._recording(self.teacher_model, want_attention) as records:
                outputs = self.teacher_model(**teacher_inputs, output_hidden_states=True)
            mask = _token_mask(inputs)
            tokens = mask.sum() if mask is not None else torch.tensor(inputs["input_ids"].numel())
            # The loss of an all-zero student is the teacher's square over exactly the items the loss counts.
            hidden = [hidden_state_loss(torch.zeros_like(h), h, mask, reduction="sum") for h in outputs.hidden_states]
            attention, rows = [], []
            for record in records if want_attention else []:
                pair_mask = self._attention_pair_mask(record, mask)
                attention.append(attention_score_loss(torch.zeros_like(record.scores), record.scores, pair_mask,
                                                      reduction="sum"))
                rows.append(pair_mask.any(dim=-1).any(dim=1).sum() if pair_mask is not None else tokens)
            sums = sums + torch.stack(hidden + attention).to(torch.float64)
            counts = counts + torch.stack([tokens] * len(hidden) + rows).to(device=sums.device, dtype=torch.float64)
        if self.accelerator.num_processes > 1:
            sums, counts = self.accelerator.reduce(torch.stack([sums, counts]), reduction="sum")
        values = (sums / counts.clamp(min=1)).clamp(min=torch.finfo(torch.float32).tiny)
        n_hidden = len(hidden)
        return {"hidden": list(values[:n_hidden]), "attention": list(values[n_hidden:])}

    @staticmethod
    def _is_sequence_level(outputs) -> bool:
        return "start_logits" in outputs or outputs["logits"].dim() == 2

    def _logit_loss(self, student, outputs, teacher_outputs, mask: torch.Tensor | None) -> torch.Tensor:
        temperature = self.args.temperature
        if "start_logits" in outputs:
            # Span heads: a distribution over the real positions of each sequence, for the start and the end.
            return sum(
                soft_target_loss(outputs[key], teacher_outputs[key], temperature, class_mask=mask, reduction="sum")
                for key in ("start_logits", "end_logits")
            ) / 2
        student_logits, teacher_logits = outputs["logits"], teacher_outputs["logits"]
        if student_logits.dim() == 3:
            return soft_target_loss(student_logits, teacher_logits, temperature, mask=mask, reduction="sum")
        problem_type = getattr(student.config, "problem_type", None)
        if problem_type in ("regression", "multi_label_classification") or student_logits.shape[-1] == 1:
            return logit_mse_loss(student_logits, teacher_logits, reduction="sum")
        return soft_target_loss(student_logits, teacher_logits, temperature, reduction="sum")

    # ---- logging ---------------------------------------------------------------------------------------------

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Adds ``loss_<component>`` to training logs: unweighted, averaged over the logging interval and processes."""
        if "loss" in logs and self._component_sums:
            names = list(self._component_sums)
            sums = torch.stack([self._component_sums[name].to(torch.float64) for name in names])
            if self.accelerator.num_processes > 1:
                sums = self.accelerator.gather(sums[None]).mean(0)
            steps = max(self.state.global_step - self._component_window_start, 1)
            for name, value in zip(names, sums.tolist()):
                logs[f"loss_{name}"] = value / steps
            self._component_sums = {}
        super().log(logs, start_time)

    # ---- the projection's checkpoints ------------------------------------------------------------------------

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """Saves the student; in a training checkpoint (``checkpoint-N``) also the projection, which resuming needs.

        The projection is a training device, not part of the model: a model folder (``trainer.save_model()``, what
        ``push_to_hub`` uploads) holds the student alone.
        """
        super().save_model(output_dir, _internal_call)
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        is_checkpoint = _CHECKPOINT_PATTERN.fullmatch(os.path.basename(os.path.normpath(output_dir))) is not None
        if self.projection is not None and self.args.should_save and is_checkpoint:
            os.makedirs(output_dir, exist_ok=True)
            state = {name: tensor.detach().contiguous() for name, tensor in self.projection.state_dict().items()}
            save_file(state, os.path.join(output_dir, PROJECTION_WEIGHTS_NAME))

    def train(self, resume_from_checkpoint: str | bool | None = None, *train_args, **kwargs):
        if resume_from_checkpoint is True:
            resume_from_checkpoint = last_complete_checkpoint(self.args.output_dir)
            if resume_from_checkpoint is None:
                raise ValueError(f"No valid checkpoint found in output directory ({self.args.output_dir}).")
        if resume_from_checkpoint and self.projection is not None:
            path = os.path.join(resume_from_checkpoint, PROJECTION_WEIGHTS_NAME)
            if not os.path.isfile(path):
                raise OSError(
                    f"{resume_from_checkpoint} has no {PROJECTION_WEIGHTS_NAME}: it was not saved by an IlkdTrainer "
                    "distilling into a student of this hidden size."
                )
            device = next(self.projection.parameters()).device
            self.projection.load_state_dict(load_file(path, device=str(device)))
        self._loss_scales = None
        if self.args.loss_normalization == "teacher":
            # Measured on the first accumulated batch of the training order, before any step, so that a resumed run
            # and any split of that batch into micro-batches measure the same scales; the RNG is restored so that
            # the training order itself is unaffected.
            rng_state = torch.get_rng_state()
            try:
                loader = iter(self.get_train_dataloader())
                first = [self._prepare_inputs(batch) for _, batch in zip(range(self.args.gradient_accumulation_steps),
                                                                         loader)]
            finally:
                torch.set_rng_state(rng_state)
            self._loss_scales = self.measure_teacher_scales(first)
        try:
            return super().train(resume_from_checkpoint, *train_args, **kwargs)
        finally:
            # The counts belong to the training loop's accumulation windows; a later direct call counts its own batch.
            self._normalizers = None
            self._component_sums = {}


_DATA_PARALLEL_MESSAGE = (
    "alpha_attention > 0 cannot run under nn.DataParallel ({n_gpu} GPUs in one process): its replicas run in threads "
    "that do not see the attention recorder, so the attention loss would be computed from nothing. Launch one "
    "process per GPU (torchrun / accelerate launch: DistributedDataParallel) or set alpha_attention=0."
)


def _token_mask(inputs: dict[str, Any]) -> torch.Tensor | None:
    """The boolean ``(sequences, seq)`` mask of real tokens (``None``: every token is real).

    Multiple-choice inputs ``(batch, choices, seq)`` are flattened as the model flattens them. Raises a
    ``ValueError`` for a mask that is not a 0/1 mask of ``input_ids``' shape (an additive float mask with -1e4 or
    ``finfo.min`` entries would be read as "attend" by the models and inverted by a boolean cast).
    """
    input_ids, mask = inputs["input_ids"], inputs.get("attention_mask")
    if mask is None:
        return None
    if mask.shape != input_ids.shape:
        raise ValueError(
            f"attention_mask must have the shape of input_ids {tuple(input_ids.shape)} (1 for a real token, 0 for "
            f"padding); got {tuple(mask.shape)}. Pass the tokenizer's mask, not an extended or 4D one."
        )
    if mask.is_floating_point() or mask.dtype != torch.bool:
        bad = mask[(mask != 0) & (mask != 1)]
        if bad.numel():
            raise ValueError(
                f"attention_mask must hold 0 and 1 (or booleans); got values such as {bad[0].item():g}. An additive "
                "mask (0 to attend, a large negative number for padding) cannot be used: pass the tokenizer's mask."
            )
    return mask.to(dtype=torch.bool).reshape(-1, input_ids.shape[-1])


def _final_norm(model: nn.Module) -> str | None:
    """The name of the norm applied after the last layer (GPT-2's ``ln_f``), which ends ``hidden_states[-1]``."""
    base = getattr(model, "base_model", model)
    for name in ("ln_f", "norm", "final_layer_norm", "final_layernorm"):
        if isinstance(getattr(base, name, None), nn.Module):
            return name
    return None


def _and_masks(first: torch.Tensor | None, second: torch.Tensor | None) -> torch.Tensor | None:
    if first is None:
        return second
    if second is None:
        return first
    return first & second


def _check_distillable(student: PreTrainedModel, teacher: PreTrainedModel, args: IlkdTrainingArguments) -> list[int]:
    """The layer map; a ``ValueError`` for a teacher/student pair that cannot be distilled as configured."""
    student_config, teacher_config = student.config, teacher.config
    if student_config.vocab_size != teacher_config.vocab_size:
        raise ValueError(
            f"Teacher and student must share a vocabulary: the teacher has vocab_size={teacher_config.vocab_size}, "
            f"the student vocab_size={student_config.vocab_size}."
        )
    student_head, teacher_head = _head_kind(student), _head_kind(teacher)
    if student_head != teacher_head:
        raise ValueError(
            f"Teacher and student must have the same head: the teacher is a {type(teacher).__name__} ({teacher_head}),"
            f" the student a {type(student).__name__} ({student_head})."
        )
    if "Classification" in student_head and student_config.num_labels != teacher_config.num_labels:
        raise ValueError(
            "Teacher and student must predict the same labels: the teacher has "
            f"num_labels={teacher_config.num_labels}, the student num_labels={student_config.num_labels}."
        )
    if args.alpha_attention > 0 and student_config.num_attention_heads != teacher_config.num_attention_heads:
        raise ValueError(
            f"The attention loss compares heads one to one, but the teacher has num_attention_heads="
            f"{teacher_config.num_attention_heads} and the student {student_config.num_attention_heads}; use a "
            "student with the teacher's head count or set alpha_attention=0."
        )
    teacher_parameters = {id(p) for p in teacher.parameters()}
    shared = [name for name, p in student.named_parameters() if id(p) in teacher_parameters]
    if shared:
        raise ValueError(
            f"Teacher and student share {len(shared)} parameter{'s' if len(shared) > 1 else ''} "
            f"({', '.join(shared[:3])}{', ...' if len(shared) > 3 else ''}): freezing the teacher would freeze them in the student. Pass a "
            "teacher with its own weights (copy.deepcopy)."
        )
    student_layers, teacher_layers = student_config.num_hidden_layers, teacher_config.num_hidden_layers
    if args.layer_map is None:
        layer_losses = args.alpha_hidden > 0 or args.alpha_attention > 0
        return default_layer_map(student_layers, teacher_layers) if layer_losses else []
    if len(args.layer_map) != student_layers:
        raise ValueError(
            f"layer_map needs one teacher layer per student layer: the student has {student_layers} layers, "
            f"layer_map={args.layer_map} has {len(args.layer_map)} entries."
        )
    out_of_range = [layer for layer in args.layer_map if not 0 <= layer < teacher_layers]
    if out_of_range:
        raise ValueError(
            f"layer_map={args.layer_map} names teacher layers {out_of_range}, but the teacher has {teacher_layers} "
            f"layers (valid indices 0 to {teacher_layers - 1})."
        )
    norm = _final_norm(student) or _final_norm(teacher)
    if norm is not None and args.alpha_hidden > 0:
        last_pairs = [(s == student_layers - 1) != (t == teacher_layers - 1) for s, t in enumerate(args.layer_map)]
        if any(last_pairs):
            raise ValueError(
                f"layer_map={args.layer_map} pairs a last layer with a layer that is not last, but "
                f"{type(student).__name__}'s last hidden state is taken after its final norm ({norm}) and the others "
                f"before it: they are not comparable. Use layer_map[-1] = {teacher_layers - 1} and no other entry "
                f"{teacher_layers - 1}, or set alpha_hidden=0."
            )
    return list(args.layer_map)
