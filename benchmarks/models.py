# Copyright 2026 The kron-transformers Authors. Licensed under the Apache License, Version 2.0.
"""Whole-model CPU inference in every runtime: Kronecker models against their dense teachers and the usual small models.

    python benchmarks/models.py [--models bert_base kb8 kb21 ...] [--runtimes eager compiled onnx onnx_int8]
                                [--batches 1 8] [--threads 2] [--repeats 10] [--rss] [--training] [--ort_spinning]

For every model (random weights: timing does not depend on them) and every runtime -- eager PyTorch
(``torch.inference_mode``), ``torch.compile`` (inductor), onnxruntime on the ``kron_transformers.export`` graph, and
onnxruntime on its dynamic-int8 copy -- the median latency at sequence 128 for each batch size. The models of one
family are timed in turns, one call each per round, so a change in the machine's load hits the dense teacher and the
Kronecker models alike; each speed-up is the teacher's median over the model's median in the same runtime, batch and
process. The load average is recorded before and after each runtime (``os.getloadavg``). Also: parameters, FLOPs
(``torch.utils.flop_counter``, eager attention), onnx file sizes, greedy generation speed of the GPT-2 models (64 new
tokens, KV cache, eager), and with ``--rss`` the peak RSS of a fresh process per model, with ``--training`` one
``IlkdTrainer`` step of KroneckerBERT-8 against one ``Trainer`` step of BERT_BASE.

Writes ``benchmarks/results/<stem>.json``, ``<stem>.md`` (the table) and ``<stem>.png`` (speed-up per runtime),
``--stem models`` by default.
"""

import argparse
import json
import os
import platform
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
RUNTIMES = ("eager", "compiled", "onnx", "onnx_int8")


def bert_base(**overrides):
    return BertConfig(**{"vocab_size": 30522, "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
                         "intermediate_size": 3072, **overrides})


def minilm(**overrides):
    """The shape of all-MiniLM-L6-v2, the quickstart's teacher."""
    return bert_base(**{"hidden_size": 384, "num_hidden_layers": 6, "intermediate_size": 1536, **overrides})


def gpt2_small(**overrides):
    return GPT2Config(**{"vocab_size": 50257, "n_embd": 768, "n_layer": 12, "n_head": 12, **overrides})


def model_specs():
    """key -> (printed name, family, teacher key, builder). Builders make models with random weights."""
    def kronecker_bert(preset, dense=bert_base, **options):
        return lambda: KroneckerBertModel(KroneckerBertConfig.from_dense_config(dense(), preset, **options))

    return {
        "bert_base": ("BERT_BASE", "bert", None, lambda: BertModel(bert_base())),
        "kb8": ("KroneckerBERT_8", "bert", "bert_base", kronecker_bert("kronecker-bert-8")),
        "kb21": ("KroneckerBERT_21", "bert", "bert_base", kronecker_bert("kronecker-bert-21")),
        "distilbert": ("DistilBERT-shaped (6L)", "bert", "bert_base", lambda: BertModel(bert_base(num_hidden_layers=6))),
        "tinybert": ("TinyBERT-shaped (4L, 312)", "bert", "bert_base", lambda: BertModel(
            bert_base(num_hidden_layers=4, hidden_size=312, intermediate_size=1200))),
        "minilm": ("MiniLM-shaped (6L, 384)", "bert", None, lambda: BertModel(minilm())),
        "minilm_k4": ("Kronecker MiniLM ~4x (quickstart)", "bert", "minilm", kronecker_bert(4.0, minilm)),
        "minilm_k4_svd": ("Kronecker MiniLM ~4x, rank-96 SVD embedding", "bert", "minilm",
                          kronecker_bert(4.0, minilm, embedding_rank=96)),
        "minilm_k4_rank2": ("Kronecker MiniLM ~4x, rank 2", "bert", "minilm", kronecker_bert(4.0, minilm, rank=2)),
        "gpt2": ("GPT-2 small", "gpt2", None, lambda: GPT2LMHeadModel(gpt2_small())),
        "kngpt2": ("KnGPT2", "gpt2", "gpt2",
                   lambda: KroneckerGPT2LMHeadModel(KroneckerGPT2Config.from_dense_config(gpt2_small(), "kngpt2"))),
        "distilgpt2": ("DistilGPT2-shaped (6L)", "gpt2", "gpt2", lambda: GPT2LMHeadModel(gpt2_small(n_layer=6))),
    }


