import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import safetensors
import safetensors.torch
import torch
from huggingface_hub import CommitInfo, HfApi, ModelCard, RepoUrl
from tokenizers import ByteLevelBPETokenizer
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoTokenizer,
    BertConfig,
    BertForMaskedLM,
    BertTokenizer,
    ElectraConfig,
    ElectraModel,
    GPT2Config,
    GPT2LMHeadModel,
    PreTrainedTokenizerFast,
)

import kron_transformers  # noqa: F401  (registers the Kronecker classes with the Auto classes)
from kron_transformers import compress
from kron_transformers.cli import auto_class_for, main


VENV_BIN = Path(sys.executable).parent
BERT_CODE = {"configuration_kronecker_bert.py", "modeling_kronecker_bert.py", "layers.py", "kronecker.py"}
GPT2_CODE = {"configuration_kronecker_gpt2.py", "modeling_kronecker_gpt2.py", "layers.py", "kronecker.py"}
WORDS = "the a cat dog sat on mat and ran fast slow red big small".split()


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory):
    """A tiny dense GPT2LMHeadModel with a byte-level BPE tokenizer."""
    folder = tmp_path_factory.mktemp("dense") / "tiny-gpt2"
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator([" ".join(WORDS)] * 4, vocab_size=280, min_frequency=1, special_tokens=["<|endoftext|>"])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, eos_token="<|endoftext|>")
    torch.manual_seed(0)
    config = GPT2Config(n_embd=32, n_layer=2, n_head=2, vocab_size=len(tokenizer), n_positions=32, bos_token_id=0,
                        eos_token_id=0)
    GPT2LMHeadModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def distil_dir(tmp_path_factory):
    """A dense architecture without a built-in target table (compressed only with --target_modules)."""
    folder = tmp_path_factory.mktemp("dense") / "tiny-electra"
    config = ElectraConfig(embedding_size=16, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                           intermediate_size=32, vocab_size=32)
    ElectraModel(config).save_pretrained(folder)
    return folder


def flat(text: str) -> str:
    """The text with every run of whitespace made one space (the card wraps long lines)."""
    return " ".join(text.split())


def run_cli(capsys, *args):
    status = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return status, out, err


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("kron-compress: error:")]


def leftovers(folder: Path) -> list[str]:
    """Hidden staging folders the CLI may have left beside its target."""
    return [p.name for p in folder.iterdir() if p.name.startswith(".")]


