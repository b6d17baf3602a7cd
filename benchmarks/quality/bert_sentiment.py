#!/usr/bin/env python
# Copyright 2026 The kron-transformers Authors. Licensed under the Apache License, Version 2.0.
"""KroneckerBERT's headline comparison in miniature: all-MiniLM-L6-v2 on Rotten Tomatoes sentiment, CPU, ~1 hour.

    python benchmarks/quality/bert_sentiment.py            # the full run (resumable: run it again after a kill)
    python benchmarks/quality/bert_sentiment.py --smoke    # every path on a tiny random teacher, in seconds

Teacher: all-MiniLM-L6-v2 (real pre-trained weights; 6 layers, hidden 384, 12 heads) with a classification head,
fine-tuned on the Rotten Tomatoes snippets (``assets.load_rotten_tomatoes``: split by movie, so no movie of the
validation split was seen in training). Students at about 4x and about 8x whole-model parameter compression, every
one distilled with the same budget: ``--stage1_steps`` of intermediate-layer distillation (ILKD: embedding output,
hidden states, attention scores) on English news blocks, then ``--stage2_steps`` of task ILKD (the same + the
teacher's logits) on the sentiment training set, same batch size, same data in the same order (fixed seed):

- ``kronecker``: the teacher compressed by ``compress()`` (nearest-Kronecker-product init), stage 1 + stage 2 (the
  paper's method);
- ``kronecker_no_stage1``: the same without stage 1; its stage-1 steps are spent on stage 2 instead, so the total
  step budget stays equal and the ablation measures the news data, not fewer updates;
- ``kronecker_random_init``: the same architecture with the factored modules (factors, biases) drawn at random as at
  initialisation instead of NKP; every other tensor (position/type embeddings, LayerNorms, pooler, classifier) is the
  teacher's, as in the NKP student;
- ``distilbert``: DistilBERT-style: a dense BERT of the teacher's width whose layers are a uniform subset of the
  teacher's (initialised from them, and distilled towards them);
- ``tinybert``: TinyBERT-style: a dense 4-layer BERT, narrower (12 heads, intermediate 4x hidden), layers randomly
  initialised as in TinyBERT, distilled through learned width projections (``IlkdTrainer``'s).

Size matching (the honest part). The word embedding of MiniLM (30522 x 384) is 11.7M of its 22.7M parameters, so
a dense student cannot reach 4x (5.7M) by dropping layers: three layers of six ("every other layer") alone already
weigh 5.3M plus 0.35M of position embeddings, pooler and classifier. Every baseline is therefore matched to the
Kronecker student's *actual* parameter count (``num_parameters()``, classifier included), and the table prints each
count:

- DistilBERT-style students also factor the word embedding, as the Kronecker student does, but the dense way: a
  rank-k truncated SVD of the teacher's embedding (``V x k`` lookup then ``k x 384`` map, ALBERT-style), which is the
  best rank-k approximation of it. The student keeps as many uniformly spaced teacher layers as fit with a rank of at
  least 32, and the rank fills the rest: at 4x this is 2 layers (teacher layers 3 and 6) with rank ~66, at 8x 1 layer
  (teacher layer 6) with rank ~33, not "every other layer" (3 layers), which does not fit.
- TinyBERT-style students keep a dense embedding of their own width; the width (a multiple of the 12 heads) is the
  one whose total parameter count is nearest the Kronecker student's (hidden 156 at 4x, 84 at 8x). Their word,
  position and type embeddings start as the teacher's projected on the top principal directions of the teacher's
  word embedding (a vocabulary-preserving projection, which only helps the baseline); their layers start random.

Choices that hold for every student: stage 1 distils the *fine-tuned* teacher (MiniLM ships no masked-LM head, and a
single teacher keeps the comparison clean), so stage 1 uses no logits and no labels; the student whose hidden size
differs learns a projection per loss (TinyBERT's ``W_h``), carried from stage 1 to stage 2. The Kronecker ratios
``--compressions 4 8`` are ``compress()``'s per-matrix ratios; the whole-model compression they give is reported
(3.8x and 7.2x: position embeddings, LayerNorms, pooler and classifier stay dense).

Everything trained is cached under ``--cache_dir`` (default ``benchmarks/quality/cache/bert_sentiment``): the
teacher, each student stage (checkpoints every ``--save_steps`` while training; ``final.safetensors`` and
``result.json`` after), the tokenised news blocks. Results: ``benchmarks/results/bert_sentiment.{json,md,png}``.
"""

from __future__ import annotations

import copy
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn


sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    PROJECTION_FILE,
    experiment_parser,
    format_seconds,
    load_weights,
    markdown_table,
    matplotlib_pyplot,
    pin_settings,
    plot_fidelity,
    read_json,
    resolve_dirs,
    run_stage,
    setup_runtime,
    stage_arguments,
    write_json,
    write_results,
)


