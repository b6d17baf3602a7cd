"""The generic families (Llama, Mistral, Qwen2, Qwen3, RoBERTa, DistilBERT, and any architecture through
target_modules) against the dense Transformers models they come from: exactness, save/load, remote code, generation,
loading checks and distillation."""

import json
import os
import re
import subprocess
import sys

import pytest
import torch
from safetensors import safe_open
from torch import nn
from transformers import (
    AutoModel,
    AutoModelForCausalLM,
    DistilBertConfig,
    DistilBertForMaskedLM,
    ElectraConfig,
    ElectraForSequenceClassification,
    LlamaConfig,
    LlamaForCausalLM,
    LlamaForSequenceClassification,
    MistralConfig,
    Qwen2Config,
    Qwen3Config,
    RobertaConfig,
)

import kron_transformers
from kron_transformers import (
    KRONECKER_FAMILIES,
    KRONECKER_TARGET_MODULES,
    KroneckerEmbedding,
    KroneckerLinear,
    KroneckerTiedLogits,
    compress,
)
from kron_transformers.compression import kronecker_class_for, resolve_targets


VOCAB, SEQ = 96, 7
DECODER_SIZES = dict(
    vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, max_position_embeddings=64, pad_token_id=0, attn_implementation="eager",
    tie_word_embeddings=True,  # as SmolLM2; the untied lm_head has its own test
)
CONFIGS = {
    # Grouped-query attention everywhere: k/v projections are 16 wide, q 32.
    "llama": lambda **kw: LlamaConfig(**{**DECODER_SIZES, **kw}),
    "mistral": lambda **kw: MistralConfig(**{**DECODER_SIZES, "sliding_window": None, **kw}),
    "qwen2": lambda **kw: Qwen2Config(**{**DECODER_SIZES, **kw}),
    "qwen3": lambda **kw: Qwen3Config(**{**DECODER_SIZES, "head_dim": 8, **kw}),
    "roberta": lambda **kw: RobertaConfig(
        **{"vocab_size": VOCAB, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
           "intermediate_size": 48, "max_position_embeddings": 64, "pad_token_id": 1, "attn_implementation": "eager",
           "is_decoder": False, **kw}
    ),
    "distilbert": lambda **kw: DistilBertConfig(
        **{"vocab_size": VOCAB, "dim": 32, "n_layers": 2, "n_heads": 4, "hidden_dim": 48,
           "max_position_embeddings": 64, "attn_implementation": "eager", **kw}
    ),
}
HEADS = [
    pytest.param(model_type, dense_class, id=dense_class.__name__)
    for model_type in CONFIGS
    for dense_class in KRONECKER_FAMILIES[model_type].classes
]
DECODERS = ["llama", "mistral", "qwen2", "qwen3"]


def dense_model(model_type, dense_class, seed=0, dtype=torch.float64, **config_kwargs):
    torch.manual_seed(seed)
    config = CONFIGS[model_type](**config_kwargs)
    if "ForSequenceClassification" in dense_class.__name__ or "ForTokenClassification" in dense_class.__name__:
        config.num_labels = 3
    return dense_class(config).to(dtype).eval()


def model_inputs(dense_class, seed=1):
    generator = torch.Generator().manual_seed(seed)
    shape = (2, 2, SEQ) if "MultipleChoice" in dense_class.__name__ else (2, SEQ)
    input_ids = torch.randint(2, VOCAB, shape, generator=generator)  # no pad ids: every head sees a full sequence
    attention_mask = torch.ones_like(input_ids)
    attention_mask[0, ..., -2:] = 0  # padding on the right of the first sequence
    return {"input_ids": input_ids, "attention_mask": attention_mask}


def output_tensors(output) -> dict[str, torch.Tensor]:
    return {key: value for key, value in output.items() if isinstance(value, torch.Tensor)}


