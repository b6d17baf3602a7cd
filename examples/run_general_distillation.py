#!/usr/bin/env python
# Copyright 2026 The kron-transformers Authors. Licensed under the Apache License, Version 2.0.
"""Stage 1: general (task-agnostic) distillation of a Kronecker student from its dense teacher on raw text.

The student learns the teacher's embeddings, hidden states and attention scores (ILKD, KroneckerBERT Sec. 3.3)
on unlabelled text, with the masked-LM objective for models that have a masked-LM head (BERT, RoBERTa, DistilBERT)
and the causal-LM objective for the others (GPT-2, Llama/SmolLM2, Mistral, Qwen); their weights are ``--alpha_task``
and ``--alpha_logits``. Like Transformers' ``run_mlm.py``/``run_clm.py``:

    python examples/run_general_distillation.py --teacher_name_or_path ./bert-base \\
        --compression kronecker-bert-8 --train_file news.txt --validation_file news_dev.txt \\
        --do_train --do_eval --max_steps 2000 --output_dir ./kronecker-bert-8-general

The student is ``--model_name_or_path`` (a Kronecker checkpoint) or, with ``--compression``, the teacher
compressed by a preset or ratio. Evaluation reports the student's own MLM/CLM loss (``eval_loss``) and its
``perplexity``.
"""

import logging
import math
import os
import random
import sys
from dataclasses import dataclass, field
from itertools import chain

import datasets
import transformers
from datasets import load_dataset
from transformers import (
    MODEL_FOR_CAUSAL_LM_MAPPING,
    MODEL_FOR_MASKED_LM_MAPPING,
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoTokenizer,
    DataCollatorForLanguageModeling,
    HfArgumentParser,
    set_seed,
)

import kron_transformers
from kron_transformers.distillation import IlkdTrainer, IlkdTrainingArguments, last_complete_checkpoint
from kron_transformers.model_card import DistillationStage, defer_push_to_hub_for_card, push_trainer_model_with_card


logger = logging.getLogger(__name__)


