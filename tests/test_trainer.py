import copy
import json
import math
import os

import pytest
import torch
from safetensors.torch import load_file
from transformers import (
    BertConfig,
    BertForMaskedLM,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    GPT2Config,
    GPT2ForSequenceClassification,
    GPT2LMHeadModel,
    HfArgumentParser,
    TrainingArguments,
    default_data_collator,
)

from kron_transformers.distillation import (
    ATTENTION_RECORDING_IMPLEMENTATION,
    PROJECTION_WEIGHTS_NAME,
    IlkdTrainer,
    IlkdTrainingArguments,
    default_layer_map,
    record_attention_scores,
)


VOCAB, SEQ = 64, 8


def bert_config(hidden=32, layers=2, heads=4, vocab=VOCAB, **kwargs):
    return BertConfig(
        vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
        intermediate_size=2 * hidden, max_position_embeddings=16, hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0, attn_implementation="sdpa", **kwargs,
    )


def gpt2_config(hidden=32, layers=2, heads=4, **kwargs):
    return GPT2Config(
        vocab_size=VOCAB, n_embd=hidden, n_layer=layers, n_head=heads, n_positions=16, resid_pdrop=0.0,
        embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=1, eos_token_id=1, pad_token_id=0, attn_implementation="sdpa",
        **kwargs,
    )


def make_model(cls, config, seed=0, dtype=torch.float64):
    torch.manual_seed(seed)
    return cls(config).to(dtype)


def make_dataset(size, labels, seed=0):
    """Right-padded sequences of 3 to SEQ real tokens (pad id 0) with the labels each head needs."""
    generator = torch.Generator().manual_seed(seed)
    examples = []
    for i in range(size):
        length = int(torch.randint(3, SEQ + 1, (1,), generator=generator))
        ids = torch.randint(2, VOCAB, (SEQ,), generator=generator)
        ids[length:] = 0
        example = {"input_ids": ids, "attention_mask": (torch.arange(SEQ) < length).long()}
        if labels == "class":
            example["labels"] = (ids[0] % 3).long()  # learnable: a function of the first token
        elif labels == "regression":
            example["labels"] = (ids[0].float() / VOCAB).reshape(())
        elif labels == "tokens":
            example["labels"] = ids.masked_fill(example["attention_mask"] == 0, -100)
        elif labels == "span":
            example["start_positions"] = torch.tensor(1)
            example["end_positions"] = torch.tensor(length - 1)
        examples.append(example)
    return examples


def ilkd_args(tmp_path, **kwargs):
    defaults = dict(
        output_dir=str(tmp_path), report_to="none", use_cpu=True, save_strategy="no", disable_tqdm=True,
        per_device_train_batch_size=4, learning_rate=1e-3, seed=0, logging_steps=1,
        # The hand computations below check the raw terms; normalisation has tests of its own.
        loss_normalization="none",
    )
    return IlkdTrainingArguments(**{**defaults, **kwargs})


def batch_of(examples):
    return default_data_collator(examples)


# ---- the attention recorder ------------------------------------------------------------------------------------


