# Copyright 2026 The kron-transformers Authors. Licensed under the Apache License, Version 2.0.
"""Whole-model CPU inference: Kronecker models against their dense teachers and the usual small models, one run.

    python benchmarks/models.py [--threads 2] [--repeats 10] [--skip-training] [--skip-rss]

For every model (random weights: timing does not depend on them): parameters, safetensors size, peak RSS (a fresh
subprocess per model that loads the checkpoint and runs a batch-8 forward), median latency at sequence 128 for
batch 1 and 8 under ``torch.inference_mode`` with 2 threads, FLOPs counted by ``torch.utils.flop_counter``, and the
speed-up over the dense teacher measured in this same run beside the FLOP ratio. GPT-2 models also report greedy
generation speed (64 new tokens, KV cache). With training enabled: one ``IlkdTrainer`` step of KroneckerBERT-8
against one plain ``Trainer`` fine-tuning step of BERT_BASE on the same batch.

Peak RSS includes the libraries (the resident size after importing torch and transformers is reported
as ``baseline_rss_mb``). Writes ``benchmarks/results/models.json`` and ``benchmarks/results/models.png`` (latency vs parameters).
"""

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import BertConfig, BertModel, GPT2Config, GPT2LMHeadModel

from kronecker_linear import median_time  # the same timing loop as the layer benchmark

from kron_transformers import (
    KroneckerBertConfig,
    KroneckerBertModel,
    KroneckerGPT2Config,
    KroneckerGPT2LMHeadModel,
)


RESULTS = Path(__file__).resolve().parent / "results"
SEQ = 128


def bert_base(**overrides):
    return BertConfig(**{"vocab_size": 30522, "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
                         "intermediate_size": 3072, **overrides})


def gpt2_small(**overrides):
    return GPT2Config(**{"vocab_size": 50257, "n_embd": 768, "n_layer": 12, "n_head": 12, **overrides})


def model_specs():
    """name -> (family, teacher name, builder). Builders make models with random weights, in eval mode."""
    return {
        "BERT_BASE": ("bert", None, lambda: BertModel(bert_base(), add_pooling_layer=True)),
        "KroneckerBERT_8": ("bert", "BERT_BASE",
                            lambda: KroneckerBertModel(KroneckerBertConfig.from_dense_config(bert_base(), "kronecker-bert-8"))),
        "KroneckerBERT_21": ("bert", "BERT_BASE",
                             lambda: KroneckerBertModel(KroneckerBertConfig.from_dense_config(bert_base(), "kronecker-bert-21"))),
        "DistilBERT-shaped (6L)": ("bert", "BERT_BASE", lambda: BertModel(bert_base(num_hidden_layers=6))),
        "TinyBERT-shaped (4L, 312)": ("bert", "BERT_BASE", lambda: BertModel(
            bert_base(num_hidden_layers=4, hidden_size=312, intermediate_size=1200)
        )),
        "GPT-2 small": ("gpt2", None, lambda: GPT2LMHeadModel(gpt2_small())),
        "KnGPT2": ("gpt2", "GPT-2 small",
                   lambda: KroneckerGPT2LMHeadModel(KroneckerGPT2Config.from_dense_config(gpt2_small(), "kngpt2"))),
        "DistilGPT2-shaped (6L)": ("gpt2", "GPT-2 small", lambda: GPT2LMHeadModel(gpt2_small(n_layer=6))),
    }


def inputs(family, batch, vocab):
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab, (batch, SEQ), generator=generator)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def count_flops(model, batch):
    """FLOPs of one forward. Counted with eager attention: the flop counter does not see inside the fused CPU
    attention kernel, and the score products must count (they are not factored)."""
    backend = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        with FlopCounterMode(display=False) as counter, torch.inference_mode():
            model(**batch)
    finally:
        model.set_attn_implementation(backend)
    return counter.get_total_flops()


