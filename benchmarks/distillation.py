# Copyright 2026 The kron-transformers Authors. Licensed under the Apache License, Version 2.0.
"""What distillation costs beyond the teacher's forward pass, in one process.

    python benchmarks/distillation.py [--threads 2] [--steps 20] [--rounds 3]

A small BERT-ish dense teacher and its KroneckerBERT student (``compress(teacher, 4)``), sequence classification on
padded batches. Per optimizer step, median over the measured steps of every round (rounds interleave the variants so
that machine load hits them alike):

- ``plain``: ``Trainer`` fine-tuning the student on its labels;
- ``teacher``: one teacher forward (eval, no grad, its own attention backend) on the same batch;
- ``ilkd``: ``IlkdTrainer`` with every loss (recorded attention scores for both models);
- ``ilkd_no_attention``: ``IlkdTrainer`` with ``alpha_attention=0`` (no score recording), for the breakdown.

The overhead is ``ilkd / (plain + teacher) - 1``: what distillation adds beyond the teacher forward it cannot avoid,
in wall time and in CPU time (all threads; steadier when other jobs share the machine).
Results go to ``benchmarks/results/distillation.json``.
"""

import argparse
import copy
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path


# On a machine shared with other jobs, OpenMP threads that spin while waiting burn the cores their siblings need and
# make timings erratic; waiting passively keeps the comparison fair. Set before torch loads OpenMP.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import (  # noqa: E402
    BertConfig,
    BertForSequenceClassification,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)
from transformers.trainer_callback import PrinterCallback  # noqa: E402

from kron_transformers import compress  # noqa: E402
from kron_transformers.distillation import IlkdTrainer, IlkdTrainingArguments  # noqa: E402


class StepTimer(TrainerCallback):
    """(wall, CPU) seconds of each optimizer step: forward, backward and update (the batch is already fetched)."""

    def __init__(self):
        self.times, self._start = [], None

    def on_step_begin(self, args, state, control, **kwargs):
        self._start = (time.perf_counter(), time.process_time())

    def on_step_end(self, args, state, control, **kwargs):
        self.times.append((time.perf_counter() - self._start[0], time.process_time() - self._start[1]))