def explicit_scores(query, key, heads):
    """(batch, seq, hidden) x2 -> (batch, heads, seq, seq) scores q k^T / sqrt(head_dim)."""
    batch, seq, hidden = query.shape
    q = query.view(batch, seq, heads, -1).transpose(1, 2)
    k = key.view(batch, seq, heads, -1).transpose(1, 2)
    return q @ k.transpose(-1, -2) / math.sqrt(hidden // heads)


def assert_scores(recorded, expected, mask):
    """The softmax's input: the explicit scores where attended, finfo.min elsewhere."""
    mask = mask.expand_as(recorded)
    torch.testing.assert_close(recorded[mask], expected[mask], rtol=1e-10, atol=1e-10)
    assert (recorded[~mask] == torch.finfo(recorded.dtype).min).all() and (~mask).any()


def test_recorder_records_bert_scores_and_padding_and_restores_sdpa():
    model = make_model(BertForMaskedLM, bert_config()).eval()
    batch = batch_of(make_dataset(3, labels=None))
    reference = model(**batch, output_hidden_states=True)
    with record_attention_scores(model) as records:
        assert model.config._attn_implementation == ATTENTION_RECORDING_IMPLEMENTATION
        recorded = model(**batch)
    assert model.config._attn_implementation == "sdpa"
    torch.testing.assert_close(recorded.logits, reference.logits, rtol=1e-10, atol=1e-10)
    assert len(records) == 2
    for layer, record in enumerate(records):
        attention = model.bert.encoder.layer[layer].attention.self
        hidden = reference.hidden_states[layer]
        expected = explicit_scores(attention.query(hidden), attention.key(hidden), heads=4)
        keys = batch["attention_mask"].bool()[:, None, None, :].expand(-1, 1, SEQ, -1)
        assert torch.equal(record.mask.expand_as(keys), keys)
        assert_scores(record.scores, expected, keys)
    # Outside the block nothing is recorded.
    model(**batch)
    assert len(records) == 2


def test_recorder_records_gpt2_scores_with_causality_and_padding():
    model = make_model(GPT2LMHeadModel, gpt2_config()).eval()
    batch = batch_of(make_dataset(3, labels=None))
    reference = model(**batch, output_hidden_states=True)
    with record_attention_scores(model) as records:
        recorded = model(**batch)
    assert model.config._attn_implementation == "sdpa"
    real = batch["attention_mask"].bool()
    torch.testing.assert_close(recorded.logits[real], reference.logits[real], rtol=1e-10, atol=1e-10)
    causal = torch.ones(SEQ, SEQ, dtype=torch.bool).tril()
    for layer, record in enumerate(records):
        block = model.transformer.h[layer]
        query, key, _ = block.attn.c_attn(block.ln_1(reference.hidden_states[layer])).split(32, dim=2)
        expected_mask = causal[None, None] & real[:, None, None, :]
        assert torch.equal(record.mask.expand_as(expected_mask), expected_mask)
        assert_scores(record.scores, explicit_scores(query, key, heads=4), expected_mask)


def test_recorder_refuses_a_model_without_attention_interface():
    class Opaque(torch.nn.Module):
        config = bert_config()

        def set_attn_implementation(self, name):
            pass  # what Transformers does for models it cannot switch: warn and keep the backend

    with pytest.raises(ValueError, match="does not route its attention through"):
        with record_attention_scores(Opaque()):
            pass


# ---- arguments and construction ---------------------------------------------------------------------------------


def test_arguments_parse_from_the_command_line(tmp_path):
    parser = HfArgumentParser(IlkdTrainingArguments)
    (args,) = parser.parse_args_into_dataclasses(
        ["--output_dir", str(tmp_path), "--alpha_hidden", "2", "--attention_loss", "kl", "--layer_map", "1", "3",
         "--temperature", "4", "--report_to", "none"]
    )
    assert (args.alpha_hidden, args.attention_loss, args.layer_map, args.temperature) == (2.0, "kl", [1, 3], 4.0)
    with pytest.raises(SystemExit):
        parser.parse_args_into_dataclasses(["--output_dir", str(tmp_path), "--attention_loss", "cosine"])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"alpha_hidden": -1.0}, r"alpha_hidden must be a finite number >= 0; got -1.0"),
        ({"alpha_logits": math.nan}, r"alpha_logits must be a finite number >= 0"),
        ({"temperature": 0.0}, r"temperature must be a finite number > 0; got 0.0"),
        ({"attention_loss": "cosine"}, r"attention_loss must be 'mse_scores' or 'kl'; got 'cosine'"),
        ({"layer_map": [0, -1]}, r"layer_map must be a non-empty list of teacher layer indices >= 0"),
        (dict(alpha_embedding=0, alpha_hidden=0, alpha_attention=0, alpha_logits=0), "must be positive; all are 0"),
    ],
)
def test_bad_arguments_raise(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        ilkd_args(tmp_path, **kwargs)


def test_default_layer_map():
    assert default_layer_map(4, 4) == [0, 1, 2, 3]
    assert default_layer_map(2, 4) == [1, 3]
    assert default_layer_map(4, 12) == [2, 5, 8, 11]
    assert default_layer_map(3, 4) == [0, 1, 3]
    with pytest.raises(ValueError, match=r"more layers \(4\) than the teacher \(2\); pass layer_map"):
        default_layer_map(4, 2)


def test_mismatched_teacher_and_student_raise_at_construction(tmp_path):
    teacher = make_model(BertForSequenceClassification, bert_config(num_labels=3))
    args = ilkd_args(tmp_path)

    def build(student, **kwargs):
        return IlkdTrainer(model=student, teacher_model=teacher, args=ilkd_args(tmp_path, **kwargs))

    vocabularies = r"share a vocabulary: the teacher has vocab_size=64, the student vocab_size=80\."
    with pytest.raises(ValueError, match=vocabularies):
        build(make_model(BertForSequenceClassification, bert_config(vocab=80, num_labels=3)))
    with pytest.raises(ValueError, match=r"num_attention_heads=4 and the student 2"):
        build(make_model(BertForSequenceClassification, bert_config(heads=2, num_labels=3)))
    # Without the attention loss, different head counts are fine.
    build(make_model(BertForSequenceClassification, bert_config(heads=2, num_labels=3)), alpha_attention=0)
    with pytest.raises(ValueError, match=r"layer_map=\[0, 2\] names teacher layers \[2\], but the teacher has 2 "):
        build(make_model(BertForSequenceClassification, bert_config(num_labels=3)), layer_map=[0, 2])
    with pytest.raises(ValueError, match=r"the student has 2 layers, layer_map=\[1\] has 1 entries"):
        build(make_model(BertForSequenceClassification, bert_config(num_labels=3)), layer_map=[1])
    with pytest.raises(ValueError, match=r"more layers \(3\) than the teacher \(2\)"):
        build(make_model(BertForSequenceClassification, bert_config(layers=3, num_labels=3)))
    with pytest.raises(ValueError, match=r"same head: the teacher is a BertForSequenceClassification"):
        build(make_model(BertForMaskedLM, bert_config()))
    with pytest.raises(ValueError, match=r"num_labels=3, the student num_labels=2"):
        build(make_model(BertForSequenceClassification, bert_config(num_labels=2)))
    with pytest.raises(ValueError, match="pass teacher_model="):
        IlkdTrainer(model=make_model(BertForSequenceClassification, bert_config(num_labels=3)), args=args)
    with pytest.raises(TypeError, match="needs IlkdTrainingArguments; got TrainingArguments"):
        IlkdTrainer(model=teacher, teacher_model=teacher, args=TrainingArguments(output_dir=str(tmp_path)))


# ---- the loss ---------------------------------------------------------------------------------------------------

HEADS = [
    pytest.param(BertForMaskedLM, bert_config, {}, "tokens", id="bert-masked-lm"),
    pytest.param(GPT2LMHeadModel, gpt2_config, {}, "tokens", id="gpt2-causal-lm"),
    pytest.param(BertForSequenceClassification, bert_config, {"num_labels": 3}, "class", id="bert-classification"),
    pytest.param(BertForSequenceClassification, bert_config, {"num_labels": 1}, "regression", id="bert-regression"),
    pytest.param(GPT2ForSequenceClassification, gpt2_config, {"num_labels": 3}, "class", id="gpt2-classification"),
    pytest.param(BertForQuestionAnswering, bert_config, {}, "span", id="bert-question-answering"),
]


@pytest.mark.parametrize("attention_loss", ["mse_scores", "kl"])
@pytest.mark.parametrize("cls, config, config_kwargs, labels", HEADS)
def test_a_student_identical_to_its_teacher_has_zero_distillation_loss(
    tmp_path, cls, config, config_kwargs, labels, attention_loss
):
    teacher = make_model(cls, config(**config_kwargs))
    student = copy.deepcopy(teacher)
    trainer = IlkdTrainer(
        model=student, teacher_model=teacher, args=ilkd_args(tmp_path, attention_loss=attention_loss, temperature=2.0)
    )
    batch = batch_of(make_dataset(4, labels))
    components, _ = trainer.distillation_losses(student.train(), batch)
    assert set(components) == {"embedding", "hidden", "attention", "logits", "task"}
    for name in ("embedding", "hidden", "attention", "logits"):
        assert abs(components[name].item()) < 1e-12, name
    # The same check fails as soon as the student differs from its teacher.
    with torch.no_grad():
        for parameter in student.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.05)
    components, _ = trainer.distillation_losses(student, batch)
    for name in ("embedding", "hidden", "attention", "logits"):
        assert components[name].item() > 1e-6, name


