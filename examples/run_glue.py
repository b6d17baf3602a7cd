#!/usr/bin/env python
# Copyright 2026 The kron-transformers Authors. Licensed under the Apache License, Version 2.0.
"""Stage 2 of KroneckerBERT: task-specific distillation (or plain fine-tuning) on GLUE or your own CSV/JSON files.

In the style of Transformers' ``examples/pytorch/text-classification/run_glue.py``: the same data arguments, every
``TrainingArguments`` flag, ``eval_results.json``/``all_results.json``; plus a teacher and the ILKD loss weights.

    # distil a Kronecker student from a fine-tuned dense teacher on SST-2
    python examples/run_glue.py --task_name sst2 --model_name_or_path ./kronecker-student \\
        --teacher_name_or_path ./bert-base-sst2 --do_train --do_eval --output_dir ./out

    # compress the teacher on the fly (a preset or a ratio) and distil, on local files
    python examples/run_glue.py --train_file train.csv --validation_file dev.csv \\
        --model_name_or_path ./bert-base-sst2 --compression 4 --teacher_name_or_path ./bert-base-sst2 \\
        --do_train --do_eval --output_dir ./out

Without ``--teacher_name_or_path`` the model is fine-tuned on the labels alone (how the teacher itself is made).
CSV/JSON files need a ``label`` column and one or two text columns (``sentence1``/``sentence2``, or the first
non-label columns), like Transformers' script.
"""

import logging
import os
import sys
from dataclasses import dataclass, field

import datasets
import numpy as np
import torch
import transformers
from datasets import load_dataset
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    HfArgumentParser,
    Trainer,
    default_data_collator,
    set_seed,
)
from huggingface_hub import EvalResult

import kron_transformers
from kron_transformers.distillation import IlkdTrainer, IlkdTrainingArguments, last_complete_checkpoint
from kron_transformers.metrics import load_metric
from kron_transformers.model_card import DistillationStage, defer_push_to_hub_for_card, push_trainer_model_with_card


logger = logging.getLogger(__name__)

task_to_keys = {
    "cola": ("sentence", None),
    "mnli": ("premise", "hypothesis"),
    "mrpc": ("sentence1", "sentence2"),
    "qnli": ("question", "sentence"),
    "qqp": ("question1", "question2"),
    "rte": ("sentence1", "sentence2"),
    "sst2": ("sentence", None),
    "stsb": ("sentence1", "sentence2"),
    "wnli": ("sentence1", "sentence2"),
}


