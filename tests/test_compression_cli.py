"""``kron-compress`` on the generic families: a built-in one (Llama) and any other architecture
(``--target_modules``)."""

import json

import pytest
import torch
from transformers import (
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    ElectraConfig,
    ElectraForMaskedLM,
    LlamaConfig,
    LlamaForCausalLM,
)

import kron_transformers  # noqa: F401  (registers the Kronecker classes with the Auto classes)
from kron_transformers import KroneckerLinear, compress
from kron_transformers.cli import build_parser, main


def test_a_llama_checkpoint_compresses_with_the_built_in_table(tmp_path, capsys):
    torch.manual_seed(0)
    dense = LlamaForCausalLM(LlamaConfig(vocab_size=96, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True))
    dense.save_pretrained(tmp_path / "dense")
    assert main([str(tmp_path / "dense"), str(tmp_path / "out"), "--compression", "2"]) == 0
    assert "KroneckerLlamaForCausalLM" in capsys.readouterr().out
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    expected = compress(dense, 2.0, show_progress=False).eval()
    ids = torch.randint(0, 96, (2, 6))
    torch.testing.assert_close(loaded(ids).logits, expected(ids).logits, rtol=0, atol=0)


def test_target_modules_compress_an_architecture_without_a_table(tmp_path, capsys):
    torch.manual_seed(0)
    dense = ElectraForMaskedLM(ElectraConfig(vocab_size=96, embedding_size=32, hidden_size=32, num_hidden_layers=2,
                                             num_attention_heads=4, intermediate_size=64))
    dense.save_pretrained(tmp_path / "dense")
    # Without targets: one line naming the way out, nothing written.
    assert main([str(tmp_path / "dense"), str(tmp_path / "none"), "--compression", "2"]) == 1
    assert "pass target_modules" in capsys.readouterr().err and not (tmp_path / "none").exists()
    # A pattern that matches nothing: one line, before any weight is read.
    bad = [str(tmp_path / "dense"), str(tmp_path / "bad"), "--compression", "2", "--target_modules", "nope"]
    assert main(bad) == 1
    assert "target_modules ['nope'] factor no nn.Linear" in capsys.readouterr().err

    code = main([str(tmp_path / "dense"), str(tmp_path / "out"), "--compression", "2",
                 "--target_modules", "query", "key", "value", "intermediate.dense"])
    assert code == 0, capsys.readouterr().err
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["model_type"] == "kronecker_electra"
    assert config["auto_map"]["AutoModelForMaskedLM"] == "modeling_kronecker.KroneckerElectraForMaskedLM"
    assert len(config["kronecker_modules"]) == 8
    loaded = AutoModelForMaskedLM.from_pretrained(tmp_path / "out")
    assert isinstance(loaded.electra.encoder.layer[1].attention.self.value, KroneckerLinear)
    expected = compress(dense, 2.0, target_modules=["query", "key", "value", "intermediate.dense"],
                        show_progress=False).eval()
    ids = torch.randint(0, 96, (2, 6))
    torch.testing.assert_close(loaded(ids).logits, expected(ids).logits, rtol=0, atol=0)


@pytest.mark.parametrize("value", ["inf", "nan"])
def test_a_non_finite_ratio_is_named(tmp_path, capsys, value):
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(vocab_size=96, hidden_size=32, intermediate_size=48, num_hidden_layers=1,
                                 num_attention_heads=4, num_key_value_heads=2)).save_pretrained(tmp_path / "dense")
    try:
        code = main([str(tmp_path / "dense"), str(tmp_path / "out"), "--compression", value])
    except SystemExit as exit_:  # argparse's own refusal (exit status 2)
        code = exit_.code
    err = capsys.readouterr().err
    assert code in (1, 2) and value in err and "math domain" not in err


def test_help_names_the_architectures():
    text = build_parser().format_help()
    assert "Llama (SmolLM2)" in text and "--target_modules" in text
