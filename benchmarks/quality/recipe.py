#!/usr/bin/env python
# Copyright 2026 The kron-transformers Authors. Licensed under the Apache License, Version 2.0.
"""Which distillation recipe keeps the teacher's function beyond the distillation data? One change at a time.

The quickstart's path (``examples/quickstart.py``: the example scripts and their flags), on its teacher
(all-MiniLM-L6-v2 fine-tuned 1 epoch on 4,000 Rotten Tomatoes snippets) compressed ~4x, varied one setting at a
time at the same budget (steps, batch, data, learning rates), then all winning changes together:

- ``baseline``: the quickstart before this study: stage 1 = 150 steps x 32 news blocks of 64 tokens, lr 5e-4,
  squared-error terms as they come; NKP initialisation; stage 2 = 2 epochs of task ILKD at lr 1e-4.
- ``mixed_lengths``: stage-1 blocks of 64 to 256 tokens (uniform) instead of 64, 12 per batch instead of 32 (about
  the same tokens per step: 1,920 against 2,048), blocks of similar length batched together.
- ``normalized``: every squared-error term divided by the teacher's mean square (``--loss_normalization teacher``).
- ``calibrated``: activation-aware initialisation (``compress(..., calibration_data=)`` on 128 news blocks).
- ``stage2_lr``: stage 2 at lr 2e-4 (the quality benchmark's) instead of 1e-4.
- ``mixed_calibrated``: mixed lengths and the activation-aware initialisation, terms as they come.
- ``recipe``: mixed lengths, normalised terms and the activation-aware initialisation together.
- ``mixed_joined`` / ``mixed_calibrated_joined``: ``mixed_lengths`` / ``mixed_calibrated`` with stage 2 also on
  1,000 long inputs joined from same-label training snippets (64-256 tokens, ``run_glue.py --joined_examples``),
  the same 250 steps of 32 examples, batched by length. Their stage 1 is that of the variant without it (the same
  run, reused from the cache when there), so the pair differs in stage 2 alone.
- ``mixed_stage2_lr`` / ``mixed_stage2_lr_low``: ``mixed_lengths`` with stage 2 at lr 2e-4 / 5e-5 (its stage 1
  shared likewise).
- ``mixed_news``: ``mixed_lengths`` with stage 2 also on 500 unlabelled blocks of 64-256 tokens cut from the
  stage-1 news (``run_glue.py --unlabelled_file``; label -100, so only the teacher's outputs and layers are their
  target), the same 250 steps; ``mixed_news_lr`` the same at lr 2e-4; ``mixed_joined_news_lr`` with the joined
  snippets too (long inputs of both domains, so that length no longer tells news from reviews), at lr 2e-4.
- ``mixed_logits10`` / ``mixed_task`` / ``mixed_s2_no_attention`` / ``mixed_s2_normalized``: ``mixed_lengths``
  with one change to the stage-2 loss (its stage 1 shared): soft-target weight 10 instead of 1; the label loss
  added (``alpha_task`` 1); no attention term; every squared-error term normalised by the teacher's.
  ``mixed_attention3`` / ``mixed_task_attention3``: attention weight 3 instead of 1, without / with the label loss;
  ``mixed_s2_normalized_task``: normalised stage-2 terms and the label loss; ``mixed_joined_task``: the joined
  snippets and the label loss (both labelled, so the label loss reaches the long inputs too);
  ``mixed_joined_news_task``: the joined snippets, the unlabelled news blocks and the label loss (long inputs of both
  domains, at the default lr 1e-4); ``mixed_joined_news_task_lr`` the same at lr 2e-4.
- ``mixed_300`` / ``mixed_300_task``: ``mixed_lengths`` / ``mixed_task`` with 300 stage-1 steps instead of 150 (a
  bigger stage-1 budget; the quickstart's 11 minutes leave room for it).
- ``mixed_joined_news_task_aug`` / ``mixed_joined_news_task_lr_aug``: ``mixed_joined_news_task`` /
  ``mixed_joined_news_task_lr`` with stage 2 also on 2,500 snippets whose one-token words were each replaced, with
  probability 0.4, by one of their 15 nearest words in the teacher's input embedding (TinyBERT's augmentation without
  its masked-LM; ``run_glue.py --augmented_examples``; unlabelled, since a neighbour may be an antonym), in the same
  250 steps: each example is seen once instead of the snippets about 1.5 times.
- ``mixed_calibrated_joined_news_task``: ``mixed_joined_news_task`` from the activation-aware initialisation (its
  stage 1 is ``mixed_calibrated``'s).
- ``mixed_svd_embedding_joined_news_task``: ``mixed_joined_news_task`` with the word embedding initialised as its
  rank-96 truncated SVD (``compress(..., embedding_factor=384, embedding_rank=96)``: 96 summed products of a column
  and a row, the same 96 numbers per token) instead of one Kronecker product of 30522x96 and 1x4.
- ``mixed_rank2_joined_news_task``: ``mixed_joined_news_task`` with two summed Kronecker products per factored map
  and in the word embedding (``compress(..., rank=2)``), at the same size.
- ``lengths_512``: stage-1 blocks of 64 to 512 tokens (the teacher's maximum), 7 per batch (about the same tokens
  per step), instead of ``mixed_lengths``' 64 to 256.

Every student is measured in the distribution (the 64-token validation snippets) and beyond it: accuracy on long
reviews joined from same-movie, same-label validation snippets (128 and 256 tokens; no movie is in training), and
agreement with the teacher (identical predictions, mean KL) on held-out news cut to 64/128/256/512 tokens.

    python benchmarks/quality/recipe.py --variants baseline mixed_lengths      # resumable; one job per core
    python benchmarks/quality/recipe.py --variants mixed_lengths --student_seed 43   # the same teacher, another
                                                                              # distillation seed (student noise)
    python benchmarks/quality/recipe.py --report_only                         # table + plot from the cache

Results: ``benchmarks/results/recipe.{json,md,png}``.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch


QUALITY = Path(__file__).resolve().parent
EXAMPLES = QUALITY.parents[1] / "examples"
sys.path.insert(0, str(QUALITY))
sys.path.insert(0, str(EXAMPLES))
from common import (  # noqa: E402
    experiment_parser,
    markdown_table,
    plot_fidelity,
    read_json,
    resolve_dirs,
    setup_runtime,
    write_json,
    write_results,
)


# The baseline's flags, and each change as (stage-1 flags, stage-2 flags, calibrated initialisation) that override
# or extend them; combined variants list the changes they apply.
# Blocks of 64 tokens only: run_general_distillation now mixes lengths by default (min max_seq_length // 4).
BASELINE_STAGE1 = ["--max_seq_length", "64", "--min_seq_length", "64", "--learning_rate", "5e-4"]
BASELINE_STAGE2 = ["--learning_rate", "1e-4"]
CHANGES = {
    # Same steps and about the same tokens per step (12 blocks of 64-256 tokens, 160 on average, against 32 x 64),
    # blocks of similar length batched together (little padding).
    "mixed_lengths": (["--max_seq_length", "256", "--min_seq_length", "64", "--per_device_train_batch_size", "12",
                       "--train_sampling_strategy", "group_by_length"], [], False),
    # Blocks up to the teacher's maximum (512): 7 blocks of 288 tokens on average, about the same tokens per step.
    "lengths_512": (["--max_seq_length", "512", "--min_seq_length", "64", "--per_device_train_batch_size", "7",
                     "--train_sampling_strategy", "group_by_length"], [], False),
    "normalized": (["--loss_normalization", "teacher"], [], False),
    # The position embeddings stay the teacher's in both stages (IlkdTrainingArguments.freeze_position_embeddings).
    "frozen_positions": (["--freeze_position_embeddings", "true"], ["--freeze_position_embeddings", "true"], False),
    "calibrated": ([], [], True),
    "stage2_lr": ([], ["--learning_rate", "2e-4"], False),
    "stage2_lr_low": ([], ["--learning_rate", "5e-5"], False),
    # 500 unlabelled news blocks of 64-256 tokens beside the snippets (the stage-1 news, not the held-out articles).
    # Up to 512 tokens, a batch of 32 with the attention-score terms took 17 GB and was killed on a 24 GB machine.
    "news_blocks": ([], ["--unlabelled_file", "{data}/news_train.txt", "--unlabelled_examples", "500",
                         "--unlabelled_max_length", "256", "--train_sampling_strategy", "group_by_length"], False),
    # 1,000 joined examples beside the 4,000 snippets; run_variant keeps stage 2 at the baseline's step count.
    "joined": ([], ["--joined_examples", "1000", "--joined_max_length", "256", "--train_sampling_strategy",
                    "group_by_length"], False),
    # Twice the stage-1 steps (and warm-up), the rest unchanged: a bigger budget, not the same one.
    "stage1_300": (["--max_steps", "300", "--warmup_steps", "60"], [], False),
    # Stage-2 loss balance: in stage 2 the attention-score MSE is ~15x the soft-target KL (T=1, two classes; 1.2
    # against 0.08 logged at epoch 1.2), so the student's outputs are matched mostly through its layers.
    "stage2_logits10": ([], ["--alpha_logits", "10"], False),
    "stage2_task": ([], ["--alpha_task", "1"], False),
    # TinyBERT's augmentation: 2,500 snippets with words replaced by embedding neighbours (unlabelled), so that the
    # 250 steps see each example once (4,000 + 1,000 joined + 500 news + 2,500) instead of repeating the snippets.
    "augmented": ([], ["--augmented_examples", "2500"], False),
    "stage2_attention3": ([], ["--alpha_attention", "3"], False),
    "stage2_no_attention": ([], ["--alpha_attention", "0"], False),
    "stage2_normalized": ([], ["--loss_normalization", "teacher"], False),
    # The word embedding (half of MiniLM's parameters) as 96 summed products of a 30522x1 column and a 1x384 row,
    # i.e. its rank-96 truncated SVD (weight error 0.654), instead of one product of 30522x96 and 1x4 (0.864): the
    # same 96 numbers per token (+37k shared), so the student has 5,998,034 parameters instead of 5,961,174.
    "svd_embedding": ([], [], False, {"embedding_factor": 384, "embedding_rank": 96}),
    # Two summed products per map at the same size (each map's A has 8 entries instead of 4, B half the columns;
    # the word embedding 30522x48 and 1x8): mean weight error of the linear maps 0.849 instead of 0.854.
    "rank2": ([], [], False, {"rank": 2}),
}
VARIANTS = {
    "baseline": [],
    "mixed_lengths": ["mixed_lengths"],
    "normalized": ["normalized"],
    "calibrated": ["calibrated"],
    "stage2_lr": ["stage2_lr"],
    "mixed_normalized": ["mixed_lengths", "normalized"],
    "mixed_calibrated": ["mixed_lengths", "calibrated"],
    "recipe": ["mixed_lengths", "normalized", "calibrated"],
    "mixed_joined": ["mixed_lengths", "joined"],
    "mixed_calibrated_joined": ["mixed_lengths", "calibrated", "joined"],
    "mixed_stage2_lr": ["mixed_lengths", "stage2_lr"],
    "mixed_calibrated_lr": ["mixed_lengths", "calibrated", "stage2_lr"],
    "mixed_joined_lr": ["mixed_lengths", "joined", "stage2_lr"],
    "mixed_frozen": ["mixed_lengths", "frozen_positions"],
    "mixed_frozen_lr": ["mixed_lengths", "frozen_positions", "stage2_lr"],
    "lengths_512": ["lengths_512"],
    "mixed_stage2_lr_low": ["mixed_lengths", "stage2_lr_low"],
    "mixed_news": ["mixed_lengths", "news_blocks"],
    "mixed_news_lr": ["mixed_lengths", "news_blocks", "stage2_lr"],
    "mixed_joined_news_lr": ["mixed_lengths", "joined", "news_blocks", "stage2_lr"],
    "mixed_logits10": ["mixed_lengths", "stage2_logits10"],
    "mixed_300": ["mixed_lengths", "stage1_300"],
    "mixed_300_task": ["mixed_lengths", "stage1_300", "stage2_task"],
    "mixed_task": ["mixed_lengths", "stage2_task"],
    "mixed_attention3": ["mixed_lengths", "stage2_attention3"],
    "mixed_s2_normalized_task": ["mixed_lengths", "stage2_normalized", "stage2_task"],
    "mixed_task_attention3": ["mixed_lengths", "stage2_task", "stage2_attention3"],
    "mixed_s2_no_attention": ["mixed_lengths", "stage2_no_attention"],
    "mixed_s2_normalized": ["mixed_lengths", "stage2_normalized"],
    "mixed_joined_task": ["mixed_lengths", "joined", "stage2_task"],
    "mixed_joined_news_task": ["mixed_lengths", "joined", "news_blocks", "stage2_task"],
    "mixed_joined_news_task_lr": ["mixed_lengths", "joined", "news_blocks", "stage2_task", "stage2_lr"],
    "mixed_joined_news_task_aug": ["mixed_lengths", "joined", "news_blocks", "stage2_task", "augmented"],
    "mixed_calibrated_joined_news_task": ["mixed_lengths", "calibrated", "joined", "news_blocks", "stage2_task"],
    "mixed_joined_news_task_lr_aug": ["mixed_lengths", "joined", "news_blocks", "stage2_task", "stage2_lr",
                                      "augmented"],
    "mixed_svd_embedding_joined_news_task": ["mixed_lengths", "svd_embedding", "joined", "news_blocks",
                                             "stage2_task"],
    "mixed_rank2_joined_news_task": ["mixed_lengths", "rank2", "joined", "news_blocks", "stage2_task"],
}
LABELS = {
    "baseline": "baseline (quickstart before: 64-token stage 1, raw terms, NKP)",
    "mixed_lengths": "stage-1 blocks of 64-256 tokens (batch 12)",
    "normalized": "terms normalised by the teacher",
    "calibrated": "activation-aware init",
    "stage2_lr": "stage 2 at lr 2e-4",
    "mixed_normalized": "64-256-token blocks + normalised terms",
    "mixed_calibrated": "64-256-token blocks + activation-aware init",
    "recipe": "new recipe: 64-256-token blocks + normalised terms + activation-aware init",
    "mixed_joined": "64-256-token blocks + stage 2 on joined snippets",
    "mixed_calibrated_joined": "64-256-token blocks + activation-aware init + stage 2 on joined snippets",
    "mixed_stage2_lr": "64-256-token blocks + stage 2 at lr 2e-4",
    "mixed_calibrated_lr": "64-256-token blocks + activation-aware init + stage 2 at lr 2e-4",
    "mixed_joined_lr": "64-256-token blocks + stage 2 on joined snippets, at lr 2e-4",
    "mixed_frozen": "64-256-token blocks + frozen position embeddings",
    "mixed_frozen_lr": "64-256-token blocks + frozen position embeddings + stage 2 at lr 2e-4",
    "lengths_512": "stage-1 blocks of 64-512 tokens (batch 7)",
    "mixed_stage2_lr_low": "64-256-token blocks + stage 2 at lr 5e-5",
    "mixed_news": "64-256-token blocks + stage 2 also on unlabelled news",
    "mixed_news_lr": "64-256-token blocks + stage 2 also on unlabelled news, at lr 2e-4",
    "mixed_joined_news_lr": "64-256-token blocks + stage 2 also on joined snippets and unlabelled news, at lr 2e-4",
    "mixed_logits10": "64-256-token blocks + stage-2 soft-target weight 10",
    "mixed_300": "64-256-token blocks, 300 stage-1 steps (twice the budget)",
    "mixed_300_task": "64-256-token blocks, 300 stage-1 steps + stage-2 label loss",
    "mixed_task": "64-256-token blocks + stage-2 label loss (alpha_task 1)",
    "mixed_attention3": "64-256-token blocks + stage-2 attention weight 3",
    "mixed_s2_normalized_task": "64-256-token blocks + stage-2 terms normalised + label loss",
    "mixed_task_attention3": "64-256-token blocks + stage-2 label loss + attention weight 3",
    "mixed_s2_no_attention": "64-256-token blocks + no attention term in stage 2",
    "mixed_s2_normalized": "64-256-token blocks + stage-2 terms normalised by the teacher",
    "mixed_joined_task": "64-256-token blocks + stage 2 on joined snippets + label loss",
    "mixed_joined_news_task": "64-256-token blocks + stage 2 also on joined snippets and unlabelled news + label loss",
    "mixed_joined_news_task_lr": "64-256-token blocks + stage 2 also on joined snippets and unlabelled news + label loss, "
                                 "at lr 2e-4",
    "mixed_joined_news_task_aug": "64-256-token blocks + stage 2 also on joined snippets, unlabelled news and 2,500 "
                                  "word-replaced snippets + label loss",
    "mixed_calibrated_joined_news_task": "64-256-token blocks + activation-aware init + stage 2 also on joined "
                                         "snippets and unlabelled news + label loss",
    "mixed_joined_news_task_lr_aug": "64-256-token blocks + stage 2 also on joined snippets, unlabelled news and "
                                     "2,500 word-replaced snippets + label loss, at lr 2e-4",
    "mixed_svd_embedding_joined_news_task": "64-256-token blocks + rank-96 (SVD) word embedding + stage 2 also on "
                                            "joined snippets and unlabelled news + label loss",
    "mixed_rank2_joined_news_task": "64-256-token blocks + Kronecker rank 2 (same size) + stage 2 also on joined "
                                    "snippets and unlabelled news + label loss",
}


def parse_args(argv=None):
    parser = experiment_parser(__doc__, "recipe", "tiny sizes, a few steps")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--train_sentences", type=int, default=4000)
    parser.add_argument("--eval_sentences", type=int, default=1342)
    parser.add_argument("--news_articles", type=int, default=400)
    parser.add_argument("--teacher_epochs", type=float, default=1.0)
    parser.add_argument("--stage1_steps", type=int, default=150)
    parser.add_argument("--stage2_epochs", type=float, default=2.0)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--compression", default="4")
    parser.add_argument("--fidelity_texts", type=int, default=200, help="held-out news texts per length")
    parser.add_argument("--student_seed", type=int, default=None,
                        help="seed of both distillation stages (data order, masking, dropout); default --seed. The "
                        "teacher and the data always follow --seed, so rows of several student seeds share a teacher")
    parser.add_argument("--report_only", action="store_true")
    args = parser.parse_args(argv)
    if args.smoke:
        args.train_sentences, args.news_articles, args.stage1_steps, args.batch_size = 64, 20, 2, 4
        args.stage2_epochs, args.teacher_epochs, args.fidelity_texts, args.eval_sentences = 0.5, 0.5, 8, 96
    resolve_dirs(args, "recipe")
    return args


def student_seed(args) -> int:
    return args.seed if args.student_seed is None else args.student_seed


def run_key(args, name: str) -> str:
    """``name`` for the default student seed, ``name@seed<S>`` for another one (its own cache folder and row)."""
    return name if student_seed(args) == args.seed else f"{name}@seed{student_seed(args)}"


def variant_of(key: str) -> str:
    return key.split("@", 1)[0]


def flags(args, output_dir: Path, seed: int | None = None) -> list[str]:
    seed = args.seed if seed is None else seed
    return ["--output_dir", str(output_dir), "--seed", str(seed), "--per_device_train_batch_size",
            str(args.batch_size), "--per_device_eval_batch_size", "128", "--save_strategy", "no", "--report_to",
            "none", "--logging_steps", "25", "--dataloader_num_workers", "0", "--disable_tqdm", "true"]


def prepare(args):
    """Data files and the teacher, once: the quickstart's own ``write_data`` and teacher fine-tuning."""
    import quickstart
    import run_glue

    from kron_transformers.assets import minilm_path

    data = args.cache_dir / "data"
    if not (data / "news_validation.txt").is_file():
        quickstart.write_data(args, data)
    teacher = args.cache_dir / "teacher"
    if not (teacher / "eval_results.json").is_file():
        shutil.rmtree(teacher, ignore_errors=True)
        run_glue.main(["--model_name_or_path", str(minilm_path()), *glue_files(data), "--do_train", "--do_eval",
                       "--max_seq_length", "64", "--num_train_epochs", str(args.teacher_epochs), "--learning_rate",
                       "5e-5", *flags(args, teacher)])
    return data, teacher