def masked_mean(values):
    return sum(values) / len(values)


def test_gpt2_losses_against_a_dense_computation_with_causality_and_padding(tmp_path):
    """Every term from the models' weights, by hand: future positions and padding never enter."""
    teacher = make_model(GPT2LMHeadModel, gpt2_config(layers=1), seed=0)
    student = make_model(GPT2LMHeadModel, gpt2_config(layers=1), seed=1)
    trainer = IlkdTrainer(model=student, teacher_model=teacher, args=ilkd_args(tmp_path, temperature=2.0))
    batch = batch_of(make_dataset(3, labels=None, seed=3))
    components, _ = trainer.distillation_losses(student.train(), batch)

    real = batch["attention_mask"].bool()
    outputs = {name: model(**batch, output_hidden_states=True) for name, model in [("s", student), ("t", teacher)]}
    scores = {}
    for name, model in [("s", student), ("t", teacher)]:
        block = model.transformer.h[0]
        query, key, _ = block.attn.c_attn(block.ln_1(outputs[name].hidden_states[0])).split(32, dim=2)
        scores[name] = explicit_scores(query, key, heads=4).detach()
    tokens = [(b, q) for b in range(3) for q in range(SEQ) if real[b, q]]
    attention = masked_mean([
        masked_mean([
            masked_mean([(scores["s"][b, h, q, k] - scores["t"][b, h, q, k]).item() ** 2
                         for k in range(q + 1) if real[b, k]])
            for h in range(4)
        ])
        for b, q in tokens
    ])

    def token_mse(layer):
        s, t = outputs["s"].hidden_states[layer], outputs["t"].hidden_states[layer]
        return masked_mean([((s[b, q] - t[b, q]) ** 2).mean().item() for b, q in tokens])

    def kl(b, q):
        p_s = torch.softmax(outputs["s"].logits[b, q] / 2.0, -1)
        p_t = torch.softmax(outputs["t"].logits[b, q] / 2.0, -1)
        return 4.0 * (p_t * (p_t / p_s).log()).sum().item()

    assert components["attention"].item() == pytest.approx(attention, rel=1e-9)
    assert components["embedding"].item() == pytest.approx(token_mse(0), rel=1e-9)
    assert components["hidden"].item() == pytest.approx(token_mse(1), rel=1e-9)
    assert components["logits"].item() == pytest.approx(masked_mean([kl(b, q) for b, q in tokens]), rel=1e-9)


def test_bert_kl_attention_against_a_dense_computation_with_padding(tmp_path):
    teacher = make_model(BertForMaskedLM, bert_config(layers=1), seed=0)
    student = make_model(BertForMaskedLM, bert_config(layers=1), seed=1)
    trainer = IlkdTrainer(model=student, teacher_model=teacher, args=ilkd_args(tmp_path, attention_loss="kl"))
    batch = batch_of(make_dataset(3, labels=None, seed=4))
    components, _ = trainer.distillation_losses(student.train(), batch)
    real = batch["attention_mask"].bool()
    probabilities = {}
    for name, model in [("s", student), ("t", teacher)]:
        hidden = model(**batch, output_hidden_states=True).hidden_states[0]
        attention = model.bert.encoder.layer[0].attention.self
        scores = explicit_scores(attention.query(hidden), attention.key(hidden), heads=4).detach()
        probabilities[name] = scores.masked_fill(~real[:, None, None, :], -math.inf).softmax(-1)
    expected = masked_mean([
        masked_mean([
            sum(probabilities["t"][b, h, q, k].item() * math.log(probabilities["t"][b, h, q, k].item()
                                                                 / probabilities["s"][b, h, q, k].item())
                for k in range(SEQ) if real[b, k])
            for h in range(4)
        ])
        for b in range(3) for q in range(SEQ) if real[b, q]
    ])
    assert components["attention"].item() == pytest.approx(expected, rel=1e-9)


def test_a_half_precision_teacher_is_kept_in_its_dtype_and_losses_run_in_float32(tmp_path):
    teacher = make_model(BertForMaskedLM, bert_config(), dtype=torch.bfloat16)
    student = make_model(BertForMaskedLM, bert_config(hidden=16), seed=1, dtype=torch.float32)
    trainer = IlkdTrainer(model=student, teacher_model=teacher, args=ilkd_args(tmp_path, attention_loss="kl"))
    assert next(trainer.teacher_model.parameters()).dtype == torch.bfloat16
    assert trainer.projection.hidden.weight.dtype == torch.float32
    components, _ = trainer.distillation_losses(student.train(), batch_of(make_dataset(4, "tokens")))
    for name, value in components.items():
        assert value.dtype == torch.float32 and torch.isfinite(value), name
    sum(components.values()).backward()
    assert all(torch.isfinite(p.grad).all() for p in student.parameters() if p.grad is not None)