def exact_targets(model: nn.Module, model_type: str) -> dict:
    """Every map of the family's table with a 1x1 factor (alternately A and B, so both forms are checked), and the
    word embedding at full rank (factor 2, rank 2): every factorisation is exact."""
    patterns = KRONECKER_TARGET_MODULES[model_type]
    targets, flip = {}, False
    for name, module in model.named_modules():
        if not any(name == p or name.endswith("." + p) for p in patterns):
            continue
        if isinstance(module, nn.Embedding):
            targets[name] = {"factor": 2, "rank": 2}
        elif isinstance(module, nn.Linear):
            targets[name] = (1, 1) if flip else tuple(module.weight.shape)
            flip = not flip
    return targets


# ------------------------------------------------------------------------------------------------ the mechanism


def test_every_family_is_registered_with_every_head_transformers_has():
    expected = {
        "llama": {"LlamaModel", "LlamaForCausalLM", "LlamaForSequenceClassification", "LlamaForTokenClassification",
                  "LlamaForQuestionAnswering"},
        "distilbert": {"DistilBertModel", "DistilBertForMaskedLM", "DistilBertForSequenceClassification",
                       "DistilBertForTokenClassification", "DistilBertForQuestionAnswering",
                       "DistilBertForMultipleChoice"},
        "roberta": {"RobertaModel", "RobertaForCausalLM", "RobertaForMaskedLM", "RobertaForSequenceClassification",
                    "RobertaForTokenClassification", "RobertaForQuestionAnswering", "RobertaForMultipleChoice"},
    }
    for model_type, names in expected.items():
        family = KRONECKER_FAMILIES[model_type]
        assert {cls.__name__ for cls in family.classes} == names
        for dense_class, kronecker_class in family.classes.items():
            assert issubclass(kronecker_class, dense_class) and kronecker_class.dense_class is dense_class
            assert kronecker_class.__name__ == f"Kronecker{dense_class.__name__}"
            assert getattr(kron_transformers.modeling_kronecker, kronecker_class.__name__) is kronecker_class
    for model_type in ("mistral", "qwen2", "qwen3"):
        classes = KRONECKER_FAMILIES[model_type].classes
        heads = {re.search(r"(For\w+|Model)$", cls.__name__).group(1) for cls in classes}
        assert heads == {"Model", "ForCausalLM", "ForSequenceClassification", "ForTokenClassification",
                         "ForQuestionAnswering"}


def test_targets_resolve_against_the_module_tree_with_gqa_sizes():
    dense = dense_model("llama", LlamaForCausalLM, tie_word_embeddings=False)
    resolved, skipped = resolve_targets(dense, {"k_proj": (2, 4), "q_proj": 4.0, "lm_head": {"a_shape": (8, 1)}}, 2.0)
    assert skipped == []
    # Paths inside the base model are relative to it; head modules are relative to the head class.
    assert resolved["layers.0.self_attn.k_proj"] == {"a_shape": [2, 4], "rank": 1}
    assert resolved["lm_head"] == {"a_shape": [8, 1], "rank": 1}
    assert set(resolved) == {"lm_head", *(f"layers.{i}.self_attn.{p}" for i in range(2) for p in ("q_proj", "k_proj"))}
    # q_proj is 32x32 and k_proj 16x32 (two KV heads of 8): each factor shape divides its own map.
    kronecker = compress(dense, 2.0, target_modules={"k_proj": (2, 4), "q_proj": 4.0}, show_progress=False)
    k_proj, q_proj = kronecker.model.layers[0].self_attn.k_proj, kronecker.model.layers[0].self_attn.q_proj
    assert (k_proj.out_features, k_proj.in_features, k_proj.b_shape) == (16, 32, (8, 8))
    assert q_proj.out_features == 32 and 3.0 < q_proj.out_features * q_proj.in_features / (
        q_proj.a.numel() + q_proj.b.numel()) < 5.0
    assert type(kronecker.model.layers[0].mlp.up_proj) is nn.Linear  # not targeted
    # Layer selection (the KnGPT2 recipe for any decoder) and a regex pattern.
    odd, _ = resolve_targets(dense, [r"model\.layers\.\d+\.mlp\.(up|down)_proj", "embed_tokens"], 2.0, layers="odd")
    assert set(odd) == {"layers.1.mlp.up_proj", "layers.1.mlp.down_proj", "embed_tokens"}