def glue_files(data: Path) -> list[str]:
    return ["--train_file", str(data / "sentiment_train.csv"), "--validation_file", str(data / "sentiment_validation.csv")]


def calibration_examples(tokenizer, data: Path, count: int = 128):
    sys.path.insert(0, str(QUALITY))
    from calibration import mixed_length_blocks

    texts = (data / "news_train.txt").read_text().splitlines()
    return mixed_length_blocks(tokenizer, texts, count, seed=0)


def student_init(args, teacher_dir: Path, data: Path, calibrated: bool, options: dict | None = None) -> Path:
    """The compressed teacher (cached): plain NKP or activation-aware, with ``options`` for ``compress``."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from kron_transformers import compress

    options = options or {}
    suffix = "".join(f"-{key}{value}" for key, value in sorted(options.items()))
    out = args.cache_dir / (("student-init-calibrated" if calibrated else "student-init") + suffix)
    if (out / "config.json").is_file():
        return out
    tokenizer = AutoTokenizer.from_pretrained(teacher_dir)
    teacher = AutoModelForSequenceClassification.from_pretrained(teacher_dir)
    student = compress(teacher, float(args.compression),
                       calibration_data=calibration_examples(tokenizer, data) if calibrated else None, **options)
    # A folder of this process's own: two variant runs started side by side both build the same initialisation.
    tmp = Path(tempfile.mkdtemp(dir=args.cache_dir, prefix=f".{out.name}."))
    student.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    try:
        tmp.rename(out)
    except OSError:  # the other run finished first: its copy is the same deterministic initialisation
        shutil.rmtree(tmp)
        if not (out / "config.json").is_file():
            raise
    return out


def variant_settings(name: str):
    """(stage-1 flags, stage-2 flags, calibrated, compress options) of a variant: the baseline with its changes
    applied in order."""
    stage1, stage2, calibrated, options = list(BASELINE_STAGE1), list(BASELINE_STAGE2), False, {}
    for change in VARIANTS[name]:
        change_stage1, change_stage2, change_calibrated, *change_options = CHANGES[change]
        stage1, stage2 = _merge(stage1, change_stage1), _merge(stage2, change_stage2)
        calibrated = calibrated or change_calibrated
        options.update(*change_options)
    return stage1, stage2, calibrated, options


def _merge(base: list[str], extra: list[str]) -> list[str]:
    """``base`` flags overridden and extended by ``extra`` (``--flag value`` pairs)."""
    merged = dict(zip(base[::2], base[1::2]))
    merged.update(zip(extra[::2], extra[1::2]))
    return [item for pair in merged.items() for item in pair]


def run_variant(args, name: str, data: Path, teacher_dir: Path) -> dict:
    import run_general_distillation
    import run_glue

    key, seed = run_key(args, name), student_seed(args)
    folder = args.cache_dir / key.replace("@", "-")
    summary_path = folder / "summary.json"
    if summary_path.is_file():
        return read_json(summary_path)
    stage1_flags, stage2_flags, calibrated, options = variant_settings(name)
    if any(flag in stage2_flags for flag in ("--joined_examples", "--unlabelled_examples", "--augmented_examples")):
        stage2_flags = [*stage2_flags, "--max_steps", str(stage2_steps(args))]  # more examples, the same steps
    run_stage2_flags = [flag.replace("{data}", str(data)) for flag in stage2_flags]  # the summary keeps "{data}"
    init = student_init(args, teacher_dir, data, calibrated, options)
    stage1, stage2 = shared_stage1(args, name) or folder / "stage1", folder / "stage2"
    timings = {}
    if not (stage1 / "train_results.json").is_file():
        began = time.time()
        # all-MiniLM-L6-v2 has no MLM head: stage 1 distils the layers only (as the quickstart does).
        run_general_distillation.main([
            "--teacher_name_or_path", str(teacher_dir), "--model_name_or_path", str(init),
            "--train_file", str(data / "news_train.txt"), "--do_train", "--max_steps", str(args.stage1_steps),
            "--warmup_steps", str(max(args.stage1_steps // 5, 1)), "--alpha_task", "0", "--alpha_logits", "0",
            *flags(args, stage1, seed), *stage1_flags])
        timings["stage1_seconds"] = time.time() - began
    if not (stage2 / "eval_results.json").is_file():
        began = time.time()
        run_glue.main(["--model_name_or_path", str(stage1), "--teacher_name_or_path", str(teacher_dir),
                       *glue_files(data), "--do_train", "--do_eval", "--max_seq_length", "64",
                       "--num_train_epochs", str(args.stage2_epochs), "--warmup_steps", "0.1",
                       *run_stage2_flags, *flags(args, stage2, seed)])
        timings["stage2_seconds"] = time.time() - began
    summary = {"name": name, "student_seed": seed, "stage1": stage1.parent.name, "stage1_flags": stage1_flags, "stage2_flags": stage2_flags, "calibrated": calibrated,
               **({"compress_options": options} if options else {}),
               **timings, "fidelity": measure_fidelity(args, teacher_dir, stage2, data)}
    write_json(summary_path, summary)
    return read_json(summary_path)  # as a later run reads it (JSON keys are strings)


def stage2_steps(args) -> int:
    """The baseline's stage-2 optimizer steps: its epochs over the training snippets (the quickstart's count)."""
    import quickstart

    return quickstart.stage2_steps(args)


def shared_stage1(args, name: str) -> Path | None:
    """A finished stage 1 of another variant with the same stage-1 settings and student seed, if the cache has one."""
    stage1_flags, _, calibrated, options = variant_settings(name)
    for other in VARIANTS:
        other_stage1, _, other_calibrated, other_options = variant_settings(other)
        folder = args.cache_dir / run_key(args, other).replace("@", "-") / "stage1"
        if (other != name and (other_stage1, other_calibrated, other_options) == (stage1_flags, calibrated, options)
                and (folder / "train_results.json").is_file()):
            return folder
    return None


def measure_fidelity(args, teacher_dir: Path, student_dir: Path, data: Path) -> dict:
    """The quickstart's fidelity figures (``quickstart.measure_fidelity``) for one student."""
    import quickstart
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    return quickstart.measure_fidelity(AutoModelForSequenceClassification.from_pretrained(teacher_dir),
                                       AutoModelForSequenceClassification.from_pretrained(student_dir),
                                       AutoTokenizer.from_pretrained(teacher_dir), args.seed, args.fidelity_texts,
                                       snippets=args.eval_sentences)


