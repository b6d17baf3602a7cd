#!/usr/bin/env python
# Copyright 2026 The kron-transformers Authors. Licensed under the Apache License, Version 2.0.
"""Kronecker students of a real pre-trained LLM: SmolLM2-135M-Instruct distilled on English news.

    python benchmarks/quality/smollm2_news.py            # the full run (resumable: run it again after a kill)
    python benchmarks/quality/smollm2_news.py --smoke    # every path on a tiny random Llama, in a minute

The teacher is SmolLM2-135M-Instruct (``assets.load_smollm2``: the 4-bit GGUF from PyPI, dequantised to a float32
``LlamaForCausalLM`` of 134.5M parameters; 30 layers, width 576, 9 heads, 3 KV heads, tied embeddings), never trained
here. Students, each distilled with the same budget (``--student_steps`` x ``--batch_size`` blocks of
``--block_size`` news tokens, same order, learning rate and loss: hidden-state MSE, attention KL, KL to the teacher's
next-token distribution and the causal-LM loss):

- ``kronecker_2x``: ``compress(teacher, r, calibration_data=...)`` with the per-map ratio ``r`` whose whole model is
  ~2x smaller (every q/k/v/o, gate/up/down map and the word embedding factored; logits from its factors), each linear
  map started at its activation-aware Kronecker factors;
- ``kngpt2``: the ~1.5x student: the KnGPT2 recipe for any decoder, ``compress(teacher, "kngpt2", calibration_data=...)``
  (embedding + odd layers 2x; 1.43x for SmolLM2). A rank-1 Kronecker factorisation halves a map at least (``A`` of
  1x2, ``B`` half the map), so no per-map ratio gives ~1.5x with every layer factored: half the layers are;
- ``svd_2x`` / ``svd_kngpt2``: the maps of ``kronecker_2x`` / ``kngpt2`` as truncated SVDs (two ``nn.Linear``s) whose
  rank gives each map the Kronecker map's parameter count, and the same Kronecker embedding: equal size, only the
  factorisation of the linear maps differs. Activation-aware like the Kronecker students (SVD-LLM's whitening): with
  ``C = X.T X = L L.T`` on the same calibration inputs, ``W ~ [W L]_r L^-1`` minimises the output error
  ``||X (W - W_r).T||_F`` at rank ``r``;
- ``layerdrop_2x`` / ``layerdrop_kngpt2``: DistilGPT2-style, the teacher with evenly spaced layers kept (as many as
  give ``kronecker_2x``'s / ``kngpt2``'s parameter count), everything else copied from the teacher.

Calibration inputs: the first ``--calibration_blocks`` training blocks (0: plain nearest Kronecker product and plain
truncated SVD). Reported: the mean relative output error of the factored maps at initialisation on those inputs,
perplexity on held-out news articles (the test split, never trained on) in blocks of ``--block_size``
tokens; greedy continuations of a few prompts side by side; parameters; CPU generation speed (tokens/s, greedy, KV
cache, measured in one process against the teacher). Everything trained is cached under ``--cache_dir`` (default
``benchmarks/quality/cache/smollm2_news``): checkpoints every ``--save_steps`` while training (a killed run resumes);
``final.safetensors`` and ``result.json`` after. Results: ``benchmarks/results/smollm2_news.{json,md,png}``.
"""

from __future__ import annotations

import copy
import math
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn


sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    cached,
    experiment_parser,
    format_seconds,
    load_weights,
    markdown_table,
    matplotlib_pyplot,
    pin_settings,
    read_json,
    resolve_dirs,
    run_stage,
    setup_runtime,
    stage_arguments,
    stage_is_done,
    write_json,
    write_results,
)


STUDENTS = ("kronecker_2x", "svd_2x", "layerdrop_2x", "kngpt2", "svd_kngpt2", "layerdrop_kngpt2")
PROMPTS = ("The capital of France is", "The stock market fell on Monday after", "Scientists have discovered")


