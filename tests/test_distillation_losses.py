import math

import pytest
import torch

from kron_transformers.distillation import (
    attention_kl_loss,
    attention_score_loss,
    hidden_state_loss,
    logit_mse_loss,
    soft_target_loss,
)


F64 = torch.float64
PADDING = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)  # (batch=2, seq=5)


def pair_mask(padding, causal):
    """(batch, 1, q, k): key padding, and the future when causal, as the models build it."""
    seq = padding.shape[1]
    mask = padding[:, None, None, :].expand(-1, 1, seq, -1)
    if causal:
        mask = mask & torch.ones(seq, seq, dtype=torch.bool).tril()
    return mask


def test_hidden_state_loss_by_hand_ignores_padding():
    torch.manual_seed(0)
    student, teacher = torch.randn(2, 5, 3, dtype=F64), torch.randn(2, 5, 3, dtype=F64)
    student[0, 3:] = 1e300  # garbage in padding must not reach the loss or its gradient
    student.requires_grad_()
    per_token = [
        sum((student[b, s, d].item() - teacher[b, s, d].item()) ** 2 for d in range(3)) / 3
        for b in range(2) for s in range(5) if PADDING[b, s]
    ]
    loss = hidden_state_loss(student, teacher, PADDING)
    assert loss.item() == pytest.approx(sum(per_token) / len(per_token), rel=1e-12)
    assert hidden_state_loss(student, teacher, PADDING, reduction="sum").item() == pytest.approx(sum(per_token))
    loss.backward()
    assert torch.isfinite(student.grad).all() and (student.grad[0, 3:] == 0).all()
    # Without a mask every token counts.
    everything = ((student.detach()[1] - teacher[1]) ** 2).mean()
    assert hidden_state_loss(student.detach()[1:], teacher[1:]).item() == pytest.approx(everything.item())


@pytest.mark.parametrize("causal", [False, True])
def test_attention_score_loss_by_hand(causal):
    torch.manual_seed(1)
    heads = 2
    student, teacher = torch.randn(2, heads, 5, 5), torch.randn(2, heads, 5, 5)
    mask = pair_mask(PADDING, causal) & PADDING[:, None, :, None]  # padding queries do not count either
    # What a model holds at masked entries: finfo.min in one model, 0 (or -inf) in the other.
    student = student.masked_fill(~mask, torch.finfo(torch.float32).min).requires_grad_()
    teacher = teacher.masked_fill(~mask, -math.inf)
    expected = []
    for b in range(2):
        for q in range(5):
            if not PADDING[b, q]:
                continue
            rows = []
            for h in range(heads):
                keys = [k for k in range(5) if mask[b, 0, q, k]]
                squares = [(student[b, h, q, k].item() - teacher[b, h, q, k].item()) ** 2 for k in keys]
                rows.append(sum(squares) / len(keys))
            expected.append(sum(rows) / heads)
    loss = attention_score_loss(student, teacher, mask)
    assert loss.item() == pytest.approx(sum(expected) / len(expected), rel=1e-5)
    total = attention_score_loss(student, teacher, mask, reduction="sum")
    assert total.item() == pytest.approx(sum(expected), rel=1e-5)
    loss.backward()
    assert torch.isfinite(student.grad).all() and (student.grad[~mask.expand_as(student)] == 0).all()


def test_attention_score_loss_query_rows_without_keys_do_not_count():
    student, teacher = torch.zeros(1, 1, 3, 3, dtype=F64), torch.zeros(1, 1, 3, 3, dtype=F64)
    teacher[0, 0, 0] = 2.0  # row 0 differs, but it attends to nothing
    mask = torch.tensor([[0, 0, 0], [1, 1, 0], [1, 1, 1]], dtype=torch.bool)[None, None]
    assert attention_score_loss(student, teacher, mask).item() == 0.0
    teacher[0, 0, 2, 2] = 3.0
    assert attention_score_loss(student, teacher, mask).item() == pytest.approx((9 / 3) / 2)


@pytest.mark.parametrize("causal", [False, True])
def test_attention_kl_loss_by_hand(causal):
    torch.manual_seed(2)
    heads = 3
    student, teacher = torch.randn(2, heads, 5, 5, dtype=F64), torch.randn(2, heads, 5, 5, dtype=F64)
    mask = pair_mask(PADDING, causal) & PADDING[:, None, :, None]
    student_masked = student.masked_fill(~mask, torch.finfo(F64).min).requires_grad_()

    def softmax(row):
        top = max(row)
        exps = [math.exp(x - top) for x in row]
        return [e / sum(exps) for e in exps]

    expected = []
    for b in range(2):
        for q in range(5):
            if not PADDING[b, q]:
                continue
            keys = [k for k in range(5) if mask[b, 0, q, k]]
            kl = 0.0
            for h in range(heads):
                p_s = softmax([student[b, h, q, k].item() for k in keys])
                p_t = softmax([teacher[b, h, q, k].item() for k in keys])
                kl += sum(t * math.log(t / s) for t, s in zip(p_t, p_s))
            expected.append(kl / heads)
    loss = attention_kl_loss(student_masked, teacher, mask)
    assert loss.item() == pytest.approx(sum(expected) / len(expected), rel=1e-10)
    loss.backward()
    assert torch.isfinite(student_masked.grad).all()


