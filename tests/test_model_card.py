import json
import statistics
from pathlib import Path

import pytest
import safetensors.torch
import torch
import yaml
from huggingface_hub import CommitInfo, EvalResult, HfApi, ModelCard, RepoUrl
from transformers import AutoModelForCausalLM, BertConfig, BertModel, GPT2Config, GPT2LMHeadModel

import kron_transformers
from kron_transformers import compress
from kron_transformers.model_card import (
    MODEL_CARD_TEMPLATE,
    DistillationStage,
    build_model_card,
    push_to_hub_with_card,
    write_model_card,
)


ROOT = Path(__file__).resolve().parents[1]
CODE_FILES = {"configuration_kronecker_gpt2.py", "modeling_kronecker_gpt2.py", "layers.py", "kronecker.py"}


def flat(text: str) -> str:
    """The text with every run of whitespace made one space (the card wraps long lines)."""
    return " ".join(text.split())


def tiny_gpt2(seed=0):
    torch.manual_seed(seed)
    config = GPT2Config(n_embd=32, n_layer=2, n_head=2, vocab_size=96, n_positions=32, bos_token_id=0, eos_token_id=0)
    return GPT2LMHeadModel(config).eval()


def tiny_bert(seed=0):
    torch.manual_seed(seed)
    config = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, vocab_size=100)
    return BertModel(config).eval()


def front_matter(text: str) -> dict:
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


def table_row(text: str, first_cell: str) -> list[str]:
    rows = [line for line in text.splitlines() if line.startswith(f"| {first_cell} |")]
    assert len(rows) == 1, f"expected one row starting with {first_cell!r}, got {rows}"
    return [cell.strip() for cell in rows[0].strip("|").split("|")]


def test_the_template_is_the_shipped_one():
    assert MODEL_CARD_TEMPLATE.parent.samefile(kron_transformers.__path__[0])
    assert not (ROOT / "MODEL_CARD.md").exists()  # one source: the package's copy


def test_card_is_filled_with_the_models_numbers(tmp_path):
    dense = tiny_gpt2()
    model = compress(dense, 2.0, show_progress=False)
    report = model.compression_report
    results = [
        EvalResult(
            task_type="text-generation",
            dataset_type="wikitext",
            dataset_name="WikiText-2",
            dataset_config="wikitext-2-raw-v1",
            dataset_split="test",
            metric_type="perplexity",
            metric_value=41.25,
        ),
        {  # dicts of EvalResult's fields work too
            "task_type": "text-classification",
            "dataset_type": "nyu-mll/glue",
            "dataset_name": "GLUE SST-2",
            "dataset_config": "sst2",
            "dataset_split": "validation",
            "metric_type": "accuracy",
            "metric_value": 0.8875,
        },
    ]
    stages = [
        DistillationStage("general", "news articles", "2 epochs, lr 1e-4", "hidden + attention"),
        {"name": "task-specific", "dataset": "SST-2", "training": "3 epochs", "losses": "logits", "notes": "teacher fine-tuned"},
    ]
    card = write_model_card(
        model,
        tmp_path,
        base_model="openai-community/gpt2",
        eval_results=results,
        distillation=stages,
        repo_id="someone/tiny-kngpt2",
        license="mit",
        preset="my-preset",
    )
    text = (tmp_path / "README.md").read_text(encoding="utf-8")
    assert text == str(card)

    # Front matter: parses as YAML and through huggingface_hub, with the right fields.
    meta = front_matter(text)
    assert meta["library_name"] == "transformers" and meta["license"] == "mit"
    assert meta["base_model"] == "openai-community/gpt2"
    assert {"kronecker", "compression", "knowledge-distillation", "kngpt2", "gpt2"} <= set(meta["tags"])
    assert meta["datasets"] == ["wikitext", "nyu-mll/glue"]
    assert meta["metrics"] == ["perplexity", "accuracy"]
    assert meta["pipeline_tag"] == "text-generation"
    loaded = ModelCard.load(tmp_path / "README.md")
    assert loaded.data.model_name == "tiny-kngpt2"
    assert [(r.dataset_type, r.metric_type, r.metric_value) for r in loaded.data.eval_results] == [
        ("wikitext", "perplexity", 41.25),
        ("nyu-mll/glue", "accuracy", 0.8875),
    ]

    # Whole-model parameter counts are the dense and the Kronecker models' own.
    before, after = dense.num_parameters(), model.num_parameters()
    assert before == report.dense_model_parameters and after == report.kronecker_model_parameters
    assert f"**{after:,}** parameters instead of {before:,} (**{before / after:.2f}x** smaller)" in flat(text)
    assert f"Parameters: {before:,} before, {after:,} after" in text
    assert f"({before / after:.2f}x for the whole model" in text
    factored = sum(m.dense_parameters for m in report.modules) / sum(m.kronecker_parameters for m in report.modules)
    assert f"{factored:.2f}x for the {sum(m.dense_parameters for m in report.modules):,} weights of the 9 factored" in flat(
        text
    )
    assert "preset `my-preset`, Kronecker rank 1" in text

    # One row per module type, with the shapes of the model's modules and the mean reconstruction error.
    c_fc = [m for m in report.modules if m.name.endswith("mlp.c_fc")]
    assert len(c_fc) == 2
    row = table_row(text, "`transformer.h.*.mlp.c_fc`")
    dense_rows, dense_cols = c_fc[0].dense_shape
    (m1, n1), (m2, n2) = c_fc[0].a_shape, c_fc[0].b_shape
    assert row == [
        "`transformer.h.*.mlp.c_fc`",
        "2",
        f"{dense_rows}x{dense_cols}",
        f"{m1}x{n1}",
        f"{m2}x{n2}",
        "1",
        f"{c_fc[0].dense_parameters:,}",
        f"{c_fc[0].kronecker_parameters:,}",
        f"{c_fc[0].compression:.1f}x",
        f"{statistics.fmean(m.relative_error for m in c_fc):.4f}",
    ]
    assert (m1 * m2, n1 * n2) == (4 * 32, 32)
    embedding = table_row(text, "`transformer.wte`")
    assert embedding[1:3] == ["1", "96x32"] and embedding[-1] == f"{report.modules[0].relative_error:.4f}"
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    assert len(rows) == 5  # wte and the 4 block maps

    # Distillation and evaluation tables, loading snippet, citations.
    assert table_row(text, "general") == ["general", "news articles", "2 epochs, lr 1e-4", "hidden + attention", ""]
    assert table_row(text, "task-specific") == ["task-specific", "SST-2", "3 epochs", "logits", "teacher fine-tuned"]
    assert table_row(text, "text-generation") == [
        "text-generation", "WikiText-2 (wikitext-2-raw-v1)", "test", "perplexity", "41.25"
    ]
    assert table_row(text, "text-classification")[-1] == "0.8875"
    assert 'AutoModelForCausalLM.from_pretrained("someone/tiny-kngpt2", trust_remote_code=True)' in text
    assert "KroneckerGPT2LMHeadModel.from_pretrained" in text
    assert "Van Loan & Pitsianis 1993" in text
    assert "@inproceedings{tahaei-etal-2022-kroneckerbert," in text and "@inproceedings{edalati-etal-2022-kronecker," in text
    assert "{{" not in text.split("```bibtex")[0] and "{%" not in text  # nothing left unrendered


