# Copyright 2026 The kron-transformers Authors. Licensed under the Apache License, Version 2.0.
"""``nn.Module`` wrappers over ``kronecker.py``: a Kronecker-factored linear map and word embedding."""

import math

import torch
from torch import nn
from torch.nn import functional as F

from .kronecker import (
    calibrated_nearest_kronecker_product,
    check_kronecker_shape,
    kron_linear,
    kron_weight,
    nearest_kronecker_product,
)


def _reset_factors(a: torch.Tensor, b: torch.Tensor, std: float) -> None:
    # Entries of sum_r a[r] ⊗ b[r] are sums of r products of independent zero-mean entries, so each factor
    # gets std (std**2 / r) ** (1/4) and W's entries get std `std`.
    factor_std = (std**2 / a.shape[0]) ** 0.25
    nn.init.normal_(a, std=factor_std)
    nn.init.normal_(b, std=factor_std)


def _dense_weight(module: nn.Module) -> torch.Tensor:
    """The ``(out, in)`` weight of an ``nn.Linear`` or of a Transformers ``Conv1D`` (which stores it transposed)."""
    if isinstance(module, nn.Linear):
        return module.weight
    if type(module).__name__ == "Conv1D" and hasattr(module, "nf"):
        return module.weight.T
    raise TypeError(f"Expected an nn.Linear or a transformers Conv1D, got {type(module).__name__}.")


