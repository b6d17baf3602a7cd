# Copyright 2026 The kron-transformers Authors. Licensed under the Apache License, Version 2.0.
"""The Kronecker maths, as pure functions over tensors.

A weight ``W`` of shape ``(m1 * m2, n1 * n2)`` is stored as a sum of ``r`` Kronecker products

    W = sum_r a[r] ⊗ b[r],   a: (r, m1, n1),   b: (r, m2, n2)

so that ``W[i1 * m2 + i2, j1 * n2 + j2] = sum_r a[r, i1, j1] * b[r, i2, j2]`` (the layout of ``torch.kron``).

This file travels with every saved checkpoint (see ``configuration_kronecker_bert.py``): it imports
nothing but torch and the standard library.
"""

import math

import torch


def _check_factors(a: torch.Tensor, b: torch.Tensor) -> None:
    if a.dim() != 3 or b.dim() != 3:
        raise ValueError(
            f"Kronecker factors must be 3-D (rank, rows, cols); got a of shape {tuple(a.shape)} and b of shape "
            f"{tuple(b.shape)}."
        )
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"a and b must have the same rank (first dimension); got {a.shape[0]} and {b.shape[0]}.")


def kron_flops(a_shape: tuple[int, int], b_shape: tuple[int, int], rank: int = 1) -> dict[str, int]:
    """Multiply-adds per input row of the two orders of ``x @ (a ⊗ b).T`` (KroneckerBERT Eq. 7).

    ``"b_first"`` contracts ``x`` with ``b`` then with ``a``; ``"a_first"`` the other way round.
    """
    (m1, n1), (m2, n2) = a_shape, b_shape
    return {
        "b_first": rank * (n1 * n2 * m2 + m2 * n1 * m1),
        "a_first": rank * (n2 * n1 * m1 + m1 * n2 * m2),
    }