def test_card_without_report_results_or_distillation(tmp_path):
    dense = tiny_bert()
    model = compress(dense, 4.0, show_progress=False)
    del model.compression_report  # e.g. a checkpoint reloaded from disk
    card = write_model_card(model, tmp_path, base_model="./checkpoints/my-bert")
    text = str(card)
    meta = front_matter(text)
    assert "base_model" not in meta  # a local path is not a Hub id
    assert "model-index" not in meta and "metrics" not in meta
    assert meta["license"] == "unknown" and meta["pipeline_tag"] == "feature-extraction"
    assert {"kroneckerbert", "bert"} <= set(meta["tags"])
    # Counts derived from the Kronecker model alone still equal the dense model's.
    assert f"**{model.num_parameters():,}** parameters instead of {dense.num_parameters():,}" in flat(text)
    assert "- Base model: `./checkpoints/my-bert`" in text
    assert table_row(text, "`encoder.layer.*.attention.self.query`")[-1] == "n/a"
    assert "not recorded for this checkpoint" in text
    assert "No distillation recorded" in text and "No evaluation results recorded." in text
    assert "custom shapes" in text
    # No tokenizer files in the folder: the snippet does not load one.
    assert "AutoTokenizer" not in text
    assert 'AutoModel.from_pretrained("my-bert-kronecker", trust_remote_code=True)' in text


def test_card_of_a_calibrated_compression_says_so_and_gives_the_output_errors(tmp_path):
    dense = tiny_bert()
    plain = str(write_model_card(compress(dense, 4.0, show_progress=False), tmp_path))
    assert "the nearest Kronecker product of each dense weight" in flat(plain)
    assert "output error" not in plain and "activation-aware" not in plain
    generator = torch.Generator().manual_seed(0)
    batches = [{"input_ids": torch.randint(0, 100, (4, 12), generator=generator)} for _ in range(2)]
    model = compress(dense, 4.0, calibration_data=batches, show_progress=False)
    text = str(write_model_card(model, tmp_path))
    assert "Initialisation: activation-aware" in flat(text)
    header = table_row(text, "module")
    assert header[-2:] == ["rel. reconstruction error", "rel. output error"]
    expected = statistics.fmean(m.output_error for m in model.compression_report.modules
                                if m.name.endswith("attention.self.query"))
    assert table_row(text, "`encoder.layer.*.attention.self.query`")[-1] == f"{expected:.4f}"
    # Embeddings keep the plain NKP: no output error.
    assert table_row(text, "`embeddings.word_embeddings`")[-1] == "n/a"