VARIANTS = ("kronecker", "kronecker_no_stage1", "kronecker_random_init", "distilbert", "tinybert")
VARIANT_LABELS = {
    "kronecker": "Kronecker, NKP init, stage 1 + stage 2 (paper)",
    "kronecker_no_stage1": "Kronecker, NKP init, stage 2 only",
    "kronecker_random_init": "Kronecker, random init, stage 1 + stage 2",
    "distilbert": "DistilBERT-style (teacher layers, SVD embedding)",
    "tinybert": "TinyBERT-style (narrow, 4 layers)",
}


def parse_args(argv=None):
    parser = experiment_parser(__doc__, "bert_sentiment", "tiny random teacher, tiny data, a few steps")
    parser.add_argument("--compressions", type=float, nargs="+", default=[4.0, 8.0],
                        help="compress() ratios of the Kronecker students (whole-model compression is reported)")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--teacher_steps", type=int, default=600)
    parser.add_argument("--teacher_lr", type=float, default=1e-4)
    parser.add_argument("--stage1_steps", type=int, default=150)
    parser.add_argument("--stage1_lr", type=float, default=5e-4)
    parser.add_argument("--stage1_seq_len", type=int, default=256, help="longest stage-1 news block (tokens)")
    parser.add_argument("--stage1_min_seq_len", type=int, default=64,
                        help="shortest stage-1 news block (tokens): lengths are drawn uniformly in between (the "
                             "quickstart's recipe; equal to --stage1_seq_len for blocks of one length)")
    parser.add_argument("--stage1_batch_size", type=int, default=12,
                        help="stage-1 blocks per step (12 blocks of 64-256 tokens: about the tokens of 32 x 64)")
    parser.add_argument("--stage2_steps", type=int, default=300)
    parser.add_argument("--stage2_lr", type=float, default=2e-4)
    parser.add_argument("--task_max_len", type=int, default=64, help="sentiment snippets are truncated to this")
    parser.add_argument("--alpha_task", type=float, default=0.0, help="weight of the hard-label loss in stage 2")
    parser.add_argument("--stage2_joined_examples", type=int, default=0,
                        help="stage 2 also on this many long examples joined from same-label training snippets "
                             "(--task_max_len to --stage1_seq_len tokens), in the same --stage2_steps (the "
                             "quickstart's recipe: 1000)")
    parser.add_argument("--stage2_news_blocks", type=int, default=0,
                        help="stage 2 also on this many unlabelled news blocks (training articles, --task_max_len to "
                             "--stage1_seq_len tokens; label -100, so only the teacher's outputs and layers are "
                             "their target), in the same --stage2_steps (the quickstart's recipe: 500)")
    parser.add_argument("--min_embedding_rank", type=int, default=32,
                        help="DistilBERT-style: keep the most layers that leave at least this embedding rank")
    parser.add_argument("--tinybert_layers", type=int, default=4)
    parser.add_argument("--fidelity_texts", type=int, default=200, help="held-out news articles per length")
    parser.add_argument("--train_sentences", type=int, default=None, help="subset of the sentiment training split")
    parser.add_argument("--eval_sentences", type=int, default=None, help="subset of the validation split")
    parser.add_argument("--news_articles", type=int, default=None, help="subset of the news training articles")
    args = parser.parse_args(argv)
    if args.smoke:
        apply_smoke(args, parser)
    for name in ("stage2_joined_examples", "stage2_news_blocks"):
        if getattr(args, name) < 0:
            parser.error(f"--{name} must be >= 0; got {getattr(args, name)}.")
    if not 1 <= args.stage1_min_seq_len <= args.stage1_seq_len:
        parser.error(f"--stage1_min_seq_len must be between 1 and --stage1_seq_len={args.stage1_seq_len}; got "
                     f"{args.stage1_min_seq_len}.")
    resolve_dirs(args, "bert_sentiment")
    return args


def apply_smoke(args, parser) -> None:
    """Tiny sizes for every option still at its default (explicit flags win)."""
    tiny = {"batch_size": 4, "teacher_steps": 4, "stage1_steps": 2, "stage2_steps": 2, "stage1_seq_len": 32,
            "stage1_min_seq_len": 16, "stage1_batch_size": 3, "task_max_len": 32, "train_sentences": 64,
            "eval_sentences": 32, "news_articles": 8, "save_steps": 2,
            "min_embedding_rank": 2, "tinybert_layers": 2, "fidelity_texts": 4}
    for name, value in tiny.items():
        if getattr(args, name) == parser.get_default(name):
            setattr(args, name, value)


# ---- data ------------------------------------------------------------------------------------------------------


def load_tokenizer(args):
    from transformers import AutoTokenizer

    from kron_transformers.assets import minilm_path

    return AutoTokenizer.from_pretrained(minilm_path())


