"""KroneckerBERT: config validation, the model classes against the dense Transformers BERT, save/load, remote code."""

import copy
import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForMaskedLM,
    AutoModelForMultipleChoice,
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    BertConfig,
    BertForMaskedLM,
    BertForMultipleChoice,
    BertForPreTraining,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertForTokenClassification,
    BertModel,
    ElectraConfig,
    ElectraModel,
    GPT2Config,
    GPT2Model,
)

import kron_transformers
from kron_transformers import (
    KroneckerBertConfig,
    KroneckerBertForMaskedLM,
    KroneckerBertForMultipleChoice,
    KroneckerBertForQuestionAnswering,
    KroneckerBertForSequenceClassification,
    KroneckerBertForTokenClassification,
    KroneckerBertModel,
    KroneckerEmbedding,
    KroneckerLinear,
    KroneckerTiedLogits,
    compress,
)
from kron_transformers.configuration_kronecker_bert import KRONECKER_BERT_AUTO_MAP


def tiny_config(**kwargs) -> BertConfig:
    defaults = dict(
        vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=64, num_labels=3, attn_implementation="eager",
    )
    return BertConfig(**{**defaults, **kwargs})


def tiny_kronecker_config(**kwargs) -> KroneckerBertConfig:
    """Kronecker fields from kwargs over small defaults; any other kwarg goes to the dense config."""
    fields = dict(attention_a_shape=(4, 4), ffn_a_shape=(8, 4), embedding_factor=4, kronecker_rank=1)
    fields.update({k: kwargs.pop(k) for k in list(kwargs) if k in fields or k == "kronecker_layers"})
    return KroneckerBertConfig.from_dense_config(tiny_config(**kwargs), 1.0, **fields)


@torch.no_grad()
def dense_model(cls, seed=0, **config_kwargs):
    """A float64 dense model with non-trivial weights everywhere (biases, LayerNorms, padding row included)."""
    torch.manual_seed(seed)
    if cls is BertForQuestionAnswering:
        config_kwargs.setdefault("num_labels", 2)  # start and end logits
    model = cls(tiny_config(initializer_range=0.2, **config_kwargs)).double().eval()
    for p in model.parameters():
        p.add_(torch.randn_like(p) * 0.05)
    return model


HEADS = {
    BertModel: AutoModel,
    BertForMaskedLM: AutoModelForMaskedLM,
    BertForSequenceClassification: AutoModelForSequenceClassification,
    BertForQuestionAnswering: AutoModelForQuestionAnswering,
    BertForTokenClassification: AutoModelForTokenClassification,
    BertForMultipleChoice: AutoModelForMultipleChoice,
}
KRONECKER_HEADS = {
    BertModel: KroneckerBertModel,
    BertForMaskedLM: KroneckerBertForMaskedLM,
    BertForSequenceClassification: KroneckerBertForSequenceClassification,
    BertForQuestionAnswering: KroneckerBertForQuestionAnswering,
    BertForTokenClassification: KroneckerBertForTokenClassification,
    BertForMultipleChoice: KroneckerBertForMultipleChoice,
}


def model_inputs(dense_class, seed=1, labels=True):
    g = torch.Generator().manual_seed(seed)
    batch, seq = 2, 7
    shape = (batch, 3, seq) if dense_class is BertForMultipleChoice else (batch, seq)
    input_ids = torch.randint(1, 99, shape, generator=g)
    attention_mask = torch.ones(shape, dtype=torch.long)
    attention_mask[..., 1, -2:] = 0  # padding in the second sequence
    inputs = {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "token_type_ids": torch.randint(0, 2, shape, generator=g),
    }
    if not labels:
        return inputs
    if dense_class is BertForMaskedLM:
        mlm_labels = input_ids.clone()
        mlm_labels[:, ::2] = -100
        inputs["labels"] = mlm_labels
    elif dense_class in (BertForSequenceClassification, BertForMultipleChoice):
        inputs["labels"] = torch.tensor([0, 2])
    elif dense_class is BertForTokenClassification:
        inputs["labels"] = torch.randint(0, 3, shape, generator=g)
    elif dense_class is BertForQuestionAnswering:
        inputs.update(start_positions=torch.tensor([1, 3]), end_positions=torch.tensor([2, 5]))
    return inputs