def test_card_rejects_a_report_of_another_model_and_dense_models(tmp_path):
    model = compress(tiny_bert(), 4.0, show_progress=False)
    other = compress(tiny_bert(), 2.0, show_progress=False)
    with pytest.raises(ValueError, match="does not describe this model"):
        build_model_card(model, report=other.compression_report)
    with pytest.raises(ValueError, match="BertModel has no Kronecker modules"):
        build_model_card(tiny_bert())
    with pytest.raises(OSError, match="is not a folder"):
        write_model_card(model, tmp_path / "missing")
    with pytest.raises(TypeError, match="eval_results must hold"):
        build_model_card(model, eval_results=[("glue", 0.9)])


class HubRecorder:
    """Stands in for the Hub at huggingface_hub's two calls a push makes: create_repo and create_commit."""

    def __init__(self, monkeypatch, namespace="someone"):
        self.repos, self.commits = [], []
        recorder = self

        def create_repo(api, repo_id, *, token=None, private=None, exist_ok=False, **kwargs):
            full_id = repo_id if "/" in repo_id else f"{namespace}/{repo_id}"
            recorder.repos.append({"repo_id": full_id, "private": private, "exist_ok": exist_ok})
            return RepoUrl(f"https://huggingface.co/{full_id}")

        def create_commit(api, repo_id, operations, *, commit_message, **kwargs):
            # The files live in a temporary folder that is gone after the push: read them now.
            files = {}
            for op in operations:
                source = op.path_or_fileobj
                files[op.path_in_repo] = Path(source).read_bytes() if isinstance(source, (str, Path)) else source
            recorder.commits.append({"repo_id": repo_id, "message": commit_message, "files": files, **kwargs})
            oid = "0" * 40
            return CommitInfo(
                commit_url=f"https://huggingface.co/{repo_id}/commit/{oid}",
                commit_message=commit_message,
                commit_description="",
                oid=oid,
            )

        monkeypatch.setattr(HfApi, "create_repo", create_repo)
        monkeypatch.setattr(HfApi, "create_commit", create_commit)


def test_push_to_hub_uploads_code_config_weights_and_card(monkeypatch, tmp_path):
    hub = HubRecorder(monkeypatch)
    model = compress(tiny_gpt2(), "kngpt2", show_progress=False)
    commit = push_to_hub_with_card(model, "tiny-kngpt2", base_model="openai-community/gpt2", private=True)

    assert hub.repos == [{"repo_id": "someone/tiny-kngpt2", "private": True, "exist_ok": True}]
    assert len(hub.commits) == 1 and hub.commits[0]["repo_id"] == "someone/tiny-kngpt2"
    assert commit.commit_url.startswith("https://huggingface.co/someone/tiny-kngpt2/commit/")
    files = hub.commits[0]["files"]
    assert CODE_FILES | {"config.json", "model.safetensors", "README.md"} <= set(files)

    config = json.loads(files["config.json"])
    assert config["model_type"] == "kronecker_gpt2"
    assert config["auto_map"]["AutoConfig"] == "configuration_kronecker_gpt2.KroneckerGPT2Config"
    assert config["auto_map"]["AutoModelForCausalLM"] == "modeling_kronecker_gpt2.KroneckerGPT2LMHeadModel"

    weights = safetensors.torch.load(files["model.safetensors"])
    state = model.state_dict()
    assert set(weights) == set(state)
    for key, value in weights.items():
        torch.testing.assert_close(value, state[key], rtol=0, atol=0)

    card = ModelCard(files["README.md"].decode())
    assert card.data.base_model == "openai-community/gpt2"
    assert f"**{model.num_parameters():,}** parameters" in card.text
    assert 'from_pretrained("someone/tiny-kngpt2", trust_remote_code=True)' in card.text

    # What was uploaded is a complete checkpoint: Transformers alone loads it and computes the same logits.
    download = tmp_path / "download"
    download.mkdir()
    for name, content in files.items():
        (download / name).write_bytes(content)
    reloaded = AutoModelForCausalLM.from_pretrained(download, trust_remote_code=True).eval()
    input_ids = torch.randint(0, 96, (2, 7))
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids).logits, model(input_ids).logits)
