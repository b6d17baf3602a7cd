import inspect
import json
import math
import os
import subprocess
import sys
import textwrap
import warnings

import pytest
import torch
from safetensors.torch import load_file
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    BertConfig,
    GPT2Config,
    GPT2ForSequenceClassification,
    GPT2ForTokenClassification,
    GPT2LMHeadModel,
    GPT2Model,
)
from transformers.pytorch_utils import Conv1D

from kron_transformers import (
    KroneckerEmbedding,
    KroneckerGPT2Config,
    KroneckerGPT2ForSequenceClassification,
    KroneckerGPT2ForTokenClassification,
    KroneckerGPT2LMHeadModel,
    KroneckerGPT2Model,
    KroneckerLinear,
    KroneckerTiedLogits,
    compress,
)
from kron_transformers.compression import KRONECKER_MODEL_CLASSES
from kron_transformers.kronecker import divisors, kronecker_compression


DENSE_TO_KRONECKER = {
    GPT2Model: KroneckerGPT2Model,
    GPT2LMHeadModel: KroneckerGPT2LMHeadModel,
    GPT2ForSequenceClassification: KroneckerGPT2ForSequenceClassification,
    GPT2ForTokenClassification: KroneckerGPT2ForTokenClassification,
}
KRONECKER_FIELDS = ("c_attn_a_shape", "attn_c_proj_a_shape", "c_fc_a_shape", "mlp_c_proj_a_shape",
                    "embedding_factor", "kronecker_rank", "kronecker_layers", "auto_map")
MAP_PATHS = {"c_attn_a_shape": "attn.c_attn", "attn_c_proj_a_shape": "attn.c_proj",
             "c_fc_a_shape": "mlp.c_fc", "mlp_c_proj_a_shape": "mlp.c_proj"}


def tiny_config(**kwargs) -> GPT2Config:
    defaults = dict(vocab_size=96, n_embd=32, n_layer=2, n_head=4, n_positions=32, bos_token_id=0, eos_token_id=0,
                    pad_token_id=1, num_labels=3, attn_implementation="eager")
    return GPT2Config(**{**defaults, **kwargs})


def kronecker_config(dense_config: GPT2Config, **fields) -> KroneckerGPT2Config:
    """``dense_config`` with the given Kronecker fields (maps not named stay dense), through ``from_dense_config``."""
    sizes = {name: getattr(dense_config, name)
             for name in ("vocab_size", "n_embd", "n_layer", "n_head", "n_positions", "bos_token_id", "eos_token_id")}
    return KroneckerGPT2Config.from_dense_config(dense_config, KroneckerGPT2Config(**sizes, **fields))


def exact_fields() -> dict:
    """Every ``a`` has 4 entries and the embedding factor is 4, so rank 4 is full rank: the NKP is exact."""
    return dict(c_attn_a_shape=(2, 2), attn_c_proj_a_shape=(4, 1), c_fc_a_shape=(1, 4), mlp_c_proj_a_shape=(2, 2),
                embedding_factor=4, kronecker_rank=4)


def dense_model(cls=GPT2LMHeadModel, seed=0, **config_kwargs):
    torch.manual_seed(seed)
    model = cls(tiny_config(**config_kwargs)).double().eval()
    with torch.no_grad():  # GPT-2's init leaves biases and LayerNorms trivial; make every tensor count
        for name, param in model.named_parameters():
            if name.endswith("bias") or ".ln_" in name:
                param.add_(0.1 * torch.randn_like(param))
    return model