def assert_outputs_close(actual, expected, **tolerances):
    assert set(actual.keys()) == set(expected.keys())
    for key in expected.keys():
        a, e = actual[key], expected[key]
        if isinstance(e, tuple):
            assert len(a) == len(e), key
            for a_i, e_i in zip(a, e):
                torch.testing.assert_close(a_i, e_i, **tolerances, msg=lambda m: f"{key}: {m}")
        else:
            torch.testing.assert_close(a, e, **tolerances, msg=lambda m: f"{key}: {m}")


# ---------------------------------------------------------------------------------------------------- configuration


def test_default_config_is_the_papers_kronecker_bert_8_on_bert_base():
    # The paper's Table 1 shapes written out here (not read back from the presets table the config uses), and the
    # model they build counted against the paper's parameter figures (14.3M / 5.2M, embeddings and heads included).
    config = KroneckerBertConfig()
    assert (config.hidden_size, config.intermediate_size, config.num_hidden_layers) == (768, 3072, 12)
    assert (config.attention_a_shape, config.ffn_a_shape, config.embedding_factor) == ((384, 384), (8, 2), 8)
    assert config.kronecker_rank == 1 and config.kronecker_layers is None
    bert_21 = KroneckerBertConfig.from_dense_config(BertConfig(), compression="kronecker-bert-21")
    assert (bert_21.attention_a_shape, bert_21.ffn_a_shape, bert_21.embedding_factor) == ((384, 48), (16, 2), 16)
    for kron_config, paper_millions in ((config, 14.3), (bert_21, 5.2)):
        with torch.device("meta"):
            parameters = KroneckerBertModel(kron_config).num_parameters()
        assert abs(parameters / 1e6 - paper_millions) / paper_millions < 0.03, (parameters, paper_millions)


def test_config_round_trips_through_json(tmp_path):
    config = tiny_kronecker_config(kronecker_layers=[1], kronecker_rank=2)
    config.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model_type"] == "kronecker_bert"
    assert saved["attention_a_shape"] == [4, 4] and saved["kronecker_layers"] == [1] and saved["kronecker_rank"] == 2
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert type(loaded) is KroneckerBertConfig
    assert loaded.attention_a_shape == (4, 4) and loaded.ffn_a_shape == (8, 4)  # tuples again
    assert loaded.kronecker_layers == [1] and loaded.kronecker_rank == 2 and loaded.embedding_factor == 4