def make_data(size, seq, vocab, seed=0):
    generator = torch.Generator().manual_seed(seed)
    data = []
    for _ in range(size):
        length = int(torch.randint(seq // 2, seq + 1, (1,), generator=generator))
        ids = torch.randint(5, vocab, (seq,), generator=generator)
        ids[length:] = 0
        data.append({"input_ids": ids, "attention_mask": (torch.arange(seq) < length).long(),
                     "labels": ids[1] % 2})
    return data


def time_training(trainer_cls, args_cls, student, data, steps, warmup, output_dir, **kwargs):
    timer = StepTimer()
    args = args_cls(
        output_dir=output_dir, max_steps=warmup + steps, per_device_train_batch_size=kwargs.pop("batch_size"),
        use_cpu=True, report_to="none", save_strategy="no", disable_tqdm=True, logging_strategy="no",
        dataloader_num_workers=0, seed=0, **kwargs.pop("args", {}),
    )
    trainer = trainer_cls(model=copy.deepcopy(student), args=args, train_dataset=data, callbacks=[timer], **kwargs)
    trainer.remove_callback(PrinterCallback)
    trainer.train()
    return timer.times[warmup:]


def time_teacher(teacher, data, batch_size, steps, warmup):
    batches = [transformers.default_data_collator(data[i * batch_size:(i + 1) * batch_size])
               for i in range(len(data) // batch_size)]
    times = []
    with torch.no_grad():
        for step in range(warmup + steps):
            batch = batches[step % len(batches)]
            start = (time.perf_counter(), time.process_time())
            teacher(**batch)
            times.append((time.perf_counter() - start[0], time.process_time() - start[1]))
    return times[warmup:]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=20, help="measured optimizer steps per variant and round")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--output", default=str(Path(__file__).parent / "results" / "distillation.json"))
    options = parser.parse_args()
    torch.set_num_threads(options.threads)

    config = BertConfig(
        vocab_size=4000, hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024,
        max_position_embeddings=options.seq, num_labels=2, attn_implementation="sdpa",
    )
    torch.manual_seed(0)
    teacher = BertForSequenceClassification(config).eval()
    student = compress(teacher, compression=4, show_progress=False)
    data = make_data(options.batch_size * (options.warmup + options.steps), options.seq, config.vocab_size)

    variants = {
        "plain": dict(trainer_cls=Trainer, args_cls=TrainingArguments),
        "ilkd": dict(trainer_cls=IlkdTrainer, args_cls=IlkdTrainingArguments, teacher_model=teacher,
                     args={"alpha_task": 1.0}),
        "ilkd_no_attention": dict(trainer_cls=IlkdTrainer, args_cls=IlkdTrainingArguments, teacher_model=teacher,
                                  args={"alpha_task": 1.0, "alpha_attention": 0.0}),
    }
    times = {name: [] for name in [*variants, "teacher"]}
    with tempfile.TemporaryDirectory() as output_dir:
        for round_ in range(options.rounds):
            for name, variant in variants.items():
                times[name] += time_training(
                    student=student, data=data, steps=options.steps, warmup=options.warmup, output_dir=output_dir,
                    batch_size=options.batch_size, **copy.copy(variant),
                )
                if name == "plain":
                    times["teacher"] += time_teacher(teacher.eval(), data, options.batch_size, options.steps,
                                                     options.warmup)
            print(f"round {round_ + 1}/{options.rounds} done", flush=True)

    # Wall time is what a user waits; CPU time (all threads) is what the work costs, and moves less when other jobs
    # share the machine. The overhead is reported for both.
    median = {name: statistics.median(wall for wall, _ in values) for name, values in times.items()}
    median_cpu = {name: statistics.median(cpu for _, cpu in values) for name, values in times.items()}
    baseline, baseline_cpu = median["plain"] + median["teacher"], median_cpu["plain"] + median_cpu["teacher"]
    overhead = {
        "wall": {"all_losses": median["ilkd"] / baseline - 1,
                 "no_attention_loss": median["ilkd_no_attention"] / baseline - 1},
        "cpu": {"all_losses": median_cpu["ilkd"] / baseline_cpu - 1,
                "no_attention_loss": median_cpu["ilkd_no_attention"] / baseline_cpu - 1},
    }

    print(f"\nBERT-ish teacher {config.num_hidden_layers}x{config.hidden_size}, KroneckerBERT student (4x), batch "
          f"{options.batch_size} x {options.seq} tokens, {options.threads} threads, median of "
          f"{options.rounds * options.steps} steps")
    print(f"{'variant':34s} {'ms/step':>9s} {'steps/s':>8s} {'CPU ms/step':>12s}")
    rows = [
        ("Trainer (student fine-tuning)", median["plain"], median_cpu["plain"]),
        ("teacher forward", median["teacher"], median_cpu["teacher"]),
        ("Trainer + teacher forward", baseline, baseline_cpu),
        ("IlkdTrainer, all losses", median["ilkd"], median_cpu["ilkd"]),
        ("IlkdTrainer, no attention loss", median["ilkd_no_attention"], median_cpu["ilkd_no_attention"]),
    ]
    for label, seconds, cpu_seconds in rows:
        print(f"{label:34s} {1000 * seconds:9.1f} {1 / seconds:8.2f} {1000 * cpu_seconds:12.1f}")
    for clock in ("wall", "cpu"):
        print(f"overhead beyond the teacher forward ({clock} time): {100 * overhead[clock]['all_losses']:+.1f}% "
              f"(all losses), {100 * overhead[clock]['no_attention_loss']:+.1f}% (no attention loss)")

    result = {
        "config": {"teacher": config.to_diff_dict(), "student_compression": 4, "batch_size": options.batch_size,
                   "seq": options.seq, "threads": options.threads, "steps": options.steps, "rounds": options.rounds},
        "environment": {"torch": torch.__version__, "transformers": transformers.__version__,
                        "machine": platform.machine(), "processor": platform.processor()},
        "median_seconds_per_step": median,
        "median_cpu_seconds_per_step": median_cpu,
        "steps_per_second": {name: 1 / seconds for name, seconds in median.items()},
        "overhead_beyond_teacher_forward": overhead,
        "load_average_1min_at_end": os.getloadavg()[0],
    }
    Path(options.output).parent.mkdir(parents=True, exist_ok=True)
    Path(options.output).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {options.output}")


if __name__ == "__main__":
    main()