def sentiment_datasets(args, tokenizer):
    """Tokenised sentiment train/validation splits (movie-disjoint), ``input_ids``/``attention_mask``/``labels``."""
    from kron_transformers.assets import load_rotten_tomatoes

    splits = load_rotten_tomatoes(seed=args.seed)
    train = splits["train"].shuffle(seed=args.seed)
    validation = splits["validation"]
    if args.train_sentences is not None:
        train = train.select(range(min(args.train_sentences, len(train))))
    if args.eval_sentences is not None:
        validation = validation.select(range(min(args.eval_sentences, len(validation))))

    def tokenize(batch):
        encoded = tokenizer(batch["sentence"], truncation=True, max_length=args.task_max_len)
        return {**encoded, "labels": batch["label"]}

    columns = train.column_names
    return (train.map(tokenize, batched=True, remove_columns=columns),
            validation.map(tokenize, batched=True, remove_columns=columns))


def news_blocks(args, tokenizer):
    """News articles (train split) as ``[CLS] ... [SEP]`` blocks for stage 1: of ``--stage1_min_seq_len`` to
    ``--stage1_seq_len`` tokens (``augmentation.text_blocks``, one block per training example), or, when the two are
    equal, the whole stream cut into blocks of that length (cached as .npy)."""
    from datasets import Dataset

    from kron_transformers.assets import load_news_articles

    if mixed_stage1(args):
        from kron_transformers.augmentation import text_blocks

        articles = load_news_articles(seed=args.seed)["train"]
        if args.news_articles is not None:
            articles = articles.select(range(min(args.news_articles, len(articles))))
        blocks = text_blocks(articles["text"], tokenizer, args.stage1_steps * args.stage1_batch_size,
                             args.stage1_min_seq_len, args.stage1_seq_len, seed=args.seed)
        return Dataset.from_dict({"input_ids": blocks, "attention_mask": [[1] * len(b) for b in blocks]})
    path = args.cache_dir / "data" / f"news_blocks_{args.stage1_seq_len}_{args.news_articles or 'all'}.npy"
    if not path.is_file():
        articles = load_news_articles(seed=args.seed)["train"]
        if args.news_articles is not None:
            articles = articles.select(range(min(args.news_articles, len(articles))))
        body = args.stage1_seq_len - 2
        ids = tokenizer(list(articles["text"]), add_special_tokens=False, verbose=False)["input_ids"]
        stream = np.fromiter((token for article in ids for token in article), dtype=np.int64)
        stream = stream[: len(stream) // body * body].reshape(-1, body)
        blocks = np.concatenate([np.full((len(stream), 1), tokenizer.cls_token_id), stream,
                                 np.full((len(stream), 1), tokenizer.sep_token_id)], axis=1)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path.with_suffix(".tmp.npy"), blocks)
        path.with_suffix(".tmp.npy").replace(path)
    blocks = np.load(path)
    return Dataset.from_dict({"input_ids": blocks.tolist(), "attention_mask": np.ones_like(blocks).tolist()})


def long_stage2_data(args) -> bool:
    """Whether stage 2 also sees long inputs (joined snippets, news blocks) beside the snippets."""
    return bool(args.stage2_joined_examples or args.stage2_news_blocks)


def stage2_dataset(args, train, tokenizer):
    """Stage 2's training set: the snippets, plus ``--stage2_joined_examples`` same-label snippets joined into long
    reviews and ``--stage2_news_blocks`` unlabelled news blocks (label -100), both of ``--task_max_len`` to
    ``--stage1_seq_len`` tokens (the quickstart's stage 2, ``run_glue.py --joined_examples/--unlabelled_file``)."""
    from datasets import Dataset, Value, concatenate_datasets

    from kron_transformers.assets import load_news_articles
    from kron_transformers.augmentation import join_examples, text_blocks

    if not long_stage2_data(args):
        return train
    train = train.cast_column("labels", Value("int64"))
    sequences, labels = join_examples(train["input_ids"], train["labels"], tokenizer, args.stage2_joined_examples,
                                      args.task_max_len, args.stage1_seq_len, seed=args.seed)
    if args.stage2_news_blocks:
        articles = load_news_articles(seed=args.seed)["train"]
        if args.news_articles is not None:
            articles = articles.select(range(min(args.news_articles, len(articles))))
        # Another seed than stage 1's blocks (args.seed), so that these are not the first stage-1 blocks again.
        blocks = text_blocks(articles["text"], tokenizer, args.stage2_news_blocks, args.task_max_len,
                             args.stage1_seq_len, seed=args.seed + 1)
        sequences, labels = sequences + blocks, labels + [-100] * len(blocks)
    columns = {"input_ids": sequences, "labels": labels}
    for name, value in (("attention_mask", 1), ("token_type_ids", 0)):
        if name in train.column_names:
            columns[name] = [[value] * len(ids) for ids in sequences]
    kept = train.select_columns(list(columns))
    return concatenate_datasets([kept, Dataset.from_dict(columns).cast(kept.features)])