def test_bert_checkpoint_compresses_reloads_and_prints_the_table(capsys, tmp_path, bert_dir):
    out_dir = tmp_path / "runs" / "kronecker-bert"  # missing parents are created
    status, out, err = run_cli(capsys, bert_dir, out_dir, "--compression", "4")
    assert status == 0, err

    # The per-module table and the totals, as CompressionReport.to_markdown() prints them.
    dense = BertForMaskedLM.from_pretrained(bert_dir).eval()
    expected = compress(dense, 4.0, show_progress=False).eval()
    assert expected.compression_report.to_markdown() in out
    assert "| bert.encoder.layer.1.output.dense | 32x64 |" in out
    assert f"| **total (whole model)** | | | | | {dense.num_parameters():,} | {expected.num_parameters():,} |" in out
    assert "Kronecker factorisation" in err  # the progress bar
    # Every printed row recomputed here from the dense weights and the saved factors, with torch.kron.
    saved = safetensors.torch.load_file(out_dir / "model.safetensors")
    rows = [line.strip("|").split("|") for line in out.splitlines() if line.startswith("| bert.")]
    assert len(rows) == 1 + 2 * 6  # the word embeddings; 2 layers x (q, k, v, attention output, intermediate, output)
    for name, shape, a_shape, b_shape, rank, before, after, ratio, error in (map(str.strip, row) for row in rows):
        weight = dense.get_submodule(name).weight.detach().double()
        a, b = saved[f"{name}.a"].double(), saved[f"{name}.b"].double()
        assert shape == "x".join(map(str, weight.shape)) and int(rank) == a.shape[0] == b.shape[0]
        assert (a_shape, b_shape) == ("x".join(map(str, a.shape[1:])), "x".join(map(str, b.shape[1:])))
        assert (int(before.replace(",", "")), int(after.replace(",", ""))) == (weight.numel(), a.numel() + b.numel())
        factored = sum(torch.kron(a[r], b[r]) for r in range(a.shape[0]))
        relative = (torch.linalg.matrix_norm(weight - factored) / torch.linalg.matrix_norm(weight)).item()
        assert float(error) == pytest.approx(relative, abs=1e-4)
        assert float(ratio.rstrip("x")) == pytest.approx(weight.numel() / (a.numel() + b.numel()), abs=0.05)

    files = {p.name for p in out_dir.iterdir()}
    assert BERT_CODE | {"config.json", "model.safetensors", "README.md", "tokenizer_config.json"} <= files
    config = json.loads((out_dir / "config.json").read_text())
    assert config["model_type"] == "kronecker_bert" and config["architectures"] == ["KroneckerBertForMaskedLM"]
    assert config["auto_map"]["AutoModelForMaskedLM"] == "modeling_kronecker_bert.KroneckerBertForMaskedLM"
    assert leftovers(out_dir.parent) == []
    umask = os.umask(0)
    os.umask(umask)
    assert out_dir.stat().st_mode & 0o777 == 0o777 & ~umask  # made like any folder, not private like a temp dir

    # Transformers alone reloads it (remote code) and computes what compress() computes in-process.
    reloaded = AutoModelForMaskedLM.from_pretrained(out_dir, trust_remote_code=True).eval()
    assert type(reloaded).__name__ == "KroneckerBertForMaskedLM"
    tokenizer = AutoTokenizer.from_pretrained(out_dir)
    batch = tokenizer(["the cat sat on the mat", "a dog ran"], padding=True, return_tensors="pt")
    assert batch["input_ids"].tolist() == BertTokenizer.from_pretrained(bert_dir)(
        ["the cat sat on the mat", "a dog ran"], padding=True
    )["input_ids"]
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**batch).logits, expected(**batch).logits)

    card = ModelCard.load(out_dir / "README.md")
    assert card.data.license == "apache-2.0"  # inherited from the base model's card
    assert card.data.model_name == "kronecker-bert"
    assert f"**{expected.num_parameters():,}** parameters instead of {dense.num_parameters():,}" in flat(card.text)
    assert "Base model: `tiny-bert`" in card.text  # a local folder's name, not its path
    assert 'AutoModelForMaskedLM.from_pretrained("kronecker-bert", trust_remote_code=True)' in card.text


def test_embedding_rank_makes_the_word_embedding_its_truncated_svd(capsys, tmp_path, bert_dir):
    out_dir = tmp_path / "svd-embedding"
    status, out, err = run_cli(capsys, bert_dir, out_dir, "--compression", "4", "--embedding_rank", "8")
    assert status == 0, err
    config = AutoConfig.from_pretrained(out_dir, trust_remote_code=True)
    # For rank 8 the ratio picks factor 32, the hidden size: 8 summed products of a column and a row.
    assert (config.embedding_rank, config.embedding_factor, config.kronecker_rank) == (8, 32, 1)
    name = "bert.embeddings.word_embeddings"
    saved = safetensors.torch.load_file(out_dir / "model.safetensors")
    a, b = saved[f"{name}.a"].double(), saved[f"{name}.b"].double()
    assert (tuple(a.shape), tuple(b.shape)) == ((8, 64, 1), (8, 1, 32))
    weight = BertForMaskedLM.from_pretrained(bert_dir).get_submodule(name).weight.detach().double()
    u, s, vh = torch.linalg.svd(weight, full_matrices=False)
    expected = u[:, :8] * s[:8] @ vh[:8]  # computed in float64; the factors were saved in float32
    torch.testing.assert_close(sum(torch.kron(a[r], b[r]) for r in range(8)), expected, rtol=0, atol=1e-6)
    assert f"| {name} | 64x32 | 64x1 | 1x32 | 8 |" in out