def test_bad_targets_fail_before_any_work_naming_the_value():
    dense = dense_model("llama", LlamaForCausalLM)
    with pytest.raises(ValueError, match=r"target_modules \['nope'\] factor no nn.Linear.*named like"):
        compress(dense, 2.0, target_modules=["nope"])
    with pytest.raises(ValueError, match=r"target_modules\['k_proj'\]: .*a_shape of `model.layers.0.self_attn.k_pr"):
        compress(dense, 2.0, target_modules={"k_proj": (3, 4)})
    with pytest.raises(ValueError, match=r"target_modules\['q_proj'\] = 'x': expected a ratio"):
        compress(dense, 2.0, target_modules={"q_proj": "x"})
    with pytest.raises(ValueError, match=r"Unknown preset 'kronecker-bert-8'.*\['kngpt2'\]"):
        compress(dense, "kronecker-bert-8")


# ------------------------------------------------------------------------------------------------ the models


@pytest.mark.parametrize("model_type, dense_class", HEADS)
def test_exact_factorisation_reproduces_the_dense_model(model_type, dense_class):
    dense = dense_model(model_type, dense_class)
    kronecker = compress(dense, 2.0, target_modules=exact_targets(dense, model_type), show_progress=False)
    assert type(kronecker) is KRONECKER_FAMILIES[model_type].classes[dense_class]
    assert type(kronecker.base_model).__name__ == f"Kronecker{type(dense.base_model).__name__}"
    factored = [m for m in kronecker.modules() if isinstance(m, KroneckerLinear)]
    assert len(factored) >= 12 and any(m.a_shape == (1, 1) for m in factored)
    assert any(m.b_shape == (1, 1) for m in factored)
    assert isinstance(kronecker.get_input_embeddings(), KroneckerEmbedding)
    output = kronecker.get_output_embeddings()
    if output is not None:  # every LM head here is tied: logits from the embedding's factors
        assert isinstance(output, KroneckerTiedLogits) and output.embedding is kronecker.get_input_embeddings()
    assert max(m.relative_error for m in kronecker.compression_report.modules) < 1e-12

    inputs = model_inputs(dense_class)
    expected = output_tensors(dense(**inputs, output_hidden_states=True))
    actual = output_tensors(kronecker(**inputs, output_hidden_states=True))
    assert expected.keys() == actual.keys()
    for key in expected:
        torch.testing.assert_close(actual[key], expected[key], rtol=1e-9, atol=1e-9, msg=key)
    hidden = kronecker(**inputs, output_hidden_states=True).hidden_states
    assert len(hidden) == 3


@pytest.mark.parametrize("model_type", DECODERS)
def test_an_untied_lm_head_is_a_kronecker_linear_and_exact(model_type):
    dense = dense_model(model_type, _causal_lm(model_type), tie_word_embeddings=False)
    targets = {**exact_targets(dense, model_type), "lm_head": (1, 1)}
    kronecker = compress(dense, 2.0, target_modules=targets, show_progress=False)
    assert isinstance(kronecker.lm_head, KroneckerLinear) and kronecker.lm_head.b_shape == (VOCAB, 32)
    assert isinstance(kronecker.get_input_embeddings(), KroneckerEmbedding)
    inputs = model_inputs(LlamaForCausalLM)
    torch.testing.assert_close(kronecker(**inputs).logits, dense(**inputs).logits, rtol=1e-9, atol=1e-9)


def _causal_lm(model_type):
    return next(dense for dense in KRONECKER_FAMILIES[model_type].classes if dense.__name__.endswith("ForCausalLM"))


@pytest.mark.parametrize("model_type", DECODERS)
def test_generate_with_cache_equals_generate_without(model_type):
    dense = dense_model(model_type, _causal_lm(model_type), dtype=torch.float32)
    kronecker = compress(dense, 2.0, show_progress=False)
    assert kronecker.compression_report.compression > 1.5
    prompt = model_inputs(LlamaForCausalLM)["input_ids"][:1]
    with_cache = kronecker.generate(prompt, max_new_tokens=10, do_sample=False, use_cache=True)
    without = kronecker.generate(prompt, max_new_tokens=10, do_sample=False, use_cache=False)
    assert with_cache.shape == (1, SEQ + 10)
    assert torch.equal(with_cache, without)