def accuracy(model, dataset, tokenizer, batch_size: int = 128) -> float:
    from transformers import DataCollatorWithPadding

    collate = DataCollatorWithPadding(tokenizer)
    device = next(model.parameters()).device
    correct = 0
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(dataset), batch_size):
            batch = collate([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))])
            batch = {key: value.to(device) for key, value in batch.items()}
            labels = batch.pop("labels")
            correct += (model(**batch).logits.argmax(-1) == labels).sum().item()
    return correct / len(dataset)


# ---- teacher ---------------------------------------------------------------------------------------------------


def teacher_architecture(args):
    """The teacher before fine-tuning: real all-MiniLM-L6-v2 (smoke: a tiny random BERT on MiniLM's vocabulary)."""
    from transformers import BertConfig, BertForSequenceClassification

    from kron_transformers.assets import minilm_path

    torch.manual_seed(args.seed)
    if args.smoke:
        config = BertConfig.from_pretrained(minilm_path())
        config.update({"hidden_size": 48, "num_hidden_layers": 4, "intermediate_size": 96, "num_labels": 2})
        return BertForSequenceClassification(config)
    return BertForSequenceClassification.from_pretrained(minilm_path(), num_labels=2)


def label_names(model) -> None:
    model.config.id2label, model.config.label2id = {0: "rotten", 1: "fresh"}, {"rotten": 0, "fresh": 1}


def teacher_trainer(args, data, out_dir: Path, steps: int):
    """Fine-tuning of the teacher on the sentiment labels (plain ``Trainer``)."""
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    model = teacher_architecture(args)
    label_names(model)
    training_args = stage_arguments(TrainingArguments, out_dir, max_steps=steps, batch_size=args.batch_size,
                                    learning_rate=args.teacher_lr, seed=args.seed, save_steps=args.save_steps)
    return Trainer(model=model, args=training_args, train_dataset=data["train"], processing_class=data["tokenizer"],
                   data_collator=DataCollatorWithPadding(data["tokenizer"]))


def train_teacher(args, data) -> tuple[nn.Module, dict]:
    stage_dir = args.cache_dir / "teacher"
    result = run_stage(stage_dir, lambda out_dir: teacher_trainer(args, data, out_dir, args.teacher_steps),
                       evaluate=lambda m: {"accuracy": accuracy(m, data["validation"], data["tokenizer"])},
                       describe={"data": f"Rotten Tomatoes train ({len(data['train'])} snippets)"})
    teacher = load_weights(teacher_architecture(args), stage_dir)
    label_names(teacher)
    result["parameters"] = teacher.num_parameters()
    return teacher.eval(), result


# ---- students --------------------------------------------------------------------------------------------------


