"""torch.compile on Kronecker models: one graph (no breaks), outputs and gradients equal to eager."""

import pytest
import torch
import torch._dynamo
from transformers import BertConfig, GPT2Config

from kron_transformers import (
    KroneckerBertConfig,
    KroneckerBertForMaskedLM,
    KroneckerBertForSequenceClassification,
    KroneckerGPT2Config,
    KroneckerGPT2LMHeadModel,
    KroneckerLinear,
)


def tiny_bert(cls=KroneckerBertForSequenceClassification, rank=2):
    dense = BertConfig(vocab_size=96, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                       max_position_embeddings=64, num_labels=3, attn_implementation="sdpa")
    torch.manual_seed(0)
    # A ratio picks a mix of shapes: both multiplication orders, wide and narrow factors, the factored embedding.
    return cls(KroneckerBertConfig.from_dense_config(dense, 4.0, kronecker_rank=rank)).eval()


def tiny_gpt2(rank=1):
    dense = GPT2Config(vocab_size=96, n_embd=32, n_layer=2, n_head=4, n_positions=64, bos_token_id=0, eos_token_id=0,
                       attn_implementation="sdpa")
    torch.manual_seed(0)
    return KroneckerGPT2LMHeadModel(KroneckerGPT2Config.from_dense_config(dense, 2.0, kronecker_rank=rank)).eval()


def batch(vocab=96, shape=(2, 12)):
    ids = torch.randint(0, vocab, shape, generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[0, -3:] = 0
    return {"input_ids": ids, "attention_mask": mask}


@pytest.fixture(autouse=True)
def fresh_dynamo(tmp_path_factory, monkeypatch):
    # A private inductor cache: the shared default (/tmp/torchinductor_$USER) can hold a half-written kernel from a
    # compile that another process was killed in the middle of.
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "inductor"))
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.mark.parametrize("build", [tiny_bert, lambda: tiny_bert(KroneckerBertForMaskedLM, rank=1), tiny_gpt2])
def test_kronecker_models_trace_as_one_graph(build):
    model = build()
    assert any(isinstance(m, KroneckerLinear) for m in model.modules())
    explanation = torch._dynamo.explain(model)(**batch())
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1


def test_inductor_forward_equals_eager():
    model = tiny_bert()
    inputs = batch()
    with torch.no_grad():
        expected = model(**inputs).logits
        compiled = torch.compile(model, fullgraph=True)
        torch.testing.assert_close(compiled(**inputs).logits, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("build", [tiny_bert, tiny_gpt2])
def test_compiled_training_step_equals_eager(build):
    """Forward + backward under compile (AOTAutograd's joint graph; the inductor forward is checked above, and
    compiling the backward with inductor as well takes minutes on a small CPU): the loss and every parameter's
    gradient equal eager's."""
    model = build().train()
    model.config.hidden_dropout_prob = model.config.attention_probs_dropout_prob = 0.0
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    inputs = batch()
    labels = torch.tensor([0, 2]) if hasattr(model, "classifier") else inputs["input_ids"]

    def step(fn):
        model.zero_grad(set_to_none=True)
        # The loss outside the compiled model: Transformers' loss helper logs a one-time warning that dynamo cannot
        # trace under fullgraph (dense GPT2LMHeadModel too); the Kronecker forward and backward are what is tested.
        logits = fn(**inputs).logits
        if not hasattr(model, "classifier"):
            logits, labels_ = logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten()
        else:
            labels_ = labels
        loss = torch.nn.functional.cross_entropy(logits, labels_)
        loss.backward()
        return loss.detach(), {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}

    loss, grads = step(model)
    compiled_loss, compiled_grads = step(torch.compile(model, fullgraph=True, backend="aot_eager"))
    torch.testing.assert_close(compiled_loss, loss, rtol=1e-5, atol=1e-5)
    assert grads.keys() == compiled_grads.keys() and any(name.endswith(".a") for name in grads)
    for name, grad in grads.items():
        torch.testing.assert_close(compiled_grads[name], grad, rtol=1e-4, atol=1e-5, msg=name)