def test_hidden_sizes_that_differ_are_projected(tmp_path):
    teacher = make_model(BertForSequenceClassification, bert_config(hidden=32, layers=4, num_labels=3))
    student = make_model(BertForSequenceClassification, bert_config(hidden=16, layers=2, num_labels=3))
    trainer = IlkdTrainer(model=student, teacher_model=teacher, args=ilkd_args(tmp_path))
    assert trainer.layer_map == [1, 3]
    assert trainer.projection.hidden.weight.shape == (32, 16) and trainer.projection.embedding.weight.shape == (32, 16)
    batch = batch_of(make_dataset(4, "class"))
    components, _ = trainer.distillation_losses(student.train(), batch)
    teacher_hidden = teacher(**batch, output_hidden_states=True).hidden_states
    student_hidden = student(**batch, output_hidden_states=True).hidden_states
    real = batch["attention_mask"].bool()
    expected = masked_mean([
        ((trainer.projection.hidden(student_hidden[s + 1][real]) - teacher_hidden[t + 1][real]) ** 2).mean().item()
        for s, t in enumerate([1, 3])
    ])
    assert components["hidden"].item() == pytest.approx(expected, rel=1e-9)
    # Same width: no projection.
    same = IlkdTrainer(model=make_model(BertForSequenceClassification, bert_config(num_labels=3, layers=4)),
                       teacher_model=teacher, args=ilkd_args(tmp_path))
    assert same.projection is None


# ---- training ---------------------------------------------------------------------------------------------------


def distil(tmp_path, student, teacher, data, **kwargs):
    trainer = IlkdTrainer(model=student, teacher_model=teacher, args=ilkd_args(tmp_path, **kwargs), train_dataset=data)
    trainer.train()
    return trainer


def test_gradient_accumulation_matches_one_large_batch(tmp_path):
    """2 steps of batch 4 (and 4 of batch 2) give the update of 1 step of batch 8, though the micro-batches hold
    different numbers of real tokens; the projection's update too."""
    teacher = make_model(BertForSequenceClassification, bert_config(hidden=32, layers=4, num_labels=3))
    student = make_model(BertForSequenceClassification, bert_config(hidden=16, layers=2, num_labels=3), seed=1)
    data = make_dataset(8, "class")
    settings = dict(max_steps=1, optim="sgd", learning_rate=0.5, alpha_task=1.0, lr_scheduler_type="constant")
    runs = {}
    for batch_size, accumulation in [(8, 1), (4, 2), (2, 4)]:
        trainer = distil(tmp_path / f"{batch_size}", copy.deepcopy(student), teacher, data,
                         per_device_train_batch_size=batch_size, gradient_accumulation_steps=accumulation, **settings)
        runs[batch_size] = (trainer.model.state_dict(), trainer.projection.state_dict(), trainer.state.log_history[0])
    reference, reference_projection, reference_log = runs[8]
    moved = max((reference[k] - v).abs().max().item() for k, v in student.state_dict().items())
    assert moved > 1e-3
    for batch_size in (4, 2):
        state, projection, log = runs[batch_size]
        for key in reference:
            torch.testing.assert_close(state[key], reference[key], rtol=0, atol=1e-10, msg=key)
        for key in reference_projection:
            torch.testing.assert_close(projection[key], reference_projection[key], rtol=0, atol=1e-10, msg=key)
        for name in ("loss_embedding", "loss_hidden", "loss_attention", "loss_logits", "loss_task"):
            assert log[name] == pytest.approx(reference_log[name], rel=1e-9), name
        assert log["loss"] == pytest.approx(reference_log["loss"], rel=1e-6)


def test_each_component_is_logged_and_averaged_over_the_logging_interval(tmp_path):
    teacher = make_model(GPT2LMHeadModel, gpt2_config(layers=2))
    student = make_model(GPT2LMHeadModel, gpt2_config(layers=1), seed=1)
    data = make_dataset(16, "tokens")
    names = ["loss_embedding", "loss_hidden", "loss_attention", "loss_logits", "loss_task"]
    every_step = distil(tmp_path / "1", copy.deepcopy(student), teacher, data, max_steps=4, alpha_task=0.5,
                        attention_loss="kl").state.log_history
    every_two = distil(tmp_path / "2", copy.deepcopy(student), teacher, data, max_steps=4, alpha_task=0.5,
                       attention_loss="kl", logging_steps=2).state.log_history
    steps = [log for log in every_step if "loss" in log]
    assert len(steps) == 4
    for log in steps:
        weighted = sum(log[name] for name in names[:4]) + 0.5 * log["loss_task"]
        assert log["loss"] == pytest.approx(weighted, rel=1e-6)  # the Trainer sums `loss` in float32
    pairs = [log for log in every_two if "loss" in log]
    assert [log["step"] for log in pairs] == [2, 4]
    for pair, first, second in zip(pairs, steps[0::2], steps[1::2]):
        for name in names[:4]:
            assert pair[name] == pytest.approx((first[name] + second[name]) / 2, rel=1e-9), name
        # Transformers computes the causal-LM loss, and the Trainer sums `loss`, in float32.
        for name in ("loss_task", "loss"):
            assert pair[name] == pytest.approx((first[name] + second[name]) / 2, rel=1e-6), name


def trained_teacher(cls, config, data):
    """A tiny dense teacher that has learnt something of the labels, so that its targets carry information."""
    teacher = make_model(cls, config, dtype=torch.float32)
    batch = batch_of(data)
    optimizer = torch.optim.AdamW(teacher.parameters(), lr=3e-3)
    teacher.train()
    for _ in range(20):
        optimizer.zero_grad()
        teacher(**batch).loss.backward()
        optimizer.step()
    return teacher.eval()