def interleaved_medians(fns: dict, repeats: int, warmup: int = 2) -> dict:
    """``{name: median seconds}``, timing one call of each function per round so that load changes hit all alike."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def inputs(batch, vocab, family):
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab, (batch, SEQ), generator=generator)
    data = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    if family == "bert":
        data["token_type_ids"] = torch.zeros_like(ids)
    return data


def count_flops(model, batch):
    """FLOPs of one forward, with eager attention (the counter does not see inside the fused CPU attention kernel,
    and the score products must count: they are not factored)."""
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


def make_runner(runtime, model, family, folder, threads, batches, row, ort_spinning=False):
    """A function ``batch -> None`` running ``model`` in ``runtime`` on the benchmark input of that batch size."""
    data = {batch: inputs(batch, model.config.vocab_size, family) for batch in batches}
    extra = {"use_cache": False} if family == "gpt2" else {}
    if runtime == "eager":
        def run(batch):
            with torch.inference_mode():
                model(**data[batch], **extra)
        return run
    if runtime == "compiled":
        # Every model of a family runs the same forward code, each model and batch size one compiled graph: more than
        # dynamo's default of 8 per code object (the 5th BERT-family model at 2 batch sizes failed with it).
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
        compiled = torch.compile(model, fullgraph=True, dynamic=False)
        start = time.perf_counter()
        for batch in batches:  # compile each shape now, not inside the timed loop
            with torch.inference_mode():
                compiled(**data[batch], **extra)
        row["compile_s"] = time.perf_counter() - start

        def run(batch):
            with torch.inference_mode():
                compiled(**data[batch], **extra)
        return run
    from kron_transformers.export import export_onnx, onnx_session, quantize_onnx_int8

    path = folder / "model.onnx"
    if not path.exists():
        start = time.perf_counter()
        export_onnx(model, path)
        row["onnx_export_s"] = time.perf_counter() - start
        row["onnx_mb"] = path.stat().st_size / 2**20
    if runtime == "onnx_int8":
        path = quantize_onnx_int8(path, folder / "model.int8.onnx")
        row["onnx_int8_mb"] = path.stat().st_size / 2**20
    # The threads stop spinning after each run: the sessions of a family run in turns, and a spinning one would take
    # the cores from the next (--ort_spinning measures with onnxruntime's default anyway).
    session = onnx_session(path, threads=threads, force_spinning_stop=not ort_spinning)
    names = {arg.name for arg in session.get_inputs()}
    feeds = {batch: {k: v.numpy() for k, v in data[batch].items() if k in names} for batch in batches}
    return lambda batch: session.run(None, feeds[batch])


def load_average():
    return [round(value, 2) for value in os.getloadavg()]


def peak_rss_mb(model, family, threads):
    """``(baseline, peak)`` resident MiB of a fresh process: after its imports, and at the peak of loading the
    checkpoint and running a batch-8 forward (the high-water mark is reset after the imports)."""
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        code = f"""
import torch, kron_transformers
from transformers import AutoModel, AutoModelForCausalLM
torch.set_num_threads({threads})

def status(field):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field)) / 1024

baseline = status("VmRSS:")
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
cls = AutoModelForCausalLM if {family!r} == "gpt2" else AutoModel
model = cls.from_pretrained({tmp!r}).eval()
ids = torch.randint(0, model.config.vocab_size, (8, {SEQ}))
with torch.inference_mode():
    model(input_ids=ids, attention_mask=torch.ones_like(ids))