@dataclass
class ModelArguments:
    teacher_name_or_path: str = field(metadata={"help": "The dense teacher (local folder or Hub id)."})
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "A Kronecker student checkpoint. Omit it and give --compression instead."}
    )
    compression: str | None = field(
        default=None, metadata={"help": "Make the student by compressing the teacher: a preset name or a ratio."}
    )
    objective: str | None = field(
        default=None,
        metadata={"help": "'mlm' or 'clm'; default from the teacher (masked if it has an MLM head, else causal)."},
    )
    tokenizer_name: str | None = field(default=None, metadata={"help": "Tokenizer, if not the teacher's."})
    cache_dir: str | None = field(default=None, metadata={"help": "Where to cache downloads from the Hub."})
    token: str | None = field(default=None, metadata={"help": "Hub token for private models."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow model code from the Hub."})

    def __post_init__(self):
        if (self.model_name_or_path is None) == (self.compression is None):
            raise ValueError("Give exactly one of --model_name_or_path (a Kronecker student) and --compression.")
        if self.objective not in (None, "mlm", "clm"):
            raise ValueError(f"--objective must be 'mlm' or 'clm'; got {self.objective!r}.")


@dataclass
class DataTrainingArguments:
    dataset_name: str | None = field(default=None, metadata={"help": "A text dataset on the Hub."})
    dataset_config_name: str | None = field(default=None, metadata={"help": "The configuration of --dataset_name."})
    train_file: str | None = field(default=None, metadata={"help": "Training text: .txt (a line each), .csv or .json."})
    validation_file: str | None = field(default=None, metadata={"help": "Validation text, same formats."})
    text_column: str = field(default="text", metadata={"help": "The text column of CSV/JSON files and datasets."})
    validation_split_percentage: int = field(
        default=5, metadata={"help": "Validation share of the training data when there is no validation split."}
    )
    max_seq_length: int = field(
        default=256, metadata={"help": "Texts are concatenated and cut into blocks of at most this many tokens."}
    )
    min_seq_length: int | None = field(
        default=None,
        metadata={"help": "Block lengths are drawn uniformly from [min_seq_length, max_seq_length] (seeded); default "
                  "max_seq_length // 4. A student distilled on one length only may not behave like its teacher on "
                  "longer inputs (its position embeddings beyond that length are never distilled): pass "
                  "--min_seq_length equal to --max_seq_length for blocks of one length."},
    )
    mlm_probability: float = field(default=0.15, metadata={"help": "Share of tokens masked for the MLM objective."})
    preprocessing_num_workers: int | None = field(default=None, metadata={"help": "Processes for tokenization."})
    overwrite_cache: bool = field(default=False, metadata={"help": "Recompute the tokenized datasets."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Truncate the training blocks."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Truncate the validation blocks."})

    def __post_init__(self):
        if self.dataset_name is None and self.train_file is None:
            raise ValueError("Give --dataset_name or --train_file.")
        for name in ("train_file", "validation_file"):
            path = getattr(self, name)
            if path is not None and path.rsplit(".", 1)[-1] not in ("txt", "csv", "json", "jsonl"):
                raise ValueError(f"--{name} must be a .txt, .csv or .json/.jsonl file; got {path!r}.")
        if self.max_seq_length < 1:
            raise ValueError(f"--max_seq_length must be a positive number of tokens; got {self.max_seq_length}.")
        if self.min_seq_length is None:
            self.min_seq_length = max(self.max_seq_length // 4, 1)
        if not 1 <= self.min_seq_length <= self.max_seq_length:
            raise ValueError(
                f"--min_seq_length must be between 1 and --max_seq_length={self.max_seq_length}; got "
                f"{self.min_seq_length}."
            )


def parse_compression(value):
    try:
        return float(value)
    except ValueError:
        return value


def default_objective(config) -> str:
    """Masked LM for architectures that have a masked-LM head (BERT, RoBERTa, DistilBERT, ...), causal LM for the
    others (GPT-2, Llama, Mistral, Qwen, ...)."""
    if type(config) in MODEL_FOR_MASKED_LM_MAPPING:
        return "mlm"
    if type(config) in MODEL_FOR_CAUSAL_LM_MAPPING:
        return "clm"
    raise ValueError(f"The teacher ({config.model_type}) has neither a masked-LM nor a causal-LM head in "
                     "Transformers; general distillation needs one of them (--objective mlm|clm).")


def main(argv=None):
    parser = HfArgumentParser((ModelArguments, DataTrainingArguments, IlkdTrainingArguments))
    model_args, data_args, training_args = parser.parse_args_into_dataclasses(args=argv)
    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", datefmt="%m/%d/%Y %H:%M:%S",
                        handlers=[logging.StreamHandler(sys.stdout)])
    log_level = training_args.get_process_log_level()
    logger.setLevel(log_level)
    datasets.utils.logging.set_verbosity(log_level)
    transformers.utils.logging.set_verbosity(log_level)
    set_seed(training_args.seed)

    hub_kwargs = {"cache_dir": model_args.cache_dir, "token": model_args.token,
                  "trust_remote_code": model_args.trust_remote_code}
    teacher_config = AutoConfig.from_pretrained(model_args.teacher_name_or_path, **hub_kwargs)
    objective = model_args.objective or default_objective(teacher_config)
    auto_class = AutoModelForCausalLM if objective == "clm" else AutoModelForMaskedLM
    tokenizer = AutoTokenizer.from_pretrained(model_args.tokenizer_name or model_args.teacher_name_or_path, **hub_kwargs)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    teacher = auto_class.from_pretrained(model_args.teacher_name_or_path, **hub_kwargs)
    if model_args.compression is not None:
        student = kron_transformers.compress(teacher, parse_compression(model_args.compression))
        logger.info(f"Student = teacher compressed:\n{student.compression_report}")
    else:
        student = auto_class.from_pretrained(model_args.model_name_or_path, **hub_kwargs)

    # Raw text -> blocks of max_seq_length tokens, as in run_mlm.py/run_clm.py with line grouping.
    if data_args.dataset_name is not None:
        raw = load_dataset(data_args.dataset_name, data_args.dataset_config_name, cache_dir=model_args.cache_dir)
    else:
        files = {"train": data_args.train_file}
        if data_args.validation_file is not None:
            files["validation"] = data_args.validation_file
        extension = data_args.train_file.rsplit(".", 1)[-1]
        builder = {"txt": "text", "jsonl": "json"}.get(extension, extension)
        raw = load_dataset(builder, data_files=files, cache_dir=model_args.cache_dir)
    if "validation" not in raw and training_args.do_eval:
        held_out = raw["train"].train_test_split(test_size=data_args.validation_split_percentage / 100,
                                                 seed=training_args.seed)
        raw = datasets.DatasetDict({"train": held_out["train"], "validation": held_out["test"]})
    text_column = data_args.text_column if data_args.text_column in raw["train"].column_names else "text"
    if text_column not in raw["train"].column_names:
        raise ValueError(f"No text column {data_args.text_column!r} in {raw['train'].column_names}.")
    block_size = min(data_args.max_seq_length, tokenizer.model_max_length)

    def tokenize(examples):
        texts = [t for t in examples[text_column] if t and not t.isspace()]
        return tokenizer(texts, return_special_tokens_mask=objective == "mlm")

    min_block = min(data_args.min_seq_length, block_size)
    teacher_positions = getattr(teacher.config, "max_position_embeddings", None) or getattr(teacher.config,
                                                                                           "n_positions", None)
    if min_block == block_size and teacher_positions and block_size < teacher_positions:
        logger.warning(
            f"Every block has {block_size} tokens, but the teacher handles up to {teacher_positions}: the student is "
            f"never distilled on longer inputs and may not behave like its teacher there. Mix lengths with "
            f"--min_seq_length and a larger --max_seq_length."
        )

    def grouper(shortest: int):
        def group(examples, indices):
            concatenated = {k: list(chain(*examples[k])) for k in examples}
            # Block lengths drawn from a generator seeded by the batch's position: the same blocks on every run.
            generator = random.Random(f"{training_args.seed}-{indices[0] if indices else 0}")
            bounds, start = [], 0
            while True:
                length = generator.randint(shortest, block_size)
                if start + length > len(concatenated["input_ids"]):
                    break
                bounds.append((start, start + length))
                start += length
            return {k: [v[i:j] for i, j in bounds] for k, v in concatenated.items()}

        return group

    with training_args.main_process_first(desc="tokenizing and grouping"):
        tokenized = raw.map(tokenize, batched=True, num_proc=data_args.preprocessing_num_workers,
                            remove_columns=raw["train"].column_names, load_from_cache_file=not data_args.overwrite_cache,
                            desc="Tokenizing")
        # Training blocks of mixed lengths; evaluation blocks of max_seq_length tokens, as run_mlm.py/run_clm.py cut
        # them, so that perplexities stay comparable across settings.
        blocks = datasets.DatasetDict({
            split: dataset.map(grouper(min_block if split == "train" else block_size), batched=True,
                               with_indices=True, num_proc=data_args.preprocessing_num_workers,
                               load_from_cache_file=not data_args.overwrite_cache,
                               desc=f"Grouping {split} into blocks of {min_block if split == 'train' else block_size}"
                                    f"-{block_size}")
            for split, dataset in tokenized.items()
        })

    def take(split, limit):
        dataset = blocks[split]
        return dataset.select(range(min(limit, len(dataset)))) if limit is not None else dataset

    train_dataset = take("train", data_args.max_train_samples) if training_args.do_train else None
    eval_dataset = take("validation", data_args.max_eval_samples) if training_args.do_eval else None
    collator = DataCollatorForLanguageModeling(tokenizer, mlm=objective == "mlm",
                                               mlm_probability=data_args.mlm_probability)
    push_with_card = defer_push_to_hub_for_card(training_args, student)
    trainer = IlkdTrainer(model=student, teacher_model=teacher, args=training_args, train_dataset=train_dataset,
                          eval_dataset=eval_dataset, processing_class=tokenizer, data_collator=collator)

    if training_args.do_train:
        checkpoint = training_args.resume_from_checkpoint
        if checkpoint is None and os.path.isdir(training_args.output_dir):
            checkpoint = last_complete_checkpoint(training_args.output_dir)
        result = trainer.train(resume_from_checkpoint=checkpoint)
        trainer.save_model()
        metrics = result.metrics | {"train_samples": len(train_dataset)}
        trainer.log_metrics("train", metrics)
        trainer.save_metrics("train", metrics)
        trainer.save_state()

    if training_args.do_eval:
        metrics = trainer.evaluate()
        metrics["eval_samples"] = len(eval_dataset)
        # IlkdTrainer evaluates the student's own MLM/CLM loss (not the distillation loss), as run_mlm.py/run_clm.py.
        if "eval_loss" in metrics:
            metrics["perplexity"] = math.exp(metrics["eval_loss"]) if metrics["eval_loss"] < 700 else float("inf")
        trainer.log_metrics("eval", metrics)
        trainer.save_metrics("eval", metrics)

    if push_with_card:
        # The Kronecker card and the model alone: Trainer.push_to_hub would upload its generic card and output_dir.
        stage = DistillationStage(
            name="general", dataset=data_args.dataset_name or os.path.basename(data_args.train_file or ""),
            training=f"{trainer.state.global_step} steps, lr {training_args.learning_rate:g}, {objective}",
        )
        push_trainer_model_with_card(trainer, base_model=model_args.teacher_name_or_path, distillation=[stage])
    elif training_args.push_to_hub:
        trainer.push_to_hub(finetuned_from=model_args.teacher_name_or_path,
                            tasks="fill-mask" if objective == "mlm" else "text-generation")
    return trainer


if __name__ == "__main__":
    main()