KRONECKER_STUDENTS = [
    pytest.param(BertForSequenceClassification, bert_config, {"num_labels": 3}, "class",
                 ("KroneckerBertConfig", "KroneckerBertForSequenceClassification"), {"attention_loss": "mse_scores"},
                 id="kronecker-bert"),
    # GPT-2's embedding output has no LayerNorm: entries of std ~0.03, so its MSE is ~100x smaller than the others.
    pytest.param(GPT2LMHeadModel, gpt2_config, {}, "tokens", ("KroneckerGPT2Config", "KroneckerGPT2LMHeadModel"),
                 {"attention_loss": "kl", "alpha_embedding": 100.0}, id="kngpt2"),
]


@pytest.mark.parametrize("teacher_cls, config, config_kwargs, labels, student_names, loss_args", KRONECKER_STUDENTS)
def test_distilling_a_kronecker_student_lowers_every_component(
    tmp_path, capsys, teacher_cls, config, config_kwargs, labels, student_names, loss_args
):
    import kron_transformers

    data = make_dataset(64, labels, seed=5)
    teacher = trained_teacher(teacher_cls, config(**config_kwargs), data)
    config_cls, student_cls = (getattr(kron_transformers, name) for name in student_names)
    torch.manual_seed(0)
    # A Kronecker student of the teacher's shape (4x fewer parameters in each factored map), trained from scratch.
    student = student_cls(config_cls.from_dense_config(teacher.config, 4))
    assert any(isinstance(module, kron_transformers.KroneckerLinear) for module in student.modules())
    args = ilkd_args(tmp_path, max_steps=40, learning_rate=1e-2, alpha_task=1.0, per_device_train_batch_size=16,
                     logging_steps=4, **loss_args)
    trainer = IlkdTrainer(model=student, teacher_model=teacher, args=args, train_dataset=data)
    everything = batch_of(data)

    def measured():
        """Each component on all 64 examples at once, and how often the student's prediction is the teacher's."""
        with torch.no_grad():
            components, outputs = trainer.distillation_losses(student.train(), everything)
            teacher_logits = teacher(**{k: v for k, v in everything.items() if k != "labels"}).logits
        agree = outputs.logits.argmax(-1) == teacher_logits.argmax(-1)
        if agree.dim() == 2:  # per token: real tokens only
            agree = agree[everything["attention_mask"].bool()]
        return {name: value.item() for name, value in components.items()}, agree.double().mean().item()

    before, agreement_before = measured()
    trainer.train()
    after, agreement_after = measured()
    # On the same fixed data (no dropout), not on running means: every term fell and the student imitates the teacher
    # more often than the untrained student did.
    for name in before:
        assert after[name] < before[name], (name, before[name], after[name])
    assert agreement_after > agreement_before, (agreement_before, agreement_after)
    logs = [log for log in trainer.state.log_history if "loss" in log]
    first, last = logs[0], logs[-1]  # each the mean over one epoch of the same 64 examples
    names = ("loss", "loss_embedding", "loss_hidden", "loss_attention", "loss_logits", "loss_task")
    with capsys.disabled():
        print(f"\n{student_cls.__name__} <- {teacher_cls.__name__}, first -> last logged value (4-step means):")
        for name in names:
            print(f"  {name:15s} {first[name]:.5f} -> {last[name]:.5f}")
        print(f"  agreement with the teacher's predictions: {agreement_before:.3f} -> {agreement_after:.3f}")
    for name in names:
        assert last[name] < first[name], name


def test_resume_from_checkpoint_reaches_the_uninterrupted_weights(tmp_path):
    teacher = make_model(BertForSequenceClassification, bert_config(hidden=32, layers=4, num_labels=3),
                         dtype=torch.float32)
    student = make_model(BertForSequenceClassification, bert_config(hidden=16, layers=2, num_labels=3), seed=1,
                         dtype=torch.float32)
    data = make_dataset(16, "class")
    settings = dict(max_steps=8, save_strategy="steps", save_steps=4, alpha_task=1.0, learning_rate=1e-2)
    full = distil(tmp_path / "full", copy.deepcopy(student), teacher, data, **settings)
    checkpoint = tmp_path / "full" / "checkpoint-4"

    # The checkpoint holds the student alone, loadable as a plain Transformers model, and the projection beside it.
    assert PROJECTION_WEIGHTS_NAME in os.listdir(checkpoint)
    assert set(load_file(checkpoint / PROJECTION_WEIGHTS_NAME)) == {
        "embedding.weight", "embedding.bias", "hidden.weight", "hidden.bias"}
    assert not any("projection" in key for key in load_file(checkpoint / "model.safetensors"))
    reloaded, info = BertForSequenceClassification.from_pretrained(checkpoint, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert ATTENTION_RECORDING_IMPLEMENTATION not in (checkpoint / "config.json").read_text()

    resumed = IlkdTrainer(model=copy.deepcopy(student), teacher_model=teacher, train_dataset=data,
                          args=ilkd_args(tmp_path / "resumed", **settings))
    resumed.train(resume_from_checkpoint=str(checkpoint))
    assert resumed.state.global_step == 8
    for key, value in full.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[key], value, rtol=0, atol=1e-6, msg=key)
    for key, value in full.projection.state_dict().items():
        torch.testing.assert_close(resumed.projection.state_dict()[key], value, rtol=0, atol=1e-6, msg=key)

    os.remove(checkpoint / PROJECTION_WEIGHTS_NAME)
    with pytest.raises(OSError, match=f"has no {PROJECTION_WEIGHTS_NAME}"):
        IlkdTrainer(model=copy.deepcopy(student), teacher_model=teacher, train_dataset=data,
                    args=ilkd_args(tmp_path / "again", **settings)).train(resume_from_checkpoint=str(checkpoint))


