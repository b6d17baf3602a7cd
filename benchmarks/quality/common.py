# Copyright 2026 The kron-transformers Authors. Licensed under the Apache License, Version 2.0.
"""What both quality experiments share: resumable training stages, cached results, budgets, tables and plots.

Every stage of an experiment owns a folder under the cache. While it trains, Transformers' ``Trainer`` writes
checkpoints there (weights, optimizer, scheduler, RNG states and the sampler position), so a killed run resumes
where it stopped, on the same batches; the training wall time so far is written beside each checkpoint. A finished
stage leaves ``final.safetensors`` (its weights; ``projection.safetensors`` too for a student distilled through a
width projection) and ``result.json`` (its budget and metrics) and drops its
checkpoints; a later run reads ``result.json`` and skips the stage.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model, save_file, save_model
from transformers import Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_utils import get_last_checkpoint


QUALITY_DIR = Path(__file__).resolve().parent
DEFAULT_CACHE = QUALITY_DIR / "cache"
DEFAULT_RESULTS = QUALITY_DIR.parent / "results"
WALL_TIME_FILE = "wall_time.json"
RESULT_FILE = "result.json"
WEIGHTS_FILE = "final.safetensors"
PROJECTION_FILE = "projection.safetensors"  # IlkdTrainer's learned width projection, when the widths differ


def experiment_parser(doc: str, name: str, smoke_help: str) -> argparse.ArgumentParser:
    """The flags every experiment has: where it caches and writes, smoke mode, seed, threads, checkpoint interval.
    ``resolve_dirs`` fills the folder defaults after parsing."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache_dir", type=Path, default=None,
                        help=f"default benchmarks/quality/cache/{name} (smoke: .../{name}_smoke)")
    parser.add_argument("--results_dir", type=Path, default=None,
                        help="default benchmarks/results (smoke: <cache_dir>/results, so smoke runs never overwrite "
                             "real results)")
    parser.add_argument("--smoke", action="store_true", help=smoke_help)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads; 1 (default) is robust on a machine shared with other jobs, where 2 "
                             "threads on 2 busy cores ran 5-10x slower; use 2 on an idle machine")
    parser.add_argument("--save_steps", type=int, default=100, help="checkpoint interval (resumability)")
    return parser


def resolve_dirs(args, name: str) -> None:
    """Default ``args.cache_dir`` and ``args.results_dir``; a smoke run keeps both inside its own cache."""
    args.cache_dir = args.cache_dir or DEFAULT_CACHE / (f"{name}_smoke" if args.smoke else name)
    args.results_dir = args.results_dir or (args.cache_dir / "results" if args.smoke else DEFAULT_RESULTS)


def setup_runtime(threads: int) -> None:
    """Offline Hub, quiet tokenizers, ``threads`` CPU threads (the experiments are sized for 2 cores)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    torch.set_num_threads(threads)


def write_json(path: Path, payload: Any) -> None:
    """Write ``payload`` as JSON atomically: a killed run never leaves a half-written result that looks finished."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def cached(path: Path, compute: Callable[[], Any]) -> Any:
    """``compute()``'s JSON result, computed once and kept at ``path``."""
    if path.is_file():
        return read_json(path)
    value = compute()
    write_json(path, value)
    return value


class WallClock(TrainerCallback):
    """Training wall time summed over interrupted runs: saved beside every checkpoint, read back on resume."""

    def __init__(self, previous_seconds: float = 0.0):
        self.previous_seconds = previous_seconds
        self.start = time.perf_counter()

    def elapsed(self) -> float:
        return self.previous_seconds + time.perf_counter() - self.start

    def on_save(self, args, state, control, **kwargs):
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if folder.is_dir():
            write_json(folder / WALL_TIME_FILE, {"seconds": self.elapsed(), "step": state.global_step})


def stage_is_done(stage_dir: Path) -> bool:
    return (stage_dir / RESULT_FILE).is_file() and (stage_dir / WEIGHTS_FILE).is_file()


def load_weights(model: torch.nn.Module, stage_dir: Path) -> torch.nn.Module:
    """Load a finished stage's weights into ``model`` (built with the stage's architecture); every tensor must fit."""
    path = stage_dir / WEIGHTS_FILE
    if not path.is_file():
        raise OSError(f"{path} does not exist: stage {stage_dir.name} has not finished (run the experiment again).")
    missing, unexpected = load_model(model, path, strict=False)
    # Tied aliases (GPT-2's lm_head) are stored once and come back through the tie; anything else must match.
    missing = [key for key in missing if not _is_tied_alias(model, key)]
    if missing or unexpected:
        raise ValueError(f"{path} does not fit the model: missing {missing}, unexpected {unexpected}.")
    return model


