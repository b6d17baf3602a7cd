#!/usr/bin/env python
# Copyright 2026 The kron-transformers Authors. Licensed under the Apache License, Version 2.0.
"""Wall-time estimates of the full quality runs, from a few timed real steps of every kind of stage.

    python benchmarks/quality/estimate_time.py [--steps 3] [--experiments bert gpt2]

Each kind of stage is built exactly as the experiment builds it (real teacher sizes, real data, the default batch
sizes and sequence lengths), runs one warm-up step and ``--steps`` timed optimizer steps in a temporary folder, and
its median step time is multiplied by the experiment's default step count; evaluation is timed on a few batches and
scaled to the whole validation/test set. Timing does not depend on the weights, so the teachers are not trained
first. On a machine shared with other jobs, step times vary by 2x or more: the estimate uses the median, and the
fastest step gives the estimate for an idle machine. The tokenised data are written to the experiments' cache (the
full runs reuse them). Writes ``benchmarks/results/quality_time_estimates.{json,md}``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from transformers import TrainerCallback
from transformers.trainer_utils import SaveStrategy


sys.path.insert(0, str(Path(__file__).resolve().parent))

import bert_sentiment  # noqa: E402
import gpt2_news  # noqa: E402
from common import DEFAULT_RESULTS, format_seconds, markdown_table, setup_runtime, write_results  # noqa: E402


class StepTimer(TrainerCallback):
    def __init__(self):
        self.durations: list[float] = []

    def on_step_begin(self, args, state, control, **kwargs):
        self.start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.durations.append(time.perf_counter() - self.start)


def time_steps(make_trainer, steps: int) -> dict[str, float]:
    """Median and fastest time of ``steps`` optimizer steps after one warm-up step (nothing saved)."""
    with tempfile.TemporaryDirectory() as out_dir:
        trainer = make_trainer(Path(out_dir), steps + 1)
        trainer.args.save_strategy = SaveStrategy.NO
        timer = StepTimer()
        trainer.add_callback(timer)
        trainer.train()
    timed = timer.durations[1:]
    return {"median_s": statistics.median(timed), "min_s": min(timed)}


def estimate_bert(steps: int, cache_dir: Path | None) -> list[dict]:
    args = bert_sentiment.parse_args(["--cache_dir", str(cache_dir)] if cache_dir else [])
    data = bert_sentiment.prepare_data(args)
    rows = []
    teacher = bert_sentiment.teacher_architecture(args)
    timing = time_steps(lambda out, n: bert_sentiment.teacher_trainer(args, data, out, n), steps)
    rows.append({"stage": "teacher fine-tuning", "count": 1, "steps": args.teacher_steps, **timing})
    teacher.eval()
    start = time.perf_counter()
    subset = data["validation"].select(range(256))
    bert_sentiment.accuracy(teacher, subset, data["tokenizer"])
    eval_seconds = (time.perf_counter() - start) * len(data["validation"]) / len(subset)
    for ratio in args.compressions:
        for variant in ("kronecker", "distilbert", "tinybert"):
            # The Kronecker ablations have the Kronecker student's step cost: stage 1 for `kronecker` and
            # `kronecker_random_init`, stage 2 for both plus stage 1 + stage 2 steps for `kronecker_no_stage1`.
            ablations = variant == "kronecker"
            for stage, dataset, collator, lr, steps_total in (
                ("stage1", data["news"], data["news_collator"], args.stage1_lr,
                 args.stage1_steps * (2 if ablations else 1)),
                ("stage2", data["train"], data["task_collator"], args.stage2_lr,
                 args.stage2_steps * (2 if ablations else 1) + (args.stage1_steps + args.stage2_steps) * ablations),
            ):
                def make(out, n):
                    student = bert_sentiment.build_student(variant, ratio, teacher, args)[0]
                    return bert_sentiment.distillation_trainer(args, stage, student, teacher, dataset, collator, n,
                                                               lr, out)

                timing = time_steps(make, steps)
                label = f"{variant}{' (3 students, steps summed)' if ablations else ''} x{ratio:g} {stage}"
                rows.append({"stage": label, "count": 1, "steps": steps_total, **timing})
                print(rows[-1], flush=True)
    rows.append({"stage": "evaluation (teacher-sized, upper bound per model)", "count": 1 + 5 * len(args.compressions),
                 "steps": 1, "median_s": eval_seconds, "min_s": eval_seconds})
    return rows


def estimate_gpt2(steps: int, cache_dir: Path | None) -> list[dict]:
    from kron_transformers import load_gpt2_tokenizer

    args = gpt2_news.parse_args(["--cache_dir", str(cache_dir)] if cache_dir else [])
    tokenizer = load_gpt2_tokenizer()
    train = gpt2_news.lm_dataset(gpt2_news.token_blocks(args, tokenizer, "train"))
    test_blocks = gpt2_news.token_blocks(args, tokenizer, "test")
    teacher = gpt2_news.new_teacher(args).eval()
    rows = []
    timing = time_steps(lambda out, n: gpt2_news.teacher_trainer(args, train, out, n), steps)
    rows.append({"stage": "teacher training", "count": 1, "steps": args.teacher_steps, **timing})
    print(rows[-1], flush=True)
    for name in args.students:
        timing = time_steps(lambda out, n: gpt2_news.student_trainer(args, name, teacher, train, out, n), steps)
        rows.append({"stage": f"{name} distillation", "count": 1, "steps": args.student_steps, **timing})
        print(rows[-1], flush=True)
    start = time.perf_counter()
    gpt2_news.perplexity(teacher, test_blocks[: 4 * 16])
    eval_seconds = (time.perf_counter() - start) * len(test_blocks) / (4 * 16)
    rows.append({"stage": f"perplexity on {len(test_blocks)} test blocks (teacher-sized)",
                 "count": 1 + len(args.students), "steps": 1, "median_s": eval_seconds, "min_s": eval_seconds})
    return rows


def summarise(name: str, rows: list[dict]) -> tuple[dict, list[list]]:
    total = sum(r["count"] * r["steps"] * r["median_s"] for r in rows)
    fastest = sum(r["count"] * r["steps"] * r["min_s"] for r in rows)
    table = [[name, r["stage"], r["count"], r["steps"], f"{r['median_s']:.2f}", f"{r['min_s']:.2f}",
              format_seconds(r["count"] * r["steps"] * r["median_s"])] for r in rows]
    table.append([name, "**total (estimate)**", "", "", "", "", f"**{format_seconds(total)}** (idle machine: "
                  f"{format_seconds(fastest)})"])
    return {"rows": rows, "total_seconds": total, "idle_machine_seconds": fastest}, table


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per stage (after one warm-up step)")
    parser.add_argument("--experiments", nargs="+", default=["bert", "gpt2"], choices=["bert", "gpt2"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--results_dir", type=Path, default=DEFAULT_RESULTS)
    args = parser.parse_args(argv)
    setup_runtime(args.threads)
    torch.manual_seed(0)
    payload, table = {"threads": args.threads, "timed_steps": args.steps}, []
    for name, estimate in (("bert", estimate_bert), ("gpt2", estimate_gpt2)):
        if name in args.experiments:
            payload[name], rows = summarise(name, estimate(args.steps, None))
            table += rows
    header = ["experiment", "stage", "runs", "steps per run", "median s/step", "fastest s/step", "estimated time"]
    markdown = "\n\n".join([
        "# Estimated wall time of the full quality runs (defaults, " + f"{args.threads} threads)",
        f"From {args.steps} timed steps per stage (after a warm-up step) on real data and real model sizes: an "
        "estimate, not a measurement of the full run. The machine was shared with other jobs while timing.",
        markdown_table(header, table),
    ])
    write_results(args.results_dir, "quality_time_estimates", payload, markdown)
    print(markdown)
    return payload


if __name__ == "__main__":
    main()
