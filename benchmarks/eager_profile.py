# Copyright 2026 The kron-transformers Authors. Licensed under the Apache License, Version 2.0.
"""Where the eager time of the BERT-family models goes, and the speed-up the factor products could reach at best.

    python benchmarks/eager_profile.py [--models bert_base kb8 kb21] [--batch 8] [--threads 2] [--repeats 10]

For each model (random weights, sequence 128): its median latency (the models timed in turns, one call each per
round, as in ``benchmarks/models.py``), and from ``torch.profiler`` the share of its CPU time in each kind of
operator: linear products (``mm``/``addmm``/``bmm``/``baddbmm``, the dense layers or the Kronecker factor products),
copies (layout changes), attention (scores, softmax, weighted sum), GELU, LayerNorm, the rest. Also the multiply-adds
of the linear products alone (``FlopCounterMode``).

The bound: a Kronecker model shares everything but its linear layers with its dense teacher (attention, GELU,
LayerNorm, embeddings, residuals). If its factor products ran at the dense GEMMs' speed per multiply-add and nothing
else cost more than in the teacher, it would take ``teacher_rest + teacher_linear * linear_flops / teacher_linear_flops``;
the teacher's time over that is the best speed-up its factorisation allows on this machine (Amdahl). The table puts
the measured speed-up beside it.

Writes ``benchmarks/results/eager_profile.{json,md}``.
"""

import argparse
import os
import platform
from collections import defaultdict
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from models import RESULTS, inputs, interleaved_medians, model_specs


LINEAR = {"aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm"}
CATEGORIES = {
    "copies": {"aten::copy_", "aten::clone", "aten::contiguous"},
    "attention": {"aten::_scaled_dot_product_flash_attention_for_cpu", "aten::_softmax", "aten::softmax"},
    "gelu": {"aten::gelu"},
    "layer_norm": {"aten::native_layer_norm"},
}


def category(op: str) -> str:
    if op in LINEAR:
        return "linear"
    return next((name for name, ops in CATEGORIES.items() if op in ops), "rest")


def profile_shares(model, batch, rounds=3) -> dict:
    """Fraction of the self CPU time of ``rounds`` forwards in each category."""
    with torch.inference_mode():
        model(**batch)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            for _ in range(rounds):
                model(**batch)
    totals = defaultdict(float)
    for event in prof.key_averages():
        totals[category(event.key)] += event.self_cpu_time_total
    whole = sum(totals.values())
    return {name: totals[name] / whole for name in ("linear", "copies", "attention", "gelu", "layer_norm", "rest")}


def linear_flops(model, batch) -> int:
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        model(**batch)
    counts = counter.get_flop_counts().get("Global", {})
    return int(sum(value for op, value in counts.items() if str(op).replace(".", "::", 1) in LINEAR))


def amdahl_bound(seconds: float, linear_share: float, linear_flop_ratio: float) -> float:
    """The teacher's time over its time with the linear part cut by ``linear_flop_ratio`` and the rest unchanged."""
    linear = seconds * linear_share
    return seconds / (seconds - linear + linear / linear_flop_ratio)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    specs = {key: spec for key, spec in model_specs().items() if spec[1] == "bert"}
    parser.add_argument("--models", nargs="+", choices=list(specs), default=["bert_base", "kb8", "kb21"])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    keys = ["bert_base", *[key for key in args.models if key != "bert_base"]]
    models = {key: specs[key][3]().eval() for key in keys}
    batch = inputs(args.batch, 30522, "bert")
    load_before = os.getloadavg()
    with torch.inference_mode():
        medians = interleaved_medians({key: (lambda m=m: m(**batch)) for key, m in models.items()}, args.repeats)
    load_after = os.getloadavg()
    rows = {}
    for key, model in models.items():
        rows[key] = {"name": specs[key][0], "seconds": medians[key], "shares": profile_shares(model, batch),
                     "linear_flops": linear_flops(model, batch)}
    dense = rows["bert_base"]
    for row in rows.values():
        row["linear_flop_ratio"] = dense["linear_flops"] / row["linear_flops"]
        row["speedup"] = dense["seconds"] / row["seconds"]
        row["bound"] = amdahl_bound(dense["seconds"], dense["shares"]["linear"], row["linear_flop_ratio"])
    header = ("| model | latency | speed-up | linear multiply-adds (ratio) | bound (Amdahl) | linear | copies | "
              "attention | GELU | LayerNorm | rest |\n|---|---|---|---|---|---|---|---|---|---|---|")
    lines = [header]
    for row in rows.values():
        s = row["shares"]
        lines.append(f"| {row['name']} | {1e3 * row['seconds']:.0f} ms | {row['speedup']:.2f}x | "
                     f"{row['linear_flops'] / 2e9:.1f} G ({row['linear_flop_ratio']:.2f}x) | {row['bound']:.2f}x | "
                     + " | ".join(f"{100 * s[name]:.0f}%" for name in ("linear", "copies", "attention", "gelu",
                                                                         "layer_norm", "rest")) + " |")
    markdown = (f"batch {args.batch} x 128, {args.threads} threads, {platform.processor() or platform.machine()}, "
                f"load average {list(load_before)} -> {list(load_after)}; shares of self CPU time (torch.profiler)\n\n"
                + "\n".join(lines) + "\n")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "eager_profile.md").write_text(markdown)
    import json

    (RESULTS / "eager_profile.json").write_text(json.dumps({"settings": vars(args), "load": [load_before, load_after],
                                                            "models": rows}, indent=2) + "\n")
    print(markdown)
    return rows


if __name__ == "__main__":
    main()