print(baseline, status("VmHWM:"))
"""
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        checkpoint_mb = sum(f.stat().st_size for f in Path(tmp).glob("*.safetensors")) / 2**20
    baseline, peak = map(float, result.stdout.strip().splitlines()[-1].split())
    return checkpoint_mb, baseline, peak


def training_step_comparison(repeats):
    """Seconds per optimisation step: IlkdTrainer on KroneckerBERT_8 (teacher BERT_BASE) vs Trainer on BERT_BASE."""
    from datasets import Dataset
    from transformers import BertForSequenceClassification, Trainer, TrainerCallback, TrainingArguments

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
         lambda: Trainer(model=dense_student, args=TrainingArguments(max_steps=steps + 2, **common),
                         train_dataset=data)),
        ("KroneckerBERT_8 ILKD (IlkdTrainer)",
         lambda: IlkdTrainer(model=student, teacher_model=teacher,
                             args=IlkdTrainingArguments(max_steps=steps + 2, **common), train_dataset=data)),
    ):
        trainer = make()
        step_times = []

        class Timer(TrainerCallback):
            def on_step_begin(self, args, state, control, **kwargs):
                step_times.append(time.perf_counter())

            def on_step_end(self, args, state, control, **kwargs):
                step_times[-1] = time.perf_counter() - step_times[-1]

        trainer.add_callback(Timer())
        trainer.train()
        results[name] = statistics.median(step_times[2:])  # the first steps warm up allocators
    return results


def benchmark_family(keys, specs, args, tmp):
    """Build the family's models, then time them in turns in every runtime; returns ``{key: row}``."""
    models, rows = {}, {}
    for key in keys:
        name, family, teacher, build = specs[key]
        torch.manual_seed(0)
        model = build().eval()
        models[key] = model
        rows[key] = {"name": name, "family": family, "teacher": teacher, "parameters": model.num_parameters(),
                     "flops_b1": count_flops(model, inputs(1, model.config.vocab_size, family)), "runtimes": {}}
        if args.rss:
            rows[key]["checkpoint_mb"], rows[key]["baseline_rss_mb"], rows[key]["peak_rss_mb"] = peak_rss_mb(
                model, family, args.threads)
        if family == "gpt2" and not args.skip_generation:
            rows[key]["generate_tokens_per_s"] = generation_tokens_per_second(model, args.repeats)
        print(f"built {name}", flush=True)
    for runtime in args.runtimes:
        load_before = load_average()
        runners = {}
        for key, model in models.items():
            folder = Path(tmp) / key
            folder.mkdir(exist_ok=True)
            info = rows[key]["runtimes"].setdefault(runtime, {})
            try:
                runners[key] = make_runner(runtime, model, rows[key]["family"], folder, args.threads, args.batches,
                                           info, args.ort_spinning)
            except Exception as error:  # one runtime failing on one model must not lose the others' figures
                info["error"] = f"{type(error).__name__}: {' '.join(str(error).split())[:300]}"
                print(f"{runtime} {rows[key]['name']}: {info['error']}", flush=True)
        for batch in args.batches:
            medians = interleaved_medians({key: (lambda run=run: run(batch)) for key, run in runners.items()},
                                          args.repeats)
            for key, seconds in medians.items():
                rows[key]["runtimes"][runtime][f"latency_ms_b{batch}"] = 1e3 * seconds
        for key in runners:
            rows[key]["runtimes"][runtime]["load_average_before_after"] = [load_before, load_average()]
        print(f"timed {runtime}: load {load_before} -> {load_average()}", flush=True)
        torch._dynamo.reset()
    return rows


def add_ratios(rows, batches):
    for row in rows.values():
        teacher = rows.get(row["teacher"]) if row["teacher"] else row
        if teacher is None:
            continue
        row["flop_ratio"] = teacher["flops_b1"] / row["flops_b1"]
        for runtime, info in row["runtimes"].items():
            dense = teacher["runtimes"].get(runtime, {})
            for batch in batches:
                key = f"latency_ms_b{batch}"
                if key in info and key in dense:
                    info[f"speedup_b{batch}"] = dense[key] / info[key]
        if "generate_tokens_per_s" in row and "generate_tokens_per_s" in teacher:
            row["generate_speedup"] = row["generate_tokens_per_s"] / teacher["generate_tokens_per_s"]