def test_gpt2_preset_rank_and_dtype(capsys, tmp_path, gpt2_dir):
    out_dir = tmp_path / "kngpt2"
    status, out, err = run_cli(capsys, gpt2_dir, out_dir, "--preset", "kngpt2", "--rank", "2", "--dtype", "bfloat16")
    assert status == 0, err
    # KnGPT2 factors the odd blocks only: block 1 of 2, and the embedding.
    assert "| transformer.h.1.mlp.c_fc |" in out and "| transformer.h.0." not in out
    assert "| transformer.wte |" in out
    files = {p.name for p in out_dir.iterdir()}
    assert GPT2_CODE | {"config.json", "model.safetensors", "README.md", "tokenizer.json"} <= files
    with safetensors.safe_open(out_dir / "model.safetensors", "pt") as weights:
        assert {weights.get_tensor(k).dtype for k in weights.keys()} == {torch.bfloat16}
        assert weights.get_tensor("transformer.h.1.mlp.c_fc.a").shape[0] == 2  # rank 2
    config = AutoConfig.from_pretrained(out_dir, trust_remote_code=True)
    assert config.kronecker_rank == 2 and config.kronecker_layers == [1]
    card = ModelCard.load(out_dir / "README.md")
    assert "preset `kngpt2`, Kronecker rank 2" in card.text and card.data.license == "unknown"

    model = AutoModelForCausalLM.from_pretrained(out_dir, trust_remote_code=True, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(out_dir)
    input_ids = tokenizer("the big cat ran", return_tensors="pt")["input_ids"]
    kronecker = compress(GPT2LMHeadModel.from_pretrained(gpt2_dir), "kngpt2", rank=2, show_progress=False)
    expected = kronecker.to(torch.bfloat16).to(torch.float32).eval()  # the saved weights went through bfloat16
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids).logits, expected(input_ids).logits)


def test_task_picks_the_auto_class(capsys, tmp_path, bert_dir):
    out_dir = tmp_path / "encoder-only"
    status, _, err = run_cli(capsys, bert_dir, out_dir, "--compression", "2", "--task", "AutoModel")
    assert status == 0, err
    assert json.loads((out_dir / "config.json").read_text())["architectures"] == ["KroneckerBertModel"]
    assert type(AutoModel.from_pretrained(out_dir, trust_remote_code=True)).__name__ == "KroneckerBertModel"


def test_auto_class_from_architectures():
    bert = BertConfig(architectures=["BertForSequenceClassification"])
    assert auto_class_for(bert).__name__ == "AutoModelForSequenceClassification"
    gpt2 = GPT2Config(architectures=["GPT2LMHeadModel"])
    assert auto_class_for(gpt2).__name__ == "AutoModelForCausalLM"
    assert auto_class_for(GPT2Config()).__name__ == "AutoModel"  # no architectures recorded: the base model
    assert auto_class_for(gpt2, "AutoModelForTokenClassification").__name__ == "AutoModelForTokenClassification"


