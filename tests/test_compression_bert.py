"""compress() on BERT: the report against the NKP bound, the paper's parameter counts, real pre-trained weights."""

import pytest
import torch
from torch.nn import functional as F
from transformers import AutoTokenizer, BertConfig, BertForMaskedLM, BertForSequenceClassification, BertModel

from kron_transformers import KroneckerBertConfig, KroneckerBertModel, assets, compress


def nkp_bound(weight: torch.Tensor, a_shape: tuple[int, int], rank: int) -> float:
    """||W - nearest sum of `rank` Kronecker products||_F / ||W||_F from the singular values of the rearranged W.

    Built with `unfold` (block (i, j) of W is row i * n1 + j), independently of `kron_rearrange`; the squared
    singular values are the eigenvalues of the small Gram matrix.
    """
    m1, n1 = a_shape
    m2, n2 = weight.shape[0] // m1, weight.shape[1] // n1
    rearranged = weight.detach().double().unfold(0, m2, m2).unfold(1, n2, n2).reshape(m1 * n1, m2 * n2)
    gram = rearranged @ rearranged.T if m1 * n1 <= m2 * n2 else rearranged.T @ rearranged
    squared = torch.linalg.eigvalsh(gram).flip(0).clamp_min(0)
    return (squared[rank:].sum() / squared.sum()).sqrt().item()


def assert_report_matches_nkp_bound(dense, kronecker):
    report = kronecker.compression_report
    assert report.modules, "nothing was factored"
    for row in report.modules:
        module = dense.get_submodule(row.name)
        weight = module.weight
        assert tuple(weight.shape) == row.dense_shape
        expected = nkp_bound(weight, row.a_shape, row.rank)
        assert row.relative_error == pytest.approx(expected, rel=1e-4, abs=2e-5), row.name
        assert row.kronecker_parameters == row.rank * (row.a_shape[0] * row.a_shape[1] + row.b_shape[0] * row.b_shape[1])


@torch.no_grad()
def random_dense(cls, seed=0):
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=120, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=64, initializer_range=0.2)
    return cls(config).double().eval()


@pytest.mark.parametrize(
    ("compression", "overrides"),
    [
        (4.0, {}),
        (4.0, {"kronecker_rank": 2}),
        (2.0, {"attention_a_shape": (2, 8), "ffn_a_shape": (4, 4), "embedding_factor": 8, "kronecker_rank": 3,
               "kronecker_layers": [1]}),
    ],
)
@pytest.mark.parametrize("dense_class", [BertModel, BertForMaskedLM, BertForSequenceClassification])
def test_report_errors_equal_the_nkp_bound_for_non_exact_shapes(dense_class, compression, overrides):
    dense = random_dense(dense_class)
    kronecker = compress(dense, compression, show_progress=False, **overrides)
    config = kronecker.config
    prefix = "" if dense_class is BertModel else "bert."
    expected_names = {prefix + name for name in config.kronecker_linear_shapes()}
    expected_names |= {prefix + name for name in config.kronecker_embedding_factors()}
    assert {row.name for row in kronecker.compression_report.modules} == expected_names
    assert_report_matches_nkp_bound(dense, kronecker)
    assert all(row.relative_error > 0.05 for row in kronecker.compression_report.modules)  # not exact: a real test
    report = kronecker.compression_report
    assert report.dense_model_parameters == dense.num_parameters()
    assert report.kronecker_model_parameters == kronecker.num_parameters() < dense.num_parameters()


# ---------------------------------------------------------------------------------- KroneckerBERT Table 1 on BERT_BASE

PAPER_PARAMETERS = {"BERT_BASE": 110e6, "kronecker-bert-8": 14.3e6, "kronecker-bert-21": 5.2e6}


