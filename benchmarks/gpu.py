# Copyright 2026 The kron-transformers Authors. Licensed under the Apache License, Version 2.0.
"""bf16 whole-model latency on a CUDA GPU: BERT_BASE against KroneckerBERT_8 and KroneckerBERT_21, eager and compiled.

    python benchmarks/gpu.py [--batches 1 8 64] [--repeats 30] [--no-compile]

Random weights in bfloat16, sequence 128, ``torch.inference_mode``; each latency is the median of CUDA-event timed
calls taken in turns across the three models (so clock or load changes hit all alike), and each speed-up is
BERT_BASE's median over the model's in the same runtime and process. ``torch.compile`` uses inductor's default mode
with ``fullgraph=True``. About 2-4 minutes on a recent GPU (most of it compiling). Writes
``benchmarks/results/gpu.json`` and ``gpu.md``. Without a CUDA device it prints why and exits with status 0, having
measured nothing.
"""

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from transformers import BertConfig, BertModel

from kron_transformers import KroneckerBertConfig, KroneckerBertModel


RESULTS = Path(__file__).resolve().parent / "results"
SEQ = 128


def build_models(device):
    config = BertConfig(vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                        intermediate_size=3072, attn_implementation="sdpa")
    torch.manual_seed(0)
    models = {"BERT_BASE": BertModel(config)}
    for name, preset in (("KroneckerBERT_8", "kronecker-bert-8"), ("KroneckerBERT_21", "kronecker-bert-21")):
        models[name] = KroneckerBertModel(KroneckerBertConfig.from_dense_config(config, preset))
    return {name: model.to(device=device, dtype=torch.bfloat16).eval() for name, model in models.items()}


def timed_in_turns(fns: dict, repeats: int, warmup: int = 5) -> dict:
    """``{name: median milliseconds}`` of each function, CUDA-event timed, one call of each per round."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    torch.cuda.synchronize()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times[name].append(start.elapsed_time(end))
    return {name: statistics.median(values) for name, values in times.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8, 64])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--no-compile", action="store_true", help="eager only")
    parser.add_argument("--output", type=Path, default=RESULTS / "gpu.json")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("benchmarks/gpu.py: no CUDA device is available (torch.cuda.is_available() is False); nothing measured.")
        return 0

    started = time.perf_counter()
    device = torch.device("cuda")
    models = build_models(device)
    data = {}
    for batch in args.batches:
        ids = torch.randint(0, 30522, (batch, SEQ), device=device, generator=torch.Generator(device).manual_seed(0))
        data[batch] = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    runtimes = {"eager": models}
    compile_s = {}
    if not args.no_compile:
        runtimes["compiled"] = {}
        for name, model in models.items():
            start = time.perf_counter()
            compiled = torch.compile(model, fullgraph=True, dynamic=False)
            with torch.inference_mode():
                for batch in args.batches:
                    compiled(**data[batch])
            torch.cuda.synchronize()
            compile_s[name] = time.perf_counter() - start
            runtimes["compiled"][name] = compiled
            print(f"compiled {name} in {compile_s[name]:.0f} s", flush=True)

    results = {}
    with torch.inference_mode():
        for runtime, fns in runtimes.items():
            for batch in args.batches:
                medians = timed_in_turns({name: (lambda m=m, b=batch: m(**data[b])) for name, m in fns.items()},
                                         args.repeats)
                for name, ms in medians.items():
                    results.setdefault(name, {}).setdefault(runtime, {})[f"latency_ms_b{batch}"] = ms
                    results[name][runtime][f"speedup_b{batch}"] = medians["BERT_BASE"] / ms
                print(f"timed {runtime} batch {batch}", flush=True)

    header = ["model", *[f"{runtime} b{batch}" for runtime in runtimes for batch in args.batches]]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, by_runtime in results.items():
        cells = [f"{by_runtime[r][f'latency_ms_b{b}']:.2f} ms ({by_runtime[r][f'speedup_b{b}']:.2f}x)"
                 for r in runtimes for b in args.batches]
        lines.append("| " + " | ".join([name, *cells]) + " |")
    markdown = "\n".join(lines)
    print(markdown)
    meta = {"device": torch.cuda.get_device_name(device), "dtype": "bfloat16", "seq": SEQ, "repeats": args.repeats,
            "torch": torch.__version__, "cuda": torch.version.cuda, "machine": platform.machine(),
            "compile_s": compile_s, "wall_s": round(time.perf_counter() - started, 1)}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({"meta": meta, "models": results}, indent=2) + "\n")
    args.output.with_suffix(".md").write_text(
        f"{meta['device']}, bf16, seq {SEQ}; latency (speed-up over BERT_BASE in the same runtime)\n\n{markdown}\n")
    print(f"wrote {args.output} and {args.output.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
