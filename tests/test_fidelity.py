"""Teacher-student fidelity beyond the distillation data: agreement and KL by length, long labelled inputs."""

import math

import pytest
import torch
from transformers import AutoTokenizer, BertConfig, BertForMaskedLM, BertForSequenceClassification

from kron_transformers import assets, fidelity


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(assets.minilm_path())


def tiny(cls, seed, **overrides):
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=30522, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=128, **overrides)
    return cls(config).eval()


TEXTS = ["word " * 10, "other words here " * 30, "a longer text that goes on " * 40]


def test_encode_at_length_keeps_only_long_enough_texts_cut_exactly(tokenizer):
    for keep in ("start", "end"):
        encoded = fidelity.encode_at_length(tokenizer, TEXTS, 64, keep=keep)
        assert len(encoded) == 2  # the 10-word text is too short
        assert all(len(ids) == 64 and ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id
                   for ids in encoded)
    start = fidelity.encode_at_length(tokenizer, TEXTS[2:], 16, keep="start")[0]
    end = fidelity.encode_at_length(tokenizer, TEXTS[2:], 16, keep="end")[0]
    body = tokenizer(TEXTS[2], add_special_tokens=False)["input_ids"]
    assert start[1:-1] == body[:14] and end[1:-1] == body[-14:]
    with pytest.raises(ValueError, match="keep must be"):
        fidelity.encode_at_length(tokenizer, TEXTS, 16, keep="middle")


def test_identical_models_agree_fully_with_zero_kl(tokenizer):
    model = tiny(BertForSequenceClassification, 0)
    results = fidelity.agreement_by_length(model, model, tokenizer, TEXTS, lengths=(32, 64, 1000))
    assert sorted(results) == [32, 64, 128]  # 1000 is capped at max_position_embeddings
    assert results[32]["items"] == 2 and results[128]["items"] == 1
    for row in results.values():
        assert row["agreement"] == 1.0 and row["kl"] == pytest.approx(0.0, abs=1e-6)


def test_agreement_and_kl_match_a_hand_computation(tokenizer):
    teacher, student = tiny(BertForSequenceClassification, 0), tiny(BertForSequenceClassification, 1)
    sequences = fidelity.encode_at_length(tokenizer, TEXTS, 32)
    with torch.no_grad():
        t = torch.cat([teacher(input_ids=torch.tensor([s])).logits for s in sequences]).log_softmax(-1)
        s = torch.cat([student(input_ids=torch.tensor([q])).logits for q in sequences]).log_softmax(-1)
    expected_kl = (t.exp() * (t - s)).sum(-1).mean().item()
    expected_agreement = (t.argmax(-1) == s.argmax(-1)).float().mean().item()
    result = fidelity.agreement_by_length(teacher, student, tokenizer, TEXTS, lengths=(32,))[32]
    assert result["kl"] == pytest.approx(expected_kl, rel=1e-4) and result["kl"] > 0
    assert result["agreement"] == pytest.approx(expected_agreement)


def test_token_level_heads_count_every_real_token(tokenizer):
    teacher, student = tiny(BertForMaskedLM, 0), tiny(BertForMaskedLM, 1)
    result = fidelity.agreement_by_length(teacher, student, tokenizer, TEXTS, lengths=(32,))[32]
    assert result["items"] == 2 * 32 and 0 <= result["agreement"] < 1 and result["kl"] > 0


def test_joined_reviews_never_mix_groups_or_labels(tokenizer):
    texts = ["good fun " * 5, "great cast " * 5, "dull plot " * 5, "awful mess " * 5, "good again " * 5, "lonely " * 3]
    labels = [1, 1, 0, 0, 1, 0]
    groups = ["m1", "m1", "m1", "m1", "m2", "m3"]
    sequences, targets = fidelity.joined_reviews(texts, labels, groups, tokenizer, 22)
    # m1 positive: 10 + 10 tokens fill 20; m1 negative likewise; m2 and m3 cannot fill 20 tokens alone.
    assert targets == [1, 0] and all(len(s) == 22 for s in sequences)
    decoded = [tokenizer.decode(s, skip_special_tokens=True) for s in sequences]
    assert "good fun" in decoded[0] and "great cast" in decoded[0] and "dull" not in decoded[0]
    assert "dull plot" in decoded[1] and "awful" in decoded[1]


def test_accuracy_by_length_reports_accuracy_positive_rate_and_agreement(tokenizer):
    teacher = tiny(BertForSequenceClassification, 0)
    texts = ["fine words " * 30, "bad words " * 30] * 3
    labels, groups = [1, 0] * 3, ["a", "b", "c", "d", "e", "f"]
    results = fidelity.accuracy_by_length({"teacher": teacher, "student": teacher}, tokenizer, texts, labels, groups,
                                          lengths=(32,))
    row = results[32]
    sequences, targets = fidelity.joined_reviews(texts, labels, groups, tokenizer, 32)
    predicted = fidelity.predictions(teacher, tokenizer, sequences)
    assert row["examples"] == 6
    assert row["teacher"] == pytest.approx((predicted == torch.tensor(targets)).float().mean().item())
    assert row["student_agreement"] == 1.0 and "teacher_agreement" not in row
    assert row["teacher_positive"] == pytest.approx(predicted.float().mean().item())
    assert math.isnan(fidelity.accuracy_by_length({"t": teacher}, tokenizer, texts[:1], labels[:1], groups[:1],
                                                  lengths=(64,))[64]["t"])


def test_fidelity_warnings_name_a_student_fallen_to_one_class_and_a_large_gap():
    rows = {
        "snippets": {"teacher": 0.80, "teacher_positive": 0.60, "student": 0.78, "student_positive": 0.58},
        "reviews, 256 tokens": {"examples": 84, "teacher": 0.95, "teacher_positive": 0.61, "student": 0.61,
                                "student_positive": 1.0, "student_agreement": 0.62},
        "reviews, 128 tokens": {"teacher": 0.90, "teacher_positive": 0.6, "student": 0.85, "student_positive": 0.03},
    }
    lines = fidelity.fidelity_warnings(rows)
    assert len(lines) == 3, lines
    assert lines[0].startswith("student predicts class 1 for 100% of reviews, 256 tokens (teacher: 61% class 1)")
    assert lines[1] == "student is 34.0 accuracy points below teacher on reviews, 256 tokens (0.6100 vs 0.9500)."
    assert lines[2].startswith("student predicts class 0 for 97% of reviews, 128 tokens")
    # a teacher that itself gives one class to a set is no warning about the student; nor is a small gap
    rows = {"positives": {"teacher": 0.9, "teacher_positive": 0.98, "student": 0.85, "student_positive": 1.0}}
    assert fidelity.fidelity_warnings(rows) == []
    assert fidelity.fidelity_warnings({"x": {"teacher": 0.9, "student": 0.85, "student_positive": float("nan")}}) == []


@pytest.mark.parametrize("kwargs, message", [({"one_class": 0.4}, "one_class must be in"),
                                             ({"max_gap": 2}, "max_gap must be in"),
                                             ({"reference": "dense"}, "no accuracy of the reference model 'dense'")])
def test_fidelity_warnings_reject_bad_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        fidelity.fidelity_warnings({"x": {"teacher": 0.9, "student": 0.8, "student_positive": 0.5}}, **kwargs)
