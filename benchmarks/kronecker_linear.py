# Copyright 2026 The kron-transformers Authors. Licensed under the Apache License, Version 2.0.
"""Dense ``nn.Linear`` versus ``KroneckerLinear`` at the KroneckerBERT shapes, in one process.

    python benchmarks/kronecker_linear.py [--threads 2] [--tokens 1024] [--repeats 30]

For each shape: median time of the dense layer, of ``KroneckerLinear`` (``kron_linear``), of the plain two-matmul
reshape form (``a @ X @ b.T`` with broadcasting, the textbook formula), of ``einsum`` and of materialising
``torch.kron`` -- forward, and forward+backward. Speed-ups are dense time / Kronecker time measured in this run,
printed beside the FLOP ratio. Results go to ``benchmarks/results/kronecker_linear.json``.
"""

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch
from torch import nn

from kron_transformers import KroneckerLinear
from kron_transformers.kronecker import kron_flops


SHAPES = {
    # name: (out_features, in_features, a_shape)  -- KroneckerBERT Table 1 on BERT_BASE
    "KB8 attention": (768, 768, (384, 384)),
    "KB8 FFN in": (3072, 768, (8, 2)),
    "KB8 FFN out": (768, 3072, (2, 8)),
    "KB21 attention": (768, 768, (384, 48)),
    "KB21 FFN in": (3072, 768, (16, 2)),
    "KB21 FFN out": (768, 3072, (2, 16)),
}


def two_matmul(x, a, b):
    """The textbook form ``sum_r a[r] @ X @ b[r].T`` with broadcast (batched) matmuls."""
    r, m1, n1 = a.shape
    _, m2, n2 = b.shape
    xs = x.reshape(-1, 1, n1, n2)
    return (a @ xs @ b.transpose(1, 2)).sum(1).reshape(*x.shape[:-1], m1 * m2)


def einsum_form(x, a, b):
    r, m1, n1 = a.shape
    _, m2, n2 = b.shape
    return torch.einsum("rij,nja,rka->nik", a, x.reshape(-1, n1, n2), b).reshape(*x.shape[:-1], m1 * m2)


def materialised(x, a, b):
    weight = sum(torch.kron(a[i], b[i]) for i in range(a.shape[0]))
    return x @ weight.T


def median_time(fn, repeats: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_shape(name, out_features, in_features, a_shape, tokens, repeats, rank=1):
    torch.manual_seed(0)
    dense = nn.Linear(in_features, out_features)
    kron = KroneckerLinear.from_linear(dense, a_shape, rank)
    a, b = kron.a.detach(), kron.b.detach()
    x = torch.randn(tokens // 128, 128, in_features)
    x_grad = x.clone().requires_grad_()
    flops = min(kron_flops(kron.a_shape, kron.b_shape, rank).values())
    row = {
        "shape": name,
        "weight": f"{out_features}x{in_features}",
        "a_shape": list(kron.a_shape),
        "b_shape": list(kron.b_shape),
        "rank": rank,
        "flop_ratio": out_features * in_features / flops,
        "param_ratio": out_features * in_features / (kron.a.numel() + kron.b.numel()),
    }
    with torch.inference_mode():
        row["dense_fwd_ms"] = 1e3 * median_time(lambda: dense(x), repeats)
        row["kron_fwd_ms"] = 1e3 * median_time(lambda: kron(x), repeats)
        row["two_matmul_fwd_ms"] = 1e3 * median_time(lambda: two_matmul(x, a, b) + kron.bias, repeats)
        row["einsum_fwd_ms"] = 1e3 * median_time(lambda: einsum_form(x, a, b) + kron.bias, repeats)
        row["materialised_fwd_ms"] = 1e3 * median_time(lambda: materialised(x, a, b) + kron.bias, repeats)

    def step(module):
        module.zero_grad(set_to_none=True)
        x_grad.grad = None
        module(x_grad).sum().backward()

    row["dense_fwd_bwd_ms"] = 1e3 * median_time(lambda: step(dense), repeats)
    row["kron_fwd_bwd_ms"] = 1e3 * median_time(lambda: step(kron), repeats)
    row["speedup_fwd"] = row["dense_fwd_ms"] / row["kron_fwd_ms"]
    row["speedup_fwd_bwd"] = row["dense_fwd_bwd_ms"] / row["kron_fwd_bwd_ms"]
    row["speedup_vs_two_matmul"] = row["two_matmul_fwd_ms"] / row["kron_fwd_ms"]
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=8 * 128, help="batch x sequence (multiple of 128)")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--output", type=Path, default=Path(__file__).parent / "results" / "kronecker_linear.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    rows = [bench_shape(name, *spec, tokens=args.tokens, repeats=args.repeats) for name, spec in SHAPES.items()]
    header = (
        f"{'shape':<15} {'A':>8} {'B':>8} {'FLOP x':>7} {'dense ms':>9} {'kron ms':>8} {'fwd x':>6} {'fwd/FLOP':>8} "
        f"{'2-mm ms':>8} {'einsum ms':>9} {'kron(W) ms':>10} {'dense f+b':>9} {'kron f+b':>8} {'f+b x':>6}"
    )
    print(f"tokens={args.tokens}, threads={args.threads}, torch {torch.__version__}, {platform.processor() or platform.machine()}")
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['shape']:<15} {'x'.join(map(str, r['a_shape'])):>8} {'x'.join(map(str, r['b_shape'])):>8} "
            f"{r['flop_ratio']:>7.1f} {r['dense_fwd_ms']:>9.3f} {r['kron_fwd_ms']:>8.3f} {r['speedup_fwd']:>6.2f} "
            f"{r['speedup_fwd'] / r['flop_ratio']:>8.2f} {r['two_matmul_fwd_ms']:>8.3f} {r['einsum_fwd_ms']:>9.3f} "
            f"{r['materialised_fwd_ms']:>10.3f} {r['dense_fwd_bwd_ms']:>9.3f} {r['kron_fwd_bwd_ms']:>8.3f} "
            f"{r['speedup_fwd_bwd']:>6.2f}"
        )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    meta = {"tokens": args.tokens, "threads": args.threads, "repeats": args.repeats, "torch": torch.__version__,
            "machine": platform.machine()}
    args.output.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    print(f"\nwrote {args.output}")


if __name__ == "__main__":
    main()