def parse_args(argv=None):
    parser = experiment_parser(__doc__, "smollm2_news", "a tiny random Llama with SmolLM2's tokenizer, a few steps")
    parser.add_argument("--block_size", type=int, default=512)
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--students", nargs="+", default=list(STUDENTS), choices=STUDENTS)
    parser.add_argument("--student_steps", type=int, default=150)
    parser.add_argument("--student_lr", type=float, default=1e-4)
    parser.add_argument("--alpha_task", type=float, default=1.0, help="weight of the students' own causal-LM loss")
    parser.add_argument("--news_articles", type=int, default=None, help="subset of the training articles")
    parser.add_argument("--eval_blocks", type=int, default=64, help="test blocks for perplexity (default 64)")
    parser.add_argument("--new_tokens", type=int, default=24, help="greedy tokens per prompt (and for the speed)")
    parser.add_argument("--loss_normalization", default="teacher", choices=["none", "teacher"],
                        help="divide each squared-error term by the teacher's mean square (default: SmolLM2's hidden "
                        "states have a mean square of ~1e4, which would swamp every other term)")
    parser.add_argument("--calibration_blocks", type=int, default=16,
                        help="training blocks whose inputs start the Kronecker and SVD students activation-aware "
                        "(0: plain NKP and plain SVD)")
    args = parser.parse_args(argv)
    if args.smoke:
        tiny = {"block_size": 32, "batch_size": 2, "student_steps": 2, "news_articles": 6, "eval_blocks": 2,
                "save_steps": 2, "new_tokens": 4, "calibration_blocks": 2}
        for name, value in tiny.items():
            if getattr(args, name) == parser.get_default(name):
                setattr(args, name, value)
    resolve_dirs(args, "smollm2_news")
    return args


# ---- data ------------------------------------------------------------------------------------------------------


def token_blocks(args, tokenizer, split: str) -> np.ndarray:
    """The ``split`` articles as one token stream (each ending in the EOS token) cut into ``(n, block_size)``."""
    from kron_transformers.assets import load_news_articles

    limit = args.news_articles if split == "train" else None
    path = args.cache_dir / "data" / f"{split}_{args.block_size}_{limit or 'all'}.npy"
    if not path.is_file():
        articles = load_news_articles(seed=args.seed)[split]
        if limit is not None:
            articles = articles.select(range(min(limit, len(articles))))
        ids = tokenizer(list(articles["text"]), add_special_tokens=False)["input_ids"]
        eos = tokenizer.eos_token_id
        stream = np.fromiter((t for article in ids for t in (*article, eos)), dtype=np.int64)
        blocks = stream[: len(stream) // args.block_size * args.block_size].reshape(-1, args.block_size)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path.with_suffix(".tmp.npy"), blocks)
        path.with_suffix(".tmp.npy").replace(path)
    return np.load(path)


def lm_dataset(blocks: np.ndarray):
    from datasets import Dataset

    return Dataset.from_dict({"input_ids": blocks.tolist(), "labels": blocks.tolist()})


@torch.inference_mode()
def perplexity(model, blocks: np.ndarray, batch_size: int = 4) -> dict[str, float]:
    """exp(mean next-token negative log-likelihood) over every predicted token of ``blocks``."""
    model.eval()
    total, count = 0.0, 0
    for start in range(0, len(blocks), batch_size):
        ids = torch.as_tensor(blocks[start:start + batch_size])
        logits = model(input_ids=ids).logits[:, :-1].float()
        total += nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1),
                                             reduction="sum").item()
        count += ids[:, 1:].numel()
    return {"perplexity": math.exp(total / count), "nll": total / count, "tokens": count}


