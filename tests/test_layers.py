import pytest
import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from kron_transformers import KroneckerEmbedding, KroneckerLinear


def dense_kron(a, b):
    return sum(torch.kron(a[r], b[r]) for r in range(a.shape[0]))


@pytest.mark.parametrize("rank", [1, 2, 4])
@pytest.mark.parametrize("bias", [True, False])
def test_kronecker_linear_matches_torch_kron(rank, bias):
    layer = KroneckerLinear(12, 20, a_shape=(4, 3), rank=rank, bias=bias, dtype=torch.float64)
    if bias:
        nn.init.normal_(layer.bias)
    x = torch.randn(2, 3, 12, dtype=torch.float64)
    expected = x @ dense_kron(layer.a, layer.b).T + (layer.bias if bias else 0)
    torch.testing.assert_close(layer(x), expected, rtol=1e-10, atol=1e-10)
    assert layer.a.shape == (rank, 4, 3) and layer.b.shape == (rank, 5, 4)


def test_kronecker_linear_gradcheck():
    layer = KroneckerLinear(6, 6, a_shape=(2, 3), rank=2, dtype=torch.float64)
    x = torch.randn(3, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, a, b, c: torch.func.functional_call(layer, {"a": a, "b": b, "bias": c}, (x,)),
                                    (x, layer.a.detach().requires_grad_(), layer.b.detach().requires_grad_(),
                                     layer.bias.detach().requires_grad_()))


@pytest.mark.parametrize("rank", [1, 3])
def test_from_linear_is_the_nearest_kronecker_product(rank):
    linear = nn.Linear(12, 8, dtype=torch.float64)
    layer = KroneckerLinear.from_linear(linear, (2, 3), rank=rank)
    assert layer.a.shape == (rank, 2, 3) and layer.b.shape == (rank, 4, 4)
    torch.testing.assert_close(layer.bias, linear.bias)
    assert layer.bias.data_ptr() != linear.bias.data_ptr()
    # Below full rank: the error is the Van Loan-Pitsianis optimum, the tail of the singular values of the weight's
    # block rearrangement (built here block by block: row (i, j) is block (i, j) of W, flattened) ...
    weight = linear.weight.detach()
    blocks = torch.stack([weight[i * 4:(i + 1) * 4, j * 4:(j + 1) * 4].reshape(-1) for i in range(2) for j in range(3)])
    optimum = torch.linalg.svdvals(blocks)[rank:].square().sum().sqrt()
    factored = sum(torch.kron(layer.a[r], layer.b[r]) for r in range(rank)).detach()
    error = torch.linalg.matrix_norm(weight - factored)
    torch.testing.assert_close(error, optimum, rtol=1e-9, atol=1e-12)
    assert optimum > 1e-3  # not a case where any answer is exact
    # ... and no nearby factors do better.
    generator = torch.Generator().manual_seed(rank)
    for _ in range(20):
        a = layer.a.detach() + 1e-3 * torch.randn(layer.a.shape, generator=generator, dtype=torch.float64)
        b = layer.b.detach() + 1e-3 * torch.randn(layer.b.shape, generator=generator, dtype=torch.float64)
        assert torch.linalg.matrix_norm(weight - sum(torch.kron(a[r], b[r]) for r in range(rank))) > error
    # With the full rank the factorisation is exact.
    exact = KroneckerLinear.from_linear(linear, (2, 3), rank=6)
    x = torch.randn(5, 12, dtype=torch.float64)
    torch.testing.assert_close(exact(x), linear(x), rtol=1e-9, atol=1e-9)


def test_from_conv1d_handles_the_transposed_weight():
    conv = Conv1D(nf=8, nx=12).double()  # weight (in=12, out=8)
    nn.init.normal_(conv.weight), nn.init.normal_(conv.bias)
    layer = KroneckerLinear.from_linear(conv, (8, 12))  # B is 1x1: exact
    x = torch.randn(2, 5, 12, dtype=torch.float64)
    torch.testing.assert_close(layer(x), conv(x), rtol=1e-9, atol=1e-9)
    assert (layer.in_features, layer.out_features) == (12, 8)


def test_from_linear_rejects_other_modules():
    with pytest.raises(TypeError, match="nn.Linear or a transformers Conv1D"):
        KroneckerLinear.from_linear(nn.Conv1d(4, 4, 1), (2, 2))


def test_to_dense_round_trip():
    layer = KroneckerLinear(12, 8, (2, 3), rank=2, dtype=torch.float64)
    dense = layer.to_dense()
    assert isinstance(dense, nn.Linear)
    x = torch.randn(4, 12, dtype=torch.float64)
    torch.testing.assert_close(dense(x), layer(x))
    torch.testing.assert_close(dense.weight, dense_kron(layer.a, layer.b))