def _left_matmul(a: torch.Tensor, t: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``a @ t[i] (+ bias)`` ``a`` ``(m, k)``, ``t`` ``(n, k, c)``, ``bias`` ``(m, c)`` -> ``(n, m, c)``.

    With a wide trailing dimension a broadcast (batched) matmul reads ``t`` in place and adds ``bias`` as it writes.
    With a narrow one (KroneckerBERT's B of 2 columns) each batch would be a matrix-vector product, so ``t`` is
    transposed into one tall GEMM instead; the result is then a transposed view and the bias add makes it contiguous.
    """
    n, k, c = t.shape
    if c >= _BATCHED_MATMUL_MIN_COLUMNS:
        if k <= c or not (torch.is_grad_enabled() and a.requires_grad):
            # An explicit bmm over a broadcast `a`: torch.matmul picks a transposing fold when `a` requires grad, which
            # is 1.5-2x slower here. Its backward materialises an (n, m, k) gradient for `a`, no larger than the
            # (n, m, c) output when k <= c; beyond that, leave the fold to torch.matmul.
            batched_a = a.expand(n, *a.shape)
            if bias is None:
                return torch.bmm(batched_a, t)
            return torch.baddbmm(bias.expand(n, *bias.shape), batched_a, t)
        y = torch.matmul(a, t)
    else:
        y = (t.transpose(1, 2).reshape(n * c, k) @ a.T).view(n, c, a.shape[0]).transpose(1, 2)
    return y if bias is None else y + bias


# Below this trailing width a batched matmul of small matrices loses to transposing into one GEMM (measured on
# x86 CPUs with benchmarks/kronecker_linear.py: 8x slower at width 2, on par at 8, faster from 16 up).
_BATCHED_MATMUL_MIN_COLUMNS = 8


def kron_linear(
    x: torch.Tensor, a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """``x @ W.T + bias`` for ``W = sum_r a[r] ⊗ b[r]``, without materialising ``W``.

    Args:
        x: ``(..., n1 * n2)``.
        a: ``(r, m1, n1)``.
        b: ``(r, m2, n2)``.
        bias: optional ``(m1 * m2,)``.

    Returns:
        ``(..., m1 * m2)``.

    With ``X = x.view(n1, n2)`` the product is ``sum_r a[r] @ X @ b[r].T`` (Van Loan 2000, "The ubiquitous
    Kronecker product", Eq. 2). The rank is folded into the inner dimension of each matmul, so it costs no Python
    loop. The order is picked by its multiply-add count (KroneckerBERT Eq. 7): for a factor with a tiny side, the
    wrong order can cost 4x more. The right multiplication by ``b`` is one GEMM over all rows; the left one by ``a``
    is a batched matmul or a transposed GEMM (``_left_matmul``), so ``x`` is never copied when ``r == 1``.
    """
    _check_factors(a, b)
    r, m1, n1 = a.shape
    _, m2, n2 = b.shape
    if x.shape[-1] != n1 * n2:
        raise ValueError(
            f"Input has {x.shape[-1]} features but the Kronecker factors a {tuple(a.shape[1:])} ⊗ b "
            f"{tuple(b.shape[1:])} expect {n1 * n2}."
        )
    lead = x.shape[:-1]
    n = math.prod(lead)
    flops = kron_flops((m1, n1), (m2, n2), r)
    if torch.compiler.is_exporting():
        return _kron_linear_2d(x, a, b, bias, b_first=flops["b_first"] <= flops["a_first"])
    # Without autograd, on a tie (KroneckerBERT_8's attention: a 384x384, b 2x2), b first would end in a transposed
    # GEMM, a transposed copy and a GEMM of 2 columns; a first ends in one batched product over the transposed GEMM's
    # output, in place (1.3x faster). With autograd that product's backward costs more than it saves (1.3x slower
    # forward + backward, benchmarks/kronecker_linear.py), so training keeps b first.
    batched_tail = not (torch.is_grad_enabled() and (x.requires_grad or a.requires_grad or b.requires_grad))
    if flops["b_first"] < flops["a_first"] or (
        flops["b_first"] == flops["a_first"] and (m2 >= _BATCHED_MATMUL_MIN_COLUMNS or not batched_tail)
    ):
        # T = X @ b.T: (n*n1, n2) @ (n2, r*m2) -> (n, n1, r, m2) -> (n, r*n1, m2); Y = a @ T: (n, m1, m2)
        t = x.reshape(n * n1, n2) @ b.permute(2, 0, 1).reshape(n2, r * m2)
        t = t.view(n, n1, m2) if r == 1 else t.view(n, n1, r, m2).transpose(1, 2).reshape(n, r * n1, m2)
        y = _left_matmul(a.permute(1, 0, 2).reshape(m1, r * n1), t, None if bias is None else bias.view(m1, m2))
    else:
        # U = a @ X: (r*m1, n1) @ (n, n1, n2) -> (n, r, m1, n2) -> (n*m1, r*n2); Y = U @ b.T: (n, m1, m2)
        u = _left_matmul(a.reshape(r * m1, n1), x.reshape(n, n1, n2))
        b_t = b.permute(0, 2, 1).reshape(r * n2, m2)
        if batched_tail and r == 1 and not u.is_contiguous():
            # U is the transposed view a narrow X leaves (_left_matmul): multiply it as it lies, one batched product,
            # instead of copying it into rows for a GEMM (2-3x faster for b of 2x2, measured).
            batched_b = b_t.expand(n, n2, m2)
            if bias is None:
                return torch.bmm(u, batched_b).reshape(*lead, m1 * m2)
            return torch.baddbmm(bias.view(m1, m2).expand(n, m1, m2), u, batched_b).reshape(*lead, m1 * m2)
        u = u.reshape(n * m1, n2) if r == 1 else u.reshape(n, r, m1, n2).transpose(1, 2).reshape(n * m1, r * n2)
        if bias is None:
            y = u @ b_t
        elif m1 == 1:
            y = torch.addmm(bias, u, b_t)  # rows of the output are tokens: the bias broadcasts over them
        else:
            y = (u @ b_t).view(n, m1, m2).add_(bias.view(m1, m2))  # a fresh GEMM output: add in place
    return y.reshape(*lead, m1 * m2)


def _kron_linear_2d(
    x: torch.Tensor, a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None, b_first: bool
) -> torch.Tensor:
    """``kron_linear`` in the form exported graphs use (``torch.export``, ONNX): plain matmuls against the factors.

    The product with ``b`` contracts the activations' last axis: one 2-D GEMM over all rows, the factor its constant
    right operand (pre-packed by onnxruntime, quantisable). The product with ``a`` contracts their middle axis:
    - where the trailing width beside it is wide (``_BATCHED_MATMUL_MIN_COLUMNS`` or more: the FFN maps' ``B`` of 192
      or 384 rows), one broadcast ``MatMul`` of the 2-D factor over the 3-D activations, which onnxruntime runs as a
      GEMM per token reading them in place;
    - where it is narrow (the attention maps' ``B`` of 2 rows, whose GEMM per token would be a matrix-vector product),
      one GEMM over all rows, reached by transposing the activations as one 2-D matrix ``(tokens * n1, 2)`` into
      ``(2, tokens * n1)`` and back: onnxruntime's 3-D transposes that would keep the tokens outermost run 3-4x slower
      on 2 threads than on one, its 2-D ones do not; the transpose back is a product with the identity, which
      onnxruntime runs as a GEMM reading its operand transposed.
    No factor is ever expanded over the batch (the eager form's ``bmm`` would export as ``Expand``). Measured in
    onnxruntime 1.32, 2 threads, batch 8 x 128: KroneckerBERT_8 1.05x -> 2.01x and KroneckerBERT_21 1.64x -> 2.99x
    faster than BERT_BASE, against the earlier form of 2-D matmuls with 3-D and 4-D transposes; the identity product
    instead of the last transpose, at opset 23: KroneckerBERT_21 2.12x -> 2.62x, KroneckerBERT_8 1.73x -> 1.88x.
    ``x`` ``(..., n1 * n2)`` -> ``(..., m1 * m2)``.
    """
    r, m1, n1 = a.shape
    _, m2, n2 = b.shape
    lead = x.shape[:-1]
    n = math.prod(lead)
    if b_first:
        # T = X @ b.T: (n*n1, n2) @ (n2, r*m2) -> (n, n1, r, m2)
        t = x.reshape(n * n1, n2) @ b.permute(2, 0, 1).reshape(n2, r * m2)
        if m2 >= _BATCHED_MATMUL_MIN_COLUMNS:
            # Y = a @ T: (m1, r*n1) @ (n, r*n1, m2) -> (n, m1, m2)
            t = t.view(n, n1, m2) if r == 1 else t.view(n, n1, r, m2).transpose(1, 2).reshape(n, r * n1, m2)
            return _add_bias(torch.matmul(a.permute(1, 0, 2).reshape(m1, r * n1), t).reshape(n, m1 * m2), bias, lead)
        # T -> (m2*n, r*n1); Z = T @ a.T: (m2*n, m1) -> Y = Z.T: (n*m1, m2)
        t = t.T if r == 1 else t.view(n, n1, r, m2).permute(3, 0, 2, 1)
        z = t.reshape(m2 * n, r * n1) @ a.permute(0, 2, 1).reshape(r * n1, m1)
        # Z.T written as Z.T @ I: onnxruntime fuses the transpose into the product (FusedMatMul, transA), one GEMM on
        # every thread. Its Transpose of the (2, tokens * m1) matrix took 0.26-10 ms per call inside the model (median
        # 1.2 ms, KroneckerBERT_21 batch 8 x 128, 2 threads), 30% of the model's time; the GEMM ~0.17 ms.
        y = z.view(m2, n * m1).T @ torch.eye(m2, dtype=z.dtype, device=z.device)
    else:
        if n2 >= _BATCHED_MATMUL_MIN_COLUMNS:
            # U = a @ X: (r*m1, n1) @ (n, n1, n2) -> (n, r, m1, n2)
            u = torch.matmul(a.reshape(r * m1, n1), x.reshape(n, n1, n2))
            u = u.reshape(n * m1, n2) if r == 1 else u.view(n, r, m1, n2).transpose(1, 2).reshape(n * m1, r * n2)
        else:
            # U = X.T @ a.T: (n2*n, n1) @ (n1, r*m1) -> (n2, n, r, m1) -> (n*m1, r*n2)
            u = x.reshape(n * n1, n2).T.reshape(n2 * n, n1) @ a.permute(2, 0, 1).reshape(n1, r * m1)
            u = u.view(n2, n * m1).T if r == 1 else u.view(n2, n, r, m1).permute(1, 3, 2, 0)
            u = u.reshape(n * m1, r * n2)
        # Y = U @ b.T: (n*m1, r*n2) @ (r*n2, m2)
        y = u @ b.permute(0, 2, 1).reshape(r * n2, m2)
    return _add_bias(y.reshape(n, m1 * m2), bias, lead)


def _add_bias(y: torch.Tensor, bias: torch.Tensor | None, lead: torch.Size) -> torch.Tensor:
    return (y if bias is None else y + bias).reshape(*lead, y.shape[-1])


def kron_weight(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The dense ``W = sum_r a[r] ⊗ b[r]`` of shape ``(m1 * m2, n1 * n2)``. For export and tests only."""
    _check_factors(a, b)
    r, m1, n1 = a.shape
    _, m2, n2 = b.shape
    # W[i1, i2, j1, j2] = sum_r a[r, i1, j1] b[r, i2, j2]
    return torch.einsum("rij,rkl->ikjl", a, b).reshape(m1 * m2, n1 * n2)


def kron_rearrange(weight: torch.Tensor, a_shape: tuple[int, int]) -> torch.Tensor:
    """Van Loan & Pitsianis (1993) rearrangement ``R(W)`` of shape ``(m1 * n1, m2 * n2)``.

    Row ``(i1, j1)`` of ``R(W)`` is the block ``W[i1 * m2:(i1 + 1) * m2, j1 * n2:(j1 + 1) * n2]`` flattened, so
    that ``W = a ⊗ b`` exactly when ``R(W) = vec(a) vec(b).T`` and ``||W - a ⊗ b||_F = ||R(W) - vec(a) vec(b).T||_F``.
    """
    m1, n1 = a_shape
    m, n = weight.shape
    m2, n2 = m // m1, n // n1
    return weight.reshape(m1, m2, n1, n2).permute(0, 2, 1, 3).reshape(m1 * n1, m2 * n2)


def check_kronecker_shape(out_features: int, in_features: int, a_shape: tuple[int, int], name: str = "a_shape"):
    """Return ``b_shape`` for ``a_shape``, or raise a ``ValueError`` naming the dimension and the valid divisors."""
    if len(a_shape) != 2 or not all(isinstance(s, int) and s > 0 for s in a_shape):
        raise ValueError(f"{name} must be a pair of positive integers (rows, cols); got {a_shape!r}.")
    m1, n1 = a_shape
    for dim_name, size, factor in (("out_features", out_features, m1), ("in_features", in_features, n1)):
        if size % factor != 0:
            raise ValueError(
                f"{name}={tuple(a_shape)} does not factor the weight of shape ({out_features}, {in_features}): "
                f"{dim_name}={size} is not divisible by {factor}. Divisors of {size} that would work: "
                f"{divisors(size)}."
            )
    return (out_features // m1, in_features // n1)


def divisors(n: int) -> list[int]:
    """The positive divisors of ``n``, ascending."""
    small = [d for d in range(1, math.isqrt(n) + 1) if n % d == 0]
    return sorted(set(small + [n // d for d in small]))


@torch.no_grad()
def nearest_kronecker_product(
    weight: torch.Tensor, a_shape: tuple[int, int], rank: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """The Frobenius-nearest ``sum_r a[r] ⊗ b[r]`` to ``weight`` (Van Loan & Pitsianis 1993).

    Args:
        weight: ``(m1 * m2, n1 * n2)``.
        a_shape: ``(m1, n1)``.
        rank: number of Kronecker products summed.

    Returns:
        ``a`` of shape ``(rank, m1, n1)`` and ``b`` of shape ``(rank, m2, n2)``, in ``weight``'s dtype.

    The truncated SVD of the rearranged ``R(weight)`` is optimal (Eckart–Young), so the error
    ``||weight - sum_r a[r] ⊗ b[r]||_F`` equals the root of the sum of the discarded squared singular values.
    The singular value is split evenly between the factors (``sqrt(s)`` on each) and each pair's sign is fixed so
    that the largest-magnitude entry of ``a[r]`` is positive, which makes the result deterministic. The SVD runs
    in float32 at least, whatever ``weight``'s dtype.
    """
    if weight.dim() != 2:
        raise ValueError(f"weight must be 2-D (out_features, in_features); got shape {tuple(weight.shape)}.")
    m, n = weight.shape
    b_shape = check_kronecker_shape(m, n, a_shape)
    max_rank = min(a_shape[0] * a_shape[1], b_shape[0] * b_shape[1])
    if not (isinstance(rank, int) and 1 <= rank <= max_rank):
        raise ValueError(
            f"rank must be an integer between 1 and {max_rank} (the smaller factor's size) for a_shape="
            f"{tuple(a_shape)} and b_shape={b_shape}; got {rank!r}."
        )
    compute_dtype = torch.promote_types(weight.dtype, torch.float32)
    rearranged = kron_rearrange(weight.detach().to(compute_dtype), a_shape)
    u, s, vh = _truncated_svd(rearranged, rank)
    # Deterministic signs: the largest-magnitude entry of each left vector is positive (sklearn's svd_flip).
    signs = torch.sign(u.gather(0, u.abs().argmax(dim=0, keepdim=True))).squeeze(0)
    signs[signs == 0] = 1
    root = s.sqrt() * signs
    a = (u * root).T.reshape(rank, *a_shape)
    b = (vh * s.sqrt().unsqueeze(1) * signs.unsqueeze(1)).reshape(rank, *b_shape)
    return a.to(weight.dtype).contiguous(), b.to(weight.dtype).contiguous()


def _truncated_svd(matrix: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Leading ``rank`` singular triplets of a 2-D ``matrix``: ``(u (m, rank), s (rank,), vh (rank, n))``."""
    rows, cols = matrix.shape
    # A very tall or wide matrix (a 30522x768 embedding rearranges to 2.9M x 8) is reduced by QR first, so the
    # SVD only sees a small square factor.
    if rows > 4 * cols:
        q, r = torch.linalg.qr(matrix)
        u, s, vh = torch.linalg.svd(r)
        u = q @ u
    elif cols > 4 * rows:
        q, r = torch.linalg.qr(matrix.T)
        u, s, vh = torch.linalg.svd(r.T)
        vh = vh @ q.T
    else:
        u, s, vh = torch.linalg.svd(matrix, full_matrices=False)
    return u[:, :rank], s[:rank], vh[:rank]


def kronecker_shapes(
    out_features: int, in_features: int, compression: float, rank: int = 1, max_results: int | None = None
) -> list[tuple[int, int]]:
    """Valid ``a_shape``s for an ``(out_features, in_features)`` weight, best first.

    Every ``(m1, n1)`` with ``m1 | out_features`` and ``n1 | in_features`` is a valid shape. They are ranked by
    how close their parameter compression ``out * in / (rank * (m1 * n1 + m2 * n2))`` is to ``compression``
    (on a log scale), then by the multiply-adds of ``kron_linear`` (fewer first).
    """
    if not compression > 0:
        raise ValueError(f"compression must be a positive number (e.g. 8.0 for 8x); got {compression!r}.")
    candidates = []
    for m1 in divisors(out_features):
        for n1 in divisors(in_features):
            m2, n2 = out_features // m1, in_features // n1
            params = rank * (m1 * n1 + m2 * n2)
            if rank > min(m1 * n1, m2 * n2):
                continue
            achieved = out_features * in_features / params
            cost = min(kron_flops((m1, n1), (m2, n2), rank).values())
            candidates.append((abs(math.log(achieved / compression)), cost, (m1, n1)))
    candidates.sort()
    shapes = [shape for _, _, shape in candidates]
    return shapes[:max_results] if max_results is not None else shapes


def kronecker_embedding_factor(vocab_size: int, embedding_dim: int, compression: float, rank: int = 1) -> int:
    """The factor ``f`` dividing ``embedding_dim`` whose embedding compression ``V d / (rank (V d/f + f))`` is nearest
    ``compression`` (on a log scale); ties go to the smaller ``f`` (the cheaper lookup)."""
    candidates = [f for f in divisors(embedding_dim) if f >= rank]
    if not candidates:
        raise ValueError(
            f"No embedding factor supports a word embedding of rank {rank} (embedding_rank, else kronecker_rank) for "
            f"embedding_dim={embedding_dim}: the rank can be at most {embedding_dim}."
        )

    def distance(f: int) -> float:
        achieved = vocab_size * embedding_dim / (rank * (vocab_size * embedding_dim // f + f))
        return abs(math.log(achieved / compression))

    return min(candidates, key=lambda f: (distance(f), f))


def kronecker_compression(out_features: int, in_features: int, a_shape: tuple[int, int], rank: int = 1) -> float:
    """Parameter compression ``out * in / (rank * (|a| + |b|))`` of a factored weight (biases not counted)."""
    m2, n2 = check_kronecker_shape(out_features, in_features, a_shape)
    return out_features * in_features / (rank * (a_shape[0] * a_shape[1] + m2 * n2))


def output_error(weight: torch.Tensor, approximation: torch.Tensor, input_moment: torch.Tensor) -> torch.Tensor:
    """Relative output error ``||X (W - K).T||_F / ||X W.T||_F`` of a map ``K`` standing in for ``W``, from the
    input second moment ``input_moment = X.T X`` (``(in_features, in_features)``) alone:
    ``||X D.T||_F^2 = tr(D C D.T)``. Computed in float64."""
    moment = input_moment.double()
    difference = weight.double() - approximation.double()
    error = (difference @ moment * difference).sum().clamp(min=0)
    reference = (weight.double() @ moment * weight.double()).sum()
    return (error / reference).sqrt() if reference > 0 else error.sqrt()


def _kronecker_moment_roots(input_moment: torch.Tensor, n1: int, n2: int, damping: float):
    """Square roots ``L1 (n1, n1)``, ``L2 (n2, n2)`` of the nearest ``S1 ⊗ S2`` to the input second moment, and their
    inverses: the Kronecker-factored whitening of the calibrated NKP. Both factors are symmetric positive definite
    after damping (the leading pair of the NKP of a PSD matrix can be taken PSD; eigenvalues are clipped)."""
    s1, s2 = nearest_kronecker_product(input_moment, (n1, n1), rank=1)
    roots = []
    for s in (s1[0], s2[0]):
        s = (s + s.T) / 2
        if s.trace() < 0:
            s = -s
        eigenvalues, eigenvectors = torch.linalg.eigh(s)
        floor = damping * eigenvalues.clamp(min=0).mean().clamp(min=torch.finfo(s.dtype).tiny)
        eigenvalues = eigenvalues.clamp(min=0) + floor
        roots.append((eigenvectors * eigenvalues.sqrt() @ eigenvectors.T,
                      eigenvectors * eigenvalues.rsqrt() @ eigenvectors.T))
    return roots


def _solve_b(output_input: torch.Tensor, moment4: torch.Tensor, a: torch.Tensor, damping: float) -> torch.Tensor:
    """The ``b`` (rank, m2, n2) minimising ``E||W x - sum_r (a[r] ⊗ b[r]) x||^2`` for fixed ``a`` (rank, m1, n1).

    ``moment4[i, j, k, q] = E[x_(i,j) x_(k,q)]`` and ``output_input[p, l, k, q] = E[y_(p,l) x_(k,q)] = (W C)``. With
    ``x`` read as an ``(n1, n2)`` matrix ``X``, the output is ``sum_r a[r] X b[r].T`` (``(m1, m2)``): a linear
    least-squares problem in ``[b[1].T; ...; b[R].T]`` whose normal equations need only these moments.
    """
    rank = a.shape[0]
    m2, n2 = output_input.shape[1], output_input.shape[3]
    gram = torch.einsum("rpi,spk->rsik", a, a)  # a[r].T a[s]: (rank, rank, n1, n1)
    # H[(r, j), (s, q)] = sum_{i,k} gram[r, s, i, k] E[X_ij X_kq]
    hessian = torch.einsum("rsik,ijkq->rjsq", gram, moment4).reshape(rank * n2, rank * n2)
    # G[(r, j), l] = sum_{p,i} a[r, p, i] E[X_ij Y_pl]
    rhs = torch.einsum("rpk,plkq->rql", a, output_input).reshape(rank * n2, m2)
    diagonal = hessian.diagonal()
    hessian = hessian + torch.diag_embed(damping * diagonal.mean().clamp(min=torch.finfo(a.dtype).tiny)
                                         * torch.ones_like(diagonal))
    solution = torch.linalg.solve(hessian, rhs)  # (rank * n2, m2) = stacked b[r].T
    return solution.reshape(rank, n2, m2).transpose(1, 2).contiguous()


def calibrated_nearest_kronecker_product(
    weight: torch.Tensor,
    a_shape: tuple[int, int],
    input_moment: torch.Tensor,
    rank: int = 1,
    iterations: int = 8,
    damping: float = 1e-6,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``sum_r a[r] ⊗ b[r]`` nearest to ``weight`` in output space: it minimises ``||X (W - sum_r a[r] ⊗ b[r]).T||_F``
    over calibration inputs ``X``, given only their second moment ``input_moment = X.T X`` (neither paper has it;
    ``nearest_kronecker_product`` minimises the weight error instead and ignores which inputs carry signal).

    Args:
        weight: ``(m1 * m2, n1 * n2)``.
        a_shape: ``(m1, n1)``.
        input_moment: ``(n1 * n2, n1 * n2)``, symmetric positive semi-definite (``X.T X``, any scale).
        rank: number of Kronecker products summed.
        iterations: alternating least-squares sweeps on the exact objective.
        damping: relative Tikhonov damping of every least-squares solve and of the whitening.

    Returns:
        ``a`` of shape ``(rank, m1, n1)`` and ``b`` of shape ``(rank, m2, n2)``, in ``weight``'s dtype.

    Two starts: the plain NKP, and the NKP after Kronecker-factored whitening (if ``C ≈ S1 ⊗ S2`` then
    ``(a ⊗ b)(L1 ⊗ L2) = (a L1) ⊗ (b L2)`` with ``L = S^(1/2)``, so the whitened problem is a plain NKP of
    ``W (L1 ⊗ L2)`` followed by a back-transform). The better one is refined by alternating least squares
    (``b`` for fixed ``a``, then ``a`` for fixed ``b``, each exact). The candidate with the smallest output error is
    returned, so the result is never worse than the plain NKP on the calibration inputs, and an exactly
    Kronecker-structured weight is reproduced exactly. Computed in float64.
    """
    if weight.dim() != 2:
        raise ValueError(f"weight must be 2-D (out_features, in_features); got shape {tuple(weight.shape)}.")
    m, n = weight.shape
    if tuple(input_moment.shape) != (n, n):
        raise ValueError(
            f"input_moment must be ({n}, {n}) for a weight with in_features={n}; got {tuple(input_moment.shape)}."
        )
    m2, n2 = check_kronecker_shape(m, n, a_shape)
    m1, n1 = a_shape
    plain = nearest_kronecker_product(weight.detach().double(), a_shape, rank)  # also checks rank
    w = weight.detach().double()
    moment = input_moment.detach().to(device=w.device, dtype=torch.float64)
    moment = (moment + moment.T) / 2
    if not torch.isfinite(moment).all():
        raise ValueError("input_moment has non-finite entries.")

    def error(a, b):
        return output_error(w, kron_weight(a, b), moment).item()

    candidates = [plain]
    (l1, l1_inverse), (l2, l2_inverse) = _kronecker_moment_roots(moment, n1, n2, damping)
    whitened_w = w.reshape(m, n1, n2)
    whitened_w = torch.einsum("mij,ik,jl->mkl", whitened_w, l1, l2).reshape(m, n)  # W (L1 ⊗ L2)
    a_white, b_white = nearest_kronecker_product(whitened_w, a_shape, rank)
    candidates.append((a_white @ l1_inverse, b_white @ l2_inverse))

    errors = [error(*candidate) for candidate in candidates]
    a, b = candidates[min(range(len(candidates)), key=errors.__getitem__)]
    moment4 = moment.reshape(n1, n2, n1, n2)
    output_input = (w @ moment).reshape(m1, m2, n1, n2)  # E[y x.T] = W C
    # The same problem with the roles of the factors swapped: W'[(l, p), (q, i)] = W[(p, l), (i, q)].
    moment4_swapped = moment4.permute(1, 0, 3, 2)
    output_input_swapped = output_input.permute(1, 0, 3, 2)
    for _ in range(iterations):
        b = _solve_b(output_input, moment4, a, damping)
        a = _solve_b(output_input_swapped, moment4_swapped, b, damping)
        candidates.append((a, b))
        errors.append(error(a, b))
    a, b = candidates[min(range(len(candidates)), key=errors.__getitem__)]
    # Balance each pair's scale (as the plain NKP does with sqrt(s) on each side), for the optimiser's sake.
    scale = (b.flatten(1).norm(dim=1) / a.flatten(1).norm(dim=1).clamp(min=1e-300)).sqrt()
    scale = torch.where(torch.isfinite(scale) & (scale > 0), scale, torch.ones_like(scale))
    a, b = a * scale[:, None, None], b / scale[:, None, None]
    return a.to(weight.dtype).contiguous(), b.to(weight.dtype).contiguous()