@torch.inference_mode()
def generations(model, tokenizer, new_tokens: int) -> dict:
    """Greedy continuations of ``PROMPTS`` and the generation speed (tokens/s, batch 1, KV cache)."""
    model.eval()
    texts, seconds, produced = {}, 0.0, 0
    for prompt in PROMPTS:
        ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
        start = time.perf_counter()
        out = model.generate(ids, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
        seconds += time.perf_counter() - start
        produced += out.shape[1] - ids.shape[1]
        texts[prompt] = tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
    return {"continuations": texts, "tokens_per_second": produced / seconds}


# ---- models ----------------------------------------------------------------------------------------------------


def load_teacher(args):
    """The teacher and its tokenizer: SmolLM2-135M-Instruct, or (smoke) a tiny random Llama with its tokenizer."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from kron_transformers import assets

    if not args.smoke:
        teacher, tokenizer = assets.load_smollm2()
        return teacher.eval(), tokenizer
    tokenizer = AutoTokenizer.from_pretrained(assets.smollm2_path(), gguf_file=assets.SMOLLM2_GGUF)
    torch.manual_seed(args.seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=args.block_size * 4,
                         tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id)
    return LlamaForCausalLM(config).eval(), tokenizer


def per_map_ratio(teacher, whole_model_ratio: float) -> float:
    """The per-map ratio whose Kronecker model (default targets) is nearest ``whole_model_ratio`` smaller, found on
    weightless models (the factor shapes come from the module sizes only)."""
    from kron_transformers.compression import kronecker_class_for, kronecker_config_for

    dense = teacher.num_parameters()
    best = None
    for ratio in np.geomspace(1.1, 16, 40):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # maps too small to factor at this ratio are reported, not needed
                config, _ = kronecker_config_for(teacher, float(ratio))
        except ValueError:  # no map compresses at this ratio
            continue
        with torch.device("meta"):
            size = kronecker_class_for(teacher)(config).num_parameters()
        distance = abs(math.log(dense / size / whole_model_ratio))
        if best is None or distance < best[0]:
            best = (distance, float(ratio), dense / size)
    if best is None or best[0] > math.log(1.1):
        raise ValueError(f"No per-map ratio makes this model ~{whole_model_ratio:g}x smaller (nearest: "
                         f"{'none' if best is None else f'{best[2]:.2f}x'}); rank-1 factors halve a map at least.")
    return best[1]


def kronecker_compression(teacher, size: str):
    """The ``compress`` argument of the Kronecker student of ``size`` ("2x" or "kngpt2")."""
    return "kngpt2" if size == "kngpt2" else per_map_ratio(teacher, 2.0)


def kronecker_parameters(teacher, size: str) -> int:
    """Parameters of the Kronecker student of ``size``, counted on a weightless model."""
    from kron_transformers.compression import kronecker_class_for, kronecker_config_for

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        config, _ = kronecker_config_for(teacher, kronecker_compression(teacher, size))
    with torch.device("meta"):
        return kronecker_class_for(teacher)(config).num_parameters()


class LowRankLinear(nn.Module):
    """``x @ (U_r S_r V_r^T)^T + bias`` as two maps: ``in -> r`` then ``r -> out`` (the truncated-SVD baseline).

    With ``input_moment = X.T X`` of calibration inputs, the rank-``r`` map nearest in output space instead: with
    ``C = L L.T`` (Cholesky, damped by ``damping`` x its mean diagonal), ``||X (W - M).T||_F = ||(W - M) L||_F``, so
    ``M = [W L]_r L^-1`` (truncated SVD of ``W L``; the whitening of SVD-LLM, Wang et al. 2024).
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, rank: int,
                 input_moment: torch.Tensor | None = None, damping: float = 1e-6):
        super().__init__()
        w = weight.detach().double()
        if input_moment is not None:
            moment = input_moment.double()
            moment = (moment + moment.T) / 2
            moment = moment + damping * moment.diagonal().mean() * torch.eye(len(moment), dtype=moment.dtype)
            root_moment = torch.linalg.cholesky(moment)
            w = w @ root_moment
        u, s, vh = torch.linalg.svd(w, full_matrices=False)
        root = s[:rank].sqrt()
        down = root[:, None] * vh[:rank]
        if input_moment is not None:  # down L^-1: solve X L = down
            down = torch.linalg.solve_triangular(root_moment, down, upper=False, left=False)
        self.down = nn.Linear(weight.shape[1], rank, bias=False, dtype=weight.dtype)
        self.up = nn.Linear(rank, weight.shape[0], bias=bias is not None, dtype=weight.dtype)
        with torch.no_grad():
            self.down.weight.copy_(down)
            self.up.weight.copy_(u[:, :rank] * root)
            if bias is not None:
                self.up.bias.copy_(bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.down(x))