def test_module_paths_follow_the_config():
    config = tiny_kronecker_config(kronecker_layers=[1])
    shapes = config.kronecker_linear_shapes()
    assert shapes == {
        "encoder.layer.1.attention.self.query": (4, 4),
        "encoder.layer.1.attention.self.key": (4, 4),
        "encoder.layer.1.attention.self.value": (4, 4),
        "encoder.layer.1.attention.output.dense": (4, 4),
        "encoder.layer.1.intermediate.dense": (8, 4),
        "encoder.layer.1.output.dense": (4, 8),  # the transposed map takes the transposed A
    }
    assert config.kronecker_embedding_factors() == {"embeddings.word_embeddings": 4}
    assert tiny_kronecker_config(embedding_factor=1).kronecker_embedding_factors() == {}
    assert tiny_kronecker_config(embedding_factor=None).kronecker_embedding_factors() == {}


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"attention_a_shape": (5, 2)}, r"attention_a_shape=\(5, 2\) does not factor the weight of shape \(32, 32\).*"
                                         r"divisible by 5.*\[1, 2, 4, 8, 16, 32\].*hidden_size x hidden_size"),
        ({"ffn_a_shape": (3, 4)}, r"ffn_a_shape=\(3, 4\) does not factor the weight of shape \(64, 32\): "
                                  r"out_features=64 is not divisible by 3"),
        ({"attention_a_shape": (4, 4, 1)}, r"attention_a_shape must be a pair of positive integers"),
        ({"embedding_factor": 5}, r"embedding_factor=5 does not divide hidden_size=32.*\[1, 2, 4, 8, 16, 32\]"),
        ({"embedding_factor": 0}, r"embedding_factor must be a positive integer or None; got 0"),
        ({"kronecker_rank": 0}, r"kronecker_rank must be a positive integer; got 0"),
        ({"attention_a_shape": (32, 32), "kronecker_rank": 2}, r"kronecker_rank=2 exceeds the largest useful rank 1 "
                                                               r"of attention_a_shape=\(32, 32\) \(b_shape=\(1, 1\)\)"),
        ({"embedding_factor": 2, "kronecker_rank": 3, "attention_a_shape": (4, 4), "ffn_a_shape": (8, 4)},
         r"kronecker_rank=3 exceeds embedding_factor=2"),
        ({"embedding_rank": 0}, r"embedding_rank must be a positive integer or None; got 0"),
        ({"embedding_factor": 4, "embedding_rank": 5}, r"embedding_rank=5 exceeds embedding_factor=4"),
        ({"kronecker_layers": [0, 2]}, r"kronecker_layers must list distinct layer indices in \[0, 2\).*invalid entries \[2\]"),
        ({"kronecker_layers": [1, 1]}, r"kronecker_layers.*with duplicates"),
    ],
)
def test_bad_config_fields_raise_naming_the_field_and_what_works(fields, message):
    kwargs = {**tiny_config().to_dict(), "attention_a_shape": (4, 4), "ffn_a_shape": (8, 4), "embedding_factor": 4}
    kwargs.pop("model_type")
    with pytest.raises(ValueError, match=message):
        KroneckerBertConfig(**{**kwargs, **fields})


def test_a_dense_or_other_family_config_is_not_a_kronecker_bert_config():
    with pytest.raises(ValueError, match=r"This is a `bert` config, not a `kronecker_bert` one.*compress"):
        KroneckerBertConfig.from_dict(tiny_config().to_dict())
    with pytest.raises(ValueError, match=r"This is a `kronecker_gpt2` config"):
        KroneckerBertConfig(model_type="kronecker_gpt2")


