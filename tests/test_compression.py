"""compress() on bad or extreme input (issue 13 items 3, 4, 5, 6, 15): one clear error before any work, safe norms,
warnings about ratios that cannot be reached, the generation config kept, no random initialisation."""

import warnings

import pytest
import torch
from transformers import (
    BertConfig,
    BertForMaskedLM,
    ElectraConfig,
    ElectraModel,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
)
from transformers.modeling_utils import PreTrainedModel

from kron_transformers import compress


def tiny_bert(hidden=32, heads=4, seed=0):
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=120, hidden_size=hidden, num_hidden_layers=2, num_attention_heads=heads,
                        intermediate_size=2 * hidden, max_position_embeddings=64)
    return BertForMaskedLM(config).eval()


def tiny_llama(seed=0):
    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(vocab_size=96, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)).eval()


# ---- item 3: NaN/inf


@pytest.mark.parametrize(
    "tensor, module",
    [
        ("bert.encoder.layer.1.attention.output.LayerNorm.weight", "bert.encoder.layer.1.attention.output.LayerNorm"),
        ("cls.predictions.bias", "cls.predictions"),
        ("bert.encoder.layer.0.attention.self.query.weight", "bert.encoder.layer.0.attention.self.query"),
    ],
    ids=["copied-layernorm", "copied-bias", "factored-weight"],
)
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_nan_or_inf_in_any_dense_tensor_fails_naming_module_and_tensor(tensor, module, value):
    dense = tiny_bert()
    with torch.no_grad():
        dense.get_parameter(tensor).view(-1)[3] = value
    name = tensor.rsplit(".", 1)[1]
    with pytest.raises(ValueError, match=rf"tensor `{name}` of module `{module}` \({tensor}\) holds 1 NaN/inf"):
        compress(dense, 4.0, show_progress=False)


# ---- item 4: norms that overflow float32


def test_huge_weights_give_a_finite_relative_error_equal_to_the_unscaled_one():
    dense = tiny_bert()
    reference = compress(dense, 4.0, show_progress=False).compression_report
    with torch.no_grad():
        dense.bert.encoder.layer[0].intermediate.dense.weight.mul_(1e30)
    report = compress(dense, 4.0, show_progress=False).compression_report
    row = next(m for m in report.modules if m.name == "bert.encoder.layer.0.intermediate.dense")
    expected = next(m for m in reference.modules if m.name == row.name).relative_error
    # The nearest Kronecker product is scale-equivariant, so the relative error is the unscaled weight's.
    assert 0 < row.relative_error < 1 and row.relative_error == pytest.approx(expected, rel=1e-3)
    assert "nan" not in report.to_markdown()


@pytest.mark.parametrize("rank", [1, 2])
def test_the_blockwise_relative_error_equals_the_explicit_one(rank):
    from kron_transformers.compression import _relative_error

    generator = torch.Generator().manual_seed(0)
    a = torch.randn(rank, 130, 32, generator=generator)  # 130 x 32 blocks of 32 x 64: three blocks of rows
    b = torch.randn(rank, 32, 64, generator=generator)
    explicit = sum(torch.kron(a[r].double(), b[r].double()) for r in range(rank))
    weight = (explicit + 0.3 * torch.randn(explicit.shape, generator=generator, dtype=torch.float64)).float()
    expected = (torch.linalg.matrix_norm(weight.double() - explicit) / torch.linalg.matrix_norm(weight.double()))
    assert _relative_error(weight, a, b) == pytest.approx(expected.item(), rel=1e-12)
    assert _relative_error(weight.T, a.transpose(1, 2), b.transpose(1, 2)) == pytest.approx(expected.item(), rel=1e-12)
    assert _relative_error(explicit.float(), a, b) < 1e-6  # exact up to the float32 rounding of W
    assert _relative_error(torch.zeros_like(weight), torch.zeros_like(a), b) == 0.0


# ---- item 5: ratios that cannot be reached


@pytest.mark.parametrize("ratio", [0.5, 1.0, 0, -2.0, float("inf"), float("nan"), True])
def test_ratios_at_or_below_one_and_non_finite_ones_are_refused_naming_the_value(ratio):
    with pytest.raises(ValueError, match=rf"compression must be a finite parameter compression ratio above 1.*got "
                                         rf"{ratio!r}"):
        compress(tiny_bert(), ratio, show_progress=False)


def test_an_unreachable_ratio_warns_with_the_achieved_one():
    with pytest.warns(UserWarning, match=r"compression=1e\+09 was requested for each factored map, but the whole "
                                         r"model is \d+\.\d\dx smaller"):
        model = compress(tiny_llama(), 1e9, show_progress=False)
    assert model.compression_report.compression < 1e3


def test_a_reachable_ratio_does_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = compress(tiny_llama(), 2.0, show_progress=False)
    assert 1.5 < model.compression_report.compression < 2.5


def test_maps_that_cannot_be_factored_are_named():
    # A prime hidden size (37): the 37x37 attention maps have only trivial Kronecker shapes.
    with pytest.warns(UserWarning, match=r"no compressing Kronecker shape \(a 1x1 factor\): "
                                         r"bert.encoder.layer.0.attention.self.query"):
        compress(tiny_bert(hidden=37, heads=1), 4.0, show_progress=False)
    # The same through target_modules on an architecture without a built-in table.
    torch.manual_seed(0)
    electra = ElectraModel(ElectraConfig(vocab_size=96, embedding_size=37, hidden_size=37, num_hidden_layers=1,
                                         num_attention_heads=1, intermediate_size=64))
    with pytest.warns(UserWarning, match=r"Maps kept dense: encoder.layer.0.attention.self.query \(37x37\): no "
                                         r"Kronecker shape of rank 1 compresses it"):
        model = compress(electra, 4.0, show_progress=False, target_modules=["query", "intermediate.dense"])
    assert list(model.config.kronecker_modules) == ["encoder.layer.0.intermediate.dense"]


# ---- item 6: the generation config


def test_compress_keeps_the_dense_generation_config():
    torch.manual_seed(0)
    dense = GPT2LMHeadModel(GPT2Config(vocab_size=96, n_embd=32, n_layer=2, n_head=4, n_positions=32))
    dense.generation_config.eos_token_id = [3, 9]
    dense.generation_config.top_k = 7
    kronecker = compress(dense, 2.0, show_progress=False)
    assert kronecker.generation_config.eos_token_id == [3, 9] and kronecker.generation_config.top_k == 7
    assert kronecker.generation_config is not dense.generation_config


# ---- item 15: no random initialisation of a model whose every tensor is overwritten


def test_compress_never_runs_the_random_initialisation(monkeypatch):
    dense = tiny_bert()
    calls = []
    original = PreTrainedModel._initialize_weights

    def counting(self, module, is_custom_code=False):
        calls.append(type(module).__name__)
        return original(self, module, is_custom_code)

    monkeypatch.setattr(PreTrainedModel, "_initialize_weights", counting)
    kronecker = compress(dense, 4.0, show_progress=False)
    assert calls == []
    inputs = torch.randint(0, 120, (2, 9))
    assert torch.isfinite(kronecker(inputs).logits).all()
    # Every tensor came from the dense model: the copied ones are equal, bit for bit.
    torch.testing.assert_close(kronecker.cls.predictions.transform.dense.weight,
                               dense.cls.predictions.transform.dense.weight, rtol=0, atol=0)