def _is_tied_alias(model: torch.nn.Module, key: str) -> bool:
    state = model.state_dict()
    pointer = state[key].untyped_storage().data_ptr()
    return any(other != key and value.untyped_storage().data_ptr() == pointer for other, value in state.items())


def run_stage(
    stage_dir: Path,
    make_trainer: Callable[[Path], Trainer],
    evaluate: Callable[[torch.nn.Module], dict[str, float]] | None = None,
    describe: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train one stage to completion, resuming from its last checkpoint; cached in ``stage_dir/result.json``.

    Args:
        stage_dir: the stage's folder (checkpoints while training; ``final.safetensors`` and ``result.json`` after).
        make_trainer: builds the ``Trainer`` (model, data, arguments with ``output_dir=stage_dir``); called only when
            the stage has not finished. Its arguments must set ``max_steps`` and a fixed ``seed``.
        evaluate: metrics of the trained model, stored in the result (``{"accuracy": ...}``).
        describe: extra facts stored in the result (the data, the loss weights, the parameter count, ...).

    Returns:
        ``{"budget": {"steps", "batch_size", "examples_seen", "wall_seconds", "resumed_at_step"}, "metrics": ...,
        **describe}``.
    """
    result_path = stage_dir / RESULT_FILE
    if stage_is_done(stage_dir):
        return read_json(result_path)
    stage_dir.mkdir(parents=True, exist_ok=True)
    trainer = make_trainer(stage_dir)
    if Path(trainer.args.output_dir).resolve() != stage_dir.resolve():
        raise ValueError(f"The trainer writes to {trainer.args.output_dir}, not to the stage folder {stage_dir}.")
    last = get_last_checkpoint(str(stage_dir))
    previous = 0.0
    if last is not None and (Path(last) / WALL_TIME_FILE).is_file():
        previous = read_json(Path(last) / WALL_TIME_FILE)["seconds"]
    clock = WallClock(previous)
    trainer.add_callback(clock)
    print(f"[{stage_dir.name}] training {trainer.args.max_steps} steps"
          + (f", resuming from {Path(last).name}" if last else ""), flush=True)
    trainer.train(resume_from_checkpoint=last)
    wall = clock.elapsed()
    model = trainer.accelerator.unwrap_model(trainer.model)
    save_model(model, str(stage_dir / WEIGHTS_FILE))
    projection = getattr(trainer, "projection", None)
    if projection is not None:
        state = {key: value.detach().contiguous() for key, value in projection.state_dict().items()}
        save_file(state, str(stage_dir / PROJECTION_FILE))
    args = trainer.args
    batch = args.per_device_train_batch_size * args.gradient_accumulation_steps * max(args.world_size, 1)
    steps = trainer.state.global_step
    result = {
        **(describe or {}),
        "budget": {
            "steps": steps,
            "batch_size": batch,
            "examples_seen": steps * batch,
            "train_examples_available": len(trainer.train_dataset) if trainer.train_dataset is not None else None,
            "learning_rate": args.learning_rate,
            "wall_seconds": round(wall, 1),
            "resumed_at_step": int(Path(last).name.split("-")[-1]) if last else None,
        },
        "train_loss_last": _last_train_loss(trainer),
    }
    if evaluate is not None:
        model.eval()
        start = time.perf_counter()
        result["metrics"] = evaluate(model)
        result["eval_seconds"] = round(time.perf_counter() - start, 1)
    write_json(result_path, result)
    # The final weights and result are written: the checkpoints (optimizer states) are no longer needed.
    for checkpoint in stage_dir.glob("checkpoint-*"):
        shutil.rmtree(checkpoint, ignore_errors=True)
    return read_json(result_path)  # as a later run will read it (JSON types)


def _last_train_loss(trainer: Trainer) -> float | None:
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    return losses[-1] if losses else None


def stage_arguments(
    args_class: type[TrainingArguments],
    stage_dir: Path,
    *,
    max_steps: int,
    batch_size: int,
    learning_rate: float,
    seed: int,
    save_steps: int,
    warmup_fraction: float = 0.1,
    weight_decay: float = 0.01,
    **extra,
) -> TrainingArguments:
    """``TrainingArguments`` (or ``IlkdTrainingArguments``) for one resumable stage: linear decay after warm-up, a
    checkpoint every ``save_steps`` (only the latest kept), fixed seeds for the model and the data order; ``extra``
    sets or overrides any other field."""
    return args_class(**{
        "output_dir": str(stage_dir),
        "max_steps": max_steps,
        "per_device_train_batch_size": batch_size,
        "per_device_eval_batch_size": batch_size,
        "learning_rate": learning_rate,
        "warmup_steps": max(int(warmup_fraction * max_steps), 0),
        "lr_scheduler_type": "linear",
        "weight_decay": weight_decay,
        "logging_steps": max(min(50, max_steps // 5), 1),
        "save_strategy": "steps",
        "save_steps": save_steps,
        "save_total_limit": 1,
        "report_to": "none",
        "seed": seed,
        "data_seed": seed,
        "dataloader_num_workers": 0,
        "disable_tqdm": True,
        **extra,
    })


IGNORED_SETTINGS = ("threads", "results_dir", "cache_dir", "variants", "students", "compressions")


def pin_settings(cache_dir: Path, args, ignore: tuple[str, ...] = IGNORED_SETTINGS) -> None:
    """Refuse to continue a cache made with other settings: cached stages are found by name, not by settings, so a
    changed budget would silently mix old and new results. The first run writes ``settings.json``. Which students
    run, the thread count and the results folder may change between runs."""
    settings = {key: (str(value) if isinstance(value, Path) else value)
                for key, value in sorted(vars(args).items()) if key not in ignore}
    path = cache_dir / "settings.json"
    if not path.is_file():
        write_json(path, settings)
        return
    previous = read_json(path)
    changed = [f"{key}: {previous.get(key)!r} then, {value!r} now"
               for key, value in settings.items() if previous.get(key) != value]
    if changed:
        raise ValueError(f"{cache_dir} holds a run made with other settings ({'; '.join(changed)}). Continue it with "
                         "its settings, or pass a new --cache_dir.")


def finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def format_seconds(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


def markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def write_results(results_dir: Path, name: str, payload: dict, markdown: str) -> tuple[Path, Path]:
    """``results_dir/name.json`` and ``results_dir/name.md``."""
    results_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = results_dir / f"{name}.json", results_dir / f"{name}.md"
    write_json(json_path, payload)
    md_path.write_text(markdown.rstrip() + "\n")
    return json_path, md_path


def matplotlib_pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_fidelity(path: Path, students: dict[str, dict], title: str = "") -> Path:
    """Accuracy (snippets, joined reviews of 128 and 256 tokens) and agreement with the teacher on held-out news by
    input length, for the teacher and each student: ``students`` maps a label to its ``fidelity`` dict (as
    ``quickstart.measure_fidelity`` returns it, read back from JSON)."""
    plt = matplotlib_pyplot()
    figure, (accuracy_axis, agreement_axis) = plt.subplots(1, 2, figsize=(12, 4.5))
    teacher = next(iter(students.values()))
    lengths = [64, 128, 256]
    accuracy_axis.plot(lengths, [teacher["snippets"]["teacher"], teacher["long_reviews"]["128"]["teacher"],
                                 teacher["long_reviews"]["256"]["teacher"]], "k-o", label="teacher")
    for label, f in students.items():
        accuracy_axis.plot(lengths, [f["snippets"]["student"], f["long_reviews"]["128"]["student"],
                                     f["long_reviews"]["256"]["student"]], "-o", label=label)
        news = f["news_agreement"]
        agreement_axis.plot([int(k) for k in news], [v["agreement"] for v in news.values()], "-o", label=label)
    accuracy_axis.set(xscale="log", xticks=lengths, xticklabels=["snippets", "128", "256"],
                      xlabel="input length (tokens)", ylabel="sentiment accuracy", title="Accuracy by input length")
    agreement_axis.set(xscale="log", xticks=[64, 128, 256, 512], xticklabels=["64", "128", "256", "512"],
                       xlabel="news input length (tokens)", ylabel="identical predictions",
                       title="Agreement with the teacher on held-out news")
    for axis in (accuracy_axis, agreement_axis):
        axis.minorticks_off()
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