def calibration_data(args, train_blocks: np.ndarray) -> list[dict] | None:
    """The first ``--calibration_blocks`` training blocks as batches of 4 (``None`` when 0)."""
    if args.calibration_blocks == 0:
        return None
    blocks = torch.as_tensor(train_blocks[: args.calibration_blocks])
    return [{"input_ids": chunk} for chunk in blocks.split(4)]


@torch.no_grad()
def init_output_error(student, teacher, moments: dict[str, torch.Tensor]) -> float | None:
    """Mean over the factored maps of the relative output error ``||X (W - W_student).T|| / ||X W.T||`` on the
    calibration inputs, each student map read off by applying it to the identity."""
    from kron_transformers.kronecker import output_error

    errors = []
    for path, moment in moments.items():
        module = student.get_submodule(path)
        dense = teacher.get_submodule(path)
        eye = torch.eye(dense.in_features, dtype=dense.weight.dtype)
        weight = (module(eye) - module(torch.zeros_like(eye[:1]))).T
        errors.append(output_error(dense.weight, weight, moment).item())
    return sum(errors) / len(errors) if errors else None


def build_student(name: str, teacher, args, calibration=None):
    """The student before distillation (deterministic): ``(model, facts)``."""
    from kron_transformers import KroneckerLinear, compress
    from kron_transformers.calibration import collect_input_moments
    from kron_transformers.distillation.trainer import default_layer_map

    torch.manual_seed(args.seed)
    kind, _, size = ("kronecker", "", "kngpt2") if name == "kngpt2" else name.partition("_")
    aware = "activation-aware " if calibration is not None else ""
    if kind in ("kronecker", "svd"):
        compression = kronecker_compression(teacher, size)
        ratio = compression if isinstance(compression, str) else round(compression, 3)
        student = compress(teacher, compression, show_progress=False,
                           calibration_data=calibration if kind == "kronecker" else None)
    if kind == "kronecker":  # compress measured each calibrated map's output error already
        errors = [m.output_error for m in student.compression_report.modules if m.output_error is not None]
        return student, {"init": f"{aware}nearest Kronecker product", "per_map_ratio": ratio,
                         "init_output_error": sum(errors) / len(errors) if errors else None}
    if kind == "svd":
        paths = [path for path, module in student.named_modules() if isinstance(module, KroneckerLinear)]
        moments = collect_input_moments(teacher, paths, calibration, show_progress=False) if calibration else {}
        for path in paths:
            module, dense = student.get_submodule(path), teacher.get_submodule(path)
            size = module.a.numel() + module.b.numel()
            rank = max(1, round(size / (module.in_features + module.out_features)))
            student.set_submodule(path, LowRankLinear(dense.weight, dense.bias, rank, moments.get(path)))
        return student, {"init": f"{aware}truncated SVD of each map (rank for the Kronecker map's size), Kronecker "
                                 "embedding", "per_map_ratio": ratio,
                         "init_output_error": init_output_error(student, teacher, moments)}
    if kind == "layerdrop":
        layers = teacher.config.num_hidden_layers
        per_layer = sum(p.numel() for p in teacher.model.layers[0].parameters())
        target = kronecker_parameters(teacher, size)
        keep = max(1, min(layers, round((target - (teacher.num_parameters() - layers * per_layer)) / per_layer)))
        kept = default_layer_map(keep, layers)
        student = copy.deepcopy(teacher)
        student.requires_grad_(True)  # the teacher is frozen for distillation; its copy is trained
        student.model.layers = nn.ModuleList(student.model.layers[i] for i in kept)
        for index, layer in enumerate(student.model.layers):
            layer.self_attn.layer_idx = index  # the KV cache is indexed by position in the stack
        student.config = copy.deepcopy(teacher.config)
        student.config.num_hidden_layers = keep
        if hasattr(student.config, "layer_types") and student.config.layer_types is not None:
            student.config.layer_types = [student.config.layer_types[i] for i in kept]
        return student, {"init": f"teacher layers {[i + 1 for i in kept]} (1-based) and everything else"}
    raise ValueError(f"Unknown student {name!r}; expected one of {STUDENTS}.")