def test_bad_shapes_raise_with_the_valid_divisors():
    with pytest.raises(ValueError, match=r"in_features=768 is not divisible by 5.*\[1, 2, 3, 4, 6, 8"):
        KroneckerLinear(768, 768, (2, 5))
    with pytest.raises(ValueError, match=r"out_features=3072 is not divisible by 7"):
        KroneckerLinear(768, 3072, (7, 2))
    with pytest.raises(ValueError, match="rank must be a positive integer"):
        KroneckerLinear(8, 8, (2, 2), rank=0)
    with pytest.raises(ValueError, match=r"factor=5 does not divide embedding_dim=768.*\[1, 2, 3, 4, 6, 8"):
        KroneckerEmbedding(100, 768, factor=5)
    with pytest.raises(ValueError, match="rank must be an integer between 1 and factor=2"):
        KroneckerEmbedding(100, 8, factor=2, rank=3)
    with pytest.raises(ValueError, match="padding_idx"):
        KroneckerEmbedding(100, 8, factor=2, padding_idx=100)


def test_extra_repr_shows_shapes_and_compression():
    text = repr(KroneckerLinear(768, 3072, (8, 2)))
    assert "a_shape=(8, 2)" in text and "b_shape=(384, 384)" in text and "compression=16.0x" in text
    assert "factor=8" in repr(KroneckerEmbedding(30522, 768, 8)) and "compression=8.0x" in repr(KroneckerEmbedding(30522, 768, 8))


def test_default_init_matches_dense_scale():
    torch.manual_seed(0)
    layer = KroneckerLinear(768, 768, (32, 32), rank=2)
    std = layer.dense_weight().std().item()
    assert std == pytest.approx(1 / (3 * 768) ** 0.5, rel=0.25)
    layer.reset_parameters(std=0.02)
    assert layer.dense_weight().std().item() == pytest.approx(0.02, rel=0.25)


@pytest.mark.parametrize("rank", [1, 2, 4])
def test_kronecker_embedding_matches_torch_kron(rank):
    emb = KroneckerEmbedding(50, 12, factor=4, rank=rank, dtype=torch.float64)
    weight = dense_kron(emb.a, emb.b)
    assert weight.shape == (50, 12)
    ids = torch.randint(0, 50, (3, 7))
    torch.testing.assert_close(emb(ids), weight[ids], rtol=1e-12, atol=1e-12)
    hidden = torch.randn(3, 7, 12, dtype=torch.float64)
    torch.testing.assert_close(emb.logits(hidden), hidden @ weight.T, rtol=1e-10, atol=1e-10)
    bias = torch.randn(50, dtype=torch.float64)
    torch.testing.assert_close(emb.logits(hidden, bias), hidden @ weight.T + bias, rtol=1e-10, atol=1e-10)


def test_kronecker_embedding_gradcheck():
    emb = KroneckerEmbedding(10, 6, factor=3, rank=2, dtype=torch.float64)
    ids = torch.tensor([[1, 2, 2, 9]])
    a, b = emb.a.detach().requires_grad_(), emb.b.detach().requires_grad_()
    hidden = torch.randn(2, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: torch.func.functional_call(emb, {"a": a, "b": b}, (ids,)), (a, b))
    assert torch.autograd.gradcheck(
lambda h, a, b: KroneckerEmbedding.logits(_Params(a, b), h), (hidden, a, b)
    )


class _Params:
    """Stand-in ``self`` so ``KroneckerEmbedding.logits`` can be gradchecked in its factors."""

    def __init__(self, a, b):
        self.a, self.b = a, b


def test_kronecker_embedding_padding_idx():
    emb = KroneckerEmbedding(10, 6, factor=3, rank=2, padding_idx=0, dtype=torch.float64)
    assert torch.all(emb(torch.tensor([0])) == 0)
    emb(torch.tensor([[0, 1, 2]])).sum().backward()
    assert torch.all(emb.a.grad[:, 0] == 0) and emb.a.grad[:, 1].abs().sum() > 0


def test_from_embedding_and_to_dense():
    dense = nn.Embedding(40, 8, padding_idx=3, dtype=torch.float64)
    emb = KroneckerEmbedding.from_embedding(dense, factor=4, rank=4)  # full rank: exact
    assert emb.padding_idx == 3
    torch.testing.assert_close(emb.dense_weight(), dense.weight.detach(), rtol=1e-9, atol=1e-9)
    back = emb.to_dense()
    assert isinstance(back, nn.Embedding) and back.padding_idx == 3
    ids = torch.randint(0, 40, (2, 5))
    torch.testing.assert_close(back(ids), emb(ids))


