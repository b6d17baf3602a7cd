"""The real Llama-family teacher: SmolLM2-135M-Instruct (4-bit GGUF from PyPI, dequantised) compressed 2x, saved and
reloaded with AutoModelForCausalLM, with the package and in a fresh process without it."""

import os
import subprocess
import sys

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaForCausalLM
from transformers.trainer_utils import validate_quantization_for_training

from kron_transformers import KroneckerEmbedding, KroneckerLinear, KroneckerTiedLogits, assets, compress


@pytest.fixture(scope="module")
def smollm2():
    pytest.importorskip("gguf", reason="the llm extra (gguf) reads SmolLM2's GGUF file")
    try:
        model, tokenizer = assets.load_smollm2()
    except OSError as error:  # only when the package index cannot be reached
        pytest.skip(f"offline assets unavailable: {error}")
    return model.eval(), tokenizer


REMOTE_SCRIPT = """
import sys
sys.modules["kron_transformers"] = None  # a user who never installed the package
import torch
from transformers import AutoModelForCausalLM
folder, out = sys.argv[1], sys.argv[2]
model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True).eval()
assert type(model).__module__.startswith("transformers_modules."), type(model).__module__
ids = torch.load(folder + "/ids.pt")
with torch.no_grad():
    torch.save({"class": type(model).__name__, "logits": model(ids).logits[:, -3:]}, out)
"""


@pytest.mark.real_assets
def test_smollm2_compressed_2x_round_trips_and_generates(smollm2, tmp_path):
    dense, tokenizer = smollm2
    assert isinstance(dense, LlamaForCausalLM) and dense.num_parameters() == 134_515_008
    assert dense.config.num_key_value_heads == 3 and dense.config.tie_word_embeddings
    # The GGUF weights are dequantised: a plain float model that Trainer accepts and that saves without a GGUF config.
    assert not dense.is_quantized and "quantization_config" not in dense.config.to_dict()
    assert {p.dtype for p in dense.parameters()} == {torch.float32}
    validate_quantization_for_training(dense)
    kronecker = compress(dense, 2.0, show_progress=False).eval()
    report = kronecker.compression_report
    print(f"\nSmolLM2-135M compressed 2x: {report.dense_model_parameters:,} -> {report.kronecker_model_parameters:,} "
          f"parameters ({report.compression:.2f}x); relative errors "
          f"{min(m.relative_error for m in report.modules):.3f}-{max(m.relative_error for m in report.modules):.3f}")
    assert 1.8 < report.compression < 2.2
    assert isinstance(kronecker.model.layers[0].self_attn.k_proj, KroneckerLinear)  # 192 x 576 (3 KV heads of 64)
    assert kronecker.model.layers[0].self_attn.k_proj.out_features == 192
    assert isinstance(kronecker.model.embed_tokens, KroneckerEmbedding)
    assert isinstance(kronecker.lm_head, KroneckerTiedLogits)  # tied: logits from the embedding's factors
    assert kronecker.generation_config.eos_token_id == dense.generation_config.eos_token_id

    kronecker.save_pretrained(tmp_path / "smollm2-2x")
    tokenizer.save_pretrained(tmp_path / "smollm2-2x")
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "smollm2-2x").eval()
    assert type(loaded) is type(kronecker)
    ids = tokenizer("The capital of France is", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        expected = kronecker(ids).logits
        torch.testing.assert_close(loaded(ids).logits, expected, rtol=0, atol=0)
    generated = loaded.generate(ids, max_new_tokens=8, do_sample=False)
    assert generated.shape == (1, ids.shape[1] + 8)
    print("greedy continuation (2x, no distillation):", repr(tokenizer.decode(generated[0, ids.shape[1]:])))

    torch.save(ids, tmp_path / "smollm2-2x" / "ids.pt")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_MODULES_CACHE=str(tmp_path / "modules"), HF_HUB_OFFLINE="1")
    result = subprocess.run(
        [sys.executable, "-c", REMOTE_SCRIPT, str(tmp_path / "smollm2-2x"), str(tmp_path / "out.pt")],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    remote = torch.load(tmp_path / "out.pt")
    assert remote["class"] == "KroneckerLlamaForCausalLM"
    torch.testing.assert_close(remote["logits"], expected[:, -3:], rtol=0, atol=0)
