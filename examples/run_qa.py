#!/usr/bin/env python
# Copyright 2026 The kron-transformers Authors. Licensed under the Apache License, Version 2.0.
"""Extractive question answering (SQuAD v1.1 / v2.0): task-specific distillation or plain fine-tuning.

In the style of Transformers' ``examples/pytorch/question-answering/run_qa.py``: the same data arguments (long
contexts cut into overlapping windows with ``--doc_stride``; start/end logits post-processed into answer texts with
``--n_best_size``/``--max_answer_length``/``--null_score_diff_threshold``), every ``TrainingArguments`` flag, EM/F1
with the official SQuAD normalisation computed offline, ``eval_results.json``/``all_results.json`` and
``eval_predictions.json``; plus a teacher and the ILKD loss weights.

    # distil a Kronecker student from a fine-tuned dense teacher; compress the teacher on the fly
    python examples/run_qa.py --model_name_or_path ./bert-base-squad --compression 4 \\
        --teacher_name_or_path ./bert-base-squad --train_file train-v1.1.json --validation_file dev-v1.1.json \\
        --do_train --do_eval --max_seq_length 384 --doc_stride 128 --output_dir ./out

    # SQuAD v2.0 (unanswerable questions) from the Hub
    python examples/run_qa.py --dataset_name squad_v2 --version_2_with_negative --model_name_or_path ./student \\
        --teacher_name_or_path ./bert-base-squad2 --do_train --do_eval --output_dir ./out

Without ``--teacher_name_or_path`` the model is fine-tuned on the answer spans alone (how the teacher is made).
Local files are the official nested SQuAD JSON (``{"data": [{"paragraphs": [{"context", "qas": [...]}]}]}``) or
flat JSON lines with the Hub's ``squad`` columns ``id``, ``context``, ``question``, ``answers`` (``{"text": [...],
"answer_start": [...]}``; empty lists for an unanswerable question).
"""

import logging
import os
import sys
from dataclasses import dataclass, field

import datasets
import transformers
from datasets import load_dataset
from transformers import (
    AutoConfig,
    AutoModelForQuestionAnswering,
    AutoTokenizer,
    DataCollatorWithPadding,
    EvalPrediction,
    HfArgumentParser,
    default_data_collator,
    set_seed,
)


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import kron_transformers  # noqa: E402
from kron_transformers.distillation import IlkdTrainingArguments, last_complete_checkpoint  # noqa: E402
from kron_transformers.metrics import load_metric  # noqa: E402
from kron_transformers.model_card import (  # noqa: E402
    DistillationStage,
    defer_push_to_hub_for_card,
    push_trainer_model_with_card,
)
from utils_qa import (  # noqa: E402
    QuestionAnsweringIlkdTrainer,
    QuestionAnsweringTrainer,
    load_squad_file,
    postprocess_qa_predictions,
)


logger = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("id", "question", "context", "answers")