# ---- stages ----------------------------------------------------------------------------------------------------


def loss_weights(args) -> dict:
    return {"alpha_hidden": 1.0, "alpha_attention": 1.0, "alpha_logits": 1.0, "alpha_task": args.alpha_task,
            "attention_loss": "kl", "loss_normalization": args.loss_normalization}


def student_trainer(args, student, teacher, train, out_dir: Path):
    from transformers import default_data_collator

    from kron_transformers.distillation import IlkdTrainer, IlkdTrainingArguments

    training_args = stage_arguments(IlkdTrainingArguments, out_dir, max_steps=args.student_steps,
                                    batch_size=args.batch_size, learning_rate=args.student_lr, seed=args.seed,
                                    save_steps=args.save_steps, **loss_weights(args))
    return IlkdTrainer(model=student.train(), teacher_model=teacher, args=training_args,
                       train_dataset=train, data_collator=default_data_collator)


def evaluate(model, tokenizer, test_blocks, args) -> dict:
    return {**perplexity(model, test_blocks), **generations(model, tokenizer, args.new_tokens)}


def train_student(args, name: str, teacher, tokenizer, train, test_blocks, calibration):
    stage_dir = args.cache_dir / "students" / name
    facts_path = stage_dir / "init_facts.json"
    if stage_is_done(stage_dir) and facts_path.is_file():
        # Trained and described already: the architecture is enough (the weights are loaded below), so skip the
        # activation-aware factorisation (minutes for SmolLM2).
        student, _ = build_student(name, teacher, args, None)
        facts = read_json(facts_path)
    else:
        student, facts = build_student(name, teacher, args, calibration)
        # What the factorisation alone keeps: perplexity before any training, on the first 16 test blocks.
        facts["init_perplexity"] = cached(stage_dir / "init.json",
                                          lambda: perplexity(student, test_blocks[:16])["perplexity"])
        write_json(facts_path, facts)
    parameters = student.num_parameters()
    result = run_stage(stage_dir, lambda out_dir: student_trainer(args, student, teacher, train, out_dir),
                       evaluate=lambda m: evaluate(m, tokenizer, test_blocks, args),
                       describe={"data": f"news train blocks of {args.block_size} tokens",
                                 "loss_weights": loss_weights(args)})
    # Speed against the teacher in this process (the cached stage result was measured in another one).
    speed = generations(load_weights(student, stage_dir), tokenizer, args.new_tokens)["tokens_per_second"]
    return {"name": name, "parameters": parameters, **facts, **result, "tokens_per_second_now": speed}


# ---- report ----------------------------------------------------------------------------------------------------