def test_state_dict_round_trip():
    layer = KroneckerLinear(12, 8, (2, 3), rank=2)
    emb = KroneckerEmbedding(20, 8, factor=2, rank=2)
    for module, make in ((layer, lambda: KroneckerLinear(12, 8, (2, 3), rank=2)), (emb, lambda: KroneckerEmbedding(20, 8, 2, 2))):
        state = module.state_dict()
        assert set(state) == ({"a", "b", "bias"} if module is layer else {"a", "b"})
        fresh = make()
        fresh.load_state_dict(state)
        for key in state:
            assert torch.equal(fresh.state_dict()[key], state[key])
    with pytest.raises(RuntimeError, match="size mismatch"):
        KroneckerLinear(12, 8, (4, 3), rank=2).load_state_dict(layer.state_dict())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_forward(dtype):
    layer = KroneckerLinear.from_linear(nn.Linear(16, 16).to(dtype), (4, 4))
    emb = KroneckerEmbedding.from_embedding(nn.Embedding(10, 16).to(dtype), factor=4)
    assert layer(torch.randn(2, 16, dtype=dtype)).dtype == dtype
    assert emb(torch.tensor([1, 2])).dtype == dtype and emb.logits(torch.randn(2, 16, dtype=dtype)).dtype == dtype


def test_tied_logits_share_the_embedding_factors():
    import copy

    from kron_transformers import KroneckerTiedLogits

    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = KroneckerEmbedding(20, 8, factor=2, rank=2, dtype=torch.float64)
            self.head = KroneckerTiedLogits(self.embed, bias=True).double()

    model = Tiny()
    assert set(model.state_dict()) == {"embed.a", "embed.b", "head.bias"}
    hidden = torch.randn(3, 8, dtype=torch.float64)
    torch.testing.assert_close(model.head(hidden), hidden @ dense_kron(model.embed.a, model.embed.b).T + model.head.bias)
    clone = copy.deepcopy(model)
    assert clone.head.embedding is clone.embed and clone.head.embedding is not model.embed
    model.head(hidden).sum().backward()
    assert model.embed.a.grad is not None


def test_replace_with_kronecker_modules():
    from kron_transformers import replace_with_kronecker_modules

    model = nn.Sequential(nn.Embedding(10, 8), nn.Linear(8, 12), nn.Sequential(Conv1D(nf=8, nx=12)))
    replace_with_kronecker_modules(model, {"1": (4, 2), "2.0": (2, 3)}, rank=2, embeddings={"0": 4})
    assert isinstance(model[0], KroneckerEmbedding) and model[0].a_shape == (10, 2)
    assert isinstance(model[1], KroneckerLinear) and model[1].b_shape == (3, 4)
    assert isinstance(model[2][0], KroneckerLinear) and (model[2][0].in_features, model[2][0].out_features) == (12, 8)
    assert model(torch.tensor([[1, 2]])).shape == (1, 2, 8)
    with pytest.raises(ValueError, match=r"Cannot factor `1`: a_shape=\(5, 2\).*out_features=12 is not divisible by 5"):
        replace_with_kronecker_modules(nn.Sequential(nn.Embedding(10, 8), nn.Linear(8, 12)), {"1": (5, 2)})


def test_embedding_with_factor_equal_to_width_is_the_truncated_svd():
    # f = d: A[r] is a V x 1 column and b[r] a 1 x d row, so sum_r A[r] ⊗ b[r] is a rank-r matrix, and the nearest
    # one is the truncated SVD (Eckart-Young).
    torch.manual_seed(0)
    dense = nn.Embedding(60, 12, padding_idx=0, dtype=torch.float64)
    emb = KroneckerEmbedding.from_embedding(dense, factor=12, rank=3)
    u, s, vh = torch.linalg.svd(dense.weight.detach(), full_matrices=False)
    torch.testing.assert_close(emb.dense_weight(), u[:, :3] @ torch.diag(s[:3]) @ vh[:3], rtol=1e-9, atol=1e-9)
    ids = torch.tensor([[0, 5, 59, 5]])
    torch.testing.assert_close(emb(ids), dense_kron(emb.a, emb.b)[ids], rtol=1e-12, atol=1e-12)
    emb(ids).sum().backward()
    assert torch.all(emb.a.grad[:, 0] == 0) and emb.a.grad[:, 5].abs().sum() > 0
