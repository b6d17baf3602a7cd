"""The speed benchmarks' own arithmetic (benchmarks/eager_profile.py), on tiny models: no timing is asserted."""

import sys
from pathlib import Path

import pytest
import torch
from transformers import BertConfig, BertModel

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import eager_profile  # noqa: E402

from kron_transformers import compress  # noqa: E402


def tiny_bert():
    torch.manual_seed(0)
    return BertModel(BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                intermediate_size=64)).eval()


def batch():
    ids = torch.randint(0, 100, (2, 16), generator=torch.Generator().manual_seed(0))
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def test_linear_flops_count_the_dense_layers_and_the_factor_products():
    dense = tiny_bert()
    tokens, hidden, inner, layers = 2 * 16, 32, 64, 2
    per_layer = 4 * hidden * hidden + 2 * hidden * inner  # q, k, v, attention output; FFN in and out
    pooler = 2 * hidden * hidden  # the pooler reads the first token of each of the 2 sequences
    assert eager_profile.linear_flops(dense, batch()) == 2 * (tokens * layers * per_layer + pooler)
    student = compress(dense, 2.0, show_progress=False).eval()
    assert 0 < eager_profile.linear_flops(student, batch()) < eager_profile.linear_flops(dense, batch())


def test_profile_shares_sum_to_one_with_linear_products_present():
    shares = eager_profile.profile_shares(tiny_bert(), batch(), rounds=1)
    assert set(shares) == {"linear", "copies", "attention", "gelu", "layer_norm", "rest"}
    assert sum(shares.values()) == pytest.approx(1.0)
    assert shares["linear"] > 0 and shares["gelu"] > 0 and shares["layer_norm"] > 0


def test_amdahl_bound():
    assert eager_profile.amdahl_bound(1.0, 0.8, 1.0) == pytest.approx(1.0)
    assert eager_profile.amdahl_bound(1.0, 0.8, 4.0) == pytest.approx(1 / (0.2 + 0.2))
    assert eager_profile.amdahl_bound(2.0, 0.5, 1e12) == pytest.approx(2.0)  # the rest alone: half the time