@pytest.mark.parametrize("temperature", [1.0, 2.5])
def test_soft_target_loss_by_hand_over_tokens(temperature):
    torch.manual_seed(3)
    student, teacher = torch.randn(2, 5, 4, dtype=F64), torch.randn(2, 5, 4, dtype=F64)
    expected = []
    for b in range(2):
        for s in range(5):
            if PADDING[b, s]:
                p_s = torch.softmax(student[b, s] / temperature, -1).tolist()
                p_t = torch.softmax(teacher[b, s] / temperature, -1).tolist()
                expected.append(temperature**2 * sum(t * math.log(t / q) for t, q in zip(p_t, p_s)))
    loss = soft_target_loss(student, teacher, temperature, mask=PADDING)
    assert loss.item() == pytest.approx(sum(expected) / len(expected), rel=1e-10)


def test_soft_target_loss_over_span_positions_skips_padding():
    """Question answering: a distribution over the real positions of each sequence."""
    torch.manual_seed(4)
    student, teacher = torch.randn(2, 5, dtype=F64), torch.randn(2, 5, dtype=F64)
    student[0, 3:], teacher[0, 3:] = 50.0, -50.0  # padded positions would dominate if they entered the softmax
    expected = []
    for b in range(2):
        positions = PADDING[b].nonzero().flatten()
        p_s = torch.softmax(student[b, positions], -1)
        p_t = torch.softmax(teacher[b, positions], -1)
        expected.append((p_t * (p_t / p_s).log()).sum().item())
    loss = soft_target_loss(student, teacher, class_mask=PADDING)
    assert loss.item() == pytest.approx(sum(expected) / 2, rel=1e-10)


def test_logit_mse_loss_by_hand():
    student = torch.tensor([[0.5], [2.0], [-1.0]], dtype=F64)
    teacher = torch.tensor([[1.0], [1.0], [1.0]], dtype=F64)
    assert logit_mse_loss(student, teacher).item() == pytest.approx((0.25 + 1 + 4) / 3)
    assert logit_mse_loss(student, teacher, reduction="sum").item() == pytest.approx(5.25)
    tokens = torch.randn(2, 5, 2, dtype=F64)
    other = tokens + 1.0
    other[0, 3:] = 1e300
    assert logit_mse_loss(tokens, other, mask=PADDING).item() == pytest.approx(1.0)


def test_every_loss_is_zero_for_identical_inputs():
    torch.manual_seed(5)
    hidden, scores, logits = torch.randn(2, 5, 8), torch.randn(2, 2, 5, 5), torch.randn(2, 5, 11)
    mask = pair_mask(PADDING, causal=True)
    assert hidden_state_loss(hidden, hidden.clone(), PADDING).item() == 0
    assert attention_score_loss(scores, scores.clone(), mask).item() == 0
    assert attention_kl_loss(scores, scores.clone(), mask).item() == pytest.approx(0, abs=1e-7)
    assert soft_target_loss(logits, logits.clone(), 2.0, mask=PADDING).item() == pytest.approx(0, abs=1e-6)
    assert logit_mse_loss(logits, logits.clone()).item() == 0


def test_half_precision_inputs_are_computed_in_float32():
    torch.manual_seed(6)
    student, teacher = torch.randn(2, 5, 8), torch.randn(2, 5, 8)
    loss = soft_target_loss(student.half(), teacher.bfloat16(), 2.0)
    assert loss.dtype == torch.float32
    reference = soft_target_loss(student.half().float(), teacher.bfloat16().float(), 2.0)
    assert loss.item() == pytest.approx(reference.item(), rel=1e-6)
    assert hidden_state_loss(student.half(), teacher.half()).dtype == torch.float32


def test_bad_arguments_raise():
    x = torch.zeros(2, 3, 4)
    with pytest.raises(ValueError, match=r"same shape; got \(2, 3, 4\) and \(2, 3, 5\)"):
        hidden_state_loss(x, torch.zeros(2, 3, 5))
    with pytest.raises(ValueError, match="reduction must be one of"):
        hidden_state_loss(x, x, reduction="max")
    with pytest.raises(ValueError, match="temperature must be positive; got 0"):
        soft_target_loss(x, x, temperature=0)
    with pytest.raises(ValueError, match="must be 4-D"):
        attention_score_loss(torch.zeros(1, 1, 3, 3), torch.zeros(1, 1, 3, 3), torch.ones(3, 3, dtype=torch.bool))