@dataclass
class DataTrainingArguments:
    task_name: str | None = field(
        default=None, metadata={"help": f"A GLUE task, loaded from the Hub: {', '.join(task_to_keys)}."}
    )
    dataset_name: str | None = field(default=None, metadata={"help": "A dataset on the Hub (instead of a GLUE task)."})
    dataset_config_name: str | None = field(default=None, metadata={"help": "The configuration of --dataset_name."})
    train_file: str | None = field(default=None, metadata={"help": "A CSV or JSON file with the training data."})
    validation_file: str | None = field(default=None, metadata={"help": "A CSV or JSON file with the validation data."})
    test_file: str | None = field(default=None, metadata={"help": "A CSV or JSON file with the test data."})
    metric_name: str | None = field(
        default=None,
        metadata={"help": "GLUE metric configuration for local files (e.g. 'mrpc' for F1+accuracy); default accuracy, "
                  "or Pearson/Spearman for a regression label."},
    )
    max_seq_length: int = field(default=128, metadata={"help": "Longer sequences are truncated."})
    pad_to_max_length: bool = field(
        default=False, metadata={"help": "Pad every sample to max_seq_length (else pad each batch dynamically)."}
    )
    overwrite_cache: bool = field(default=False, metadata={"help": "Recompute the tokenized datasets."})
    preprocessing_num_workers: int | None = field(default=None, metadata={"help": "Processes for tokenization."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Truncate the training set (debugging)."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Truncate the validation set."})
    max_predict_samples: int | None = field(default=None, metadata={"help": "Truncate the test set."})
    joined_examples: int = field(
        default=0,
        metadata={"help": "Add this many training examples, each texts of one label joined to a length between "
                  "--joined_min_length and --joined_max_length tokens (single-text classification only), so the "
                  "student is also distilled on inputs longer than the task's; the teacher's outputs on them are "
                  "the target (kron_transformers.augmentation.join_examples). Use with --train_sampling_strategy "
                  "group_by_length to batch them together."},
    )
    joined_min_length: int | None = field(default=None, metadata={"help": "Default: --max_seq_length."})
    joined_max_length: int = field(default=256, metadata={"help": "Longest joined example, in tokens."})
    unlabelled_file: str | None = field(
        default=None,
        metadata={"help": "A text file (one document per line, e.g. news) to cut --unlabelled_examples blocks from, "
                  "added to the training set without labels: the student then also matches the teacher's outputs "
                  "and layers on text beyond the task's (kron_transformers.augmentation.text_blocks). "
                  "Classification only (the task loss skips them)."},
    )
    unlabelled_examples: int = field(default=0, metadata={"help": "How many blocks to cut from --unlabelled_file."})
    unlabelled_min_length: int | None = field(default=None, metadata={"help": "Default: --max_seq_length."})
    unlabelled_max_length: int = field(default=256, metadata={"help": "Longest unlabelled block, in tokens."})
    augmented_examples: int = field(
        default=0,
        metadata={"help": "Add this many training examples made TinyBERT's way: a training example with each "
                  "one-token word replaced, with probability --augmentation_probability, by one of its "
                  "--augmentation_candidates nearest words in the teacher's input embedding "
                  "(kron_transformers.augmentation.replace_words). Unlabelled (a neighbour may be an antonym): the "
                  "student matches the teacher's outputs and layers on them. Needs --teacher_name_or_path."},
    )
    augmentation_probability: float = field(default=0.4, metadata={"help": "Chance that each word is replaced."})
    augmentation_candidates: int = field(default=15, metadata={"help": "Nearest words a replacement is drawn from."})

    def __post_init__(self):
        if self.task_name is not None:
            self.task_name = self.task_name.lower()
            if self.task_name not in task_to_keys:
                raise ValueError(f"Unknown task {self.task_name!r}; expected one of {', '.join(task_to_keys)}.")
        elif self.dataset_name is None and self.train_file is None and self.validation_file is None:
            raise ValueError("Give --task_name, --dataset_name, or --train_file/--validation_file.")
        if self.joined_examples < 0:
            raise ValueError(f"--joined_examples must be >= 0; got {self.joined_examples}.")
        joined_min_length = self.max_seq_length if self.joined_min_length is None else self.joined_min_length
        if self.joined_examples and not 2 < joined_min_length <= self.joined_max_length:
            raise ValueError(f"Expected 2 < --joined_min_length <= --joined_max_length; got {joined_min_length} and "
                             f"{self.joined_max_length}.")
        if self.augmented_examples < 0:
            raise ValueError(f"--augmented_examples must be >= 0; got {self.augmented_examples}.")
        if not 0 < self.augmentation_probability <= 1:
            raise ValueError(f"--augmentation_probability must be in (0, 1]; got {self.augmentation_probability}.")
        if self.augmentation_candidates < 1:
            raise ValueError(f"--augmentation_candidates must be >= 1; got {self.augmentation_candidates}.")
        if self.unlabelled_examples < 0:
            raise ValueError(f"--unlabelled_examples must be >= 0; got {self.unlabelled_examples}.")
        if bool(self.unlabelled_examples) != (self.unlabelled_file is not None):
            raise ValueError("--unlabelled_examples and --unlabelled_file go together; got "
                             f"--unlabelled_examples {self.unlabelled_examples} and --unlabelled_file "
                             f"{self.unlabelled_file!r}.")
        if self.unlabelled_file is not None and not os.path.isfile(self.unlabelled_file):
            raise OSError(f"--unlabelled_file {self.unlabelled_file!r} does not exist.")
        unlabelled_min_length = self.max_seq_length if self.unlabelled_min_length is None else self.unlabelled_min_length
        if self.unlabelled_examples and not 2 < unlabelled_min_length <= self.unlabelled_max_length:
            raise ValueError(f"Expected 2 < --unlabelled_min_length <= --unlabelled_max_length; got "
                             f"{unlabelled_min_length} and {self.unlabelled_max_length}.")
        for name in ("train_file", "validation_file", "test_file"):
            path = getattr(self, name)
            if path is not None and path.rsplit(".", 1)[-1] not in ("csv", "json", "jsonl"):
                raise ValueError(f"--{name} must be a .csv or .json/.jsonl file; got {path!r}.")