def test_overwrite_replaces_a_non_empty_output_dir(capsys, tmp_path, bert_dir):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    (out_dir / "stale.txt").write_text("old")
    status, out, err = run_cli(capsys, bert_dir, out_dir, "--compression", "4")
    assert status == 1 and out == ""
    assert error_lines(err) == [
        f"kron-compress: error: OUTPUT_DIR '{out_dir}' exists and is not empty; pass --overwrite to replace it."
    ]
    assert [p.name for p in out_dir.iterdir()] == ["stale.txt"]  # untouched

    status, _, err = run_cli(capsys, bert_dir, out_dir, "--compression", "4", "--overwrite")
    assert status == 0, err
    files = {p.name for p in out_dir.iterdir()}
    assert "stale.txt" not in files and "model.safetensors" in files
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize(
    "make_args, message",
    [
        (lambda d: [d["tmp"] / "no-such-folder", "--compression", "4"], r"MODEL '.*no-such-folder': no such folder"),
        (lambda d: [d["tmp"] / "a-file.txt", "--compression", "4"], r"MODEL '.*a-file.txt' is a file"),
        (
            lambda d: ["someone/not-cached", "--compression", "4"],
            r"Cannot read the config of MODEL 'someone/not-cached' \(not a local folder; fetching it from the Hub",
        ),
        (lambda d: [d["distil"], "--compression", "4"], r"Cannot compress a ElectraModel: supported .* BertModel"),
        (lambda d: [d["bert"], "--preset", "nonsense"], r"Unknown preset 'nonsense'; the BERT presets are"),
        (
            lambda d: [d["bert"], "--preset", "kronecker-bert-8"],
            r"The preset 'kronecker-bert-8' holds the paper's factor shapes for BERT_BASE",
        ),
        (lambda d: [d["bert"], "--compression", "4", "--rank", "40"], r"No Kronecker shape of rank 40 exists"),
        (
            lambda d: [d["bert"], "--compression", "4", "--embedding_rank", "40"],
            r"word embedding of rank 40 .* for embedding_dim=32: the rank can be at most 32",
        ),
        (
            lambda d: [d["distil"], "--compression", "4", "--target_modules", "query", "--embedding_rank", "2"],
            r"Unknown option\(s\) \['embedding_rank'\]",
        ),
        (lambda d: [d["bert"], "--compression", "4", "--task", "AutoFoo"], r"--task 'AutoFoo' is not a transformers"),
        (
            lambda d: [d["gpt2"], "--compression", "4", "--task", "AutoModelForQuestionAnswering"],
            r"Cannot compress a GPT2ForQuestionAnswering",
        ),
        (lambda d: [d["bert"], "--compression", "4", "--push_to_hub"], r"Cannot create the Hub repo 'out': "),
        (lambda d: [d["bert"], "--compression", "0.5"], r"compression must be a finite .* above 1 .*got 0\.5"),
        (lambda d: [d["bert"], "--compression", "1.0"], r"compression must be a finite .* above 1 .*got 1\.0"),
    ],
    ids=["missing", "file", "hub", "architecture", "preset", "preset-shapes", "rank", "embedding-rank",
         "embedding-rank-generic", "task", "task-arch", "offline", "ratio-half", "ratio-one"],
)
def test_bad_input_fails_with_one_line_and_no_output(
    capsys, tmp_path, bert_dir, gpt2_dir, distil_dir, make_args, message
):
    (tmp_path / "a-file.txt").write_text("x")
    args = make_args({"tmp": tmp_path, "bert": bert_dir, "gpt2": gpt2_dir, "distil": distil_dir})
    out_dir = tmp_path / "nested" / "out"
    status, out, err = run_cli(capsys, args[0], out_dir, *args[1:])
    assert status == 1
    assert out == ""
    assert len(err.strip().splitlines()) == 1, err  # nothing but the error line
    [line] = error_lines(err)
    assert re.search(message, line), line
    assert not (tmp_path / "nested").exists()


def test_usage_errors_exit_2_with_one_line(capsys, tmp_path, bert_dir):
    for args in ([bert_dir, tmp_path / "o"], [bert_dir, tmp_path / "o", "--compression", "-2"],
                 [bert_dir, tmp_path / "o", "--preset", "kngpt2", "--compression", "2"]):
        with pytest.raises(SystemExit) as exit_info:
            main([str(a) for a in args])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and err.startswith("kron-compress: error:"), err
    assert not (tmp_path / "o").exists()