def report(args, teacher_result, students) -> dict:
    teacher_parameters, teacher_speed = teacher_result["parameters"], teacher_result["metrics"]["tokens_per_second"]
    header = ["model", "parameters", "compression", "initialisation", "init output error", "perplexity at init*",
              "steps x batch", "wall time", "test perplexity", "vs teacher", "CPU tokens/s"]
    teacher_ppl = teacher_result["metrics"]["perplexity"]
    rows = [["teacher (SmolLM2-135M-Instruct)", f"{teacher_parameters:,}", "1.00x", "-", "-", "-", "-", "-",
             f"{teacher_ppl:.2f}", "1.00", f"{teacher_speed:.1f}"]]
    for s in students:
        budget, ppl = s["budget"], s["metrics"]["perplexity"]
        error = s.get("init_output_error")
        rows.append([s["name"], f"{s['parameters']:,}", f"{teacher_parameters / s['parameters']:.2f}x", s["init"],
                     "-" if error is None else f"{error:.3f}", f"{s['init_perplexity']:.4g}",
                     f"{budget['steps']} x {budget['batch_size']}", format_seconds(budget["wall_seconds"]),
                     f"{ppl:.2f}", f"{ppl / teacher_ppl:.2f}", f"{s['tokens_per_second_now']:.1f}"])
    samples = [["teacher", *teacher_result["metrics"]["continuations"].values()]]
    samples += [[s["name"], *s["metrics"]["continuations"].values()] for s in students]
    clean = [[cell.replace("\n", " ").replace("|", "/") for cell in row] for row in samples]
    markdown = "\n\n".join([
        "# Kronecker, truncated-SVD and layer-dropped students of SmolLM2-135M on news"
        + (" — SMOKE RUN, numbers meaningless" if args.smoke else ""),
        f"Each student: {args.student_steps} steps x batch {args.batch_size} blocks of {args.block_size} tokens, lr "
        f"{args.student_lr:g}, ILKD (hidden MSE, attention KL, logit KL) + causal-LM loss x {args.alpha_task:g}"
        + (", squared-error terms divided by the teacher's mean square. " if args.loss_normalization == "teacher"
           else ". ") +
        f"Perplexity on {teacher_result['metrics']['tokens']:,} predicted tokens of held-out news. Seed {args.seed}.",
        markdown_table(header, rows),
        "*Before any training, on the first 16 test blocks; the teacher's there: "
        f"{teacher_result['metrics'].get('perplexity_16', float('nan')):.2f}.",
        "Greedy continuations:",
        markdown_table(["model", *PROMPTS], clean),
    ])
    payload = {"experiment": "smollm2_news", "smoke": args.smoke, "seed": args.seed,
               "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
               "teacher": teacher_result, "students": students, "teacher_perplexity": teacher_ppl,
               "perplexity": {s["name"]: s["metrics"]["perplexity"] for s in students}}
    write_results(args.results_dir, "smollm2_news", payload, markdown)
    plot(args, teacher_result, students)
    print(markdown)
    return payload


def plot(args, teacher_result, students) -> Path:
    plt = matplotlib_pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    for s in students:
        ax.scatter(s["parameters"] / 1e6, s["metrics"]["perplexity"], s=60, label=s["name"])
    ax.scatter(teacher_result["parameters"] / 1e6, teacher_result["metrics"]["perplexity"], marker="*", s=150,
               color="black", label="teacher")
    ax.set_xlabel("parameters (millions)")
    ax.set_ylabel("held-out perplexity (lower is better)")
    ax.set_title("SmolLM2-135M students at the same budget" + (" (smoke)" if args.smoke else ""))
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = args.results_dir / "smollm2_news.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv=None):
    args = parse_args(argv)
    setup_runtime(args.threads)
    from transformers import set_seed

    pin_settings(args.cache_dir, args)
    set_seed(args.seed)
    start = time.perf_counter()
    teacher, tokenizer = load_teacher(args)
    for parameter in teacher.parameters():
        parameter.requires_grad_(False)
    train_blocks = token_blocks(args, tokenizer, "train")
    train = lm_dataset(train_blocks)
    calibration = calibration_data(args, train_blocks)
    test_blocks = token_blocks(args, tokenizer, "test")[: args.eval_blocks]
    teacher_metrics = cached(args.cache_dir / "teacher.json", lambda: evaluate(teacher, tokenizer, test_blocks, args))
    teacher_metrics["perplexity_16"] = cached(args.cache_dir / "teacher_16.json",
                                              lambda: perplexity(teacher, test_blocks[:16])["perplexity"])
    teacher_metrics["tokens_per_second"] = generations(teacher, tokenizer, args.new_tokens)["tokens_per_second"]
    teacher_result = {"parameters": teacher.num_parameters(), "metrics": teacher_metrics}
    students = [train_student(args, name, teacher, tokenizer, train, test_blocks, calibration)
                for name in args.students]
    print(f"This invocation took {format_seconds(time.perf_counter() - start)}.")
    return report(args, teacher_result, students)


if __name__ == "__main__":
    main()