@dataclass
class ModelArguments:
    model_name_or_path: str = field(
        metadata={"help": "The student: a Kronecker checkpoint, or a dense one (compressed with --compression)."}
    )
    teacher_name_or_path: str | None = field(
        default=None, metadata={"help": "The fine-tuned dense QA teacher. Without it: plain fine-tuning on the spans."}
    )
    compression: str | None = field(
        default=None,
        metadata={"help": "Compress a dense --model_name_or_path first: a preset (kronecker-bert-8, ...) or a ratio "
                  "(4)."},
    )
    tokenizer_name: str | None = field(default=None, metadata={"help": "Tokenizer (a fast one), if not the model's."})
    cache_dir: str | None = field(default=None, metadata={"help": "Where to cache downloads from the Hub."})
    model_revision: str = field(default="main", metadata={"help": "Model revision (branch, tag or commit)."})
    token: str | None = field(default=None, metadata={"help": "Hub token for private models."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow model code from the Hub."})


@dataclass
class DataTrainingArguments:
    dataset_name: str | None = field(default=None, metadata={"help": "A dataset on the Hub (squad, squad_v2, ...)."})
    dataset_config_name: str | None = field(default=None, metadata={"help": "The configuration of --dataset_name."})
    train_file: str | None = field(default=None, metadata={"help": "Training data: SQuAD JSON or flat JSON lines."})
    validation_file: str | None = field(default=None, metadata={"help": "Validation data, same formats."})
    test_file: str | None = field(default=None, metadata={"help": "Test data for --do_predict, same formats."})
    overwrite_cache: bool = field(default=False, metadata={"help": "Recompute the tokenized datasets."})
    preprocessing_num_workers: int | None = field(default=None, metadata={"help": "Processes for tokenization."})
    max_seq_length: int = field(
        default=384, metadata={"help": "Tokens per window (question + context); longer contexts are split."}
    )
    pad_to_max_length: bool = field(
        default=True, metadata={"help": "Pad every window to max_seq_length (else pad each batch dynamically)."}
    )
    doc_stride: int = field(default=128, metadata={"help": "Tokens of overlap between consecutive context windows."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Truncate the training questions."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Truncate the validation questions."})
    max_predict_samples: int | None = field(default=None, metadata={"help": "Truncate the test questions."})
    version_2_with_negative: bool = field(default=False, metadata={"help": "Some questions have no answer (v2.0)."})
    null_score_diff_threshold: float = field(
        default=0.0, metadata={"help": "v2.0: answer 'no answer' when null score - best span score exceeds this."}
    )
    n_best_size: int = field(default=20, metadata={"help": "Start/end candidates per window and answers kept."})
    max_answer_length: int = field(default=30, metadata={"help": "Longest answer, in tokens."})

    def __post_init__(self):
        if self.dataset_name is None and self.train_file is None and self.validation_file is None \
                and self.test_file is None:
            raise ValueError("Give --dataset_name or --train_file/--validation_file/--test_file.")
        for name in ("train_file", "validation_file", "test_file"):
            path = getattr(self, name)
            if path is not None and path.rsplit(".", 1)[-1] not in ("json", "jsonl"):
                raise ValueError(f"--{name} must be a SQuAD .json or a .jsonl file; got {path!r}.")
        if not 0 <= self.doc_stride < self.max_seq_length:
            raise ValueError(
                f"--doc_stride must be in [0, max_seq_length={self.max_seq_length}); got {self.doc_stride}."
            )
        for name in ("n_best_size", "max_answer_length"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be at least 1; got {getattr(self, name)}.")


def parse_compression(value: str):
    """'4' or '4.0' -> 4.0; anything else is a preset name."""
    try:
        return float(value)
    except ValueError:
        return value


def load_raw_datasets(data_args, model_args) -> datasets.DatasetDict:
    if data_args.dataset_name is not None:
        return load_dataset(data_args.dataset_name, data_args.dataset_config_name, cache_dir=model_args.cache_dir,
                            token=model_args.token)
    files = {"train": data_args.train_file, "validation": data_args.validation_file, "test": data_args.test_file}
    return datasets.DatasetDict(
        {split: load_squad_file(path, cache_dir=model_args.cache_dir) for split, path in files.items() if path}
    )


def check_split(dataset: datasets.Dataset, split: str, version_2_with_negative: bool, need_answers: bool) -> None:
    """Clear errors for data the script cannot use, before any tokenisation."""
    missing = [column for column in REQUIRED_COLUMNS if column not in dataset.column_names]
    if missing and not (missing == ["answers"] and not need_answers):
        raise ValueError(
            f"The {split} data has no column(s) {missing}: expected SQuAD columns {list(REQUIRED_COLUMNS)}, "
            f"got {dataset.column_names}."
        )
    if need_answers and not version_2_with_negative:
        unanswerable = [qid for qid, answers in zip(dataset["id"], dataset["answers"]) if not answers["text"]]
        if unanswerable:
            raise ValueError(
                f"{len(unanswerable)} {split} question(s) have no answer (e.g. ids {unanswerable[:3]}): pass "
                "--version_2_with_negative for SQuAD v2.0-style data."
            )


def cls_index(tokenizer, input_ids: list[int]) -> int:
    """The position whose start/end score stands for "no answer" (BERT's [CLS], else the BOS token, else 0)."""
    for token_id in (tokenizer.cls_token_id, tokenizer.bos_token_id):
        if token_id is not None and token_id in input_ids:
            return input_ids.index(token_id)
    return 0


def tokenize_windows(examples, tokenizer, max_seq_length: int, doc_stride: int, pad_to_max_length: bool):
    """Question + context pairs cut into windows of ``max_seq_length`` tokens, overlapping by ``doc_stride``.

    Only the context is cut; the question comes first unless the tokenizer pads on the left (XLNet-style). Each
    window keeps ``overflow_to_sample_mapping`` (its example) and ``offset_mapping`` (character spans per token).
    """
    questions = [question.lstrip() for question in examples["question"]]  # some SQuAD questions start with spaces
    pad_on_right = tokenizer.padding_side == "right"
    first, second = (questions, examples["context"]) if pad_on_right else (examples["context"], questions)
    return tokenizer(
        first, second, truncation="only_second" if pad_on_right else "only_first", max_length=max_seq_length,
        stride=doc_stride, return_overflowing_tokens=True, return_offsets_mapping=True,
        padding="max_length" if pad_to_max_length else False,
    )


def prepare_train_features(examples, tokenizer, max_seq_length, doc_stride, pad_to_max_length):
    """Windows with ``start_positions``/``end_positions``: the first answer's first and last token, or the
    ``cls_index`` of a window that does not hold the whole answer (and of an unanswerable question)."""
    tokenized = tokenize_windows(examples, tokenizer, max_seq_length, doc_stride, pad_to_max_length)
    sample_mapping = tokenized.pop("overflow_to_sample_mapping")
    offset_mapping = tokenized.pop("offset_mapping")
    context_sequence = 1 if tokenizer.padding_side == "right" else 0
    tokenized["start_positions"], tokenized["end_positions"] = [], []
    for i, offsets in enumerate(offset_mapping):
        answers = examples["answers"][sample_mapping[i]]
        context_tokens = [k for k, sequence in enumerate(tokenized.sequence_ids(i)) if sequence == context_sequence]
        start_position = end_position = cls_index(tokenizer, tokenized["input_ids"][i])
        if answers["answer_start"] and context_tokens:
            start_char = answers["answer_start"][0]
            end_char = start_char + len(answers["text"][0])
            if offsets[context_tokens[0]][0] <= start_char and offsets[context_tokens[-1]][1] >= end_char:
                start_position = next(k for k in context_tokens if offsets[k][1] > start_char)
                end_position = next(k for k in reversed(context_tokens) if offsets[k][0] < end_char)
        tokenized["start_positions"].append(start_position)
        tokenized["end_positions"].append(end_position)
    return tokenized


def prepare_validation_features(examples, tokenizer, max_seq_length, doc_stride, pad_to_max_length):
    """Windows with ``example_id``, ``cls_index`` and an ``offset_mapping`` that is ``None`` outside the context
    (so post-processing never picks a span in the question or the padding)."""
    tokenized = tokenize_windows(examples, tokenizer, max_seq_length, doc_stride, pad_to_max_length)
    sample_mapping = tokenized.pop("overflow_to_sample_mapping")
    context_sequence = 1 if tokenizer.padding_side == "right" else 0
    tokenized["example_id"], tokenized["cls_index"] = [], []
    for i in range(len(tokenized["input_ids"])):
        sequence_ids = tokenized.sequence_ids(i)
        tokenized["example_id"].append(examples["id"][sample_mapping[i]])
        tokenized["cls_index"].append(cls_index(tokenizer, tokenized["input_ids"][i]))
        tokenized["offset_mapping"][i] = [
            offset if sequence_ids[k] == context_sequence else None
            for k, offset in enumerate(tokenized["offset_mapping"][i])
        ]
    return tokenized


def main(argv=None):
    parser = HfArgumentParser((ModelArguments, DataTrainingArguments, IlkdTrainingArguments))
    if argv is None and len(sys.argv) == 2 and sys.argv[1].endswith(".json"):
        model_args, data_args, training_args = parser.parse_json_file(json_file=os.path.abspath(sys.argv[1]))
    else:
        model_args, data_args, training_args = parser.parse_args_into_dataclasses(args=argv)

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
    wanted = [("train", training_args.do_train, "--do_train", True),
              ("validation", training_args.do_eval, "--do_eval", True),
              ("test", training_args.do_predict, "--do_predict", False)]
    for split, requested, flag, need_answers in wanted:
        if requested:
            if split not in raw_datasets:
                raise ValueError(f"{flag} needs a {split} dataset; the data has splits {list(raw_datasets)}.")
            check_split(raw_datasets[split], split, data_args.version_2_with_negative, need_answers)

    hub_kwargs = {"cache_dir": model_args.cache_dir, "revision": model_args.model_revision,
                  "token": model_args.token, "trust_remote_code": model_args.trust_remote_code}
    tokenizer = AutoTokenizer.from_pretrained(model_args.tokenizer_name or model_args.model_name_or_path, **hub_kwargs)
    if not tokenizer.is_fast:
        raise ValueError(
            f"{type(tokenizer).__name__} is a slow tokenizer; this script needs a fast one (offset mappings)."
        )
    config = AutoConfig.from_pretrained(model_args.model_name_or_path, **hub_kwargs)
    model = AutoModelForQuestionAnswering.from_pretrained(model_args.model_name_or_path, config=config, **hub_kwargs)
    if model_args.compression is not None:
        model = kron_transformers.compress(model, parse_compression(model_args.compression))
        logger.info(f"Compressed the student:\n{model.compression_report}")
    teacher = None
    if model_args.teacher_name_or_path is not None:
        teacher = AutoModelForQuestionAnswering.from_pretrained(model_args.teacher_name_or_path, **hub_kwargs)

    if data_args.max_seq_length > tokenizer.model_max_length:
        logger.warning(
            f"max_seq_length {data_args.max_seq_length} exceeds the tokenizer's {tokenizer.model_max_length}."
        )
    max_seq_length = min(data_args.max_seq_length, tokenizer.model_max_length)
    prepare_kwargs = {"tokenizer": tokenizer, "max_seq_length": max_seq_length, "doc_stride": data_args.doc_stride,
                      "pad_to_max_length": data_args.pad_to_max_length}

    def featurize(split, limit, function, description):
        examples = raw_datasets[split]
        if limit is not None:
            examples = examples.select(range(min(limit, len(examples))))
        with training_args.main_process_first(desc=description):
            features = examples.map(function, fn_kwargs=prepare_kwargs, batched=True,
                                    num_proc=data_args.preprocessing_num_workers, remove_columns=examples.column_names,
                                    load_from_cache_file=not data_args.overwrite_cache, desc=description)
        return examples, features

    train_dataset = eval_examples = eval_dataset = predict_examples = predict_dataset = None
    if training_args.do_train:
        _, train_dataset = featurize("train", data_args.max_train_samples, prepare_train_features,
                                     "Running tokenizer on train dataset")
    if training_args.do_eval:
        eval_examples, eval_dataset = featurize("validation", data_args.max_eval_samples,
                                                prepare_validation_features, "Running tokenizer on validation dataset")
    if training_args.do_predict:
        predict_examples, predict_dataset = featurize("test", data_args.max_predict_samples,
                                                      prepare_validation_features, "Running tokenizer on test dataset")

    if data_args.pad_to_max_length:
        data_collator = default_data_collator
    else:
        data_collator = DataCollatorWithPadding(tokenizer, pad_to_multiple_of=8 if training_args.fp16 else None)

    def post_processing_function(examples, features, predictions, stage="eval"):
        answers, no_answer_probabilities = postprocess_qa_predictions(
            examples=examples, features=features, predictions=predictions,
            version_2_with_negative=data_args.version_2_with_negative, n_best_size=data_args.n_best_size,
            max_answer_length=data_args.max_answer_length,
            null_score_diff_threshold=data_args.null_score_diff_threshold, output_dir=training_args.output_dir,
            prefix=stage,
        )
        if data_args.version_2_with_negative:
            formatted = [{"id": qid, "prediction_text": text, "no_answer_probability": no_answer_probabilities[qid]}
                         for qid, text in answers.items()]
        else:
            formatted = [{"id": qid, "prediction_text": text} for qid, text in answers.items()]
        references = None
        if "answers" in examples.column_names:
            references = [{"id": qid, "answers": gold} for qid, gold in zip(examples["id"], examples["answers"])]
            # v1.1 scores the best match over the gold answers: a question without any cannot be scored.
            if not data_args.version_2_with_negative and any(not gold["answers"]["text"] for gold in references):
                references = None
        return EvalPrediction(predictions=formatted, label_ids=references)

    metric = load_metric("squad", "v2" if data_args.version_2_with_negative else "v1")

    def compute_metrics(p: EvalPrediction):
        return metric.compute(predictions=p.predictions, references=p.label_ids)

    os.makedirs(training_args.output_dir, exist_ok=True)
    push_with_card = defer_push_to_hub_for_card(training_args, model)
    common = {"model": model, "args": training_args, "train_dataset": train_dataset, "eval_dataset": eval_dataset,
              "eval_examples": eval_examples, "processing_class": tokenizer, "data_collator": data_collator,
              "post_process_function": post_processing_function, "compute_metrics": compute_metrics}
    if teacher is not None:
        trainer = QuestionAnsweringIlkdTrainer(teacher_model=teacher, **common)
    else:
        trainer = QuestionAnsweringTrainer(**common)

    if training_args.do_train:
        checkpoint = training_args.resume_from_checkpoint or last_checkpoint
        train_result = trainer.train(resume_from_checkpoint=checkpoint)
        metrics = train_result.metrics
        metrics["train_samples"] = len(train_dataset)
        trainer.save_model()
        trainer.log_metrics("train", metrics)
        trainer.save_metrics("train", metrics)
        trainer.save_state()

    if training_args.do_eval:
        logger.info("*** Evaluate ***")
        metrics = trainer.evaluate()
        metrics["eval_samples"] = len(eval_examples)
        metrics["eval_features"] = len(eval_dataset)
        trainer.log_metrics("eval", metrics)
        trainer.save_metrics("eval", metrics)

    if training_args.do_predict:
        logger.info("*** Predict ***")
        results = trainer.predict(predict_dataset, predict_examples, metric_key_prefix="predict")
        metrics = results.metrics
        metrics["predict_samples"] = len(predict_examples)
        trainer.log_metrics("predict", metrics)
        trainer.save_metrics("predict", metrics)

    if push_with_card:
        # The Kronecker card and the model alone: Trainer.push_to_hub would upload its generic card and output_dir.
        stage = DistillationStage(
            name="task-specific" if teacher is not None else "fine-tuning",
            dataset=data_args.dataset_name or os.path.basename(data_args.train_file or ""),
            training=f"{trainer.state.global_step} steps, lr {training_args.learning_rate:g}",
        )
        push_trainer_model_with_card(trainer, base_model=model_args.teacher_name_or_path, distillation=[stage])
    elif training_args.push_to_hub:
        trainer.push_to_hub(finetuned_from=model_args.model_name_or_path, tasks="question-answering")
    return trainer


if __name__ == "__main__":
    main()