def test_a_failure_while_writing_leaves_nothing_behind(capsys, tmp_path, bert_dir, monkeypatch):
    import kron_transformers.model_card as model_card

    real = model_card.save_pretrained_with_card

    def save_then_fail(model, output_dir, **kwargs):
        real(model, output_dir, **kwargs)  # the staging folder is full at this point
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(model_card, "save_pretrained_with_card", save_then_fail)
    status, _, err = run_cli(capsys, bert_dir, tmp_path / "a" / "b" / "out", "--compression", "4")
    assert status == 1
    [line] = error_lines(err)
    assert "Cannot write OUTPUT_DIR" in line and "No space left on device" in line
    assert list(tmp_path.iterdir()) == []  # neither the output, nor the staging folder, nor the parents made for it


def test_push_to_hub_uploads_the_output_folder(capsys, tmp_path, bert_dir, monkeypatch):
    repos, commits = [], []

    def create_repo(api, repo_id, **kwargs):
        repos.append(repo_id)
        return RepoUrl(f"https://huggingface.co/{repo_id if '/' in repo_id else 'someone/' + repo_id}")

    def create_commit(api, repo_id, operations, *, commit_message, **kwargs):
        commits.append((repo_id, {op.path_in_repo: Path(op.path_or_fileobj).read_bytes() for op in operations}))
        return CommitInfo(commit_url=f"https://huggingface.co/{repo_id}/commit/1", commit_message=commit_message,
                          commit_description="", oid="1" * 40)

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "create_commit", create_commit)
    out_dir = tmp_path / "local-name"
    status, out, err = run_cli(capsys, bert_dir, out_dir, "--compression", "4", "--push_to_hub", "--hub_model_id",
                               "me/kronecker-tiny")
    assert status == 0, err
    assert repos == ["me/kronecker-tiny"]
    [(repo_id, files)] = commits
    assert repo_id == "me/kronecker-tiny"
    assert set(files) == {p.name for p in out_dir.iterdir()}  # exactly the saved folder
    assert BERT_CODE | {"config.json", "model.safetensors", "README.md"} <= set(files)
    for name, content in files.items():
        assert content == (out_dir / name).read_bytes()
    assert "auto_map" in json.loads(files["config.json"])
    card = ModelCard(files["README.md"].decode())
    assert card.data.model_name == "kronecker-tiny"
    assert 'from_pretrained("me/kronecker-tiny", trust_remote_code=True)' in card.text
    assert "Pushed to https://huggingface.co/me/kronecker-tiny/commit/1" in out