def table(rows, runtimes, batches):
    header = ["model", "params", "FLOP ratio"]
    for runtime in runtimes:
        header += [f"{runtime} b{batch}" for batch in batches]
    header.append("generation (64 tokens)")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows.values():
        cells = [row["name"], f"{row['parameters'] / 1e6:.1f}M", f"{row.get('flop_ratio', float('nan')):.2f}x"]
        for runtime in runtimes:
            info = row["runtimes"].get(runtime, {})
            for batch in batches:
                if f"latency_ms_b{batch}" in info:
                    cells.append(f"{info[f'latency_ms_b{batch}']:.0f} ms ({info.get(f'speedup_b{batch}', float('nan')):.2f}x)")
                else:
                    cells.append("failed" if "error" in info else "")
        gen = row.get("generate_tokens_per_s")
        cells.append(f"{gen:.1f} tok/s ({row.get('generate_speedup', float('nan')):.2f}x)" if gen else "")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(rows, runtimes, batch, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    students = [key for key, row in rows.items() if row["teacher"]]
    if not students:
        return
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(students)), 4.5))
    width = 0.8 / len(runtimes)
    for i, runtime in enumerate(runtimes):
        values = [rows[key]["runtimes"].get(runtime, {}).get(f"speedup_b{batch}", 0) for key in students]
        ax.bar([x + i * width for x in range(len(students))], values, width, label=runtime)
    flops = [rows[key].get("flop_ratio", 0) for key in students]
    ax.scatter([x + 0.4 - width / 2 for x in range(len(students))], flops, marker="_", s=600, color="black",
               label="FLOP ratio", zorder=3)
    ax.axhline(1.0, color="grey", linewidth=0.8)
    ax.set_xticks([x + 0.4 - width / 2 for x in range(len(students))], [rows[k]["name"] for k in students],
                  rotation=15, ha="right", fontsize=8)
    ax.set_ylabel(f"speed-up over the dense teacher, batch {batch} x {SEQ}")
    ax.set_title("Same runtime, same process, interleaved medians")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main():
    specs = model_specs()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", choices=list(specs), default=list(specs),
                        help="models to run; a Kronecker or small model brings its dense teacher along")
    parser.add_argument("--runtimes", nargs="+", choices=RUNTIMES, default=list(RUNTIMES))
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--rss", action="store_true", help="also measure checkpoint size and peak RSS per model")
    parser.add_argument("--training", action="store_true", help="also time one training step (ILKD vs fine-tuning)")
    parser.add_argument("--skip-generation", action="store_true", help="skip the GPT-2 generation speed")
    parser.add_argument("--ort_spinning", action="store_true",
                        help="onnxruntime's default: idle threads keep spinning after a run (the sessions timed in "
                        "turns then take the cores from each other)")
    parser.add_argument("--stem", default="models", help="results file names under benchmarks/results/")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    keys = list(dict.fromkeys(k for key in args.models for k in ((specs[key][2],) if specs[key][2] else ()) + (key,)))
    rows = {}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for family in ("bert", "gpt2"):
            family_keys = [key for key in keys if specs[key][1] == family]
            if family_keys:
                rows.update(benchmark_family(family_keys, specs, args, tmp))
    add_ratios(rows, args.batches)
    markdown = table(rows, args.runtimes, args.batches)
    print(f"\nseq {SEQ}, {args.threads} threads, torch {torch.__version__}, {platform.machine()}, "
          f"load average now {load_average()}\n")
    print(markdown)

    training = training_step_comparison(args.repeats) if args.training else None
    if training:
        for name, seconds in training.items():
            print(f"  {name:<40} {seconds:.3f} s/step")

    RESULTS.mkdir(parents=True, exist_ok=True)
    meta = {"seq": SEQ, "threads": args.threads, "repeats": args.repeats, "batches": args.batches,
            "runtimes": args.runtimes, "ort_spinning": args.ort_spinning, "torch": torch.__version__,
            "machine": platform.machine(),
            "cpu_count": os.cpu_count(), "load_average_end": load_average(),
            "wall_s": round(time.perf_counter() - started, 1)}
    try:
        import onnxruntime

        meta["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    stem = RESULTS / args.stem
    stem.with_suffix(".json").write_text(
        json.dumps({"meta": meta, "models": rows, "training_step_s": training}, indent=2) + "\n")
    stem.with_suffix(".md").write_text(
        f"seq {SEQ}, {args.threads} threads, load average at the end {meta['load_average_end']}; "
        f"latency (speed-up over the dense teacher in the same runtime)\n\n{markdown}\n")
    plot(rows, args.runtimes, max(args.batches), stem.with_suffix(".png"))
    print(f"\nwrote {stem}.json, .md and .png")


if __name__ == "__main__":
    main()