def test_from_dense_config_with_a_ratio_works_for_any_bert_size():
    minilm_sized = BertConfig(hidden_size=384, intermediate_size=1536, num_attention_heads=12, num_hidden_layers=6)
    for ratio in (2.0, 4.0, 8.0):
        config = KroneckerBertConfig.from_dense_config(minilm_sized, ratio)
        assert config.hidden_size == 384 and config.num_hidden_layers == 6
        for field, (out_features, in_features) in config.dense_shapes().items():
            a = getattr(config, field)
            b = (out_features // a[0], in_features // a[1])
            achieved = out_features * in_features / (a[0] * a[1] + b[0] * b[1])
            assert abs(achieved / ratio - 1) < 0.02, (field, a, achieved)
        vocab, d, f = config.vocab_size, config.hidden_size, config.embedding_factor
        assert abs(vocab * d / (vocab * d // f + f) / ratio - 1) < 0.02
    # The rank is honoured when picking shapes, and `rank` is accepted for kronecker_rank.
    config = KroneckerBertConfig.from_dense_config(minilm_sized, 4.0, rank=2)
    a = config.attention_a_shape
    b = (384 // a[0], 384 // a[1])
    assert config.kronecker_rank == 2 and abs(384 * 384 / (2 * (a[0] * a[1] + b[0] * b[1])) / 4 - 1) < 0.02
    assert config.embedding_factor >= 2


def test_embedding_rank_picks_the_factor_for_that_rank_and_leaves_the_maps_at_kronecker_rank():
    minilm_sized = BertConfig(hidden_size=384, intermediate_size=1536, num_attention_heads=12, num_hidden_layers=6)
    default = KroneckerBertConfig.from_dense_config(minilm_sized, 4.0)
    config = KroneckerBertConfig.from_dense_config(minilm_sized, 4.0, embedding_rank=96)
    # 96 products of a 30522x1 column and a 1x384 row: 96 numbers per token, as one 30522x96 ⊗ 1x4 product
    assert (default.embedding_factor, default.word_embedding_rank) == (4, 1)
    assert (config.embedding_factor, config.word_embedding_rank, config.kronecker_rank) == (384, 96, 1)
    assert config.attention_a_shape == default.attention_a_shape and config.ffn_a_shape == default.ffn_a_shape
    targets = config.kronecker_targets()
    assert targets["embeddings.word_embeddings"] == {"factor": 384, "rank": 96}
    assert targets["encoder.layer.0.attention.self.query"]["rank"] == 1
    assert KroneckerBertConfig.from_dict(config.to_dict()).word_embedding_rank == 96


def test_from_dense_config_keeps_the_dense_fields_and_applies_overrides():
    dense = tiny_config(num_labels=5, classifier_dropout=0.3)
    config = KroneckerBertConfig.from_dense_config(dense, 4.0, kronecker_layers=[0])
    assert config.num_labels == 5 and config.classifier_dropout == 0.3 and config.kronecker_layers == [0]
    assert config._attn_implementation == "eager"
    template = tiny_kronecker_config(attention_a_shape=(2, 8), kronecker_rank=2, embedding_factor=2)
    config = KroneckerBertConfig.from_dense_config(dense, template, ffn_a_shape=(4, 4))
    assert (config.attention_a_shape, config.ffn_a_shape, config.kronecker_rank) == ((2, 8), (4, 4), 2)
    assert config.num_labels == 5  # from the dense config, not the template


def test_from_dense_config_rejects_bad_compression_arguments():
    dense = tiny_config()
    with pytest.raises(ValueError, match=r"preset 'kronecker-bert-8' holds the paper's factor shapes for BERT_BASE.*"
                                         r"'hidden_size': 32.*Pass a compression ratio"):
        KroneckerBertConfig.from_dense_config(dense, "kronecker-bert-8")
    with pytest.raises(ValueError, match=r"Unknown preset 'kronecker-bert-9'.*\['kronecker-bert-21', 'kronecker-bert-8'\]"):
        KroneckerBertConfig.from_dense_config(dense, "kronecker-bert-9")
    with pytest.raises(ValueError, match=r"compression must be a preset name.*got -2"):
        KroneckerBertConfig.from_dense_config(dense, -2)
    with pytest.raises(ValueError, match=r"Unknown KroneckerBert option\(s\) \['kronecker_rnk'\] \(did you mean "
                                         r"'kronecker_rank'"):
        KroneckerBertConfig.from_dense_config(dense, 4.0, kronecker_rnk=2)
    with pytest.raises(ValueError, match=r"does not fit the dense model: intermediate_size: 64 in the dense config but "
                                         r"128 in the Kronecker config\.$"):
        KroneckerBertConfig.from_dense_config(dense, tiny_kronecker_config(intermediate_size=128))
    with pytest.raises(ValueError, match=r"dense_config must be the BertConfig of a dense model; got a KroneckerBertConfig"):
        KroneckerBertConfig.from_dense_config(tiny_kronecker_config(), 4.0)


# ------------------------------------------------------------------------------------------------------ the models


@pytest.mark.parametrize("dense_class", list(KRONECKER_HEADS))
def test_classes_swap_only_the_configured_modules(dense_class):
    kronecker_class = KRONECKER_HEADS[dense_class]
    assert kronecker_class.__mro__[1] is dense_class and kronecker_class.config_class is KroneckerBertConfig
    config = tiny_kronecker_config(kronecker_layers=[1])
    model = kronecker_class(config)
    bert = model if dense_class is BertModel else model.bert
    assert isinstance(bert, KroneckerBertModel)
    factored = {name for name, m in bert.named_modules() if isinstance(m, KroneckerLinear)}
    assert factored == set(config.kronecker_linear_shapes())
    for name, a_shape in config.kronecker_linear_shapes().items():
        assert bert.get_submodule(name).a_shape == a_shape
    assert isinstance(bert.embeddings.word_embeddings, KroneckerEmbedding)
    for name in ("embeddings.position_embeddings", "embeddings.token_type_embeddings"):
        assert type(bert.get_submodule(name)) is nn.Embedding
    assert type(bert.encoder.layer[0].attention.self.query) is nn.Linear  # layer 0 is not in kronecker_layers
    assert (bert.pooler is not None) == (dense_class in (BertModel, BertForSequenceClassification, BertForMultipleChoice))
    if dense_class is BertForMaskedLM:
        decoder = model.cls.predictions.decoder
        assert isinstance(decoder, KroneckerTiedLogits) and decoder.embedding is bert.embeddings.word_embeddings
        assert decoder.bias is model.cls.predictions.bias
        assert model.get_output_embeddings() is decoder


def test_new_kronecker_modules_are_initialised_with_initializer_range():
    torch.manual_seed(0)
    config = tiny_kronecker_config(hidden_size=64, intermediate_size=128, attention_a_shape=(8, 8), ffn_a_shape=(16, 8),
                                   embedding_factor=8, kronecker_rank=2, initializer_range=0.5, vocab_size=400)
    model = KroneckerBertModel(config)
    query = model.encoder.layer[0].attention.self.query
    weight = query.dense_weight()
    assert 0.5 * 0.7 < weight.std().item() < 0.5 * 1.3
    assert torch.count_nonzero(query.bias) == 0
    embedding = model.embeddings.word_embeddings
    assert 0.5 * 0.7 < embedding.dense_weight().std().item() < 0.5 * 1.3
    assert torch.count_nonzero(embedding.a[:, config.pad_token_id]) == 0  # the padding row, as BERT's init does
    assert 0.5 * 0.7 < model.pooler.dense.weight.std().item() < 0.5 * 1.3  # dense modules: Transformers' init


@pytest.mark.parametrize(
    "fields",
    [
        # B 1x1: every map is exactly its A; the word embedding stays dense.
        dict(attention_a_shape=(32, 32), ffn_a_shape=(64, 32), embedding_factor=None, kronecker_rank=1),
        # Rank 2 with two-entry B factors and a 1x2 embedding b: full rank, so the factorisation is exact.
        dict(attention_a_shape=(32, 16), ffn_a_shape=(64, 16), embedding_factor=2, kronecker_rank=2),
        # The embedding as 32 products of a column and a row (its full-rank SVD), the maps at rank 1.
        dict(attention_a_shape=(32, 32), ffn_a_shape=(64, 32), embedding_factor=32, embedding_rank=32,
             kronecker_rank=1),
    ],
    ids=["b1x1", "full-rank-2", "svd-embedding"],
)
@pytest.mark.parametrize("dense_class", list(KRONECKER_HEADS))
def test_exact_factorisation_reproduces_the_dense_model(dense_class, fields):
    dense = dense_model(dense_class)
    kronecker = compress(dense, 2.0, show_progress=False, **fields)
    assert type(kronecker) is KRONECKER_HEADS[dense_class]
    assert next(kronecker.parameters()).dtype == torch.float64 and not kronecker.training
    bert = kronecker if dense_class is BertModel else kronecker.bert
    assert all(isinstance(bert.encoder.layer[i].output.dense, KroneckerLinear) for i in range(2))
    assert isinstance(bert.embeddings.word_embeddings, KroneckerEmbedding) == (fields["embedding_factor"] is not None)
    if dense_class is BertForMaskedLM and fields["embedding_factor"] is not None:
        assert isinstance(kronecker.cls.predictions.decoder, KroneckerTiedLogits)
    assert max(m.relative_error for m in kronecker.compression_report.modules) < 1e-6

    inputs = model_inputs(dense_class)
    expected = dense(**inputs, output_hidden_states=True, output_attentions=True)
    actual = kronecker(**inputs, output_hidden_states=True, output_attentions=True)
    assert len(actual.hidden_states) == 3 and len(actual.attentions) == 2  # Transformers' output capture
    if dense_class is not BertModel:
        assert actual.loss is not None
    assert_outputs_close(actual, expected, rtol=1e-9, atol=1e-9)


def test_attention_backends_are_transformers_own():
    config = tiny_kronecker_config(attn_implementation="eager")
    eager = KroneckerBertModel(config).eval()
    sdpa = copy.deepcopy(eager)
    sdpa.set_attn_implementation("sdpa")
    assert sdpa.config._attn_implementation == "sdpa" and eager.config._attn_implementation == "eager"
    inputs = model_inputs(BertModel, labels=False)
    torch.testing.assert_close(sdpa(**inputs).last_hidden_state, eager(**inputs).last_hidden_state, rtol=1e-5, atol=1e-5)


def test_gradients_reach_every_factor_and_the_tied_decoder_reads_the_embedding():
    model = KroneckerBertForMaskedLM(tiny_kronecker_config()).train()
    inputs = model_inputs(BertForMaskedLM)
    model(**inputs).loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    embedding = model.bert.embeddings.word_embeddings
    hidden = torch.randn(3, 32)
    torch.testing.assert_close(
        model.cls.predictions.decoder(hidden), hidden @ embedding.dense_weight().T + model.cls.predictions.bias
    )
    clone = copy.deepcopy(model)
    assert clone.cls.predictions.decoder.embedding is clone.bert.embeddings.word_embeddings
    assert clone.cls.predictions.decoder.bias is clone.cls.predictions.bias


def test_embedding_resizing_and_output_embeddings_fail_clearly_when_factored():
    model = KroneckerBertForMaskedLM(tiny_kronecker_config())
    with pytest.raises(NotImplementedError, match=r"cannot resize its Kronecker-factored word embedding.*vocab_size=99"):
        model.resize_token_embeddings(120)
    with pytest.raises(ValueError, match=r"must be a KroneckerTiedLogits over it; got a Linear"):
        model.set_output_embeddings(nn.Linear(32, 99))
    # With a dense embedding, Transformers' resizing and tying work as for BERT.
    dense_embedding = KroneckerBertForMaskedLM(tiny_kronecker_config(embedding_factor=None))
    dense_embedding.resize_token_embeddings(120)
    assert dense_embedding.cls.predictions.decoder.weight is dense_embedding.bert.embeddings.word_embeddings.weight
    assert dense_embedding(torch.tensor([[5, 110]])).logits.shape == (1, 2, 120)


def test_set_input_embeddings_keeps_the_decoder_tied():
    model = KroneckerBertForMaskedLM(tiny_kronecker_config())
    new = KroneckerEmbedding(99, 32, factor=4, padding_idx=0)
    model.set_input_embeddings(new)
    model.tie_weights()
    assert model.cls.predictions.decoder.embedding is new


# ------------------------------------------------------------------------------------------------- save and load


def test_the_auto_classes_are_registered():
    config = tiny_kronecker_config()
    for dense_class, auto_class in HEADS.items():
        assert type(auto_class.from_config(config)) is KRONECKER_HEADS[dense_class]
    assert type(AutoConfig.for_model("kronecker_bert", **{k: v for k, v in config.to_dict().items() if k != "model_type"})) \
        is KroneckerBertConfig
    assert set(KRONECKER_BERT_AUTO_MAP) == {"AutoConfig", *(auto.__name__ for auto in HEADS.values())}


@pytest.mark.parametrize("dense_class", list(KRONECKER_HEADS))
def test_save_pretrained_then_auto_from_pretrained_gives_identical_outputs(dense_class, tmp_path):
    kronecker = compress(dense_model(dense_class).float(), 4.0, show_progress=False)
    kronecker.save_pretrained(tmp_path)
    files = set(os.listdir(tmp_path))
    assert {"config.json", "model.safetensors", "configuration_kronecker_bert.py", "modeling_kronecker_bert.py",
            "layers.py", "kronecker.py"} <= files
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["auto_map"] == KRONECKER_BERT_AUTO_MAP  # every head, not only the saved one
    assert saved["architectures"] == [KRONECKER_HEADS[dense_class].__name__]
    with safe_open(tmp_path / "model.safetensors", "pt") as f:
        keys = set(f.keys())
    prefix = "" if dense_class is BertModel else "bert."
    assert f"{prefix}encoder.layer.0.attention.self.query.a" in keys
    assert f"{prefix}encoder.layer.0.attention.self.query.weight" not in keys
    if dense_class is BertForMaskedLM:  # the tied decoder stores nothing of its own
        assert not any(k.startswith("cls.predictions.decoder") for k in keys) and "cls.predictions.bias" in keys

    loaded = HEADS[dense_class].from_pretrained(tmp_path, attn_implementation="eager")  # the backend is not saved
    assert type(loaded) is KRONECKER_HEADS[dense_class]
    inputs = model_inputs(dense_class)
    # Same weights, same inputs; up to one float32 rounding (seen once on a logit in a full-suite run: the BLAS path
    # can depend on the tensors' memory alignment).
    assert_outputs_close(loaded(**inputs, output_hidden_states=True), kronecker(**inputs, output_hidden_states=True),
                         rtol=1e-6, atol=1e-6)


def test_from_pretrained_initialises_missing_kronecker_factors(tmp_path):
    config = tiny_kronecker_config(hidden_size=64, intermediate_size=128, attention_a_shape=(8, 8), ffn_a_shape=(16, 8),
                                   initializer_range=0.5)
    torch.manual_seed(0)
    model = KroneckerBertModel(config)
    model.save_pretrained(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    del state["encoder.layer.0.attention.self.query.a"]
    save_file(state, tmp_path / "model.safetensors", metadata={"format": "pt"})

    loaded = KroneckerBertModel.from_pretrained(tmp_path)
    query = loaded.encoder.layer[0].attention.self.query
    factor_std = 0.5**0.5  # (initializer_range**2 / rank) ** (1/4)
    assert torch.isfinite(query.a).all() and 0.6 * factor_std < query.a.std().item() < 1.4 * factor_std
    torch.testing.assert_close(query.b, model.encoder.layer[0].attention.self.query.b, rtol=0, atol=0)  # loaded, kept
    torch.testing.assert_close(loaded.embeddings.word_embeddings.a, model.embeddings.word_embeddings.a, rtol=0, atol=0)


REMOTE_SCRIPT = """
import sys
sys.modules["kron_transformers"] = None  # a user who never installed the package
import torch
from transformers import AutoModel, AutoModelForMaskedLM
try:
    import kron_transformers
except ImportError:
    pass
else:
    raise SystemExit("kron_transformers is importable in the subprocess")
folder, out = sys.argv[1], sys.argv[2]
inputs = torch.load(folder + "/inputs.pt")
results = {}
for name, auto_class in (("base", AutoModel), ("mlm", AutoModelForMaskedLM)):
    model = auto_class.from_pretrained(folder, trust_remote_code=True, attn_implementation="eager").eval()
    assert type(model).__module__.startswith("transformers_modules."), type(model).__module__
    output = model(**inputs, output_hidden_states=True)
    results[name] = output.logits if name == "mlm" else output.last_hidden_state
    results[name + "_class"] = type(model).__name__
torch.save(results, out)
"""


def test_a_user_without_the_package_loads_the_checkpoint_with_trust_remote_code(tmp_path):
    folder = tmp_path / "checkpoint"
    kronecker = compress(dense_model(BertForMaskedLM).float(), 4.0, show_progress=False)
    kronecker.save_pretrained(folder)
    inputs = model_inputs(BertForMaskedLM, labels=False)
    torch.save(inputs, folder / "inputs.pt")
    base = KroneckerBertModel.from_pretrained(folder, attn_implementation="eager").eval()
    expected = {"mlm": kronecker(**inputs).logits, "base": base(**inputs).last_hidden_state}

    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_MODULES_CACHE=str(tmp_path / "modules"), HF_HUB_OFFLINE="1")
    result = subprocess.run(
        [sys.executable, "-c", REMOTE_SCRIPT, str(folder), str(tmp_path / "out.pt")],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    actual = torch.load(tmp_path / "out.pt")
    assert actual["mlm_class"] == "KroneckerBertForMaskedLM" and actual["base_class"] == "KroneckerBertModel"
    torch.testing.assert_close(actual["mlm"], expected["mlm"], rtol=0, atol=0)
    torch.testing.assert_close(actual["base"], expected["base"], rtol=0, atol=0)


# ------------------------------------------------------------------------------------------------------- bad input


def test_a_checkpoint_whose_factors_disagree_with_its_config_fails_naming_them(tmp_path):
    KroneckerBertForSequenceClassification(tiny_kronecker_config()).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["ffn_a_shape"] = [4, 8]
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"(?s)do not have the shapes its config asks for.*ffn_a_shape=\(4, 8\).*"
                                         r"bert.encoder.layer.0.intermediate.dense.a: \(1, 8, 4\) in the checkpoint, "
                                         r"\(1, 4, 8\) from ffn_a_shape.*Was config.json edited"):
        AutoModelForSequenceClassification.from_pretrained(tmp_path)


def test_loading_a_dense_bert_checkpoint_into_a_kronecker_class_fails(tmp_path):
    BertModel(tiny_config()).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"This is a `bert` config, not a `kronecker_bert` one.*kron_transformers.compress"):
        KroneckerBertModel.from_pretrained(tmp_path)


def test_loading_a_kronecker_gpt2_checkpoint_into_a_kronecker_bert_class_fails(tmp_path):
    gpt2 = GPT2Model(GPT2Config(vocab_size=96, n_embd=32, n_layer=2, n_head=4, n_positions=32))
    compress(gpt2, 2.0, show_progress=False).save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "kronecker_gpt2"
    with pytest.raises(ValueError, match=r"This is a `kronecker_gpt2` config, not a `kronecker_bert` one"):
        KroneckerBertForSequenceClassification.from_pretrained(tmp_path)


def test_compress_rejects_unsupported_architectures():
    with pytest.raises(ValueError, match=r"Cannot compress a BertForPreTraining: supported architectures are .*BertModel"):
        compress(BertForPreTraining(tiny_config()), 4.0)
    # An architecture without a built-in target table needs target_modules (tests/test_modeling_families.py).
    electra = ElectraModel(ElectraConfig(vocab_size=99, hidden_size=32, embedding_size=32, num_hidden_layers=1,
                                         num_attention_heads=4, intermediate_size=64))
    with pytest.raises(ValueError, match=r"Cannot compress a ElectraModel: supported architectures are .*BertForMaskedLM"
                                         r".*LlamaForCausalLM.*pass target_modules"):
        compress(electra, 4.0)
    with pytest.raises(ValueError, match=r"already a KroneckerBertModel; compress the dense model instead"):
        compress(KroneckerBertModel(tiny_kronecker_config()), 4.0)


def test_the_package_exports_the_bert_classes():
    for cls in KRONECKER_HEADS.values():
        assert getattr(kron_transformers, cls.__name__) is cls
    assert kron_transformers.KroneckerBertConfig is KroneckerBertConfig


@pytest.mark.parametrize(
    "edit, named",
    [
        ({"attention_a_shape": None}, "bert.encoder.layer.0.attention.self.query"),
        ({"embedding_factor": None}, "bert.embeddings.word_embeddings"),
        ({"kronecker_layers": [0]}, "bert.encoder.layer.1.output.dense"),
    ],
    ids=["attention-null", "embedding-null", "layers-shrunk"],
)
def test_a_checkpoint_whose_config_leaves_a_factored_map_out_fails_naming_it(tmp_path, edit, named):
    KroneckerBertForMaskedLM(tiny_kronecker_config()).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config.update(edit)
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=rf"(?s)does not match the maps its config factors.*{named}: Kronecker "
                                         r"factors in the checkpoint, dense in the model"):
        AutoModelForMaskedLM.from_pretrained(tmp_path)