def report(args) -> dict:
    rows, summaries = [], {}
    for name in VARIANTS:
        for path in (args.cache_dir / name / "summary.json", *args.cache_dir.glob(f"{name}-seed*/summary.json")):
            if path.is_file():
                folder = path.parent.name
                summaries[name if folder == name else f"{name}@{folder[len(name) + 1:]}"] = read_json(path)
    if not summaries:
        raise SystemExit(f"Nothing finished yet under {args.cache_dir}.")
    summaries = {**earlier_summaries(args, summaries), **summaries}
    summaries = {key: summaries[key] for key in sorted(summaries, key=lambda k: (list(VARIANTS).index(variant_of(k)),
                                                                                  k))}
    teacher = next(iter(summaries.values()))["fidelity"]
    rows.append(["teacher", f"{teacher['snippets']['teacher']:.4f}",
                 *(f"{teacher['long_reviews'][length]['teacher']:.4f}" for length in ("128", "256")), "", "", "", ""])
    for name, summary in summaries.items():
        f = summary["fidelity"]
        agreement = f["news_agreement"]
        rows.append([
            LABELS[variant_of(name)] + (f" (student seed {summary['student_seed']})" if "@" in name else ""),
            f"{f['snippets']['student']:.4f} ({f['snippets']['student'] / f['snippets']['teacher']:.1%})",
            *(f"{f['long_reviews'][length]['student']:.4f} (pos. {f['long_reviews'][length]['student_positive']:.2f}, "
              f"agree {f['long_reviews'][length]['student_agreement']:.3f})" for length in ("128", "256")),
            *(f"{agreement[length]['agreement']:.3f} / {agreement[length]['kl']:.3f}" for length in ("64", "128", "256", "512")),
        ])
    size = f"~{args.compression}x" if args.compression[0].isdigit() else args.compression
    header = [f"student ({size})", "snippets acc. (retained)", "joined reviews 128 tok.", "joined reviews 256 tok.",
              "news 64: agree / KL", "news 128", "news 256", "news 512"]
    long = teacher["long_reviews"]
    markdown = (
        f"# Recipe study: one change at a time (quickstart path, all-MiniLM-L6-v2 teacher, {size})\n\n"
        f"Teacher: snippets {teacher['snippets']['teacher']:.4f}; joined reviews 128 tokens {long['128']['teacher']:.4f} "
        f"({long['128']['examples']} reviews), 256 tokens {long['256']['teacher']:.4f} ({long['256']['examples']}). "
        f"Budget per student: stage 1 {args.stage1_steps} steps x {args.batch_size} news blocks, stage 2 "
        f"{args.stage2_epochs:g} epochs x {args.train_sentences} snippets (batch {args.batch_size}). News agreement: "
        f"fraction of identical predictions / mean KL(teacher || student) on up to {args.fidelity_texts} held-out "
        f"news articles cut to each length. Student seed {args.seed} unless stated (the teacher's always).\n\n"
        + markdown_table(header, rows) + "\n" + seed_table(summaries, size)
    )
    payload = {"settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
               "variants": summaries}
    json_path, md_path = write_results(args.results_dir, "recipe", payload, markdown)
    plot(args, summaries)
    print(markdown)
    print(f"wrote {json_path} and {md_path}")
    return payload