class LowRankEmbedding(nn.Module):
    """A word embedding stored as ``lookup (V x k) @ project (k x d)``: ALBERT's factorisation of a dense embedding.

    ``(...,)`` ids -> ``(..., d)``. ``from_embedding`` starts it at the rank-k truncated SVD of a dense embedding.
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, rank: int, padding_idx: int | None = None):
        super().__init__()
        self.lookup = nn.Embedding(num_embeddings, rank, padding_idx=padding_idx)
        self.project = nn.Linear(rank, embedding_dim, bias=False)
        self.embedding_dim = embedding_dim

    @classmethod
    def from_embedding(cls, embedding: nn.Embedding, rank: int) -> "LowRankEmbedding":
        weight = embedding.weight.detach().double()
        u, s, vh = torch.linalg.svd(weight, full_matrices=False)  # weight ~ (u[:, :k] s[:k]) @ vh[:k]
        module = cls(weight.shape[0], weight.shape[1], rank, embedding.padding_idx)
        with torch.no_grad():
            module.lookup.weight.copy_((u[:, :rank] * s[:rank]).to(embedding.weight.dtype))
            module.project.weight.copy_(vh[:rank].T.to(embedding.weight.dtype))
        return module

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.project(self.lookup(input_ids))


def uniform_layers(student_layers: int, teacher_layers: int) -> list[int]:
    """The teacher layers a shallower student keeps and learns from: the last of each block (ends at the top)."""
    from kron_transformers.distillation.trainer import default_layer_map

    return default_layer_map(student_layers, teacher_layers)


def non_embedding_parameters(config) -> int:
    """Parameters of a dense ``BertForSequenceClassification`` with ``config``, minus the word embedding."""
    from transformers import BertForSequenceClassification

    with torch.device("meta"):
        model = BertForSequenceClassification(config)
    return model.num_parameters() - model.bert.embeddings.word_embeddings.weight.numel()


def distilbert_shape(teacher_config, target: int, min_rank: int) -> tuple[int, int]:
    """(layers, embedding rank) of the DistilBERT-style student nearest ``target`` parameters (see the docstring)."""
    vocab, hidden = teacher_config.vocab_size, teacher_config.hidden_size
    for layers in range(teacher_config.num_hidden_layers - 1, 0, -1):
        config = copy.deepcopy(teacher_config)
        config.num_hidden_layers = layers
        rank = (target - non_embedding_parameters(config)) // (vocab + hidden)
        if rank >= min_rank:
            return layers, int(min(rank, hidden))
    raise ValueError(f"No DistilBERT-style student fits {target:,} parameters with an embedding rank >= {min_rank}.")


def tinybert_config(teacher_config, target: int, layers: int):
    """The narrow dense config (hidden a multiple of the head count, FFN 4x) whose size is nearest ``target``."""
    heads = teacher_config.num_attention_heads
    best = None
    for hidden in range(heads, teacher_config.hidden_size + 1, heads):
        config = copy.deepcopy(teacher_config)
        config.update({"hidden_size": hidden, "intermediate_size": 4 * hidden, "num_hidden_layers": layers})
        size = non_embedding_parameters(config) + config.vocab_size * hidden
        if best is None or abs(size - target) < abs(best[0] - target):
            best = (size, config)
    return best[1]


def build_student(variant: str, ratio: float, teacher, args):
    """The student before distillation, deterministically (fixed seed): ``(model, facts)``."""
    from transformers import BertForSequenceClassification

    from kron_transformers import compress
    from kron_transformers.layers import KroneckerEmbedding, KroneckerLinear

    torch.manual_seed(args.seed)
    kronecker = compress(teacher, ratio, show_progress=False)
    target = kronecker.num_parameters()
    if variant in ("kronecker", "kronecker_no_stage1"):
        config = kronecker.config
        facts = {"init": "nearest Kronecker product of the teacher's weights",
                 "shapes": {"attention_a_shape": config.attention_a_shape, "ffn_a_shape": config.ffn_a_shape,
                            "embedding_factor": config.embedding_factor}}
        return kronecker, facts
    if variant == "kronecker_random_init":
        std = teacher.config.initializer_range
        for module in kronecker.modules():
            if isinstance(module, (KroneckerLinear, KroneckerEmbedding)):
                module.reset_parameters(std=std)
        return kronecker, {"init": f"factored modules random (product std {std}); other tensors the teacher's"}
    teacher_config = teacher.config
    teacher_state = teacher.state_dict()
    if variant == "distilbert":
        layers, rank = distilbert_shape(teacher_config, target, args.min_embedding_rank)
        kept = uniform_layers(layers, teacher_config.num_hidden_layers)
        config = copy.deepcopy(teacher_config)
        config.num_hidden_layers = layers
        student = BertForSequenceClassification(config)
        state = {}
        for key, value in teacher_state.items():
            if key.startswith("bert.encoder.layer."):
                index = int(key.split(".")[3])
                if index in kept:
                    state[key.replace(f"layer.{index}.", f"layer.{kept.index(index)}.", 1)] = value
            else:
                state[key] = value
        student.load_state_dict(state, strict=True)
        student.bert.embeddings.word_embeddings = LowRankEmbedding.from_embedding(
            teacher.bert.embeddings.word_embeddings, rank
        )
        return student, {"init": f"teacher layers {[i + 1 for i in kept]} (1-based), embedding = rank-{rank} SVD "
                                 "of the teacher's; other tensors the teacher's",
                         "layers": layers, "embedding_rank": rank}
    if variant == "tinybert":
        config = tinybert_config(teacher_config, target, min(args.tinybert_layers, teacher_config.num_hidden_layers))
        student = BertForSequenceClassification(config)
        # Project the teacher's embeddings on the top principal directions of its word embedding (d -> h).
        word = teacher.bert.embeddings.word_embeddings.weight.detach().double()
        _, _, vh = torch.linalg.svd(word - word.mean(0), full_matrices=False)
        projection = vh[: config.hidden_size].T  # (d, h)
        embeddings = student.bert.embeddings
        with torch.no_grad():
            for name in ("word_embeddings", "position_embeddings", "token_type_embeddings"):
                source = getattr(teacher.bert.embeddings, name).weight.detach().double()
                target = getattr(embeddings, name).weight
                target.copy_((source @ projection).to(target.dtype))
        return student, {"init": "embeddings = the teacher's projected on its top principal directions; layers, "
                                 "pooler and classifier random",
                         "layers": config.num_hidden_layers, "hidden_size": config.hidden_size}
    raise ValueError(f"Unknown variant {variant!r}; expected one of {VARIANTS}.")


def student_name(variant: str, ratio: float) -> str:
    return f"{variant}_x{ratio:g}"


def run_student(args, variant: str, ratio: float, teacher, data) -> dict:
    name = student_name(variant, ratio)
    summary_path = args.cache_dir / "students" / name / "summary.json"
    if summary_path.is_file():
        summary = read_json(summary_path)
        if "fidelity" not in summary:  # finished before fidelity was measured: measure the saved student
            student = load_weights(build_student(variant, ratio, teacher, args)[0], summary_path.parent / "stage2")
            summary["fidelity"] = measure_fidelity(args, teacher, student, data)
            write_json(summary_path, summary)
        return read_json(summary_path)
    tokenizer = data["tokenizer"]
    build = lambda: build_student(variant, ratio, teacher, args)  # noqa: E731
    student, facts = build()
    parameters = student.num_parameters()
    del student
    stage2_steps = args.stage2_steps + (args.stage1_steps if variant == "kronecker_no_stage1" else 0)
    stages = {}
    start_dir = None
    if variant != "kronecker_no_stage1":
        stages["stage1"], start_dir = train_with_projection(
            args, name, "stage1", lambda: build()[0], teacher, data["news"], data["news_collator"],
            args.stage1_steps, args.stage1_lr, describe={"data": f"news blocks of {stage1_lengths(args)} tokens"},
        )

    def stage2_student():
        model = build()[0]
        return load_weights(model, start_dir) if start_dir is not None else model

    stages["stage2"], _ = train_with_projection(
        args, name, "stage2", stage2_student, teacher, data["stage2"], data["task_collator"], stage2_steps,
        args.stage2_lr, evaluate=lambda m: {"accuracy": accuracy(m, data["validation"], tokenizer)},
        projection_from=(start_dir / PROJECTION_FILE) if start_dir is not None else None,
        describe={"data": stage2_description(args)},
    )
    budget = {
        "steps": sum(stage["budget"]["steps"] for stage in stages.values()),
        "examples_seen": sum(stage["budget"]["examples_seen"] for stage in stages.values()),
        "wall_seconds": round(sum(stage["budget"]["wall_seconds"] for stage in stages.values()), 1),
    }
    final = load_weights(build()[0], args.cache_dir / "students" / name / "stage2")
    fidelity = measure_fidelity(args, teacher, final, data)
    summary = {"name": name, "variant": variant, "ratio": ratio, "label": VARIANT_LABELS[variant], "fidelity": fidelity,
               "parameters": parameters, "compression": teacher.num_parameters() / parameters, **facts,
               "stages": stages, "budget": budget,
               "accuracy": stages["stage2"]["metrics"]["accuracy"]}
    write_json(summary_path, summary)
    return read_json(summary_path)  # as a later run will read it (JSON types)


def measure_fidelity(args, teacher, student, data) -> dict:
    """The quickstart's fidelity figures: long joined reviews (128/256 tokens) and held-out news agreement."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))
    import quickstart

    return quickstart.measure_fidelity(teacher, student, data["tokenizer"], args.seed, args.fidelity_texts,
                                       snippets=args.eval_sentences)