def test_after_training_the_teacher_is_untouched_and_the_student_keeps_its_backend(tmp_path):
    teacher = make_model(GPT2LMHeadModel, gpt2_config(layers=2))
    teacher_state = {k: v.clone() for k, v in teacher.state_dict().items()}
    student = make_model(GPT2LMHeadModel, gpt2_config(layers=2), seed=1)
    trainer = distil(tmp_path, student, teacher, make_dataset(8, "tokens"), max_steps=2)
    metrics = trainer.evaluate(eval_dataset=make_dataset(4, "tokens", seed=9))
    assert math.isfinite(metrics["eval_loss"])
    assert not teacher.training and all(not p.requires_grad and p.grad is None for p in teacher.parameters())
    for key, value in teacher.state_dict().items():
        assert torch.equal(value, teacher_state[key]), key
    assert student.config._attn_implementation == "sdpa" and teacher.config._attn_implementation == "sdpa"
    trainer.save_model(str(tmp_path / "final"))
    config = json.loads((tmp_path / "final" / "config.json").read_text())
    assert ATTENTION_RECORDING_IMPLEMENTATION not in json.dumps(config)
    assert not (tmp_path / "final" / PROJECTION_WEIGHTS_NAME).exists()  # same width: no projection


def test_each_component_reaches_tensorboard(tmp_path):
    pytest.importorskip("tensorboard", reason="tensorboard is in the test extra")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    teacher = make_model(GPT2LMHeadModel, gpt2_config(layers=2))
    student = make_model(GPT2LMHeadModel, gpt2_config(layers=1), seed=1)
    trainer = distil(tmp_path, student, teacher, make_dataset(8, "tokens"), max_steps=2, alpha_task=0.5,
                     attention_loss="kl", report_to="tensorboard")
    logged = [log for log in trainer.state.log_history if "loss" in log]
    events = EventAccumulator(str(next(tmp_path.rglob("events.out.tfevents.*")).parent))
    events.Reload()
    for name in ("loss_embedding", "loss_hidden", "loss_attention", "loss_logits", "loss_task"):
        scalars = events.Scalars(f"train/{name}")
        assert [s.step for s in scalars] == [1, 2]
        assert [s.value for s in scalars] == pytest.approx([log[name] for log in logged], rel=1e-5)


def test_teacher_normalised_losses_divide_each_term_by_the_teachers_mean_square(tmp_path):
    teacher = make_model(BertForSequenceClassification, bert_config(layers=2, num_labels=3), seed=0)
    student = make_model(BertForSequenceClassification, bert_config(layers=2, num_labels=3), seed=1)
    batch = batch_of(make_dataset(4, labels="class", seed=3))
    plain = IlkdTrainer(model=student, teacher_model=teacher, args=ilkd_args(tmp_path, alpha_task=1.0))
    normalised = IlkdTrainer(model=student, teacher_model=teacher,
                             args=ilkd_args(tmp_path, alpha_task=1.0, loss_normalization="teacher"))
    raw, _ = plain.distillation_losses(student.train(), batch)
    scaled, _ = normalised.distillation_losses(student.train(), batch)

    real = batch["attention_mask"].bool()
    with torch.no_grad():
        outputs = teacher(**{k: v for k, v in batch.items() if k != "labels"}, output_hidden_states=True)
    mean_square = [(h[real] ** 2).mean().item() for h in outputs.hidden_states]
    assert scaled["embedding"].item() == pytest.approx(raw["embedding"].item() / mean_square[0], rel=1e-9)
    # Per layer: the hidden term is the mean over layers of each layer's MSE over its own scale.
    with torch.no_grad():
        student_hidden = student(**{k: v for k, v in batch.items() if k != "labels"}, output_hidden_states=True)
    per_layer = [((student_hidden.hidden_states[i][real] - outputs.hidden_states[i][real]) ** 2).mean().item()
                 / mean_square[i] for i in (1, 2)]
    assert scaled["hidden"].item() == pytest.approx(sum(per_layer) / 2, rel=1e-9)
    # Attention: scores dwarf hidden states in size; after normalisation the terms are of one order.
    assert scaled["attention"].item() != pytest.approx(raw["attention"].item())
    for name in ("logits", "task"):  # scale-free terms are unchanged
        assert scaled[name].item() == pytest.approx(raw[name].item(), rel=1e-12)
    scales = normalised._loss_scales
    assert len(scales["hidden"]) == 3 and len(scales["attention"]) == 2
    with record_attention_scores(teacher) as records, torch.no_grad():
        teacher(**{k: v for k, v in batch.items() if k != "labels"})
    for layer, record in enumerate(records):
        attended = record.mask.expand_as(record.scores) & real[:, None, :, None]
        rows = [(record.scores[b, h, q][attended[b, h, q]] ** 2).mean().item()
                for b in range(4) for q in range(SEQ) if real[b, q] for h in range(4)]
        assert scales["attention"][layer].item() == pytest.approx(sum(rows) / len(rows), rel=1e-9)


def test_teacher_normalised_losses_keep_gradient_accumulation_exact(tmp_path):
    teacher = make_model(BertForSequenceClassification, bert_config(hidden=32, layers=2, num_labels=3))
    student = make_model(BertForSequenceClassification, bert_config(hidden=32, layers=2, num_labels=3), seed=1)
    data = make_dataset(8, "class")
    settings = dict(max_steps=1, optim="sgd", learning_rate=0.5, lr_scheduler_type="constant",
                    loss_normalization="teacher")
    states = {}
    for batch_size, accumulation in [(8, 1), (2, 4)]:
        trainer = distil(tmp_path / f"{batch_size}", copy.deepcopy(student), teacher, data,
                         per_device_train_batch_size=batch_size, gradient_accumulation_steps=accumulation, **settings)
        states[batch_size] = trainer.model.state_dict()
    for key in states[8]:
        torch.testing.assert_close(states[2][key], states[8][key], rtol=0, atol=1e-10, msg=key)