def count_bert_parameters(config: BertConfig, attention=None, ffn=None, embedding_factor=None) -> int:
    """BertModel's parameters (pooler included), counted from the sizes; ``None`` shapes are dense matrices."""
    h, inner, vocab = config.hidden_size, config.intermediate_size, config.vocab_size

    def matrix(out_features, in_features, a_shape):
        if a_shape is None:
            return out_features * in_features
        m1, n1 = a_shape
        return m1 * n1 + (out_features // m1) * (in_features // n1)

    word = vocab * h if embedding_factor is None else vocab * h // embedding_factor + embedding_factor
    embeddings = word + (config.max_position_embeddings + config.type_vocab_size) * h + 2 * h
    ffn_out = None if ffn is None else (ffn[1], ffn[0])
    layer = 4 * (matrix(h, h, attention) + h) + matrix(inner, h, ffn) + inner + matrix(h, inner, ffn_out) + h + 4 * h
    return embeddings + config.num_hidden_layers * layer + h * h + h


def test_presets_reproduce_the_papers_parameter_counts_on_bert_base():
    base = BertConfig()  # bert-base-uncased's sizes, built locally
    assert (base.vocab_size, base.hidden_size, base.num_hidden_layers, base.intermediate_size) == (30522, 768, 12, 3072)
    with torch.device("meta"):  # no memory, no init: only the parameter shapes
        counts = {"BERT_BASE": BertModel(base).num_parameters()}
        assert counts["BERT_BASE"] == count_bert_parameters(base)
        for preset in ("kronecker-bert-8", "kronecker-bert-21"):
            config = KroneckerBertConfig.from_dense_config(base, preset)
            model = KroneckerBertModel(config)
            counts[preset] = model.num_parameters()
            assert counts[preset] == count_bert_parameters(
                base, config.attention_a_shape, config.ffn_a_shape, config.embedding_factor
            )
    # The factor shapes of Table 1: B follows from A.
    shapes = {"kronecker-bert-8": ((2, 2), (384, 384), (384, 384)), "kronecker-bert-21": ((2, 16), (192, 384), (384, 192))}
    for preset, (attention_b, ffn_b, ffn_out_b) in shapes.items():
        config = KroneckerBertConfig.from_dense_config(base, preset)
        with torch.device("meta"):
            layer = KroneckerBertModel(config).encoder.layer[11]
        assert layer.attention.self.query.b_shape == attention_b and layer.attention.output.dense.b_shape == attention_b
        assert layer.intermediate.dense.b_shape == ffn_b and layer.output.dense.b_shape == ffn_out_b

    lines = ["", "| model | parameters | compression | paper | vs paper |", "|---|---|---|---|---|"]
    for name, count in counts.items():
        paper = PAPER_PARAMETERS[name]
        lines.append(f"| {name} | {count:,} | {counts['BERT_BASE'] / count:.2f}x | {paper / 1e6:.1f}M | "
                     f"{100 * (count / paper - 1):+.1f}% |")
    print("\n".join(lines))
    for name, count in counts.items():
        assert abs(count / PAPER_PARAMETERS[name] - 1) < 0.03, (name, count)


# ------------------------------------------------------------------------------------ real weights: all-MiniLM-L6-v2


@pytest.fixture(scope="module")
def minilm_and_sentences():
    try:
        path = assets.minilm_path()
        sentences = assets.load_rotten_tomatoes()["validation"]["sentence"][:32]
    except OSError as error:  # only when the package index cannot be reached
        pytest.skip(f"offline assets unavailable: {error}")
    model = BertModel.from_pretrained(path).eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    batch = tokenizer(sentences, padding=True, truncation=True, max_length=64, return_tensors="pt")
    return model, batch


@torch.no_grad()
def mean_pooled(model, batch) -> torch.Tensor:
    """Sentence embeddings as sentence-transformers makes them for this model: the masked mean of the last layer."""
    hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1)


@pytest.mark.real_assets
def test_compressing_minilm_matches_the_nkp_bound_and_degrades_with_the_ratio(minilm_and_sentences):
    dense, batch = minilm_and_sentences
    reference = mean_pooled(dense, batch)
    rows, similarity = [], {}
    for ratio in (2.0, 4.0, 8.0):
        kronecker = compress(dense, ratio, show_progress=False)
        assert_report_matches_nkp_bound(dense, kronecker)
        cosine = F.cosine_similarity(mean_pooled(kronecker, batch), reference, dim=-1)
        similarity[ratio] = cosine.mean().item()
        report, config = kronecker.compression_report, kronecker.config
        errors = [row.relative_error for row in report.modules]
        rows.append(
            f"| {ratio:.0f}x | {config.attention_a_shape} | {config.ffn_a_shape} | {config.embedding_factor} | "
            f"{report.kronecker_model_parameters:,} | {report.compression:.2f}x | {min(errors):.3f}-{max(errors):.3f} | "
            f"{similarity[ratio]:.3f} (min {cosine.min().item():.3f}) |"
        )
    other_sentences = F.cosine_similarity(reference, reference.roll(1, dims=0), dim=-1).mean().item()
    print(
        "\n| ratio | attention A | FFN A | embedding f | parameters | whole model | rel. errors | cosine to dense |"
        "\n|---|---|---|---|---|---|---|---|\n" + "\n".join(rows)
        + f"\n(dense model: {dense.num_parameters():,} parameters; cosine between the dense embeddings of different "
        f"sentences: {other_sentences:.3f})"
    )
    # One factor of each map 1x1 and a dense embedding: exact, so nothing changes.
    exact = compress(dense, 2.0, attention_a_shape=(384, 384), ffn_a_shape=(1, 1), embedding_factor=None,
                     show_progress=False)
    similarity[1.0] = F.cosine_similarity(mean_pooled(exact, batch), reference, dim=-1).mean().item()
    assert similarity[1.0] > 0.9999
    # Without distillation the nearest Kronecker product alone loses more of the model the harder it compresses.
    assert similarity[1.0] > similarity[2.0] > similarity[4.0] > similarity[8.0]