def loss_weights(args, stage: str) -> dict[str, float]:
    """Stage 1 (news, no labels, no task head worth matching): layers only. Stage 2: layers + the teacher's logits."""
    return {"alpha_embedding": 1.0, "alpha_hidden": 1.0, "alpha_attention": 1.0,
            "alpha_logits": 0.0 if stage == "stage1" else 1.0,
            "alpha_task": 0.0 if stage == "stage1" else args.alpha_task}


def distillation_trainer(args, stage, student, teacher, dataset, collator, steps, lr, out_dir: Path,
                         projection_from: Path | None = None):
    """An ``IlkdTrainer`` for one stage; a width projection learned in the previous stage is loaded into it."""
    from safetensors.torch import load_file

    from kron_transformers.distillation import IlkdTrainer, IlkdTrainingArguments

    stage1 = stage == "stage1"
    # Inputs of mixed lengths (stage-1 blocks, stage-2 long inputs) batched with others of similar length.
    mixed = mixed_stage1(args) if stage1 else long_stage2_data(args)
    training_args = stage_arguments(IlkdTrainingArguments, out_dir, max_steps=steps,
                                    batch_size=args.stage1_batch_size if stage1 else args.batch_size,
                                    learning_rate=lr, seed=args.seed, save_steps=args.save_steps,
                                    train_sampling_strategy="group_by_length" if mixed else "random",
                                    **loss_weights(args, stage))
    trainer = IlkdTrainer(model=student, teacher_model=teacher, args=training_args, train_dataset=dataset,
                          data_collator=collator)
    if trainer.projection is not None and projection_from is not None and projection_from.is_file():
        trainer.projection.load_state_dict(load_file(projection_from))
    return trainer


def train_with_projection(args, name, stage, student_fn, teacher, dataset, collator, steps, lr, evaluate=None,
                          projection_from=None, describe=None):
    """One ILKD stage of one student, resumable, cached under ``cache/students/<name>/<stage>``; a width projection
    (TinyBERT's ``W_h``) learned in the previous stage (``projection_from``) is carried over."""
    stage_dir = args.cache_dir / "students" / name / stage

    def make_trainer(out_dir):
        return distillation_trainer(args, stage, student_fn(), teacher, dataset, collator, steps, lr, out_dir,
                                    projection_from)

    result = run_stage(stage_dir, make_trainer, evaluate=evaluate,
                       describe={**(describe or {}), "loss_weights": loss_weights(args, stage)})
    return result, stage_dir


