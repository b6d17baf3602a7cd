# Copyright 2026 The kron-transformers Authors. Licensed under the Apache License, Version 2.0.
"""What int8 costs and buys on real weights: all-MiniLM-L6-v2 and its ~4x Kronecker compression, in onnxruntime.

    python benchmarks/int8.py [--compression 4] [--texts 256] [--threads 2] [--repeats 10]

For the dense MiniLM and its nearest-Kronecker-product compression (no distillation: the factors as ``compress``
leaves them): export to ONNX (``export_onnx``), quantise to int8 (``quantize_onnx_int8``), then on real Rotten
Tomatoes snippets compare the int8 model's sentence embeddings (mean-pooled ``last_hidden_state``, as
sentence-transformers pools MiniLM) with the float32 graph's: cosine similarity (mean, minimum) and how often the
nearest neighbour among the snippets stays the same. Also file sizes and median latency of both graphs (batch 32,
padded to the longest snippet), timed in turns. Writes ``benchmarks/results/int8.json``.
"""

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from transformers import AutoTokenizer, BertModel

from kron_transformers import assets, compress
from kron_transformers.export import export_onnx, onnx_session, quantize_onnx_int8


RESULTS = Path(__file__).resolve().parent / "results"


def embed(session, encoded, batch=32):
    names = {arg.name for arg in session.get_inputs()}
    out = []
    for start in range(0, len(encoded["input_ids"]), batch):
        feeds = {k: v[start:start + batch].astype(np.int64) for k, v in encoded.items() if k in names}
        hidden = session.run(["last_hidden_state"], feeds)[0]
        mask = feeds["attention_mask"][..., None]
        out.append((hidden * mask).sum(1) / mask.sum(1))
    vectors = np.concatenate(out)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--compression", type=float, default=4.0)
    parser.add_argument("--texts", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    folder = assets.minilm_path()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    texts = assets.load_rotten_tomatoes()["validation"]["sentence"][: args.texts]
    encoded = dict(tokenizer(texts, padding=True, truncation=True, max_length=128, return_tensors="np"))
    dense = BertModel.from_pretrained(folder).eval()  # the pooler (unused here) keeps the classes paired
    models = {"MiniLM (dense)": dense, f"MiniLM Kronecker ~{args.compression:g}x": compress(dense, args.compression,
                                                                                             show_progress=False)}
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        sessions = {}
        for name, model in models.items():
            path = export_onnx(model, Path(tmp) / f"{len(rows)}.onnx")
            int8 = quantize_onnx_int8(path, Path(tmp) / f"{len(rows)}.int8.onnx")
            float_session, int8_session = onnx_session(path, args.threads), onnx_session(int8, args.threads)
            float_vectors, int8_vectors = embed(float_session, encoded), embed(int8_session, encoded)
            cosine = (float_vectors * int8_vectors).sum(1)

            def neighbours(vectors):
                similarity = vectors @ vectors.T
                np.fill_diagonal(similarity, -np.inf)
                return similarity.argmax(1)

            rows[name] = {
                "parameters": model.num_parameters(),
                "onnx_mb": path.stat().st_size / 2**20,
                "onnx_int8_mb": int8.stat().st_size / 2**20,
                "cosine_int8_vs_float_mean": float(cosine.mean()),
                "cosine_int8_vs_float_min": float(cosine.min()),
                "nearest_neighbour_agreement": float((neighbours(float_vectors) == neighbours(int8_vectors)).mean()),
            }
            sessions[name] = (float_session, int8_session)
            rows[name]["rows"] = len(rows)
        feeds = {k: v[:32].astype(np.int64) for k, v in encoded.items()}
        timers = {}
        for name, (float_session, int8_session) in sessions.items():
            names = {arg.name for arg in float_session.get_inputs()}
            batch = {k: v for k, v in feeds.items() if k in names}
            timers[(name, "float32")] = lambda s=float_session, b=batch: s.run(None, b)
            timers[(name, "int8")] = lambda s=int8_session, b=batch: s.run(None, b)
        for fn in timers.values():
            fn()
        times = {key: [] for key in timers}
        for _ in range(args.repeats):
            for key, fn in timers.items():
                start = time.perf_counter()
                fn()
                times[key].append(time.perf_counter() - start)
        for (name, precision), values in times.items():
            rows[name][f"latency_ms_b32_{precision}"] = 1e3 * statistics.median(values)
    for row in rows.values():
        row.pop("rows")
        row["int8_speedup"] = row["latency_ms_b32_float32"] / row["latency_ms_b32_int8"]
    meta = {"texts": len(texts), "padded_length": int(encoded["input_ids"].shape[1]), "threads": args.threads,
            "repeats": args.repeats, "load_average_end": [round(v, 2) for v in os.getloadavg()]}
    print(json.dumps({"meta": meta, "models": rows}, indent=2))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "int8.json").write_text(json.dumps({"meta": meta, "models": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