def generation_tokens_per_second(model, repeats, new_tokens=64):
    prompt = torch.randint(0, model.config.vocab_size, (1, 16), generator=torch.Generator().manual_seed(0))
    kwargs = {"max_new_tokens": new_tokens, "min_new_tokens": new_tokens, "do_sample": False, "use_cache": True,
              "pad_token_id": 0}
    with torch.inference_mode():
        seconds = median_time(lambda: model.generate(prompt, attention_mask=torch.ones_like(prompt), **kwargs),
                                 max(3, repeats // 3), warmup=1)
    return new_tokens / seconds


def peak_rss_mb(checkpoint: Path, family: str) -> tuple[float, float]:
    """``(baseline, peak)`` resident memory in MiB of a fresh process: after its imports, and at the peak of loading
    the checkpoint and running one batch-8 forward. The kernel's high-water mark is reset after the imports
    (``/proc/self/clear_refs``), so a transient peak while importing libraries does not hide the model's."""
    code = f"""
import torch, kron_transformers
from transformers import AutoModel, AutoModelForCausalLM
torch.set_num_threads(2)

def status(field):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field)) / 1024

baseline = status("VmRSS:")
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
cls = AutoModelForCausalLM if {family!r} == "gpt2" else AutoModel
model = cls.from_pretrained({str(checkpoint)!r}).eval()
ids = torch.randint(0, model.config.vocab_size, (8, {SEQ}))
with torch.inference_mode():
    model(input_ids=ids, attention_mask=torch.ones_like(ids))
print(baseline, status("VmHWM:"))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    baseline, peak = map(float, result.stdout.strip().splitlines()[-1].split())
    return baseline, peak


def training_step_comparison(repeats):
    """Seconds per optimisation step: IlkdTrainer on KroneckerBERT_8 (teacher BERT_BASE) vs Trainer on BERT_BASE."""
    from datasets import Dataset
    from transformers import BertForSequenceClassification, Trainer, TrainingArguments

    from kron_transformers import compress
    from kron_transformers.distillation import IlkdTrainer, IlkdTrainingArguments

    batch, steps = 8, max(4, repeats)
    data = Dataset.from_dict({
        "input_ids": torch.randint(0, 30522, (batch * (steps + 2), SEQ)).tolist(),
        "attention_mask": [[1] * SEQ] * (batch * (steps + 2)),
        "labels": torch.randint(0, 2, (batch * (steps + 2),)).tolist(),
    })
    teacher = BertForSequenceClassification(bert_base(num_labels=2)).eval()
    student = compress(teacher, "kronecker-bert-8", show_progress=False)
    dense_student = BertForSequenceClassification(bert_base(num_labels=2))
    common = {"output_dir": tempfile.mkdtemp(), "per_device_train_batch_size": batch, "report_to": "none",
              "save_strategy": "no", "logging_strategy": "no", "disable_tqdm": True, "use_cpu": True,
              "dataloader_num_workers": 0}
    results = {}
    for name, make in (
        ("BERT_BASE fine-tuning (Trainer)",
         lambda: Trainer(model=dense_student, args=TrainingArguments(max_steps=steps + 2, **common), train_dataset=data)),
        ("KroneckerBERT_8 ILKD (IlkdTrainer)",
         lambda: IlkdTrainer(model=student, teacher_model=teacher, args=IlkdTrainingArguments(max_steps=steps + 2, **common),
                             train_dataset=data)),
    ):
        trainer = make()
        start_times = []
        from transformers import TrainerCallback

        class Timer(TrainerCallback):
            def on_step_begin(self, args, state, control, **kwargs):
                start_times.append(time.perf_counter())

            def on_step_end(self, args, state, control, **kwargs):
                start_times[-1] = time.perf_counter() - start_times[-1]

        trainer.add_callback(Timer())
        trainer.train()
        results[name] = statistics.median(start_times[2:])  # the first steps warm up allocators
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--skip-training", action="store_true", help="skip the training-step comparison")
    parser.add_argument("--skip-rss", action="store_true", help="skip the per-model peak-RSS subprocesses")
    parser.add_argument("--only", nargs="*", help="benchmark only these models (names as printed)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (family, teacher, build) in model_specs().items():
            if args.only and name not in args.only:
                continue
            model = build().eval()
            folder = Path(tmp) / name.replace(" ", "_")
            model.save_pretrained(folder)
            row = {
                "family": family,
                "teacher": teacher,
                "parameters": model.num_parameters(),
                "checkpoint_mb": sum(f.stat().st_size for f in folder.glob("*.safetensors")) / 2**20,
                "flops_b1": count_flops(model, inputs(family, 1, model.config.vocab_size)),
            }
            for batch in (1, 8):
                data = inputs(family, batch, model.config.vocab_size)
                with torch.inference_mode():
                    row[f"latency_ms_b{batch}"] = 1e3 * median_time(lambda m=model, d=data: m(**d), args.repeats)
            if family == "gpt2":
                row["generate_tokens_per_s"] = generation_tokens_per_second(model, args.repeats)
            if not args.skip_rss:
                row["baseline_rss_mb"], row["peak_rss_mb"] = peak_rss_mb(folder, family)
            rows[name] = row
            print(f"measured {name}", flush=True)
            del model

    for name, row in rows.items():
        teacher = rows.get(row["teacher"]) if row["teacher"] else row
        if teacher is None:
            continue
        row["flop_ratio"] = teacher["flops_b1"] / row["flops_b1"]
        for batch in (1, 8):
            row[f"speedup_b{batch}"] = teacher[f"latency_ms_b{batch}"] / row[f"latency_ms_b{batch}"]
        if "generate_tokens_per_s" in row:
            row["generate_speedup"] = row["generate_tokens_per_s"] / teacher["generate_tokens_per_s"]

    header = (f"{'model':<27}{'params':>8}{'ckpt MB':>9}{'RSS MB':>8}{'+RSS':>6}{'FLOP x':>8}{'b1 ms':>8}{'b1 x':>6}"
              f"{'b8 ms':>9}{'b8 x':>6}{'gen tok/s':>10}{'gen x':>7}")
    print(f"\nseq {SEQ}, {args.threads} threads, torch {torch.__version__}, {platform.machine()}")
    print(header)
    print("-" * len(header))
    for name, r in rows.items():
        rss_increase = r.get("peak_rss_mb", float("nan")) - r.get("baseline_rss_mb", float("nan"))
        print(f"{name:<27}{r['parameters'] / 1e6:>7.1f}M{r['checkpoint_mb']:>9.1f}{r.get('peak_rss_mb', float('nan')):>8.0f}"
              f"{rss_increase:>6.0f}"
              f"{r.get('flop_ratio', float('nan')):>8.2f}{r['latency_ms_b1']:>8.1f}{r.get('speedup_b1', float('nan')):>6.2f}"
              f"{r['latency_ms_b8']:>9.1f}{r.get('speedup_b8', float('nan')):>6.2f}"
              f"{r.get('generate_tokens_per_s', float('nan')):>10.1f}{r.get('generate_speedup', float('nan')):>7.2f}")

    training = None
    if not args.skip_training:
        training = training_step_comparison(args.repeats)
        print("\ntraining step (batch 8, seq 128):")
        for name, seconds in training.items():
            print(f"  {name:<40} {seconds:.3f} s/step")

    RESULTS.mkdir(parents=True, exist_ok=True)
    meta = {"seq": SEQ, "threads": args.threads, "repeats": args.repeats, "torch": torch.__version__,
            "machine": platform.machine(), "peak_rss_of_this_process_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    (RESULTS / "models.json").write_text(json.dumps({"meta": meta, "models": rows, "training_step_s": training}, indent=2) + "\n")
    plot(rows, RESULTS / "models.png")
    print(f"\nwrote {RESULTS / 'models.json'} and {RESULTS / 'models.png'}")


def plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, family, title in ((axes[0], "bert", "BERT family"), (axes[1], "gpt2", "GPT-2 family")):
        names = [n for n, r in rows.items() if r["family"] == family]
        if not names:
            continue
        params = [rows[n]["parameters"] / 1e6 for n in names]
        latency = [rows[n]["latency_ms_b8"] for n in names]
        bars = ax.bar(range(len(names)), latency, color=["#999999" if rows[n]["teacher"] is None else
                                                           "#1f77b4" if "Kron" in n or "KnGPT" in n else "#ff7f0e" for n in names])
        for bar, p in zip(bars, params):
            ax.annotate(f"{p:.1f}M params", (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center",
                        va="bottom", fontsize=8)
        ax.set_xticks(range(len(names)), names, rotation=20, ha="right", fontsize=8)
        ax.set_ylabel("CPU latency, batch 8 x 128 tokens (ms)")
        ax.set_title(title)
    fig.suptitle("Latency vs parameters (2 threads, median); blue = Kronecker, orange = smaller dense, grey = teacher")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