def kron_sum(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return sum(torch.kron(a[r], b[r]) for r in range(a.shape[0]))


def assert_outputs_close(actual, expected, atol=1e-10):
    for key in ("logits", "last_hidden_state", "loss"):
        if getattr(expected, key, None) is not None:
            torch.testing.assert_close(getattr(actual, key), getattr(expected, key), rtol=0, atol=atol)
    assert len(actual.hidden_states) == len(expected.hidden_states)
    for a, e in zip(actual.hidden_states, expected.hidden_states):
        torch.testing.assert_close(a, e, rtol=0, atol=atol)
    assert len(actual.attentions) == len(expected.attentions)
    for a, e in zip(actual.attentions, expected.attentions):
        torch.testing.assert_close(a, e, rtol=0, atol=atol)


def test_classes_are_in_the_compress_table_and_subclass_the_dense_ones():
    for dense, kronecker in DENSE_TO_KRONECKER.items():
        assert kronecker.__mro__[1] is dense and kronecker in KRONECKER_MODEL_CLASSES
        assert kronecker.config_class is KroneckerGPT2Config


# ---------------------------------------------------------------------------------------------------- configuration


def test_config_validates_at_construction():
    base = dict(n_embd=32, n_layer=2, n_head=4, vocab_size=96, bos_token_id=0, eos_token_id=0)
    cases = [
        (dict(c_attn_a_shape=(5, 2)), r"c_attn_a_shape=\(5, 2\) does not factor the weight of shape \(96, 32\): "
                                      r"out_features=96 is not divisible by 5\. Divisors of 96 that would work"),
        (dict(mlp_c_proj_a_shape=(2, 3)), r"mlp_c_proj_a_shape.*in_features=128 is not divisible by 3"),
        (dict(c_fc_a_shape=(2,)), r"c_fc_a_shape must be a pair of positive integers"),
        (dict(embedding_factor=5), r"embedding_factor=5 does not divide n_embd=32.*\[1, 2, 4, 8, 16, 32\]"),
        (dict(embedding_factor=0), r"embedding_factor must be a positive integer"),
        (dict(kronecker_rank=0), r"kronecker_rank must be a positive integer"),
        (dict(c_attn_a_shape=(2, 2), kronecker_rank=5), r"kronecker_rank=5 exceeds the largest useful rank 4"),
        (dict(embedding_factor=2, kronecker_rank=3), r"kronecker_rank=3 exceeds embedding_factor=2"),
        (dict(embedding_factor=2, embedding_rank=3), r"embedding_rank=3 exceeds embedding_factor=2"),
        (dict(embedding_factor=2, embedding_rank=0), r"embedding_rank must be a positive integer or None"),
        (dict(kronecker_layers=[0, 2]), r"indices in \[0, 2\).*invalid entries \[2\]"),
        (dict(kronecker_layers=[1, 1]), r"with duplicates"),
    ]
    for fields, message in cases:
        with pytest.raises(ValueError, match=message):
            KroneckerGPT2Config(**base, **fields)


def test_config_json_round_trip_and_auto_config(tmp_path):
    config = KroneckerGPT2Config(n_embd=32, n_layer=2, n_head=4, vocab_size=96, bos_token_id=0, eos_token_id=0,
                                 c_attn_a_shape=[2, 4],
                                 mlp_c_proj_a_shape=(4, 2), embedding_factor=4, kronecker_rank=2,
                                 kronecker_layers=(1,))
    assert config.c_attn_a_shape == (2, 4) and config.kronecker_layers == [1]
    config.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model_type"] == "kronecker_gpt2" and saved["c_attn_a_shape"] == [2, 4]
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert type(loaded) is KroneckerGPT2Config
    assert {**loaded.to_dict(), "_name_or_path": ""} == config.to_dict()
    assert loaded.kronecker_linear_shapes() == {"h.1.attn.c_attn": (2, 4), "h.1.mlp.c_proj": (4, 2)}
    assert loaded.kronecker_embedding_factors() == {"wte": 4}


def test_kngpt2_preset_factors_embedding_and_odd_layers_2x():
    dense = GPT2Config(n_layer=6, n_embd=96, n_head=4, vocab_size=500, bos_token_id=0, eos_token_id=0)
    config = KroneckerGPT2Config.from_dense_config(dense, "kngpt2")
    assert config.kronecker_layers == [1, 3, 5] and config.kronecker_rank == 1
    for field, (out_features, in_features) in config.dense_shapes().items():
        assert kronecker_compression(out_features, in_features, getattr(config, field)) == pytest.approx(2, rel=1e-3)
    assert 500 * 96 / (500 * 96 // config.embedding_factor + config.embedding_factor) == pytest.approx(2, rel=1e-3)
    # Every dense field is kept.
    assert (config.n_layer, config.n_embd, config.n_head, config.vocab_size) == (6, 96, 4, 500)


@pytest.mark.parametrize("ratio", [2.0, 8.0, 40.0])
@pytest.mark.parametrize("rank", [1, 2])
def test_ratio_picks_the_nearest_shapes_for_any_size(ratio, rank):
    dense = GPT2Config(n_embd=48, n_inner=96, n_layer=3, n_head=4, vocab_size=210, bos_token_id=0, eos_token_id=0)
    config = KroneckerGPT2Config.from_dense_config(dense, ratio, rank=rank)
    assert config.kronecker_rank == rank and config.kronecker_layers is None

    def distance(out_features, in_features, shape):
        return abs(math.log(kronecker_compression(out_features, in_features, shape, rank) / ratio))

    for field, (out_features, in_features) in config.dense_shapes().items():
        valid = [(m1, n1) for m1 in divisors(out_features) for n1 in divisors(in_features)
                 if rank <= min(m1 * n1, out_features // m1 * (in_features // n1))]
        best = min(distance(out_features, in_features, shape) for shape in valid)
        assert distance(out_features, in_features, getattr(config, field)) == pytest.approx(best)
    factor_distance = {f: abs(math.log(210 * 48 / (rank * (210 * 48 // f + f)) / ratio))
                       for f in divisors(48) if f >= rank}
    assert factor_distance[config.embedding_factor] == pytest.approx(min(factor_distance.values()))


def test_from_dense_config_errors():
    dense = tiny_config()
    with pytest.raises(ValueError, match=r"Unknown preset 'kngpt3'; the GPT-2 presets are \['kngpt2'\]"):
        KroneckerGPT2Config.from_dense_config(dense, "kngpt3")
    with pytest.raises(ValueError, match="compression must be a preset name"):
        KroneckerGPT2Config.from_dense_config(dense, -2.0)
    with pytest.raises(ValueError, match="must be the GPT2Config of a dense model; got a BertConfig"):
        KroneckerGPT2Config.from_dense_config(BertConfig(), 2.0)
    with pytest.raises(ValueError, match=r"option\(s\) \['kronecker_rnk'\] \(did you mean 'kronecker_rank'"):
        KroneckerGPT2Config.from_dense_config(dense, 2.0, kronecker_rnk=2)
    other = KroneckerGPT2Config(n_embd=64, n_layer=2, n_head=4, vocab_size=96, n_positions=32, bos_token_id=0,
                                eos_token_id=0)
    with pytest.raises(ValueError, match="n_embd: 32 in the dense config but 64 in the Kronecker config"):
        KroneckerGPT2Config.from_dense_config(dense, other)
    with pytest.raises(ValueError, match="This is a `gpt2` config, not a `kronecker_gpt2` one"):
        KroneckerGPT2Config(model_type="gpt2")


def test_kngpt2_parameter_count_on_gpt2_small():
    """KnGPT2 on GPT-2 small has about 83M parameters (Edalati et al. 2022), as many as DistilGPT2's 82M."""
    small = GPT2Config()
    kngpt2 = KroneckerGPT2Config.from_dense_config(small, "kngpt2")
    with torch.device("meta"):  # no memory, no initialisation: only the parameter shapes
        counted = {
            "GPT-2 small": GPT2LMHeadModel(small).num_parameters(),
            "KnGPT2": KroneckerGPT2LMHeadModel(kngpt2).num_parameters(),
            "DistilGPT2 (reference)": GPT2LMHeadModel(GPT2Config(n_layer=6)).num_parameters(),
        }

    # The same counts from the formulas (biases and LayerNorms included, the tied LM head counted once).
    V, P, d, L, inner = small.vocab_size, small.n_positions, small.n_embd, small.n_layer, 4 * small.n_embd
    maps = {"c_attn_a_shape": (3 * d, d), "attn_c_proj_a_shape": (d, d), "c_fc_a_shape": (inner, d),
            "mlp_c_proj_a_shape": (d, inner)}
    block = sum(o * i + o for o, i in maps.values()) + 4 * d

    def dense_count(layers):
        return V * d + P * d + layers * block + 2 * d

    saved_per_layer = 0
    for field, (o, i) in maps.items():
        (m1, n1) = getattr(kngpt2, field)
        saved_per_layer += o * i - (m1 * n1 + (o // m1) * (i // n1))
    f = kngpt2.embedding_factor
    kngpt2_count = dense_count(L) - len(kngpt2.kronecker_layers) * saved_per_layer - (V * d - (V * d // f + f))
    assert counted == {"GPT-2 small": dense_count(L), "KnGPT2": kngpt2_count,
                       "DistilGPT2 (reference)": dense_count(6)}

    print("\n| model | parameters |\n|---|---|")
    for name, count in counted.items():
        print(f"| {name} | {count / 1e6:.1f}M ({count:,}) |")
    assert counted["KnGPT2"] == pytest.approx(83e6, rel=0.03)
    assert counted["KnGPT2"] < counted["GPT-2 small"] * 0.7


# ---------------------------------------------------------------------------------------------------- exactness


@pytest.mark.parametrize("dense_class", list(DENSE_TO_KRONECKER))
def test_compressed_model_with_exact_shapes_equals_the_dense_model(dense_class):
    dense = dense_model(dense_class)
    kron = compress(dense, kronecker_config(dense.config, **exact_fields()), show_progress=False)
    assert type(kron) is DENSE_TO_KRONECKER[dense_class]
    assert isinstance(kron.get_input_embeddings(), KroneckerEmbedding)
    assert all(isinstance(kron.base_model.h[i].get_submodule(p), KroneckerLinear)
               for i in range(2) for p in MAP_PATHS.values())

    torch.manual_seed(1)
    ids = torch.randint(2, 96, (2, 9))
    mask = torch.ones_like(ids)
    mask[1, :3] = 0  # left padding in the second row
    kwargs = dict(input_ids=ids, attention_mask=mask, output_hidden_states=True, output_attentions=True)
    if dense_class is GPT2LMHeadModel:
        kwargs["labels"] = ids
    elif dense_class is GPT2ForSequenceClassification:
        kwargs["labels"] = torch.tensor([0, 2])
    elif dense_class is GPT2ForTokenClassification:
        kwargs["labels"] = torch.randint(0, 3, (2, 9))
    assert_outputs_close(kron(**kwargs), dense(**kwargs))


def test_an_svd_embedding_of_full_rank_reproduces_the_dense_model_and_its_tied_head():
    # wte as 32 products of a 96x1 column and a 1x32 row (embedding_factor = n_embd): its full-rank SVD, exact; the
    # maps keep rank 4 (kronecker_rank), and lm_head computes its logits from the embedding's factors.
    dense = dense_model()
    config = kronecker_config(dense.config, **{**exact_fields(), "embedding_factor": 32, "embedding_rank": 32})
    kron = compress(dense, config, show_progress=False)
    wte = kron.get_input_embeddings()
    assert (wte.factor, wte.rank, kron.base_model.h[0].attn.c_attn.rank) == (32, 32, 4)
    ids = torch.randint(2, 96, (2, 9), generator=torch.Generator().manual_seed(1))
    kwargs = dict(input_ids=ids, labels=ids, output_hidden_states=True, output_attentions=True)
    assert_outputs_close(kron(**kwargs), dense(**kwargs))


def test_kv_cache_logits_equal_the_dense_full_forward():
    dense = dense_model()
    kron = compress(dense, kronecker_config(dense.config, **exact_fields()), show_progress=False)
    ids = torch.randint(2, 96, (2, 10))
    full = dense(ids).logits
    # Transformers 5.24 renamed the cache argument and output `cache` (`past_key_values` is a deprecated alias, removed
    # in 5.40); the lower bound of the supported range (5.19) only knows `past_key_values`.
    name = "cache" if "cache" in inspect.signature(type(kron).forward).parameters else "past_key_values"
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # the deprecated alias warns: it fails here, not next release
        prefix = kron(ids[:, :6], use_cache=True)
        step = kron(ids[:, 6:8], **{name: getattr(prefix, name)}, use_cache=True)
        last = kron(ids[:, 8:], **{name: getattr(step, name)}, use_cache=True)
    cached = torch.cat([prefix.logits, step.logits, last.logits], dim=1)
    torch.testing.assert_close(cached, full, rtol=0, atol=1e-10)
    assert getattr(last, name).get_seq_length() == 10


def dense_from_kronecker(kron: KroneckerGPT2LMHeadModel) -> GPT2LMHeadModel:
    """The dense GPT-2 whose weights are the explicit ``sum_r torch.kron(a[r], b[r])`` of ``kron``'s factors."""
    dense_fields = {k: v for k, v in kron.config.to_dict().items() if k not in KRONECKER_FIELDS + ("model_type",)}
    dense = GPT2LMHeadModel(GPT2Config(**dense_fields, attn_implementation="eager")).to(kron.dtype).eval()
    state, factored = {}, set()
    for name, module in kron.named_modules():
        if isinstance(module, KroneckerLinear):
            state[f"{name}.weight"] = kron_sum(module.a, module.b).T  # Conv1D stores (in, out)
            state[f"{name}.bias"] = module.bias
            factored.add(name)
        elif isinstance(module, KroneckerEmbedding):
            state[f"{name}.weight"] = kron_sum(module.a, module.b)
            factored.add(name)
    state.update({k: v for k, v in kron.state_dict().items() if k.rsplit(".", 1)[0] not in factored})
    state["lm_head.weight"] = state["transformer.wte.weight"]
    dense.load_state_dict({k: v.detach() for k, v in state.items()}, strict=True)
    assert dense.lm_head.weight is dense.transformer.wte.weight
    return dense


def test_random_kronecker_model_equals_gpt2_with_the_explicit_kronecker_weights():
    config = kronecker_config(tiny_config(n_layer=3), c_attn_a_shape=(4, 2), attn_c_proj_a_shape=(8, 4),
                              c_fc_a_shape=(2, 8), mlp_c_proj_a_shape=(16, 2), embedding_factor=8, kronecker_rank=2,
                              kronecker_layers=[0, 2])
    torch.manual_seed(0)
    kron = KroneckerGPT2LMHeadModel(config).double().eval()
    assert isinstance(kron.transformer.h[1].attn.c_attn, Conv1D)  # layer 1 stays dense
    dense = dense_from_kronecker(kron)
    ids = torch.randint(0, 96, (3, 11))
    kwargs = dict(output_hidden_states=True, output_attentions=True, labels=ids)
    assert_outputs_close(kron(ids, **kwargs), dense(ids, **kwargs))


def test_lm_head_gradient_reaches_the_tied_embedding_factors():
    config = kronecker_config(tiny_config(), c_fc_a_shape=(4, 2), embedding_factor=4, kronecker_rank=2)
    torch.manual_seed(0)
    kron = KroneckerGPT2LMHeadModel(config).double().eval()
    dense = dense_from_kronecker(kron)
    ids = torch.randint(0, 96, (2, 8))
    kron(ids, labels=ids).loss.backward()
    dense(ids, labels=ids).loss.backward()
    assert all(p.grad is not None for p in kron.parameters())
    # W = sum_r a[r] ⊗ b[r]  =>  dL/da[r][i, j] = sum_kl dL/dW[i*m2+k, j*n2+l] b[r][k, l], and likewise for b.
    for name, grad_w in (("transformer.wte", dense.transformer.wte.weight.grad),  # embedding + tied head
                         ("transformer.h.1.mlp.c_fc", dense.transformer.h[1].mlp.c_fc.weight.grad.T)):
        module = kron.get_submodule(name)
        (_, m1, n1), (_, m2, n2) = module.a.shape, module.b.shape
        blocks = grad_w.reshape(m1, m2, n1, n2)
        torch.testing.assert_close(module.a.grad, torch.einsum("ikjl,rkl->rij", blocks, module.b.detach()))
        torch.testing.assert_close(module.b.grad, torch.einsum("ikjl,rij->rkl", blocks, module.a.detach()))


def test_greedy_generation_with_and_without_cache_equals_the_dense_model():
    dense = dense_model()
    kron = compress(dense, kronecker_config(dense.config, **exact_fields()), show_progress=False)
    prompt = torch.randint(2, 96, (2, 4))
    settings = dict(max_new_tokens=12, do_sample=False, pad_token_id=1, attention_mask=torch.ones_like(prompt))
    with_cache = kron.generate(prompt, use_cache=True, **settings)
    without_cache = kron.generate(prompt, use_cache=False, **settings)
    expected = dense.generate(prompt, use_cache=True, **settings)
    assert with_cache.shape == (2, 16)
    assert torch.equal(with_cache, without_cache) and torch.equal(with_cache, expected)

    # A truly compressed model (rank 1, KnGPT2's 2x) also decodes the same tokens with and without the cache.
    kngpt2 = compress(dense, "kngpt2", show_progress=False)
    assert torch.equal(kngpt2.generate(prompt, use_cache=True, **settings),
                       kngpt2.generate(prompt, use_cache=False, **settings))


# ---------------------------------------------------------------------------------------------------- compress


def test_compress_kngpt2_copies_dense_layers_and_reports_nkp_errors():
    dense = dense_model(n_layer=4)
    kron = compress(dense, "kngpt2", show_progress=False)
    report = kron.compression_report
    assert [row.name for row in report.modules] == ["transformer.wte"] + [
        f"transformer.h.{i}.{p}" for i in (1, 3) for p in MAP_PATHS.values()]
    for i in (0, 2):  # even layers stay dense, copied exactly
        for p in MAP_PATHS.values():
            kept, original = kron.transformer.h[i].get_submodule(p), dense.transformer.h[i].get_submodule(p)
            assert isinstance(kept, Conv1D) and torch.equal(kept.weight, original.weight)
    assert torch.equal(kron.transformer.wpe.weight, dense.transformer.wpe.weight)
    assert torch.equal(kron.transformer.ln_f.bias, dense.transformer.ln_f.bias)
    assert isinstance(kron.lm_head, KroneckerTiedLogits) and kron.lm_head.embedding is kron.transformer.wte
    assert report.dense_model_parameters == dense.num_parameters()
    assert report.kronecker_model_parameters == kron.num_parameters()

    for row in report.modules:
        dense_module = dense.get_submodule(row.name)
        weight = dense_module.weight.T if isinstance(dense_module, Conv1D) else dense_module.weight
        (m1, n1), (m2, n2) = row.a_shape, row.b_shape
        # Van Loan & Pitsianis: the error of the best rank-r sum is the tail of R(W)'s singular values.
        rearranged = weight.detach().reshape(m1, m2, n1, n2).permute(0, 2, 1, 3).reshape(m1 * n1, m2 * n2)
        singular = torch.linalg.svdvals(rearranged)
        bound = (singular[row.rank:].square().sum().sqrt() / weight.norm()).item()
        assert row.relative_error == pytest.approx(bound, rel=1e-4, abs=1e-7)
        factored = kron.get_submodule(row.name)
        achieved = ((weight - kron_sum(factored.a, factored.b)).norm() / weight.norm()).item()
        assert achieved == pytest.approx(bound, rel=1e-6)


def test_compress_with_ratio_and_rank_and_errors():
    dense = dense_model(GPT2ForSequenceClassification)
    kron = compress(dense, 4.0, rank=2, show_progress=False)
    assert type(kron) is KroneckerGPT2ForSequenceClassification and kron.config.kronecker_rank == 2
    assert kron.transformer.h[0].attn.c_attn.a.shape[0] == 2
    assert torch.equal(kron.score.weight, dense.score.weight)
    with pytest.raises(ValueError, match="already a KroneckerGPT2ForSequenceClassification; compress the dense model"):
        compress(kron, 4.0)
    with pytest.raises(ValueError, match="c_attn_a_shape=\\(5, 1\\) does not factor"):
        compress(dense, 4.0, c_attn_a_shape=(5, 1))


# ---------------------------------------------------------------------------------------------------- initialisation


def test_fresh_model_uses_gpt2_initialisation_on_the_kronecker_products():
    config = KroneckerGPT2Config(vocab_size=512, n_embd=128, n_layer=4, n_head=4, n_positions=16, bos_token_id=0,
                                 eos_token_id=0,
                                 initializer_range=0.05, c_attn_a_shape=(16, 16), attn_c_proj_a_shape=(16, 8),
                                 c_fc_a_shape=(16, 16), mlp_c_proj_a_shape=(16, 16), embedding_factor=64,
                                 kronecker_layers=[0, 1, 2])
    torch.manual_seed(0)
    model = KroneckerGPT2Model(config)

    def pooled_std(weights):
        return torch.cat([w.flatten() for w in weights]).square().mean().sqrt().item()

    factored = [model.h[i] for i in (0, 1, 2)]
    inputs = [b.attn.c_attn.dense_weight() for b in factored] + [b.mlp.c_fc.dense_weight() for b in factored]
    assert pooled_std(inputs) == pytest.approx(0.05, rel=0.2)
    scaled = 0.05 / math.sqrt(2 * 4)  # GPT-2's residual-projection scaling, Kronecker or dense
    projections = [b.attn.c_proj.dense_weight() for b in factored] + [b.mlp.c_proj.dense_weight() for b in factored]
    assert pooled_std(projections) == pytest.approx(scaled, rel=0.2)
    assert pooled_std([model.h[3].attn.c_proj.weight, model.h[3].mlp.c_proj.weight]) == pytest.approx(scaled, rel=0.1)
    assert pooled_std([model.wte.dense_weight()]) == pytest.approx(0.05, rel=0.3)  # b has only 64 entries
    assert all(torch.all(b.attn.c_attn.bias == 0) and torch.all(b.ln_1.weight == 1) for b in model.h)


# ---------------------------------------------------------------------------------------------------- tying, saving


def test_lm_head_tying_variants():
    fields = dict(c_attn_a_shape=(2, 2), embedding_factor=4)
    tied = KroneckerGPT2LMHeadModel(kronecker_config(tiny_config(), **fields))
    assert isinstance(tied.lm_head, KroneckerTiedLogits) and tied.lm_head.embedding is tied.transformer.wte
    assert not any(key.startswith("lm_head") for key in tied.state_dict())
    new_embedding = KroneckerEmbedding(96, 32, factor=4)
    tied.set_input_embeddings(new_embedding)
    tied.tie_weights()
    assert tied.lm_head.embedding is new_embedding
    with pytest.raises(ValueError, match="must be a KroneckerTiedLogits"):
        tied.set_output_embeddings(torch.nn.Linear(32, 96, bias=False))
    with pytest.raises(NotImplementedError, match="cannot resize its Kronecker-factored word embedding"):
        tied.resize_token_embeddings(100)

    untied = KroneckerGPT2LMHeadModel(kronecker_config(tiny_config(tie_word_embeddings=False), **fields))
    assert isinstance(untied.lm_head, torch.nn.Linear) and untied.lm_head.weight.shape == (96, 32)

    dense_embedding = KroneckerGPT2LMHeadModel(kronecker_config(tiny_config(), c_attn_a_shape=(2, 2)))
    assert dense_embedding.lm_head.weight is dense_embedding.transformer.wte.weight


@pytest.fixture(scope="module")
def saved_kngpt2(tmp_path_factory):
    """A compressed LM saved with save_pretrained, with the inputs and outputs to check loads against."""
    folder = tmp_path_factory.mktemp("kngpt2")
    dense = dense_model(n_layer=2)
    kron = compress(dense, "kngpt2", show_progress=False)
    kron.save_pretrained(folder)
    ids = torch.randint(2, 96, (2, 7))
    with torch.no_grad():
        expected = {"input_ids": ids, "logits": kron(ids).logits, "hidden": kron.transformer(ids).last_hidden_state}
    torch.save(expected, folder / "expected.pt")
    return folder, kron, expected


def test_save_pretrained_writes_safetensors_code_and_every_head(saved_kngpt2):
    folder, kron, _ = saved_kngpt2
    files = set(os.listdir(folder))
    assert {"config.json", "model.safetensors", "configuration_kronecker_gpt2.py", "modeling_kronecker_gpt2.py",
            "layers.py", "kronecker.py"} <= files
    auto_map = json.loads((folder / "config.json").read_text())["auto_map"]
    assert auto_map == {
        "AutoConfig": "configuration_kronecker_gpt2.KroneckerGPT2Config",
        "AutoModel": "modeling_kronecker_gpt2.KroneckerGPT2Model",
        "AutoModelForCausalLM": "modeling_kronecker_gpt2.KroneckerGPT2LMHeadModel",
        "AutoModelForSequenceClassification": "modeling_kronecker_gpt2.KroneckerGPT2ForSequenceClassification",
        "AutoModelForTokenClassification": "modeling_kronecker_gpt2.KroneckerGPT2ForTokenClassification",
    }
    weights = load_file(folder / "model.safetensors")
    assert set(weights) == set(kron.state_dict())  # each factor once, no lm_head copy
    assert "transformer.wte.a" in weights and not any(key.startswith("lm_head") for key in weights)


def test_from_pretrained_and_auto_classes_in_process(saved_kngpt2):
    folder, kron, expected = saved_kngpt2
    ids = expected["input_ids"]
    for loader in (KroneckerGPT2LMHeadModel, AutoModelForCausalLM):
        loaded, info = loader.from_pretrained(folder, output_loading_info=True)
        assert type(loaded) is KroneckerGPT2LMHeadModel and loaded.dtype == torch.float64
        assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
        assert loaded.lm_head.embedding is loaded.transformer.wte
        torch.testing.assert_close(loaded(ids).logits, expected["logits"], rtol=0, atol=1e-12)
    base = AutoModel.from_pretrained(folder)
    assert type(base) is KroneckerGPT2Model
    torch.testing.assert_close(base(ids).last_hidden_state, expected["hidden"], rtol=0, atol=1e-12)
    for auto, cls in ((AutoModelForSequenceClassification, KroneckerGPT2ForSequenceClassification),
                      (AutoModelForTokenClassification, KroneckerGPT2ForTokenClassification)):
        head = auto.from_pretrained(folder)
        assert type(head) is cls
        torch.testing.assert_close(head.transformer(ids).last_hidden_state, expected["hidden"], rtol=0, atol=1e-12)


def test_trust_remote_code_loads_without_the_package(saved_kngpt2, tmp_path):
    folder, _, _ = saved_kngpt2
    script = textwrap.dedent(
        """
        import sys
        sys.modules["kron_transformers"] = None  # as on a machine without the package
        try:
            import kron_transformers
        except ImportError:
            pass
        else:
            raise AssertionError("kron_transformers should not be importable here")
        import torch
        from transformers import (AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification,
                                  AutoModelForTokenClassification)

        folder = sys.argv[1]
        expected = torch.load(f"{folder}/expected.pt")
        ids = expected["input_ids"]
        config = AutoConfig.from_pretrained(folder, trust_remote_code=True)
        assert type(config).__name__ == "KroneckerGPT2Config" and config.kronecker_layers == [1], config
        lm = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True)
        assert type(lm).__module__.startswith("transformers_modules."), type(lm).__module__
        assert type(lm).__name__ == "KroneckerGPT2LMHeadModel"
        torch.testing.assert_close(lm(ids).logits, expected["logits"], rtol=0, atol=1e-12)
        greedy = lm.generate(ids[:, :3], max_new_tokens=4, do_sample=False, pad_token_id=1,
                             attention_mask=torch.ones_like(ids[:, :3]))
        assert greedy.shape == (2, 7)
        base = AutoModel.from_pretrained(folder, trust_remote_code=True)
        assert type(base).__name__ == "KroneckerGPT2Model"
        torch.testing.assert_close(base(ids).last_hidden_state, expected["hidden"], rtol=0, atol=1e-12)
        for auto, name in ((AutoModelForSequenceClassification, "KroneckerGPT2ForSequenceClassification"),
                           (AutoModelForTokenClassification, "KroneckerGPT2ForTokenClassification")):
            head = auto.from_pretrained(folder, trust_remote_code=True)
            assert type(head).__name__ == name
            torch.testing.assert_close(head.transformer(ids).last_hidden_state, expected["hidden"], rtol=0, atol=1e-12)
        print("remote code OK")
        """
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules"),
           "PYTHONPATH": ""}
    result = subprocess.run([sys.executable, "-c", script, str(folder)], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "remote code OK" in result.stdout


def test_mismatched_checkpoints_fail_clearly(saved_kngpt2, tmp_path):
    folder, _, _ = saved_kngpt2
    with pytest.raises(ValueError, match=r"(?s)do not have the shapes its config asks for.*c_attn_a_shape=\(2, 2\).*"
                                         r"transformer.h.1.attn.c_attn.a: .* in the checkpoint, \(1, 2, 2\) from "
                                         r"c_attn_a_shape, kronecker_rank"):
        KroneckerGPT2LMHeadModel.from_pretrained(folder, c_attn_a_shape=(2, 2))
    dense_folder = tmp_path / "dense"
    dense_model(n_layer=2).save_pretrained(dense_folder)
    with pytest.raises(ValueError, match=r"This is a `gpt2` config.*kron_transformers.compress"):
        KroneckerGPT2LMHeadModel.from_pretrained(dense_folder)


@pytest.mark.parametrize(
    "edit, named",
    [
        ({"c_fc_a_shape": None}, "transformer.h.0.mlp.c_fc"),
        ({"embedding_factor": None}, "transformer.wte"),
        ({"kronecker_layers": [1]}, "transformer.h.0.attn.c_attn"),
    ],
    ids=["map-null", "embedding-null", "layers-shrunk"],
)
def test_a_checkpoint_whose_config_leaves_a_factored_map_out_fails_naming_it(tmp_path, edit, named):
    compress(dense_model().float(), 2.0, show_progress=False).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["embedding_factor"] not in (None, 1) and config["c_fc_a_shape"] is not None
    config.update(edit)
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=rf"(?s)does not match the maps its config factors.*{named}: Kronecker "
                                         r"factors in the checkpoint, dense in the model"):
        AutoModelForCausalLM.from_pretrained(tmp_path)


def test_an_embedding_factor_of_one_keeps_the_embedding_dense():
    config = kronecker_config(tiny_config(), c_fc_a_shape=(2, 2), embedding_factor=1)
    model = KroneckerGPT2LMHeadModel(config)
    assert type(model.transformer.wte) is torch.nn.Embedding and model.lm_head.weight is model.transformer.wte.weight
    assert isinstance(model.transformer.h[0].mlp.c_fc, KroneckerLinear)