def seed_table(summaries: dict, size: str) -> str:
    """Mean and range over student seeds of the main figures, for the variants run with more than one."""
    by_variant: dict[str, list[dict]] = {}
    for key, summary in summaries.items():
        by_variant.setdefault(variant_of(key), []).append(summary["fidelity"])
    rows = []
    for name, runs in by_variant.items():
        if len(runs) < 2:
            continue
        figures = {
            "snippets": [f["snippets"]["student"] for f in runs],
            "128": [f["long_reviews"]["128"]["student"] for f in runs],
            "256": [f["long_reviews"]["256"]["student"] for f in runs],
            "news": [sum(v["agreement"] for v in f["news_agreement"].values()) / len(f["news_agreement"]) for f in runs],
        }
        rows.append([LABELS[name], str(len(runs)),
                     *(f"{sum(v) / len(v):.4f} ({min(v):.4f}-{max(v):.4f})" for v in figures.values())])
    if not rows:
        return ""
    header = [f"student ({size})", "seeds", "snippets acc.", "joined reviews 128", "joined reviews 256",
              "news agreement (mean of 64-512)"]
    return "\nAcross student seeds (mean, then range):\n\n" + markdown_table(header, rows) + "\n"


def earlier_summaries(args, summaries: dict) -> dict:
    """Variants finished by an earlier run whose cache is gone, from the results JSON it wrote -- kept only when that
    run's teacher scored exactly as this one's (the same seeded teacher), so every row compares against one teacher."""
    path = args.results_dir / "recipe.json"
    if not path.is_file():
        return {}
    earlier = read_json(path).get("variants", {})
    teacher = teacher_figures(next(iter(summaries.values())))
    kept = {name: summary for name, summary in earlier.items()
            if variant_of(name) in VARIANTS and name not in summaries and teacher_figures(summary) == teacher}
    dropped = sorted(set(earlier) - set(summaries) - set(kept))
    if dropped:
        print(f"not reusing {dropped} from {path}: that run's teacher scored differently", flush=True)
    return kept


def teacher_figures(summary: dict) -> tuple:
    f = summary["fidelity"]
    return (f["snippets"]["teacher"], *(f["long_reviews"][length]["teacher"] for length in ("128", "256")))


def plot(args, summaries: dict) -> Path:
    return plot_fidelity(args.results_dir / "recipe.png", {name: s["fidelity"] for name, s in summaries.items()})


def main(argv=None):
    args = parse_args(argv)
    setup_runtime(args.threads)
    if not args.report_only:
        data, teacher_dir = prepare(args)
        for name in args.variants:
            began = time.time()
            summary = run_variant(args, name, data, teacher_dir)
            f = summary["fidelity"]
            print(f"[{name}] snippets {f['snippets']['student']:.4f}, reviews-256 "
                  f"{f['long_reviews']['256']['student']:.4f}, news-256 agreement "
                  f"{f['news_agreement']['256']['agreement']:.3f} ({time.time() - began:.0f} s)", flush=True)
    return report(args)


if __name__ == "__main__":
    main()
