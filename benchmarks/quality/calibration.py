#!/usr/bin/env python
# Copyright 2026 The kron-transformers Authors. Licensed under the Apache License, Version 2.0.
"""Activation-aware initialisation against the plain nearest Kronecker product, before any training.

all-MiniLM-L6-v2 (real weights) compressed at each ``--compressions`` ratio twice: the plain NKP (Van Loan &
Pitsianis, the papers' initialisation) and ``compress(..., calibration_data=...)`` on ``--calibration_blocks``
news blocks of mixed lengths (64 to 256 tokens) from the training articles. Measured on *held-out* inputs (other
news articles and the sentiment validation snippets, never the calibration text):

- output error: per factored linear map, ``||X (W - A⊗B).T||_F / ||X W.T||_F`` on the held-out inputs reaching it
  in the dense model (the median over maps, and each map kind's mean);
- sentence-embedding cosine: the mean-pooled last hidden state (all-MiniLM-L6-v2's sentence embedding) of the
  compressed model against the dense model's, averaged over held-out snippets and news passages of 256 tokens.

    python benchmarks/quality/calibration.py                 # 2x, 4x, 8x; ~10 min on 2 cores
    python benchmarks/quality/calibration.py --smoke         # tiny random BERT, seconds

Results: ``benchmarks/results/calibration.{json,md}``.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import torch


sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import experiment_parser, markdown_table, resolve_dirs, setup_runtime, write_results  # noqa: E402


def parse_args(argv=None):
    parser = experiment_parser(__doc__, "calibration", "tiny random BERT on MiniLM's vocabulary, tiny data")
    parser.add_argument("--compressions", type=float, nargs="+", default=[2.0, 4.0, 8.0])
    parser.add_argument("--calibration_blocks", type=int, default=128, help="news blocks (64-256 tokens) to calibrate")
    parser.add_argument("--eval_texts", type=int, default=128, help="held-out snippets and news passages each")
    args = parser.parse_args(argv)
    if args.smoke:
        args.compressions = [4.0] if args.compressions == parser.get_default("compressions") else args.compressions
        args.calibration_blocks, args.eval_texts = 8, 8
    resolve_dirs(args, "calibration")
    return args


def dense_model(args):
    from transformers import BertConfig, BertModel

    from kron_transformers.assets import minilm_path

    if args.smoke:
        torch.manual_seed(args.seed)
        config = BertConfig.from_pretrained(minilm_path())
        config.update({"hidden_size": 48, "num_hidden_layers": 2, "intermediate_size": 96, "num_attention_heads": 4})
        return BertModel(config).eval()
    return BertModel.from_pretrained(minilm_path()).eval()


def mixed_length_blocks(tokenizer, texts, count: int, seed: int, lengths=(64, 128, 256)) -> list[dict]:
    """``count`` tokenised passages (``[CLS] ... [SEP]``) cut from ``texts``, lengths cycling through ``lengths``."""
    from kron_transformers.fidelity import with_special_tokens

    generator = torch.Generator().manual_seed(seed)
    ids = tokenizer(list(texts), add_special_tokens=False, verbose=False)["input_ids"]
    stream = [token for article in ids for token in article]
    blocks, position = [], 0
    for i in range(count):
        body = lengths[i % len(lengths)] - 2
        if position + body > len(stream):
            position = int(torch.randint(0, max(len(stream) - body, 1), (1,), generator=generator))
        blocks.append({"input_ids": with_special_tokens(tokenizer, stream[position:position + body])})
        position += body
    return blocks


def sentence_cosine(dense, student, batches) -> float:
    """Mean cosine between the mean-pooled last hidden states of the two models over ``batches``."""
    total, count = 0.0, 0
    with torch.inference_mode():
        for batch in batches:
            mask = batch["attention_mask"].unsqueeze(-1).float()
            pooled = [(m(**batch).last_hidden_state * mask).sum(1) / mask.sum(1) for m in (dense, student)]
            total += torch.nn.functional.cosine_similarity(*pooled, dim=-1).sum().item()
            count += mask.shape[0]
    return total / count


def held_out_output_errors(dense, student, batches) -> dict[str, float]:
    """Relative output error of each factored linear map on the held-out inputs reaching it in the dense model."""
    from kron_transformers.calibration import collect_input_moments
    from kron_transformers.kronecker import output_error
    from kron_transformers.layers import KroneckerLinear, _dense_weight

    names = [name for name, module in student.named_modules() if isinstance(module, KroneckerLinear)]
    moments = collect_input_moments(dense, names, batches, show_progress=False)
    return {name: output_error(_dense_weight(dense.get_submodule(name)), student.get_submodule(name).dense_weight(),
                               moments[name]).item() for name in names}


def main(argv=None):
    args = parse_args(argv)
    setup_runtime(args.threads)
    from transformers import AutoTokenizer

    from kron_transformers import compress
    from kron_transformers.assets import load_news_articles, load_rotten_tomatoes, minilm_path
    from kron_transformers.calibration import calibration_batches

    start = time.time()
    tokenizer = AutoTokenizer.from_pretrained(minilm_path())
    dense = dense_model(args)
    news = load_news_articles(seed=args.seed)
    calibration = mixed_length_blocks(tokenizer, news["train"]["text"][:400], args.calibration_blocks, args.seed)
    snippets = load_rotten_tomatoes(seed=args.seed)["validation"]["sentence"][: args.eval_texts]
    passages = mixed_length_blocks(tokenizer, news["test"]["text"], args.eval_texts, args.seed + 1, lengths=(256,))
    held_out = [{"input_ids": ids} for ids in tokenizer(snippets, truncation=True, max_length=64)["input_ids"]]
    held_out_batches = list(calibration_batches(held_out + passages, batch_size=16))
    snippet_batches = list(calibration_batches(held_out, batch_size=16))
    passage_batches = list(calibration_batches(passages, batch_size=16))

    rows = []
    settings = [(ratio, embedding, method) for ratio in args.compressions for embedding in ("factored", "dense")
                for method in ("nkp", "calibrated")]
    for ratio, embedding, method in settings:
        began = time.time()
        # The word embedding (half of MiniLM's parameters) is NKP-factored in both methods; the "dense" rows keep
        # it dense to show what the calibration does for the linear maps alone.
        overrides = {"embedding_factor": None} if embedding == "dense" else {}
        student = compress(dense, ratio, calibration_data=calibration if method == "calibrated" else None,
                           show_progress=False, **overrides).eval()
        seconds = time.time() - began
        errors = held_out_output_errors(dense, student, held_out_batches)
        kinds = {}
        for name, value in errors.items():
            kinds.setdefault(name.split("layer.", 1)[-1].split(".", 1)[-1], []).append(value)
        row = {
            "compression": ratio, "method": method, "embedding": embedding,
            "whole_model_compression": student.compression_report.compression,
            "output_error_median": statistics.median(errors.values()),
            "output_error_by_map": {kind: statistics.mean(values) for kind, values in kinds.items()},
            "weight_error_median": statistics.median(m.relative_error for m in student.compression_report.modules
                                                     if m.kind == "linear"),
            "cosine_snippets": sentence_cosine(dense, student, snippet_batches),
            "cosine_news_256": sentence_cosine(dense, student, passage_batches),
            "seconds": round(seconds, 1),
        }
        rows.append(row)
        print(f"{ratio:g}x {embedding} embedding {method:>10}: output error {row['output_error_median']:.4f}, cosine snippets "
              f"{row['cosine_snippets']:.4f}, news-256 {row['cosine_news_256']:.4f} ({seconds:.0f} s)", flush=True)

    header = ["ratio", "word embedding", "init", "whole model", "weight error (median)", "held-out output error (median)",
              "embedding cosine, snippets", "embedding cosine, news 256 tokens", "init time"]
    table = markdown_table(header, [
        [f"{r['compression']:g}x", r["embedding"], r["method"], f"{r['whole_model_compression']:.2f}x", f"{r['weight_error_median']:.4f}",
         f"{r['output_error_median']:.4f}", f"{r['cosine_snippets']:.4f}", f"{r['cosine_news_256']:.4f}",
         f"{r['seconds']:.0f} s"] for r in rows])
    markdown = (
        "# Activation-aware initialisation vs plain NKP (all-MiniLM-L6-v2, no training)\n\n"
        f"Calibration: {args.calibration_blocks} news blocks of 64/128/256 tokens (training articles). Held out: "
        f"{len(held_out)} sentiment snippets and {len(passages)} news passages of 256 tokens (test articles).\n\n"
        + table + "\n"
    )
    payload = {"settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}, "rows": rows,
               "wall_seconds": round(time.time() - start, 1)}
    json_path, md_path = write_results(args.results_dir, "calibration", payload, markdown)
    print(markdown)
    print(f"wrote {json_path} and {md_path}")
    return payload


if __name__ == "__main__":
    main()