def test_module_and_console_script_entry_points(tmp_path, bert_dir):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    out_dir = tmp_path / "via-module"
    done = subprocess.run(
        [sys.executable, "-m", "kron_transformers", str(bert_dir), str(out_dir), "--compression", "4"],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "| **total (whole model)** |" in done.stdout
    assert {"config.json", "model.safetensors", "README.md"} <= {p.name for p in out_dir.iterdir()}

    script = VENV_BIN / "kron-compress"  # installed by `pip install -e .` (scripts/test.sh)
    assert script.exists(), f"the kron-compress console script is not installed beside {sys.executable}"
    failed = subprocess.run(
        [str(script), str(bert_dir), str(out_dir), "--compression", "4"],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert failed.returncode == 1
    assert failed.stdout == ""
    assert failed.stderr.strip().splitlines() == [
        f"kron-compress: error: OUTPUT_DIR '{out_dir}' exists and is not empty; pass --overwrite to replace it."
    ]


# ---- faults: one line, non-zero exit, nothing left behind ----------------------------------------------------------


def copy_checkpoint(source: Path, target: Path) -> Path:
    import shutil

    shutil.copytree(source, target)
    return target


def assert_one_error_line(status, out, err, pattern):
    assert status == 1 and out == "", (out, err)
    assert "Traceback" not in err, err
    [line] = error_lines(err)
    assert re.search(pattern, line), line


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_a_corrupt_weights_file_fails_with_one_line(capsys, tmp_path, bert_dir, damage):
    broken = copy_checkpoint(bert_dir, tmp_path / "broken")
    weights = broken / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"\x07" * 64)
    status, out, err = run_cli(capsys, broken, tmp_path / "out" / "x", "--compression", "4")
    assert_one_error_line(status, out, err, r"Cannot load the weights of MODEL '.*broken': .*(header|metadata)")
    assert not (tmp_path / "out").exists()


def test_non_finite_weights_fail_with_one_line(capsys, tmp_path, bert_dir):
    from safetensors.torch import load_file, save_file

    broken = copy_checkpoint(bert_dir, tmp_path / "nan")
    state = load_file(broken / "model.safetensors")
    state["bert.encoder.layer.0.attention.self.query.weight"][0, 0] = float("nan")
    save_file(state, broken / "model.safetensors", metadata={"format": "pt"})
    status, out, err = run_cli(capsys, broken, tmp_path / "out", "--compression", "4")
    assert status == 1 and "Traceback" not in err, err
    [line] = error_lines(err)
    assert "bert.encoder.layer.0.attention.self.query" in line or "Cannot compress MODEL" in line, line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nan"]


def test_an_unwritable_destination_fails_before_the_weights_are_read(capsys, tmp_path, bert_dir, monkeypatch):
    (tmp_path / "a-file.txt").write_text("x")
    status, out, err = run_cli(capsys, bert_dir, tmp_path / "a-file.txt" / "out", "--compression", "4")
    assert_one_error_line(status, out, err, r"OUTPUT_DIR '.*a-file.txt/out': '.*a-file.txt' is not a folder")

    import kron_transformers.cli as cli

    real_access = os.access
    monkeypatch.setattr(cli.os, "access", lambda path, mode, **kw: False if Path(path) == tmp_path else
                        real_access(path, mode, **kw))
    loaded = []
    monkeypatch.setattr(cli, "_load_dense", lambda *args: loaded.append(args))
    status, out, err = run_cli(capsys, bert_dir, tmp_path / "new" / "out", "--compression", "4")
    assert_one_error_line(status, out, err, rf"OUTPUT_DIR '.*new/out': cannot write to '{re.escape(str(tmp_path))}'")
    assert loaded == [] and not (tmp_path / "new").exists()


def test_an_os_error_creating_the_staging_folder_fails_with_one_line(capsys, tmp_path, bert_dir, monkeypatch):
    import tempfile

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied", kwargs.get("dir"))

    monkeypatch.setattr(tempfile, "mkdtemp", refuse)
    status, out, err = run_cli(capsys, bert_dir, tmp_path / "a" / "b" / "out", "--compression", "4")
    assert status == 1 and "Traceback" not in err
    [line] = error_lines(err)
    assert "Cannot write OUTPUT_DIR" in line and "Permission denied" in line
    assert list(tmp_path.iterdir()) == []  # the parents made for it are gone too


@pytest.mark.parametrize("where", ["same", "parent"])
def test_a_destination_that_holds_the_source_is_refused(capsys, tmp_path, bert_dir, where):
    source = copy_checkpoint(bert_dir, tmp_path / "models" / "bert")
    target = source if where == "same" else source.parent
    before = sorted(p.name for p in source.iterdir())
    status, out, err = run_cli(capsys, source, target, "--compression", "4", "--overwrite")
    assert_one_error_line(status, out, err, r"OUTPUT_DIR '.*' (is|holds) MODEL '.*bert'; --overwrite would delete")
    assert sorted(p.name for p in source.iterdir()) == before


def test_leftovers_of_killed_runs_are_removed_by_the_next_run(capsys, tmp_path, bert_dir):
    dead_pid = 2**22 + 12345  # above the default pid_max: no such process
    stale = [f".out.{dead_pid}.x1y2z3.partial", ".out.a1b2c3d4.partial", f".out.{dead_pid}.q9w8e7.old"]
    for name in stale:
        (tmp_path / name).mkdir()
        (tmp_path / name / "model.safetensors").write_bytes(b"half")
    live = tmp_path / f".out.{os.getpid()}.r5t6y7.partial"  # a run in progress (this process) is left alone
    live.mkdir()
    other = tmp_path / f".other.{dead_pid}.abcdef.partial"  # another target's: not this run's business
    other.mkdir()
    status, _, err = run_cli(capsys, bert_dir, tmp_path / "out", "--compression", "4")
    assert status == 0, err
    assert sorted(leftovers(tmp_path)) == sorted([live.name, other.name])
    assert err.count("removed the leftover") == 3


@pytest.mark.parametrize("signal_name", ["SIGTERM", "SIGINT", "SIGHUP"])
def test_a_signal_while_writing_leaves_nothing_behind(capsys, tmp_path, bert_dir, monkeypatch, signal_name):
    import signal

    import kron_transformers.model_card as model_card

    real = model_card.save_pretrained_with_card
    signum = getattr(signal, signal_name)

    def save_then_signal(model, output_dir, **kwargs):
        real(model, output_dir, **kwargs)  # the staging folder is full: a signal now used to leave it behind
        os.kill(os.getpid(), signum)

    monkeypatch.setattr(model_card, "save_pretrained_with_card", save_then_signal)
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    status, _, err = run_cli(capsys, bert_dir, tmp_path / "parent" / "out", "--compression", "4")
    assert status == 128 + signum
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == f"kron-compress: interrupted ({signal_name}); nothing was written"
    assert list(tmp_path.iterdir()) == []
    assert {s: signal.getsignal(s) for s in handlers} == handlers  # the caller's handlers are back


def test_the_console_script_is_the_startup_guard():
    from importlib.metadata import entry_points

    [script] = [ep for ep in entry_points(group="console_scripts") if ep.name == "kron-compress"]
    assert script.value == "_kron_compress:main"


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="watches /proc/<pid>/maps to time the signal")
@pytest.mark.parametrize("signal_name", ["SIGINT", "SIGTERM"])
def test_a_signal_during_startup_imports_gives_one_line(tmp_path, signal_name):
    import signal
    import time

    # The generated console script, verbatim in effect: import the entry module, call main().
    command = [sys.executable, "-c", "import sys; from _kron_compress import main; sys.exit(main())",
               str(tmp_path / "missing"), str(tmp_path / "out")]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    maps = Path(f"/proc/{process.pid}/maps")
    deadline = time.monotonic() + 60
    # torch's shared library is mapped early in `import kron_transformers` (which goes on to import Transformers,
    # datasets, ...): the signal lands in the middle of the start-up imports.
    while time.monotonic() < deadline and process.poll() is None and "libtorch" not in maps.read_text():
        time.sleep(0.005)
    process.send_signal(getattr(signal, signal_name))
    out, err = process.communicate(timeout=120)
    signum = getattr(signal, signal_name)
    assert process.returncode == 128 + signum, err
    assert "Traceback" not in err
    expected = f"kron-compress: interrupted ({signal_name}) while starting; nothing was written"
    assert err.strip().splitlines() == [expected]
    assert list(tmp_path.iterdir()) == []


def test_an_unreachable_ratio_is_one_warning_line(capsys, tmp_path, bert_dir):
    status, out, err = run_cli(capsys, bert_dir, tmp_path / "out", "--compression", "1e9")
    assert status == 0, err
    [warning] = [line for line in err.splitlines() if "warning" in line]
    assert re.fullmatch(r"kron-compress: warning: compression=1e\+09 was requested for each factored map, but the "
                        r"whole model is [0-9.]+x smaller .*", warning), warning
    assert "UserWarning" not in err and "warnings.warn" not in err