class KroneckerLinear(nn.Module):
    """``y = x @ W.T + bias`` with ``W = sum_r a[r] ⊗ b[r]`` (KroneckerBERT Eq. 4), a drop-in for ``nn.Linear``.

    Args:
        in_features: ``n1 * n2``.
        out_features: ``m1 * m2``.
        a_shape: ``(m1, n1)``; ``b`` gets ``(out_features // m1, in_features // n1)``.
        rank: number of summed Kronecker products.
        bias: whether to learn an additive bias.

    Parameters ``a`` ``(rank, m1, n1)``, ``b`` ``(rank, m2, n2)`` and ``bias`` ``(out_features,)``.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        a_shape: tuple[int, int],
        rank: int = 1,
        bias: bool = True,
        device=None,
        dtype=None,
    ):
        super().__init__()
        a_shape = tuple(a_shape)
        b_shape = check_kronecker_shape(out_features, in_features, a_shape)
        if not (isinstance(rank, int) and rank >= 1):
            raise ValueError(f"rank must be a positive integer; got {rank!r}.")
        self.in_features, self.out_features, self.rank = in_features, out_features, rank
        self.a_shape, self.b_shape = a_shape, b_shape
        factory = {"device": device, "dtype": dtype}
        self.a = nn.Parameter(torch.empty(rank, *a_shape, **factory))
        self.b = nn.Parameter(torch.empty(rank, *b_shape, **factory))
        self.bias = nn.Parameter(torch.empty(out_features, **factory)) if bias else None
        self.reset_parameters()

    def reset_parameters(self, std: float | None = None) -> None:
        """Random factors whose product has entries of standard deviation ``std``.

        The default matches ``nn.Linear``'s: ``U(-1/sqrt(in), 1/sqrt(in))`` has std ``1/sqrt(3 * in)``.
        """
        std = std if std is not None else 1 / math.sqrt(3 * self.in_features)
        _reset_factors(self.a, self.b, std)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    @property
    def num_dense_parameters(self) -> int:
        return self.in_features * self.out_features + (self.out_features if self.bias is not None else 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return kron_linear(x, self.a, self.b, self.bias)

    @classmethod
    def from_linear(
        cls, module: nn.Module, a_shape: tuple[int, int], rank: int = 1, input_moment: torch.Tensor | None = None
    ) -> "KroneckerLinear":
        """The nearest Kronecker factorisation of an ``nn.Linear`` or GPT-2 ``Conv1D`` (Van Loan & Pitsianis 1993).

        With ``input_moment`` (``X.T X`` of calibration inputs, ``(in_features, in_features)``) the factors minimise
        the output error on those inputs instead (``calibrated_nearest_kronecker_product``).
        """
        weight = _dense_weight(module)
        out_features, in_features = weight.shape
        layer = cls(
            in_features, out_features, a_shape, rank, bias=module.bias is not None, device="meta", dtype=weight.dtype
        )
        if input_moment is None:
            a, b = nearest_kronecker_product(weight, layer.a_shape, rank)
        else:
            a, b = calibrated_nearest_kronecker_product(weight, layer.a_shape, input_moment, rank)
        layer.a = nn.Parameter(a)
        layer.b = nn.Parameter(b)
        if module.bias is not None:
            layer.bias = nn.Parameter(module.bias.detach().clone())
        return layer

    @torch.no_grad()
    def dense_weight(self) -> torch.Tensor:
        """``W`` of shape ``(out_features, in_features)``."""
        return kron_weight(self.a, self.b)

    def to_dense(self) -> nn.Linear:
        """An ``nn.Linear`` computing the same map."""
        linear = nn.Linear(
            self.in_features, self.out_features, bias=self.bias is not None, device=self.a.device, dtype=self.a.dtype
        )
        with torch.no_grad():
            linear.weight.copy_(self.dense_weight())
            if self.bias is not None:
                linear.bias.copy_(self.bias)
        return linear

    def extra_repr(self) -> str:
        params = self.rank * (math.prod(self.a_shape) + math.prod(self.b_shape))
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, a_shape={self.a_shape}, "
            f"b_shape={self.b_shape}, rank={self.rank}, bias={self.bias is not None}, "
            f"compression={self.in_features * self.out_features / params:.1f}x"
        )


class KroneckerEmbedding(nn.Module):
    """Word embedding ``W = sum_r a[r] ⊗ b[r]`` (KroneckerBERT Sec. 3.2), a drop-in for ``nn.Embedding``.

    Args:
        num_embeddings: vocabulary size ``V``.
        embedding_dim: ``d``.
        factor: ``f``, the width of each ``b[r]`` (a ``1 x f`` row); ``a[r]`` is ``V x d/f``.
        rank: number of summed Kronecker products.
        padding_idx: as in ``nn.Embedding``: that row of ``a`` starts at zero and gets no gradient.

    Row ``v`` of ``W`` is ``sum_r a[r, v] ⊗ b[r, 0]``: a lookup costs ``O(r * d)`` per token, and ``logits``
    computes ``hidden @ W.T`` with ``f / r`` times fewer multiply-adds than the dense matrix. Each token keeps
    ``r * d / f`` numbers; at ``factor = embedding_dim`` each ``a[r]`` is a column and each ``b[r]`` a row, so ``W``
    is a rank-``r`` matrix and ``from_embedding`` gives its truncated SVD.
    """

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        factor: int,
        rank: int = 1,
        padding_idx: int | None = None,
        device=None,
        dtype=None,
    ):
        super().__init__()
        if not (isinstance(factor, int) and factor >= 1):
            raise ValueError(f"factor must be a positive integer; got {factor!r}.")
        if embedding_dim % factor != 0:
            from .kronecker import divisors

            raise ValueError(
                f"factor={factor} does not divide embedding_dim={embedding_dim}. Divisors of {embedding_dim} that "
                f"would work: {divisors(embedding_dim)}."
            )
        if not (isinstance(rank, int) and 1 <= rank <= factor):
            raise ValueError(f"rank must be an integer between 1 and factor={factor}; got {rank!r}.")
        if padding_idx is not None:
            if padding_idx < 0:
                padding_idx += num_embeddings
            if not 0 <= padding_idx < num_embeddings:
                raise ValueError(f"padding_idx must be within num_embeddings={num_embeddings}; got {padding_idx}.")
        self.num_embeddings, self.embedding_dim, self.factor, self.rank = num_embeddings, embedding_dim, factor, rank
        self.padding_idx = padding_idx
        self.a_shape, self.b_shape = (num_embeddings, embedding_dim // factor), (1, factor)
        factory = {"device": device, "dtype": dtype}
        self.a = nn.Parameter(torch.empty(rank, *self.a_shape, **factory))
        self.b = nn.Parameter(torch.empty(rank, *self.b_shape, **factory))
        self.reset_parameters()

    def reset_parameters(self, std: float = 1.0) -> None:
        """Random factors whose product has entries of standard deviation ``std`` (``nn.Embedding``'s is 1)."""
        _reset_factors(self.a, self.b, std)
        self._zero_padding_row()

    @torch.no_grad()
    def _zero_padding_row(self) -> None:
        if self.padding_idx is not None and self.a.device.type != "meta":
            self.a[:, self.padding_idx].zero_()

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        # (..., ) -> (..., r, d/f) -> (..., d/f, f) summed over r -> (..., d)
        if self.rank == 1:
            rows = F.embedding(input_ids, self.a[0], self.padding_idx).unsqueeze(-2)
        else:
            # One lookup in the (r * V, d/f) view of `a` (no copy), however large the rank (an SVD-like embedding
            # has r = 96): row v of a[r] is row r * V + v.
            offsets = torch.arange(self.rank, device=input_ids.device) * self.num_embeddings
            rows = F.embedding(input_ids.unsqueeze(-1) + offsets, self.a.reshape(-1, self.a_shape[1]))
            if self.padding_idx is not None:  # as nn.Embedding: the padding row gets no gradient
                rows = torch.where((input_ids == self.padding_idx)[..., None, None], rows.detach(), rows)
        out = torch.einsum("...rj,rk->...jk", rows, self.b[:, 0])
        return out.reshape(*input_ids.shape, self.embedding_dim)

    def logits(self, hidden_states: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        """``hidden_states @ W.T (+ bias)``: ``(..., d)`` -> ``(..., V)``, for output heads tied to this embedding."""
        return kron_linear(hidden_states, self.a, self.b, bias)

    @classmethod
    def from_embedding(cls, module: nn.Embedding, factor: int, rank: int = 1) -> "KroneckerEmbedding":
        """The nearest Kronecker factorisation of an ``nn.Embedding`` (Van Loan & Pitsianis 1993)."""
        num_embeddings, embedding_dim = module.weight.shape
        layer = cls(
            num_embeddings, embedding_dim, factor, rank, module.padding_idx, device="meta", dtype=module.weight.dtype
        )
        a, b = nearest_kronecker_product(module.weight, layer.a_shape, rank)
        layer.a = nn.Parameter(a)
        layer.b = nn.Parameter(b)
        return layer

    @torch.no_grad()
    def dense_weight(self) -> torch.Tensor:
        """``W`` of shape ``(num_embeddings, embedding_dim)``."""
        return kron_weight(self.a, self.b)

    def to_dense(self) -> nn.Embedding:
        """An ``nn.Embedding`` with the same rows."""
        embedding = nn.Embedding(
            self.num_embeddings, self.embedding_dim, self.padding_idx, device=self.a.device, dtype=self.a.dtype
        )
        with torch.no_grad():
            embedding.weight.copy_(self.dense_weight())
        return embedding

    def extra_repr(self) -> str:
        params = self.rank * (math.prod(self.a_shape) + math.prod(self.b_shape))
        s = (
            f"{self.num_embeddings}, {self.embedding_dim}, factor={self.factor}, a_shape={self.a_shape}, "
            f"b_shape={self.b_shape}, rank={self.rank}"
        )
        if self.padding_idx is not None:
            s += f", padding_idx={self.padding_idx}"
        return s + f", compression={self.num_embeddings * self.embedding_dim / params:.1f}x"


class KroneckerTiedLogits(nn.Module):
    """An output projection tied to a ``KroneckerEmbedding``: ``hidden @ W.T + bias`` from the embedding's factors.

    Replaces a tied ``nn.Linear`` decoder (BERT's MLM decoder, GPT-2's ``lm_head``) without ever materialising the
    ``vocab x hidden`` matrix. The embedding is held outside the module tree (it is registered once, where the
    model keeps it), so ``state_dict`` and ``safetensors`` see each factor once; ``deepcopy`` keeps the sharing.
    """

    def __init__(self, embedding: KroneckerEmbedding, bias: bool = False):
        super().__init__()
        self._tied_to = (embedding,)  # a tuple is not registered as a submodule
        self.bias = nn.Parameter(torch.zeros(embedding.num_embeddings)) if bias else None

    @property
    def embedding(self) -> KroneckerEmbedding:
        return self._tied_to[0]

    def tie_to(self, embedding: KroneckerEmbedding) -> None:
        self._tied_to = (embedding,)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.embedding.logits(hidden_states, self.bias)

    def extra_repr(self) -> str:
        embedding = self.embedding
        return (
            f"tied to KroneckerEmbedding({embedding.num_embeddings}, {embedding.embedding_dim}), "
            f"bias={self.bias is not None}"
        )


def replace_with_kronecker_modules(
    model: nn.Module,
    linear_shapes: dict[str, tuple[int, int]],
    rank: int = 1,
    embeddings: dict[str, int] | None = None,
) -> nn.Module:
    """Swap ``nn.Linear``/``Conv1D``/``nn.Embedding`` submodules of ``model`` for Kronecker ones, in place.

    Args:
        model: any module tree (a Transformers model right after its constructor).
        linear_shapes: ``{submodule path: a_shape}`` for each linear map to factor.
        rank: number of summed Kronecker products.
        embeddings: ``{submodule path: factor}`` for each word embedding to factor.

    The new modules are freshly initialised (``reset_parameters``), on the replaced module's device and dtype;
    ``compress`` then overwrites them with the nearest Kronecker product of the dense weights.
    """
    for path, a_shape in linear_shapes.items():
        dense = model.get_submodule(path)
        weight = _dense_weight(dense)
        out_features, in_features = weight.shape
        try:
            new = KroneckerLinear(
                in_features, out_features, tuple(a_shape), rank, bias=dense.bias is not None,
                device=weight.device, dtype=weight.dtype,
            )
        except ValueError as error:
            raise ValueError(f"Cannot factor `{path}`: {error}") from None
        model.set_submodule(path, new)
    for path, factor in (embeddings or {}).items():
        dense = model.get_submodule(path)
        if not isinstance(dense, nn.Embedding):
            raise TypeError(f"`{path}` is a {type(dense).__name__}, not an nn.Embedding.")
        try:
            new = KroneckerEmbedding(
                dense.num_embeddings, dense.embedding_dim, factor, rank, dense.padding_idx,
                device=dense.weight.device, dtype=dense.weight.dtype,
            )
        except ValueError as error:
            raise ValueError(f"Cannot factor `{path}`: {error}") from None
        model.set_submodule(path, new)
    return model