# ---- report ----------------------------------------------------------------------------------------------------


def report(args, teacher_result, students, total_seconds) -> dict:
    teacher_accuracy = teacher_result["metrics"]["accuracy"]
    teacher_parameters = teacher_result["parameters"]
    rows = []
    for s in students:
        stage1 = s["stages"].get("stage1", {}).get("budget", {}).get("steps", 0)
        stage2 = s["stages"]["stage2"]["budget"]["steps"]
        rows.append([
            f"~{s['ratio']:g}x", s["label"], f"{s['parameters']:,}", f"{teacher_parameters / s['parameters']:.2f}x",
            stage1, stage2, f"{s['budget']['examples_seen']:,}", format_seconds(s["budget"]["wall_seconds"]),
            f"{s['accuracy']:.4f}", f"{s['accuracy'] / teacher_accuracy:.1%}",
        ])
    t_budget = teacher_result["budget"]
    header = ["size", "student", "parameters", "compression", "stage-1 steps", "stage-2 steps", "examples seen",
              "wall time", "val. accuracy", "retained"]
    markdown = "\n\n".join([
        "# KroneckerBERT vs DistilBERT-/TinyBERT-style students on Rotten Tomatoes (all-MiniLM-L6-v2 teacher)"
        + (" — SMOKE RUN, numbers meaningless" if args.smoke else ""),
        f"Teacher: {'tiny random BERT (smoke)' if args.smoke else 'all-MiniLM-L6-v2'} fine-tuned "
        f"{t_budget['steps']} steps x batch {t_budget['batch_size']} ({t_budget['examples_seen']:,} examples, "
        f"{format_seconds(t_budget['wall_seconds'])}): validation accuracy **{teacher_accuracy:.4f}**, "
        f"{teacher_parameters:,} parameters. Validation: {teacher_result.get('validation_size', '?')} snippets of "
        "movies unseen in training.",
        f"Every student: stage 1 = {args.stage1_steps} steps of ILKD on {args.stage1_batch_size} news blocks of "
        f"{stage1_lengths(args)} tokens each (lr {args.stage1_lr:g}), stage 2 = {args.stage2_steps} steps of task "
        f"ILKD on {stage2_description(args)} (batch {args.batch_size}, lr {args.stage2_lr:g}, hard-label weight "
        f"{args.alpha_task:g}); the no-stage-1 "
        f"ablation spends the stage-1 steps in stage 2. Seed {args.seed}. Baselines are matched to the Kronecker "
        "student's parameter count: "
        "DistilBERT-style = uniformly spaced teacher layers + rank-k SVD word embedding; TinyBERT-style = narrow "
        "dense 4-layer BERT (see the script's docstring).",
        markdown_table(header, rows),
        "Beyond the distillation data (both stages saw inputs of at most "
        f"{max(args.stage1_seq_len, args.task_max_len)} tokens; the 128- and 256-token reviews are joined from "
        "validation snippets, never from training ones): accuracy on reviews joined from same-movie, "
        "same-label validation snippets (fraction predicted positive, agreement with the teacher), and agreement "
        "with the teacher on held-out news (identical predictions / mean KL).",
        fidelity_table(teacher_accuracy, students),
        f"Total wall time of this run (including cached stages' recorded times): {format_seconds(total_seconds)}.",
    ])
    payload = {"experiment": "bert_sentiment", "smoke": args.smoke, "seed": args.seed,
               "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
               "teacher": teacher_result, "students": students,
               "retained": {s["name"]: s["accuracy"] / teacher_accuracy for s in students}}
    write_results(args.results_dir, "bert_sentiment", payload, markdown)
    plot(args, teacher_accuracy, students)
    measured = {f"~{s['ratio']:g}x {s['label']}": s["fidelity"] for s in students if "fidelity" in s}
    if measured:
        title = "Students at equal size and budget, beyond their distillation data" + (" (smoke)" if args.smoke else "")
        plot_fidelity(args.results_dir / "bert_sentiment_lengths.png", measured, title)
    print(markdown)
    return payload


def stage2_description(args) -> str:
    text = "Rotten Tomatoes train snippets"
    if args.stage2_joined_examples:
        text += f" + {args.stage2_joined_examples} joined same-label snippets"
    if args.stage2_news_blocks:
        text += f" + {args.stage2_news_blocks} unlabelled news blocks"
    if long_stage2_data(args):
        text += f" ({args.task_max_len}-{args.stage1_seq_len} tokens)"
    return text