@pytest.mark.parametrize("model_type", ["llama", "roberta"])
def test_the_heads_base_model_captures_hidden_states_and_attentions(model_type):
    # Output capture is registered per class: a head whose dense base model became the Kronecker base class must
    # capture too, even in a process where no Kronecker base model was ever constructed on its own.
    from transformers.utils.output_capturing import _CAN_RECORD_REGISTRY

    family = KRONECKER_FAMILIES[model_type]
    head = next(dense for dense in family.classes if "ForCausalLM" in dense.__name__ or "MaskedLM" in dense.__name__)
    for kronecker_class in family.classes.values():
        _CAN_RECORD_REGISTRY.pop(str(kronecker_class), None)
    kronecker = compress(dense_model(model_type, head, dtype=torch.float32), 2.0, show_progress=False)
    output = kronecker(**model_inputs(head), output_hidden_states=True, output_attentions=True)
    assert output.hidden_states is not None and len(output.hidden_states) == 3
    assert output.attentions is not None and len(output.attentions) == 2


def test_compress_keeps_the_generation_config():
    dense = dense_model("llama", LlamaForCausalLM, dtype=torch.float32)
    dense.generation_config.eos_token_id = [5, 7]
    dense.generation_config.temperature = 0.3
    kronecker = compress(dense, 2.0, show_progress=False)
    assert kronecker.generation_config.eos_token_id == [5, 7] and kronecker.generation_config.temperature == 0.3


def test_kngpt2_preset_applies_to_any_decoder():
    dense = dense_model("qwen3", _causal_lm("qwen3"), dtype=torch.float32)
    kronecker = compress(dense, "kngpt2", show_progress=False)
    layers = kronecker.model.layers
    assert isinstance(layers[1].mlp.up_proj, KroneckerLinear) and type(layers[0].mlp.up_proj) is nn.Linear
    assert isinstance(kronecker.model.embed_tokens, KroneckerEmbedding)


# ------------------------------------------------------------------------------------------------ save and load


@pytest.mark.parametrize("model_type, dense_class", HEADS)
def test_save_pretrained_then_auto_from_pretrained_gives_identical_outputs(model_type, dense_class, tmp_path):
    kronecker = compress(dense_model(model_type, dense_class, dtype=torch.float32), 2.0, show_progress=False).eval()
    kronecker.save_pretrained(tmp_path)
    files = set(os.listdir(tmp_path))
    assert {"configuration_kronecker.py", "modeling_kronecker.py", "layers.py", "kronecker.py",
            "kronecker_utils.py"} <= files
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model_type"] == f"kronecker_{model_type}"
    assert saved["auto_map"] == type(kronecker.config).KRONECKER_AUTO_MAP
    auto_name = next(auto for auto, ref in saved["auto_map"].items() if ref.endswith("." + type(kronecker).__name__))
    import transformers

    loaded = getattr(transformers, auto_name).from_pretrained(tmp_path, attn_implementation="eager").eval()
    assert type(loaded) is type(kronecker)
    inputs = model_inputs(dense_class)
    expected, actual = output_tensors(kronecker(**inputs)), output_tensors(loaded(**inputs))
    for key in expected:
        torch.testing.assert_close(actual[key], expected[key], rtol=0, atol=0, msg=key)


REMOTE_SCRIPT = """
import sys
sys.modules["kron_transformers"] = None  # a user who never installed the package
import torch
import transformers
try:
    import kron_transformers
except ImportError:
    pass
else:
    raise SystemExit("kron_transformers is importable in the subprocess")
results = {}
for folder, auto_names in [(sys.argv[1], ["AutoModelForCausalLM", "AutoModel"]),
                           (sys.argv[2], ["AutoModelForMaskedLM"]),
                           (sys.argv[3], ["AutoModelForSequenceClassification"])]:
    inputs = torch.load(folder + "/inputs.pt")
    for auto_name in auto_names:
        model = getattr(transformers, auto_name).from_pretrained(folder, trust_remote_code=True,
                                                                 attn_implementation="eager").eval()
        assert type(model).__module__.startswith("transformers_modules."), type(model).__module__
        output = model(**inputs)
        results[folder + auto_name] = (type(model).__name__, output[0])
torch.save(results, sys.argv[4])
"""