def test_loss_normalization_must_be_known(tmp_path):
    with pytest.raises(ValueError, match="loss_normalization must be 'none' or 'teacher'"):
        ilkd_args(tmp_path, loss_normalization="layer")


def test_micro_batches_without_labelled_items_add_nothing_to_the_task_loss(tmp_path):
    """An MLM micro-batch with no masked token has a NaN mean loss: it is skipped, not multiplied by its zero share,
    and the logged loss is what was optimised."""
    teacher = make_model(BertForMaskedLM, bert_config())
    student = make_model(BertForMaskedLM, bert_config(), seed=1)
    data = make_dataset(8, "tokens")
    for example in data[1:]:  # one labelled sequence in 8: at least 3 of 4 micro-batches of 2 have no label
        example["labels"] = torch.full_like(example["labels"], -100)
    settings = dict(max_steps=1, optim="sgd", learning_rate=0.5, alpha_task=1.0, lr_scheduler_type="constant")
    names = ("embedding", "hidden", "attention", "logits", "task")
    runs = {}
    for batch_size, accumulation in [(8, 1), (2, 4)]:
        trainer = distil(tmp_path / f"{batch_size}", copy.deepcopy(student), teacher, data,
                         per_device_train_batch_size=batch_size, gradient_accumulation_steps=accumulation, **settings)
        runs[batch_size] = trainer.model.state_dict(), trainer.state.log_history[0]
    (reference, reference_log), (state, log) = runs[8], runs[2]
    assert all(torch.isfinite(value).all() for value in state.values())
    for key in reference:
        torch.testing.assert_close(state[key], reference[key], rtol=0, atol=1e-10, msg=key)
    assert log["loss_task"] == pytest.approx(reference_log["loss_task"], rel=1e-9) and log["loss_task"] > 0
    assert log["loss"] == pytest.approx(sum(log[f"loss_{name}"] for name in names), rel=1e-6)

    # No labelled item at all: the task term is 0 and the logged loss is the sum of the other terms.
    data[0]["labels"] = torch.full_like(data[0]["labels"], -100)
    trainer = distil(tmp_path / "none", copy.deepcopy(student), teacher, data, per_device_train_batch_size=2,
                     gradient_accumulation_steps=4, **settings)
    log = trainer.state.log_history[0]
    assert log["loss_task"] == 0 and log["loss_hidden"] > 0
    assert log["loss"] == pytest.approx(sum(log[f"loss_{name}"] for name in names), rel=1e-6)
    assert all(torch.isfinite(value).all() for value in trainer.model.state_dict().values())
    moved = max((trainer.model.state_dict()[k] - v).abs().max().item() for k, v in student.state_dict().items())
    assert moved > 1e-4


# ---- set-ups that would silently distil the wrong thing ----------------------------------------------------------


def test_a_teacher_that_is_or_shares_weights_with_the_student_raises(tmp_path):
    student = make_model(BertForMaskedLM, bert_config())
    with pytest.raises(ValueError, match="teacher_model is the student itself"):
        IlkdTrainer(model=student, teacher_model=student, args=ilkd_args(tmp_path))
    teacher = make_model(BertForMaskedLM, bert_config(), seed=1)
    teacher.bert.embeddings = student.bert.embeddings
    with pytest.raises(ValueError, match=r"share 5 parameters? .*bert\.embeddings\.word_embeddings\.weight"):
        IlkdTrainer(model=student, teacher_model=teacher, args=ilkd_args(tmp_path))
    assert all(p.requires_grad for p in student.parameters())  # nothing was frozen


def test_gpt2_final_layer_norm_pairs_last_layers_only(tmp_path):
    """GPT-2's last hidden state is after ln_f, the others before it: only last-with-last compares like with like."""
    teacher = make_model(GPT2LMHeadModel, gpt2_config(layers=4))
    student = make_model(GPT2LMHeadModel, gpt2_config(layers=2), seed=1)
    for layer_map in ([1, 2], [3, 3]):
        with pytest.raises(ValueError, match=r"after its final norm \(ln_f\).*layer_map\[-1\] = 3"):
            IlkdTrainer(model=student, teacher_model=teacher, args=ilkd_args(tmp_path, layer_map=layer_map))
    IlkdTrainer(model=student, teacher_model=teacher, args=ilkd_args(tmp_path, layer_map=[0, 3]))
    # Without the hidden-state loss the pairing of hidden states does not matter.
    IlkdTrainer(model=student, teacher_model=teacher, args=ilkd_args(tmp_path, layer_map=[1, 2], alpha_hidden=0))
    # BERT has no final norm: any pairing is like with like.
    bert_teacher = make_model(BertForMaskedLM, bert_config(layers=4))
    IlkdTrainer(model=make_model(BertForMaskedLM, bert_config()), teacher_model=bert_teacher,
                args=ilkd_args(tmp_path, layer_map=[1, 2]))


def test_gradient_checkpointing_enabled_on_the_model_raises_with_the_attention_loss(tmp_path):
    teacher = make_model(BertForMaskedLM, bert_config())
    student = make_model(BertForMaskedLM, bert_config(), seed=1)
    # `activation_checkpointing_*` since transformers 5.23, `gradient_checkpointing_*` (deprecated since) before.
    prefix = "activation" if hasattr(student, "activation_checkpointing_enable") else "gradient"
    getattr(student, f"{prefix}_checkpointing_enable")()
    with pytest.raises(ValueError, match="gradient checkpointing is enabled on the student"):
        IlkdTrainer(model=student, teacher_model=teacher, args=ilkd_args(tmp_path))
    IlkdTrainer(model=student, teacher_model=teacher, args=ilkd_args(tmp_path, alpha_attention=0))
    # Enabled after construction: refused at the first step, before any update.
    getattr(student, f"{prefix}_checkpointing_disable")()
    trainer = IlkdTrainer(model=student, teacher_model=teacher, args=ilkd_args(tmp_path))
    getattr(student, f"{prefix}_checkpointing_enable")()
    with pytest.raises(ValueError, match="gradient checkpointing is enabled on the student"):
        trainer.compute_loss(student.train(), batch_of(make_dataset(2, "tokens")))