def mixed_stage1(args) -> bool:
    """Whether stage-1 news blocks have lengths drawn between two bounds (else all of ``--stage1_seq_len``)."""
    return args.stage1_min_seq_len < args.stage1_seq_len


def stage1_lengths(args) -> str:
    if mixed_stage1(args):
        return f"{args.stage1_min_seq_len}-{args.stage1_seq_len}"
    return str(args.stage1_seq_len)


def fidelity_table(teacher_accuracy: float, students: list[dict]) -> str:
    measured = [s for s in students if "fidelity" in s]
    if not measured:
        return "(not measured)"
    teacher = measured[0]["fidelity"]
    lengths = list(teacher["long_reviews"])
    news = list(teacher["news_agreement"])
    rows = [["", "teacher", f"{teacher_accuracy:.4f}",
             *(f"{teacher['long_reviews'][n]['teacher']:.4f} (pos. {teacher['long_reviews'][n]['teacher_positive']:.2f})"
               for n in lengths), *([""] * len(news))]]
    for s in measured:
        f = s["fidelity"]
        rows.append([f"~{s['ratio']:g}x", s["label"], f"{s['accuracy']:.4f}",
                     *(f"{f['long_reviews'][n]['student']:.4f} (pos. {f['long_reviews'][n]['student_positive']:.2f}, "
                       f"agree {f['long_reviews'][n]['student_agreement']:.3f})" for n in lengths),
                     *(f"{f['news_agreement'][n]['agreement']:.3f} / {f['news_agreement'][n]['kl']:.3f}" for n in news)])
    header = ["size", "model", "snippets", *(f"reviews {n} tokens" for n in lengths), *(f"news {n}" for n in news)]
    return markdown_table(header, rows)


def plot(args, teacher_accuracy, students) -> Path:
    plt = matplotlib_pyplot()
    ratios = sorted({s["ratio"] for s in students})
    variants = [v for v in VARIANTS if any(s["variant"] == v for s in students)]
    fig, ax = plt.subplots(figsize=(9, 5.5))
    width = 0.8 / max(len(variants), 1)
    for i, variant in enumerate(variants):
        xs, ys = [], []
        for j, ratio in enumerate(ratios):
            match = [s for s in students if s["variant"] == variant and s["ratio"] == ratio]
            if match:
                xs.append(j + (i - (len(variants) - 1) / 2) * width)
                ys.append(match[0]["accuracy"])
        ax.bar(xs, ys, width, label=VARIANT_LABELS[variant])
    ax.axhline(teacher_accuracy, color="black", linestyle="--", label=f"teacher ({teacher_accuracy:.3f})")
    whole_model = {s["ratio"]: s["compression"] for s in students if s["variant"] == "kronecker"}
    ax.set_xticks(range(len(ratios)), [f"compress ratio {r:g}" + (f" ({whole_model[r]:.1f}x whole model)"
                                                                   if r in whole_model else "") for r in ratios])
    low = min([teacher_accuracy] + [s["accuracy"] for s in students])
    ax.set_ylim(max(0.0, low - 0.1), min(1.0, teacher_accuracy + 0.05))
    ax.set_ylabel("validation accuracy")
    smoke = " (smoke)" if args.smoke else ""
    ax.set_title(f"Rotten Tomatoes: students at equal size and distillation budget{smoke}")
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=2)
    fig.tight_layout()
    path = args.results_dir / "bert_sentiment.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def prepare_data(args, news: bool = True) -> dict:
    """Tokenizer, tokenised sentiment splits, news blocks (when a student needs stage 1) and their collators."""
    from transformers import DataCollatorWithPadding, default_data_collator

    tokenizer = load_tokenizer(args)
    train, validation = sentiment_datasets(args, tokenizer)
    data = {"tokenizer": tokenizer, "train": train, "validation": validation,
            "stage2": stage2_dataset(args, train, tokenizer),
            "task_collator": DataCollatorWithPadding(tokenizer),
            "news_collator": DataCollatorWithPadding(tokenizer) if mixed_stage1(args) else default_data_collator}
    if news:
        data["news"] = news_blocks(args, tokenizer)
    return data


def main(argv=None):
    args = parse_args(argv)
    setup_runtime(args.threads)
    from transformers import set_seed

    pin_settings(args.cache_dir, args)
    set_seed(args.seed)
    start = time.perf_counter()
    data = prepare_data(args, news=any(v != "kronecker_no_stage1" for v in args.variants))
    teacher, teacher_result = train_teacher(args, data)
    teacher_result["validation_size"] = len(data["validation"])
    students = [run_student(args, variant, ratio, teacher, data)
                for ratio in args.compressions for variant in args.variants]
    recorded = teacher_result["budget"]["wall_seconds"] + sum(s["budget"]["wall_seconds"] for s in students)
    print(f"This invocation took {format_seconds(time.perf_counter() - start)}.")
    return report(args, teacher_result, students, recorded)


if __name__ == "__main__":
    main()