@dataclass
class ModelArguments:
    model_name_or_path: str = field(
        metadata={"help": "The student: a Kronecker checkpoint, or a dense one (compressed with --compression)."}
    )
    teacher_name_or_path: str | None = field(
        default=None, metadata={"help": "The fine-tuned dense teacher. Without it: plain fine-tuning on the labels."}
    )
    compression: str | None = field(
        default=None,
        metadata={"help": "Compress a dense --model_name_or_path first: a preset (kronecker-bert-8, ...) or a ratio (4)."},
    )
    tokenizer_name: str | None = field(default=None, metadata={"help": "Tokenizer, if not the model's."})
    cache_dir: str | None = field(default=None, metadata={"help": "Where to cache downloads from the Hub."})
    model_revision: str = field(default="main", metadata={"help": "Model revision (branch, tag or commit)."})
    token: str | None = field(default=None, metadata={"help": "Hub token for private models."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow model code from the Hub."})
    ignore_mismatched_sizes: bool = field(default=False, metadata={"help": "Allow a head of another size."})
    init_missing_from_teacher: bool = field(
        default=True,
        metadata={"help": "Student weights missing from its checkpoint (a pooler and classifier after stage 1 on a "
                  "masked-LM head) start as the teacher's, where names and shapes match; they are dense in both."},
    )


def parse_compression(value: str):
    """'4' or '4.0' -> 4.0; anything else is a preset name."""
    try:
        return float(value)
    except ValueError:
        return value


def copy_missing_weights(student, teacher, missing_keys) -> list[str]:
    """Copy into ``student`` the teacher's tensors for its newly initialised ``missing_keys`` where shapes match."""
    teacher_state = teacher.state_dict()
    student_state = student.state_dict()
    copied = []
    with torch.no_grad():
        for key in sorted(missing_keys):
            if key in teacher_state and key in student_state and teacher_state[key].shape == student_state[key].shape:
                student_state[key].copy_(teacher_state[key])
                copied.append(key)
    return copied


def add_joined_examples(train_dataset, tokenizer, data_args, max_seq_length: int, seed: int):
    """``train_dataset`` (tokenized) with ``--joined_examples`` long examples appended, model inputs and labels only."""
    from datasets import Dataset, concatenate_datasets

    from kron_transformers.augmentation import join_examples

    min_length = max_seq_length if data_args.joined_min_length is None else data_args.joined_min_length
    sequences, labels = join_examples(train_dataset["input_ids"], train_dataset["label"], tokenizer,
                                      data_args.joined_examples, min_length, data_args.joined_max_length, seed=seed)
    columns = {"input_ids": sequences, "label": labels}
    for name, value in (("attention_mask", 1), ("token_type_ids", 0)):
        if name in train_dataset.column_names:
            columns[name] = [[value] * len(ids) for ids in sequences]
    kept = train_dataset.select_columns(list(columns))
    joined = Dataset.from_dict(columns).cast(kept.features)
    logger.info(f"Added {len(joined)} joined examples of {min_length}-{data_args.joined_max_length} tokens.")
    return concatenate_datasets([kept, joined])


def add_unlabelled_blocks(train_dataset, tokenizer, data_args, max_seq_length: int, seed: int):
    """``train_dataset`` with ``--unlabelled_examples`` blocks of ``--unlabelled_file`` appended, labelled -100."""
    from datasets import Dataset, Value, concatenate_datasets

    from kron_transformers.augmentation import text_blocks

    with open(data_args.unlabelled_file, encoding="utf-8") as file:
        texts = [line.strip() for line in file if line.strip()]
    min_length = max_seq_length if data_args.unlabelled_min_length is None else data_args.unlabelled_min_length
    blocks = text_blocks(texts, tokenizer, data_args.unlabelled_examples, min_length, data_args.unlabelled_max_length,
                         seed=seed)
    columns = {"input_ids": blocks, "label": [-100] * len(blocks)}
    for name, value in (("attention_mask", 1), ("token_type_ids", 0)):
        if name in train_dataset.column_names:
            columns[name] = [[value] * len(ids) for ids in blocks]
    kept = train_dataset.select_columns(list(columns))
    kept = kept.cast_column("label", Value("int64"))  # a ClassLabel column has no -100
    unlabelled = Dataset.from_dict(columns).cast(kept.features)
    logger.info(f"Added {len(unlabelled)} unlabelled blocks of {min_length}-{data_args.unlabelled_max_length} tokens "
                f"from {data_args.unlabelled_file}.")
    return concatenate_datasets([kept, unlabelled])


def augmented_examples(train_dataset, tokenizer, teacher, data_args, seed: int):
    """``--augmented_examples`` inputs made from ``train_dataset``'s by word replacement, as a dataset of its model
    inputs labelled -100 (appended to the training set after the other additions)."""
    from datasets import Dataset, Value

    from kron_transformers.augmentation import replace_words

    sequences, sources = replace_words(train_dataset["input_ids"], tokenizer, teacher.get_input_embeddings().weight,
                                       data_args.augmented_examples, data_args.augmentation_probability,
                                       data_args.augmentation_candidates, seed=seed)
    columns = {"input_ids": sequences, "label": [-100] * len(sequences)}
    for name in ("attention_mask", "token_type_ids"):  # the source's: its padding, and the segments of a text pair
        if name in train_dataset.column_names:
            values = train_dataset[name]
            columns[name] = [values[source] for source in sources]
    features = train_dataset.select_columns(list(columns)).cast_column("label", Value("int64")).features
    logger.info(f"Made {len(sequences)} examples by replacing words (probability "
                f"{data_args.augmentation_probability}, {data_args.augmentation_candidates} candidates).")
    return Dataset.from_dict(columns).cast(features)


def load_raw_datasets(data_args, model_args):
    if data_args.task_name is not None:
        return load_dataset("nyu-mll/glue", data_args.task_name, cache_dir=model_args.cache_dir, token=model_args.token)
    if data_args.dataset_name is not None:
        return load_dataset(data_args.dataset_name, data_args.dataset_config_name, cache_dir=model_args.cache_dir,
                            token=model_args.token)
    data_files = {
        split: path
        for split, path in (("train", data_args.train_file), ("validation", data_args.validation_file),
                            ("test", data_args.test_file))
        if path is not None
    }
    extension = next(iter(data_files.values())).rsplit(".", 1)[-1]
    for split, path in data_files.items():
        if path.endswith(".csv"):
            _check_csv(path, f"--{split}_file", needs_label=split != "test")
    raw = load_dataset("json" if extension in ("json", "jsonl") else "csv", data_files=data_files,
                       cache_dir=model_args.cache_dir)
    for split, path in data_files.items():
        if split != "test" and "label" not in raw[split].column_names:
            raise ValueError(f"--{split}_file {path!r} has no 'label' column; its columns are: "
                             f"{', '.join(raw[split].column_names)}.")
    return raw


def _check_csv(path: str, flag: str, needs_label: bool) -> None:
    """A clear error naming the file and its columns for what `load_dataset` reports obscurely (or as a column
    mismatch between files): no rows, no ``label`` column."""
    import csv

    with open(path, newline="", encoding="utf-8") as file:
        reader = csv.reader(file)
        header = next(reader, None)
        has_rows = any(row for row in reader)
    if header is None:
        raise ValueError(f"{flag} {path!r} is empty; expected a header row (e.g. sentence,label) and data rows.")
    if not has_rows:
        raise ValueError(f"{flag} {path!r} has a header ({', '.join(header)}) but no rows.")
    if needs_label and "label" not in header:
        raise ValueError(f"{flag} {path!r} has no 'label' column; its columns are: {', '.join(header)}.")


def main(argv=None):
    parser = HfArgumentParser((ModelArguments, DataTrainingArguments, IlkdTrainingArguments))
    if argv is None and len(sys.argv) == 2 and sys.argv[1].endswith(".json"):
        model_args, data_args, training_args = parser.parse_json_file(json_file=os.path.abspath(sys.argv[1]))
    else:
        model_args, data_args, training_args = parser.parse_args_into_dataclasses(args=argv)

    if training_args.freeze_position_embeddings and model_args.teacher_name_or_path is None:
        raise ValueError("--freeze_position_embeddings applies to distillation (IlkdTrainer): it needs "
                         "--teacher_name_or_path.")
    if data_args.augmented_examples and model_args.teacher_name_or_path is None:
        raise ValueError("--augmented_examples needs --teacher_name_or_path: the examples it makes have no labels, so "
                         "only a teacher's outputs can be the target.")
    if data_args.unlabelled_examples and model_args.teacher_name_or_path is None:
        raise ValueError("--unlabelled_examples needs --teacher_name_or_path: without labels, only a teacher's outputs "
                         "can be the target.")
    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", datefmt="%m/%d/%Y %H:%M:%S",
                        handlers=[logging.StreamHandler(sys.stdout)])
    log_level = training_args.get_process_log_level()
    logger.setLevel(log_level)
    datasets.utils.logging.set_verbosity(log_level)
    transformers.utils.logging.set_verbosity(log_level)
    logger.info(f"Training/evaluation parameters {training_args}")

    last_checkpoint = None
    if os.path.isdir(training_args.output_dir) and training_args.do_train:
        last_checkpoint = last_complete_checkpoint(training_args.output_dir)
        if last_checkpoint is not None and training_args.resume_from_checkpoint is None:
            logger.info(f"Checkpoint found at {last_checkpoint}: resuming training from it.")
    set_seed(training_args.seed)

    raw_datasets = load_raw_datasets(data_args, model_args)
    reference_split = raw_datasets["train"] if "train" in raw_datasets else next(iter(raw_datasets.values()))
    if data_args.task_name is not None:
        is_regression = data_args.task_name == "stsb"
        label_list = None if is_regression else reference_split.features["label"].names
    else:
        is_regression = reference_split.features["label"].dtype in ("float32", "float64")
        label_list = None if is_regression else sorted(
            set().union(*(set(raw_datasets[s].unique("label")) for s in raw_datasets if s != "test")) - {None}
        )
    num_labels = 1 if is_regression else len(label_list)

    # Column names: the task's, or the usual ones for local files.
    if data_args.task_name is not None:
        sentence1_key, sentence2_key = task_to_keys[data_args.task_name]
    else:
        non_label = [name for name in reference_split.column_names if name != "label"]
        if "sentence1" in non_label and "sentence2" in non_label:
            sentence1_key, sentence2_key = "sentence1", "sentence2"
        elif "sentence" in non_label:
            sentence1_key, sentence2_key = "sentence", None
        elif len(non_label) >= 2:
            sentence1_key, sentence2_key = non_label[:2]
        else:
            sentence1_key, sentence2_key = non_label[0], None

    if data_args.augmented_examples and is_regression:
        raise ValueError("--augmented_examples needs a classification task: a regression loss cannot skip the "
                         "unlabelled examples it makes.")
    if data_args.unlabelled_examples and is_regression:
        raise ValueError("--unlabelled_examples needs a classification task: a regression loss cannot skip the "
                         "unlabelled blocks.")
    if data_args.joined_examples and (sentence2_key is not None or is_regression):
        raise ValueError(f"--joined_examples joins the texts of one class: it needs single-text classification, but "
                         f"the data has {'text pairs' if sentence2_key is not None else 'a regression label'}.")

    hub_kwargs = {"cache_dir": model_args.cache_dir, "revision": model_args.model_revision,
                  "token": model_args.token, "trust_remote_code": model_args.trust_remote_code}
    tokenizer = AutoTokenizer.from_pretrained(model_args.tokenizer_name or model_args.model_name_or_path, **hub_kwargs)
    config = AutoConfig.from_pretrained(
        model_args.model_name_or_path, num_labels=num_labels,
        finetuning_task=data_args.task_name or "text-classification", **hub_kwargs,
    )
    limits = [getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None),
              tokenizer.model_max_length if tokenizer.model_max_length < 10**9 else None]  # 1e30: no limit
    longest = min((limit for limit in limits if limit), default=None)
    for flag, wanted in (("joined", data_args.joined_examples), ("unlabelled", data_args.unlabelled_examples)):
        length = getattr(data_args, f"{flag}_max_length")
        if wanted and longest is not None and length > longest:
            raise ValueError(f"--{flag}_max_length {length} exceeds the {longest} tokens the model and tokenizer "
                             f"accept.")
    if tokenizer.pad_token is None:
        # GPT-2 (KnGPT2's GLUE runs) has no padding token: pad with EOS; its classifier reads the last non-pad token.
        tokenizer.pad_token = tokenizer.eos_token
    if config.pad_token_id is None:
        config.pad_token_id = tokenizer.pad_token_id
    model, loading_info = AutoModelForSequenceClassification.from_pretrained(
        model_args.model_name_or_path, config=config, ignore_mismatched_sizes=model_args.ignore_mismatched_sizes,
        output_loading_info=True, **hub_kwargs,
    )
    if model_args.compression is not None:
        model = kron_transformers.compress(model, parse_compression(model_args.compression))
        logger.info(f"Compressed the student:\n{model.compression_report}")
    teacher = None
    if model_args.teacher_name_or_path is not None:
        teacher = AutoModelForSequenceClassification.from_pretrained(model_args.teacher_name_or_path, **hub_kwargs)
        if teacher.config.pad_token_id is None:
            teacher.config.pad_token_id = tokenizer.pad_token_id
        if teacher.config.num_labels != num_labels:
            raise ValueError(
                f"The teacher {model_args.teacher_name_or_path} has {teacher.config.num_labels} labels but the data has "
                f"{num_labels}: fine-tune the teacher on this task first."
            )
        if model_args.init_missing_from_teacher and model_args.compression is None:
            copied = copy_missing_weights(model, teacher, loading_info["missing_keys"])
            if copied:
                logger.info(f"Initialised from the teacher (missing in the student checkpoint): {', '.join(copied)}")

    # Label ids: keep the model's mapping when it already has one for these labels (a fine-tuned teacher/student).
    label_to_id = None
    if not is_regression:
        model_label2id = {str(k).lower(): v for k, v in (model.config.label2id or {}).items()}
        if data_args.task_name is None:
            if sorted(model_label2id) == sorted(str(label).lower() for label in label_list):
                label_to_id = {label: model_label2id[str(label).lower()] for label in label_list}
            else:
                label_to_id = {label: i for i, label in enumerate(label_list)}
        if label_to_id is not None:
            model.config.label2id = {str(label): i for label, i in label_to_id.items()}
            model.config.id2label = {i: str(label) for label, i in label_to_id.items()}
        elif label_list is not None:
            model.config.label2id = {label: i for i, label in enumerate(label_list)}
            model.config.id2label = dict(enumerate(label_list))
    if teacher is not None and not is_regression:
        teacher_labels = {str(k).lower(): v for k, v in (teacher.config.label2id or {}).items()}
        student_labels = {str(k).lower(): v for k, v in model.config.label2id.items()}
        if set(teacher_labels) == set(student_labels) and teacher_labels != student_labels:
            raise ValueError(f"Teacher label ids {teacher.config.label2id} differ from the student's "
                             f"{model.config.label2id}: their logits would not line up.")

    if data_args.max_seq_length > tokenizer.model_max_length:
        logger.warning(f"max_seq_length {data_args.max_seq_length} exceeds the tokenizer's {tokenizer.model_max_length}.")
    max_seq_length = min(data_args.max_seq_length, tokenizer.model_max_length)
    padding = "max_length" if data_args.pad_to_max_length else False

    def preprocess(examples):
        texts = (examples[sentence1_key],) if sentence2_key is None else (examples[sentence1_key], examples[sentence2_key])
        result = tokenizer(*texts, padding=padding, max_length=max_seq_length, truncation=True)
        if label_to_id is not None and "label" in examples:
            # An unlabelled test file loaded beside labelled ones gets a label column of None: keep GLUE's -1.
            result["label"] = [-1 if label is None or label == -1 else label_to_id[label]
                               for label in examples["label"]]
        return result

    with training_args.main_process_first(desc="dataset map pre-processing"):
        raw_datasets = raw_datasets.map(preprocess, batched=True, num_proc=data_args.preprocessing_num_workers,
                                        load_from_cache_file=not data_args.overwrite_cache,
                                        desc="Running tokenizer on dataset")

    def split(name, limit, required_flag):
        key = {"validation": "validation_matched" if data_args.task_name == "mnli" else "validation",
               "test": "test_matched" if data_args.task_name == "mnli" else "test"}.get(name, name)
        if key not in raw_datasets:
            raise ValueError(f"{required_flag} needs a {name} dataset.")
        dataset = raw_datasets[key]
        return dataset.select(range(min(limit, len(dataset)))) if limit is not None else dataset

    train_dataset = split("train", data_args.max_train_samples, "--do_train") if training_args.do_train else None
    augmented = None
    if train_dataset is not None and data_args.augmented_examples:
        augmented = augmented_examples(train_dataset, tokenizer, teacher, data_args, training_args.seed)
    if train_dataset is not None and data_args.joined_examples:
        train_dataset = add_joined_examples(train_dataset, tokenizer, data_args, max_seq_length, training_args.seed)
    if train_dataset is not None and data_args.unlabelled_examples:
        train_dataset = add_unlabelled_blocks(train_dataset, tokenizer, data_args, max_seq_length, training_args.seed)
    if augmented is not None:
        from datasets import Value, concatenate_datasets

        kept = train_dataset.select_columns(augmented.column_names).cast_column("label", Value("int64"))
        train_dataset = concatenate_datasets([kept, augmented.cast(kept.features)])
    eval_dataset = split("validation", data_args.max_eval_samples, "--do_eval") if training_args.do_eval else None
    predict_dataset = split("test", data_args.max_predict_samples, "--do_predict") if training_args.do_predict else None

    if data_args.task_name is not None:
        metric = load_metric("glue", data_args.task_name)
    elif data_args.metric_name is not None:
        metric = load_metric("glue", data_args.metric_name)
    else:
        metric = load_metric("glue", "stsb" if is_regression else "sst2")

    def compute_metrics(p):
        preds = p.predictions[0] if isinstance(p.predictions, tuple) else p.predictions
        preds = np.squeeze(preds) if is_regression else np.argmax(preds, axis=1)
        result = metric.compute(predictions=preds, references=p.label_ids)
        if len(result) > 1:
            result["combined_score"] = float(np.mean(list(result.values())))
        return result

    if data_args.pad_to_max_length:
        data_collator = default_data_collator
    else:
        data_collator = DataCollatorWithPadding(tokenizer, pad_to_multiple_of=8 if training_args.fp16 else None)

    push_with_card = defer_push_to_hub_for_card(training_args, model)
    common = {"model": model, "args": training_args, "train_dataset": train_dataset, "eval_dataset": eval_dataset,
              "compute_metrics": compute_metrics, "processing_class": tokenizer, "data_collator": data_collator}
    trainer = IlkdTrainer(teacher_model=teacher, **common) if teacher is not None else Trainer(**common)

    if training_args.do_train:
        checkpoint = training_args.resume_from_checkpoint or last_checkpoint
        train_result = trainer.train(resume_from_checkpoint=checkpoint)
        metrics = train_result.metrics
        metrics["train_samples"] = len(train_dataset)
        trainer.save_model()
        trainer.log_metrics("train", metrics)
        trainer.save_metrics("train", metrics)
        trainer.save_state()

    eval_results = []
    if training_args.do_eval:
        logger.info("*** Evaluate ***")
        tasks, eval_datasets = [data_args.task_name], [eval_dataset]
        if data_args.task_name == "mnli":
            tasks.append("mnli-mm")
            eval_datasets.append(raw_datasets["validation_mismatched"])
        for eval_dataset, task in zip(eval_datasets, tasks):
            metrics = trainer.evaluate(eval_dataset=eval_dataset)
            metrics["eval_samples"] = len(eval_dataset)
            if task == "mnli-mm":
                metrics = {k + "_mm": v for k, v in metrics.items()}
            if data_args.task_name is not None:  # results on a Hub dataset go in the model card's model-index
                eval_results += [
                    EvalResult(task_type="text-classification", dataset_type="nyu-mll/glue",
                               dataset_name=f"GLUE {task.upper()}", dataset_config=data_args.task_name,
                               dataset_split="validation", metric_type=name[len("eval_"):], metric_value=value)
                    for name, value in metrics.items()
                    if name[len("eval_"):] in ("accuracy", "f1", "matthews_correlation", "pearson", "spearmanr")
                ]
            trainer.log_metrics("eval", metrics)
            trainer.save_metrics("eval", metrics)

    if training_args.do_predict:
        logger.info("*** Predict ***")
        predict = predict_dataset.remove_columns("label") if "label" in predict_dataset.column_names else predict_dataset
        predictions = trainer.predict(predict, metric_key_prefix="predict").predictions
        predictions = np.squeeze(predictions) if is_regression else np.argmax(predictions, axis=1)
        output_file = os.path.join(training_args.output_dir, f"predict_results_{data_args.task_name or 'test'}.txt")
        if trainer.is_world_process_zero():
            with open(output_file, "w") as writer:
                writer.write("index\tprediction\n")
                for index, item in enumerate(predictions):
                    value = f"{item:3.3f}" if is_regression else model.config.id2label[int(item)]
                    writer.write(f"{index}\t{value}\n")

    if push_with_card:
        # The Kronecker card and the model alone: Trainer.push_to_hub would upload its generic card and output_dir.
        stage = DistillationStage(
            name="task-specific" if teacher is not None else "fine-tuning",
            dataset=data_args.task_name or data_args.dataset_name or os.path.basename(data_args.train_file or ""),
            training=f"{trainer.state.global_step} steps, lr {training_args.learning_rate:g}",
            losses=_loss_description(training_args) if teacher is not None else "task loss",
        )
        push_trainer_model_with_card(trainer, base_model=model_args.teacher_name_or_path, distillation=[stage],
                                     eval_results=eval_results)
    elif training_args.push_to_hub:
        trainer.push_to_hub(finetuned_from=model_args.model_name_or_path, tasks="text-classification")
    return trainer


def _loss_description(args: IlkdTrainingArguments) -> str:
    """The ILKD terms with a positive weight, e.g. 'embedding 1 + hidden 1 + attention (mse_scores) 1'."""
    names = {"attention": f"attention ({args.attention_loss})", "logits": f"logits (T={args.temperature:g})"}
    terms = [f"{names.get(name, name)} {getattr(args, f'alpha_{name}'):g}"
             for name in ("embedding", "hidden", "attention", "logits", "task") if getattr(args, f"alpha_{name}") > 0]
    return " + ".join(terms)


if __name__ == "__main__":
    main()