def test_an_additive_float_attention_mask_raises_and_a_0_1_float_mask_is_a_mask(tmp_path):
    teacher = make_model(BertForMaskedLM, bert_config())
    student = make_model(BertForMaskedLM, bert_config(), seed=1)
    trainer = IlkdTrainer(model=student, teacher_model=teacher, args=ilkd_args(tmp_path))
    batch = batch_of(make_dataset(4, "tokens"))
    reference, _ = trainer.distillation_losses(student.train(), batch)
    as_float = {**batch, "attention_mask": batch["attention_mask"].double()}
    components, _ = trainer.distillation_losses(student, as_float)
    for name, value in reference.items():
        assert components[name].item() == pytest.approx(value.item(), rel=1e-12), name
    additive = {**batch, "attention_mask": (1.0 - batch["attention_mask"].double()) * -1e4}
    with pytest.raises(ValueError, match=r"attention_mask must hold 0 and 1 .* -10000"):
        trainer.distillation_losses(student, additive)
    with pytest.raises(ValueError, match=r"attention_mask must have the shape of input_ids"):
        trainer.distillation_losses(student, {**batch, "attention_mask": batch["attention_mask"][:, None, None, :]})


def test_data_parallel_raises_with_the_attention_loss(tmp_path, monkeypatch):
    teacher = make_model(BertForMaskedLM, bert_config())
    student = make_model(BertForMaskedLM, bert_config(), seed=1)
    trainer = IlkdTrainer(model=student, teacher_model=teacher, args=ilkd_args(tmp_path))
    with pytest.raises(ValueError, match="nn.DataParallel"):
        trainer.compute_loss(torch.nn.DataParallel(student).train(), batch_of(make_dataset(2, "tokens")))
    monkeypatch.setattr(IlkdTrainingArguments, "n_gpu", property(lambda self: 2))
    with pytest.raises(ValueError, match="nn.DataParallel"):
        IlkdTrainer(model=student, teacher_model=teacher, args=ilkd_args(tmp_path))


def test_multiple_choice_is_distilled_per_choice(tmp_path):
    from transformers import BertForMultipleChoice

    teacher = make_model(BertForMultipleChoice, bert_config(), seed=0)
    student = make_model(BertForMultipleChoice, bert_config(hidden=16), seed=1)
    trainer = IlkdTrainer(model=student, teacher_model=teacher, args=ilkd_args(tmp_path, temperature=2.0,
                                                                               alpha_task=1.0))
    examples = make_dataset(6, labels=None)
    batch = {key: torch.stack([e[key] for e in examples]).view(2, 3, SEQ) for key in ("input_ids", "attention_mask")}
    batch["labels"] = torch.tensor([0, 2])
    components, _ = trainer.distillation_losses(student.train(), batch)
    flat = {key: batch[key].view(6, SEQ) for key in ("input_ids", "attention_mask")}
    real = flat["attention_mask"].bool()
    student_hidden = student.bert(**flat, output_hidden_states=True).hidden_states
    teacher_hidden = teacher.bert(**flat, output_hidden_states=True).hidden_states
    expected = masked_mean([
        ((trainer.projection.hidden(student_hidden[s + 1][real]) - teacher_hidden[t + 1][real]) ** 2).mean().item()
        for s, t in enumerate(trainer.layer_map)
    ])
    assert components["hidden"].item() == pytest.approx(expected, rel=1e-9)
    s_logits, t_logits = student(**batch).logits, teacher(**batch).logits  # (2, 3): one score per choice
    p_s, p_t = torch.softmax(s_logits / 2, -1), torch.softmax(t_logits / 2, -1)
    kl = 4.0 * (p_t * (p_t / p_s).log()).sum(-1).mean().item()
    assert components["logits"].item() == pytest.approx(kl, rel=1e-9)
    distil(tmp_path / "train", student, teacher, [{k: v[i] for k, v in batch.items()} for i in range(2)],
           max_steps=2, alpha_task=1.0)


@pytest.mark.parametrize("cls, config, labels, name", [
    (BertForSequenceClassification, lambda: bert_config(num_labels=3), "class", "bert.embeddings.position_embeddings"),
    (GPT2LMHeadModel, gpt2_config, "tokens", "transformer.wpe"),
])
@pytest.mark.parametrize("freeze", [True, False])
def test_freeze_position_embeddings_keeps_them_and_trains_the_rest(tmp_path, cls, config, labels, name, freeze):
    teacher = make_model(cls, config())
    student = make_model(cls, config(), seed=1)
    before = {k: v.clone() for k, v in student.state_dict().items()}
    position = before[f"{name}.weight"]
    distil(tmp_path, student, teacher, make_dataset(8, labels), max_steps=2, freeze_position_embeddings=freeze)
    after = student.state_dict()
    # Positions 0..SEQ-1 get a gradient from every batch: without freezing they move.
    assert torch.equal(after[f"{name}.weight"], position) == freeze
    moved = [k for k in before if not torch.equal(before[k], after[k])]
    assert len(moved) > 10 and (f"{name}.weight" in moved) != freeze


def test_freeze_position_embeddings_refuses_a_model_without_learned_positions(tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=16)
    student, teacher = make_model(LlamaForCausalLM, config, seed=1), make_model(LlamaForCausalLM, config)
    with pytest.raises(ValueError, match="freeze_position_embeddings=True, but LlamaForCausalLM has no learned"):
        IlkdTrainer(model=student, teacher_model=teacher, train_dataset=make_dataset(4, "tokens"),
                    args=ilkd_args(tmp_path, max_steps=1, freeze_position_embeddings=True, alpha_attention=0))