def test_a_user_without_the_package_loads_any_family_with_trust_remote_code(tmp_path):
    # An untied Llama (Kronecker lm_head), a DistilBERT with its MLM head tied to the factored embedding, and an
    # architecture without a built-in table (ELECTRA, through target_modules).
    llama = dense_model("llama", LlamaForCausalLM, dtype=torch.float32, tie_word_embeddings=False)
    distilbert = dense_model("distilbert", DistilBertForMaskedLM, dtype=torch.float32)
    torch.manual_seed(0)
    electra = ElectraForSequenceClassification(ElectraConfig(
        vocab_size=VOCAB, embedding_size=32, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=48, max_position_embeddings=64, num_labels=3, attn_implementation="eager")).eval()
    models = {
        "llama": compress(llama, 2.0, show_progress=False),
        "distilbert": compress(distilbert, 2.0, show_progress=False),
        "electra": compress(electra, 2.0, target_modules=["query", "key", "value", "dense"], show_progress=False),
    }
    assert isinstance(models["llama"].lm_head, KroneckerLinear)
    assert isinstance(models["distilbert"].vocab_projector, KroneckerTiedLogits)
    assert isinstance(models["electra"].electra.encoder.layer[0].intermediate.dense, KroneckerLinear)
    expected = {}
    for name, model in models.items():
        model.eval().save_pretrained(tmp_path / name)
        inputs = model_inputs(LlamaForCausalLM)
        torch.save(inputs, tmp_path / name / "inputs.pt")
        expected[name] = model(**inputs)[0]
    expected["llama_base"] = AutoModel.from_pretrained(tmp_path / "llama", attn_implementation="eager").eval()(
        **model_inputs(LlamaForCausalLM)).last_hidden_state

    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_MODULES_CACHE=str(tmp_path / "modules"), HF_HUB_OFFLINE="1")
    folders = [str(tmp_path / name) for name in ("llama", "distilbert", "electra")]
    result = subprocess.run(
        [sys.executable, "-c", REMOTE_SCRIPT, *folders, str(tmp_path / "out.pt")],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    actual = torch.load(tmp_path / "out.pt")
    checks = [("llama", "AutoModelForCausalLM", "KroneckerLlamaForCausalLM", expected["llama"]),
              ("llama", "AutoModel", "KroneckerLlamaModel", expected["llama_base"]),
              ("distilbert", "AutoModelForMaskedLM", "KroneckerDistilBertForMaskedLM", expected["distilbert"]),
              ("electra", "AutoModelForSequenceClassification", "KroneckerElectraForSequenceClassification",
               expected["electra"])]
    for name, auto_name, class_name, tensor in checks:
        loaded_class, loaded = actual[str(tmp_path / name) + auto_name]
        assert loaded_class == class_name
        torch.testing.assert_close(loaded, tensor, rtol=0, atol=0)


def _saved_llama(tmp_path, **config_kwargs):
    model = compress(dense_model("llama", LlamaForSequenceClassification, dtype=torch.float32, **config_kwargs), 2.0,
                     show_progress=False)
    model.save_pretrained(tmp_path)
    return json.loads((tmp_path / "config.json").read_text())


def test_a_checkpoint_whose_config_leaves_a_factored_map_out_fails_naming_it(tmp_path):
    config = _saved_llama(tmp_path)
    del config["kronecker_modules"]["layers.1.mlp.down_proj"]
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"(?s)does not match the maps its config factors.*"
                                         r"layers.1.mlp.down_proj: Kronecker factors in the checkpoint, dense in "
                                         r"the model.*Was config.json edited"):
        AutoModel.from_pretrained(tmp_path)


def test_a_checkpoint_whose_config_factors_a_dense_map_fails_naming_it(tmp_path):
    config = _saved_llama(tmp_path)
    with safe_open(tmp_path / "model.safetensors", "pt") as f:
        assert "model.layers.0.mlp.up_proj.a" in f.keys() and "score.weight" in f.keys()
    config["kronecker_modules"]["score"] = {"a_shape": [1, 1], "rank": 1}
    (tmp_path / "config.json").write_text(json.dumps(config))
    from transformers import AutoModelForSequenceClassification

    with pytest.raises(ValueError, match=r"score: dense in the checkpoint, factored by the config"):
        AutoModelForSequenceClassification.from_pretrained(tmp_path)


