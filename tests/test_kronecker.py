import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from kron_transformers.kronecker import (
    _kron_linear_2d,
    divisors,
    kron_flops,
    kron_linear,
    kron_rearrange,
    kron_weight,
    kronecker_compression,
    kronecker_shapes,
    nearest_kronecker_product,
)


def dense_kron(a, b):
    """The reference: an explicit sum of torch.kron products."""
    return sum(torch.kron(a[r], b[r]) for r in range(a.shape[0]))


def random_factors(rank, m1, n1, m2, n2, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(rank, m1, n1, generator=g, dtype=dtype), torch.randn(rank, m2, n2, generator=g, dtype=dtype)


dims = st.integers(min_value=1, max_value=7)


@settings(max_examples=150, deadline=None)
@given(rank=st.integers(1, 4), m1=dims, n1=dims, m2=dims, n2=dims, lead=st.lists(st.integers(1, 3), max_size=3),
       with_bias=st.booleans(), seed=st.integers(0, 2**16))
def test_kron_linear_matches_torch_kron(rank, m1, n1, m2, n2, lead, with_bias, seed):
    a, b = random_factors(rank, m1, n1, m2, n2, seed)
    x = torch.randn(*lead, n1 * n2, dtype=torch.float64)
    bias = torch.randn(m1 * m2, dtype=torch.float64) if with_bias else None
    weight = dense_kron(a, b)
    expected = x @ weight.T + (bias if with_bias else 0)
    y = kron_linear(x, a, b, bias)
    assert y.shape == (*lead, m1 * m2)
    torch.testing.assert_close(y, expected, rtol=1e-10, atol=1e-10)


@settings(max_examples=100, deadline=None)
@given(rank=st.integers(1, 4), m1=dims, n1=dims, m2=dims, n2=dims, lead=st.lists(st.integers(1, 3), max_size=3),
       with_bias=st.booleans(), b_first=st.booleans(), seed=st.integers(0, 2**16))
def test_exported_two_dimensional_form_matches_torch_kron(rank, m1, n1, m2, n2, lead, with_bias, b_first, seed):
    """The form kron_linear takes under torch.export (ONNX), in either order, including the sides of 1 it shortcuts."""
    a, b = random_factors(rank, m1, n1, m2, n2, seed)
    x = torch.randn(*lead, n1 * n2, dtype=torch.float64)
    bias = torch.randn(m1 * m2, dtype=torch.float64) if with_bias else None
    expected = x @ dense_kron(a, b).T + (bias if with_bias else 0)
    torch.testing.assert_close(_kron_linear_2d(x, a, b, bias, b_first), expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("a_shape,b_shape", [((3, 2), (4, 5)), ((4, 5), (3, 2)), ((1, 6), (6, 1)), ((6, 1), (1, 6))])
def test_both_multiplication_orders_are_exact(a_shape, b_shape, monkeypatch):
    a, b = random_factors(2, *a_shape, *b_shape)
    x = torch.randn(5, a_shape[1] * b_shape[1], dtype=torch.float64)
    expected = x @ dense_kron(a, b).T
    for order in ("b_first", "a_first"):
        cost = {"b_first": 1 if order == "b_first" else 2, "a_first": 1 if order == "a_first" else 2}
        monkeypatch.setattr("kron_transformers.kronecker.kron_flops", lambda *args, cost=cost: cost)
        torch.testing.assert_close(kron_linear(x, a, b), expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize(
    "a_shape, b_shape, cheaper",
    [
        # KroneckerBERT_8's FFN: A 8x2, B 384x384. B first: 2*384*384 + 8*2*384 = 301,056 multiply-adds per row;
        # A first: 8*2*384 + 8*384*384 = 1,185,792 (~3.9x more).
        ((8, 2), (384, 384), "b_first"),
        # The other way round: A 2x384, B 384x8. A first: 2*384*384 + 2*384*8 = 301,056; B first: 1,185,792.
        ((2, 384), (384, 8), "a_first"),
    ],
)
def test_kron_linear_runs_the_cheaper_order(a_shape, b_shape, cheaper):
    """Counts the multiply-adds kron_linear actually runs (FlopCounterMode) against both orders written out here."""
    from torch.utils.flop_counter import FlopCounterMode

    (m1, n1), (m2, n2) = a_shape, b_shape
    by_hand = {"b_first": n1 * n2 * m2 + m1 * n1 * m2, "a_first": m1 * n1 * n2 + m1 * n2 * m2}
    assert min(by_hand, key=by_hand.get) == cheaper and by_hand["a_first"] != by_hand["b_first"]
    rows = 3
    a, b = random_factors(1, *a_shape, *b_shape)
    x = torch.randn(rows, n1 * n2, dtype=torch.float64)
    with FlopCounterMode(display=False) as counter:
        y = kron_linear(x, a, b)
    assert counter.get_total_flops() == 2 * rows * by_hand[cheaper]  # a multiply-add is 2 flops
    torch.testing.assert_close(y, x @ dense_kron(a, b).T, rtol=1e-10, atol=1e-9)


def test_kron_linear_gradcheck():
    a, b = random_factors(2, 3, 2, 2, 3)
    a.requires_grad_(), b.requires_grad_()
    x = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(kron_linear, (x, a, b, bias))
    a2, b2 = random_factors(2, 2, 3, 3, 2, seed=1)
    a2.requires_grad_(), b2.requires_grad_()
    assert torch.autograd.gradcheck(kron_linear, (x, a2, b2, None))


def test_kron_linear_rejects_wrong_input_width():
    a, b = random_factors(1, 2, 3, 2, 2)
    with pytest.raises(ValueError, match="expect 6"):
        kron_linear(torch.randn(2, 5, dtype=torch.float64), a, b)
    with pytest.raises(ValueError, match="same rank"):
        kron_linear(torch.randn(2, 6, dtype=torch.float64), a, torch.cat([b, b]))


def test_kron_weight_and_rearrange():
    a, b = random_factors(3, 2, 3, 4, 5)
    torch.testing.assert_close(kron_weight(a, b), dense_kron(a, b))
    rearranged = kron_rearrange(dense_kron(a, b), (2, 3))
    # R(sum a_r ⊗ b_r) = sum vec(a_r) vec(b_r)^T
    torch.testing.assert_close(rearranged, a.reshape(3, -1).T @ b.reshape(3, -1))


@settings(max_examples=60, deadline=None)
@given(rank=st.integers(1, 4), m1=st.integers(1, 6), n1=st.integers(1, 6), m2=st.integers(1, 6),
       n2=st.integers(1, 6), seed=st.integers(0, 2**16))
def test_nkp_error_equals_svd_bound(rank, m1, n1, m2, n2, seed):
    rank = min(rank, m1 * n1, m2 * n2)
    weight = torch.randn(m1 * m2, n1 * n2, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    a, b = nearest_kronecker_product(weight, (m1, n1), rank)
    assert a.shape == (rank, m1, n1) and b.shape == (rank, m2, n2)
    singular_values = torch.linalg.svdvals(kron_rearrange(weight, (m1, n1)))
    bound = singular_values[rank:].square().sum().sqrt()
    error = torch.linalg.matrix_norm(weight - dense_kron(a, b))
    torch.testing.assert_close(error, bound, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("rank", [1, 2, 3])
def test_nkp_recovers_an_exact_kronecker_product(rank):
    a, b = random_factors(rank, 4, 3, 5, 6)
    weight = dense_kron(a, b)
    a_hat, b_hat = nearest_kronecker_product(weight, (4, 3), rank)
    torch.testing.assert_close(dense_kron(a_hat, b_hat), weight, rtol=1e-9, atol=1e-9)


def test_nkp_is_better_than_any_perturbation():
    weight = torch.randn(12, 10, dtype=torch.float64)
    a, b = nearest_kronecker_product(weight, (3, 2))
    best = torch.linalg.matrix_norm(weight - dense_kron(a, b))
    for seed in range(20):
        g = torch.Generator().manual_seed(seed)
        da, db = 1e-2 * torch.randn(a.shape, generator=g, dtype=a.dtype), 1e-2 * torch.randn(b.shape, generator=g, dtype=b.dtype)
        assert torch.linalg.matrix_norm(weight - dense_kron(a + da, b + db)) >= best


def test_nkp_signs_are_deterministic():
    weight = torch.randn(8, 6, dtype=torch.float64)
    a, b = nearest_kronecker_product(weight, (2, 3), rank=2)
    a_neg, b_neg = nearest_kronecker_product(-weight, (2, 3), rank=2)
    for r in range(2):
        flat = a[r].flatten()
        assert flat[flat.abs().argmax()] > 0
    torch.testing.assert_close(dense_kron(a_neg, b_neg), -dense_kron(a, b))
    a2, b2 = nearest_kronecker_product(weight.clone(), (2, 3), rank=2)
    assert torch.equal(a, a2) and torch.equal(b, b2)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_nkp_keeps_dtype_and_computes_in_float32(dtype):
    weight = torch.randn(16, 12).to(dtype)
    a, b = nearest_kronecker_product(weight, (4, 3), rank=2)
    assert a.dtype == dtype and b.dtype == dtype
    a32, b32 = nearest_kronecker_product(weight.float(), (4, 3), rank=2)
    torch.testing.assert_close(a, a32.to(dtype)), torch.testing.assert_close(b, b32.to(dtype))


@pytest.mark.parametrize("shape,a_shape", [((30522 // 2, 96), (30522 // 2, 12)), ((8, 4000), (2, 1000))])
def test_nkp_tall_and_wide_rearrangements(shape, a_shape):
    # The QR-reduced SVD path (very tall or very wide R(W)) against the plain SVD bound.
    weight = torch.randn(*shape, dtype=torch.float64)
    a, b = nearest_kronecker_product(weight, a_shape, rank=2)
    singular_values = torch.linalg.svdvals(kron_rearrange(weight, a_shape))
    error = torch.linalg.matrix_norm(weight - dense_kron(a, b))
    torch.testing.assert_close(error, singular_values[2:].square().sum().sqrt(), rtol=1e-8, atol=1e-8)


def test_nkp_bad_input():
    with pytest.raises(ValueError, match="in_features=10 is not divisible by 3.*\\[1, 2, 5, 10\\]"):
        nearest_kronecker_product(torch.randn(12, 10), (4, 3))
    with pytest.raises(ValueError, match="out_features=12 is not divisible by 5"):
        nearest_kronecker_product(torch.randn(12, 10), (5, 2))
    with pytest.raises(ValueError, match="rank must be an integer between 1 and 10"):
        nearest_kronecker_product(torch.randn(12, 10), (2, 5), rank=11)
    with pytest.raises(ValueError, match="2-D"):
        nearest_kronecker_product(torch.randn(2, 12, 10), (2, 5))
    with pytest.raises(ValueError, match="pair of positive integers"):
        nearest_kronecker_product(torch.randn(12, 10), (0, 5))


def test_kronecker_shapes_ranked_by_compression():
    shapes = kronecker_shapes(768, 768, 8.0)
    assert all(768 % m1 == 0 and 768 % n1 == 0 for m1, n1 in shapes)
    assert len(shapes) == len(divisors(768)) ** 2
    best = kronecker_compression(768, 768, shapes[0])
    assert abs(math.log(best / 8.0)) <= min(abs(math.log(kronecker_compression(768, 768, s) / 8.0)) for s in shapes)
    assert best == pytest.approx(8.0, rel=0.2)
    assert len(kronecker_shapes(3072, 768, 16.0, max_results=3)) == 3
    with pytest.raises(ValueError, match="compression must be a positive number"):
        kronecker_shapes(768, 768, -1)


def test_kronecker_shapes_prefers_cheaper_among_equal_compression():
    # (8, 2) and (2, 8) both give 16x on a 3072x768 FFN weight with B 384x384 or 1536x96; ties go to fewer FLOPs.
    shapes = kronecker_shapes(3072, 768, kronecker_compression(3072, 768, (8, 2)))
    tied = [s for s in shapes if kronecker_compression(3072, 768, s) == kronecker_compression(3072, 768, shapes[0])]
    costs = [min(kron_flops(s, (3072 // s[0], 768 // s[1])).values()) for s in tied]
    assert costs == sorted(costs)


@pytest.mark.parametrize("requires_grad", [False, True])
@pytest.mark.parametrize(
    "a_shape,b_shape",
    [
        ((3, 2), (9, 10)),   # b first, batched left multiply with the bias fused (baddbmm, m2 = 9 columns)
        ((9, 10), (2, 3)),   # narrow b (2 columns): the transposed GEMM, bias added with the layout change
        ((1, 4), (12, 8)),   # a first with m1 == 1: the bias is fused into addmm
        ((2, 3), (16, 12)),  # a first, batched, m1 > 1
        ((2, 12), (3, 8)),   # a first, c = 8 < k = 12: torch.matmul's fold when a requires grad
        ((6, 6), (2, 2)),    # a tie with a narrow b (KroneckerBERT_8's attention): a first, then one batched
                             # product over the transposed GEMM's output view, the bias fused (baddbmm)
        ((6, 5), (3, 2)),    # a first (cheaper), narrow x: the same batched product over the view
    ],
)
def test_kron_linear_wide_paths_with_bias_and_grad(a_shape, b_shape, requires_grad):
    """The batched (c >= 8), addmm and in-place bias paths, forward and backward, against torch.kron."""
    a, b = random_factors(2, *a_shape, *b_shape)
    a1, b1 = random_factors(1, *a_shape, *b_shape, seed=3)
    for a_, b_ in ((a, b), (a1, b1)):
        a_.requires_grad_(requires_grad), b_.requires_grad_(requires_grad)
        bias = torch.randn(a_shape[0] * b_shape[0], dtype=torch.float64, requires_grad=requires_grad)
        x = torch.randn(3, 5, a_shape[1] * b_shape[1], dtype=torch.float64, requires_grad=requires_grad)
        y = kron_linear(x, a_, b_, bias)
        expected = x @ dense_kron(a_, b_).T + bias
        torch.testing.assert_close(y, expected, rtol=1e-10, atol=1e-10)
        if requires_grad:
            grads = torch.autograd.grad(y.square().sum(), (x, a_, b_, bias))
            expected_grads = torch.autograd.grad(expected.square().sum(), (x, a_, b_, bias))
            for got, want in zip(grads, expected_grads):
                torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)