def test_a_checkpoint_whose_factors_disagree_with_its_config_fails_naming_them(tmp_path):
    config = _saved_llama(tmp_path)
    config["kronecker_modules"]["layers.0.mlp.up_proj"]["a_shape"] = [3, 8]
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"(?s)do not have the shapes its config asks for.*layers.0.mlp.up_proj.a: "
                                         r".*from kronecker_modules\['layers.0.mlp.up_proj'\]"):
        AutoModel.from_pretrained(tmp_path)


def test_a_malformed_kronecker_modules_entry_fails_naming_it(tmp_path):
    config = _saved_llama(tmp_path)
    config["kronecker_modules"]["layers.0.mlp.up_proj"] = {"a_shape": [3], "rank": 1}
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"kronecker_modules\['layers.0.mlp.up_proj'\] = .*expected"):
        AutoModel.from_pretrained(tmp_path)


def test_a_dense_llama_checkpoint_is_not_a_kronecker_config(tmp_path):
    LlamaForCausalLM(CONFIGS["llama"]()).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"This is a `llama` config, not a `kronecker_llama` one"):
        kron_transformers.KroneckerLlamaConfig.from_pretrained(tmp_path)


def test_embedding_resizing_and_output_embeddings_fail_clearly_when_factored():
    model = compress(dense_model("llama", LlamaForCausalLM, dtype=torch.float32), 2.0, show_progress=False)
    with pytest.raises(NotImplementedError, match=r"cannot resize its Kronecker-factored word embedding"):
        model.resize_token_embeddings(120)
    with pytest.raises(ValueError, match=r"must be a KroneckerTiedLogits over it; got a Linear"):
        model.set_output_embeddings(nn.Linear(32, VOCAB))


def test_kronecker_class_lookup_is_by_model_type():
    dense = dense_model("qwen2", _causal_lm("qwen2"))
    assert kronecker_class_for(dense) is KRONECKER_FAMILIES["qwen2"].classes[type(dense)]
    assert AutoModelForCausalLM.from_config(kron_transformers.KroneckerQwen2Config(**DECODER_SIZES)).__class__ \
        is kronecker_class_for(dense)


# ------------------------------------------------------------------------------------------------ distillation


def test_ilkd_steps_on_a_llama_student_and_teacher(tmp_path):
    from kron_transformers.distillation import IlkdTrainer, IlkdTrainingArguments

    teacher = dense_model("llama", LlamaForCausalLM, dtype=torch.float32, num_hidden_layers=2)
    student = compress(teacher, 2.0, show_progress=False).train()
    generator = torch.Generator().manual_seed(0)
    data = []
    for _ in range(16):
        ids = torch.randint(2, VOCAB, (SEQ,), generator=generator)
        data.append({"input_ids": ids, "attention_mask": torch.ones(SEQ, dtype=torch.long), "labels": ids.clone()})
    args = IlkdTrainingArguments(
        output_dir=str(tmp_path), report_to="none", use_cpu=True, save_strategy="no", disable_tqdm=True,
        per_device_train_batch_size=4, learning_rate=1e-3, seed=0, logging_steps=1, max_steps=4,
        alpha_hidden=1.0, alpha_attention=1.0, alpha_logits=1.0, alpha_task=1.0, attention_loss="kl",
    )
    before = {name: p.detach().clone() for name, p in student.named_parameters()}
    trainer = IlkdTrainer(model=student, teacher_model=teacher, args=args, train_dataset=data)
    trainer.train()
    logs = [log for log in trainer.state.log_history if "loss" in log]
    assert len(logs) == 4
    for log in logs:
        for name in ("loss_hidden", "loss_attention", "loss_logits", "loss_task"):
            assert torch.isfinite(torch.tensor(log[name])) and log[name] > 0, (name, log)
    changed = [name for name, p in student.named_parameters() if not torch.equal(p, before[name])]
    assert any(name.endswith(".a") for name in changed) and any(name.endswith(".b") for name in changed)
