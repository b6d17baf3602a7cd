"""Activation-aware initialisation: calibrated_nearest_kronecker_product, input moments, compress(calibration_data=)."""

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification, BertModel

from kron_transformers import compress
from kron_transformers.calibration import calibration_batches, collect_input_moments
from kron_transformers.kronecker import (
    calibrated_nearest_kronecker_product,
    kron_weight,
    nearest_kronecker_product,
    output_error,
)


def dense_kron(a, b):
    return sum(torch.kron(a[r], b[r]) for r in range(a.shape[0]))


def correlated_inputs(n, samples=300, seed=0):
    """Inputs whose second moment is far from isotropic (a few directions carry most of the signal)."""
    g = torch.Generator().manual_seed(seed)
    mixing = torch.randn(n, n, generator=g, dtype=torch.float64) * torch.logspace(0, -2, n, dtype=torch.float64)
    return torch.randn(samples, n, generator=g, dtype=torch.float64) @ mixing


@pytest.mark.parametrize("rank", [1, 2])
@pytest.mark.parametrize(("a_shape", "b_shape"), [((3, 4), (5, 2)), ((1, 4), (6, 3)), ((6, 1), (2, 8))])
def test_calibrated_nkp_is_exact_on_kronecker_structured_weights(a_shape, b_shape, rank):
    g = torch.Generator().manual_seed(1)
    a0 = torch.randn(rank, *a_shape, generator=g, dtype=torch.float64)
    b0 = torch.randn(rank, *b_shape, generator=g, dtype=torch.float64)
    weight = dense_kron(a0, b0)
    x = correlated_inputs(weight.shape[1])
    a, b = calibrated_nearest_kronecker_product(weight, a_shape, x.T @ x, rank=rank)
    assert a.shape == (rank, *a_shape) and b.shape == (rank, *b_shape)
    torch.testing.assert_close(dense_kron(a, b), weight, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("rank", [1, 2])
@pytest.mark.parametrize("a_shape", [(3, 4), (4, 6), (1, 4), (24, 1), (2, 2)])
def test_calibrated_nkp_beats_plain_nkp_in_output_error_on_correlated_inputs(a_shape, rank):
    weight = torch.randn(24, 24, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    x = correlated_inputs(24)
    moment = x.T @ x
    plain = dense_kron(*nearest_kronecker_product(weight, a_shape, rank))
    calibrated = dense_kron(*calibrated_nearest_kronecker_product(weight, a_shape, moment, rank=rank))

    def explicit_error(approximation):  # ||X (W - K).T|| / ||X W.T|| straight from the samples
        return ((x @ (weight - approximation).T).norm() / (x @ weight.T).norm()).item()

    assert output_error(weight, calibrated, moment).item() == pytest.approx(explicit_error(calibrated), rel=1e-9)
    assert explicit_error(calibrated) < 0.95 * explicit_error(plain)
    # ... at the price of a larger weight error: it optimises another objective.
    assert (weight - calibrated).norm() >= (weight - plain).norm() - 1e-12


def test_calibrated_nkp_with_isotropic_inputs_matches_the_plain_nkp():
    weight = torch.randn(12, 20, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    a, b = calibrated_nearest_kronecker_product(weight, (3, 4), torch.eye(20, dtype=torch.float64) * 7.0)
    plain = nearest_kronecker_product(weight, (3, 4))
    torch.testing.assert_close(kron_weight(a, b), kron_weight(*plain), rtol=1e-8, atol=1e-10)


def test_calibrated_nkp_rejects_a_moment_of_the_wrong_size():
    with pytest.raises(ValueError, match=r"input_moment must be \(20, 20\)"):
        calibrated_nearest_kronecker_product(torch.randn(12, 20), (3, 4), torch.eye(12))


def tiny_bert(cls=BertModel, seed=0):
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=64, initializer_range=0.2)
    return cls(config).double().eval()


def test_collected_moments_equal_the_explicit_sum_over_real_tokens():
    model = tiny_bert()
    examples = [{"input_ids": [2, 5, 7, 9, 3]}, {"input_ids": [2, 11, 3]}, {"input_ids": [2, 4, 4, 4, 4, 6, 3]}]
    name = "encoder.layer.1.intermediate.dense"
    moments = collect_input_moments(model, [name], examples, show_progress=False)
    captured = []
    handle = model.get_submodule(name).register_forward_hook(lambda m, args, out: captured.append(args[0][0]))
    with torch.no_grad():
        for example in examples:  # one at a time: no padding at all
            model(input_ids=torch.tensor([example["input_ids"]]))
    handle.remove()
    x = torch.cat(captured)
    torch.testing.assert_close(moments[name], x.T @ x)


def test_calibration_batches_accepts_batches_and_tokenised_examples_and_rejects_text():
    batch = {"input_ids": torch.ones(2, 3, dtype=torch.long)}
    assert list(calibration_batches([batch])) == [batch]
    padded = list(calibration_batches([{"input_ids": [1, 2, 3]}, {"input_ids": [4]}], batch_size=8))
    assert padded[0]["input_ids"].tolist() == [[1, 2, 3], [4, 0, 0]]
    assert padded[0]["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    with pytest.raises(ValueError, match="tokenised examples with `input_ids`"):
        list(calibration_batches(["raw text"]))


def test_compress_with_calibration_lowers_the_output_error_and_reports_it():
    dense = tiny_bert(BertForSequenceClassification)
    g = torch.Generator().manual_seed(4)
    calibration = [{"input_ids": torch.randint(5, 100, (4, 16), generator=g),
                    "attention_mask": torch.ones(4, 16, dtype=torch.long)} for _ in range(4)]
    plain = compress(dense, 4.0, show_progress=False)
    calibrated = compress(dense, 4.0, calibration_data=calibration, show_progress=False)
    report = calibrated.compression_report
    assert report.calibrated and not plain.compression_report.calibrated
    assert "output error" in report.to_markdown()
    linear = [m for m in report.modules if m.kind == "linear"]
    assert all(m.output_error is not None for m in linear)
    moments = collect_input_moments(dense, [m.name for m in linear], calibration, show_progress=False)
    for row in linear:
        weight = dense.get_submodule(row.name).weight
        plain_error = output_error(weight, plain.get_submodule(row.name).dense_weight(), moments[row.name]).item()
        assert row.output_error == pytest.approx(
            output_error(weight, calibrated.get_submodule(row.name).dense_weight(), moments[row.name]).item())
        assert row.output_error <= plain_error + 1e-9, row.name
    assert sum(m.output_error for m in linear) < 0.97 * sum(
        output_error(dense.get_submodule(m.name).weight, plain.get_submodule(m.name).dense_weight(),
                     moments[m.name]).item() for m in linear)



def test_kron_compress_calibration_file_gives_the_calibrated_factors(capsys, tmp_path, bert_dir):
    from transformers import AutoModelForMaskedLM, AutoTokenizer, BertForMaskedLM

    from conftest import WORDS
    from kron_transformers.cli import main

    texts = [" ".join(WORDS[i:] + WORDS[:i]) for i in range(12)]
    (tmp_path / "calibration.jsonl").write_text("".join(f'{{"text": "{t}"}}\n' for t in texts))
    status = main([str(bert_dir), str(tmp_path / "out"), "--compression", "4", "--calibration_file",
                   str(tmp_path / "calibration.jsonl"), "--calibration_samples", "10"])
    out = capsys.readouterr().out
    assert status == 0
    assert "output error |" in out

    dense = BertForMaskedLM.from_pretrained(bert_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(bert_dir)
    calibration = [{"input_ids": ids} for ids in tokenizer(texts[:10], truncation=True, max_length=256)["input_ids"]]
    expected = compress(dense, 4.0, calibration_data=calibration, show_progress=False)
    assert expected.compression_report.to_markdown() in out
    reloaded = AutoModelForMaskedLM.from_pretrained(tmp_path / "out")
    for name, tensor in expected.state_dict().items():
        torch.testing.assert_close(reloaded.state_dict()[name], tensor, msg=name)


@pytest.mark.parametrize(
    ("content", "name", "message"),
    [(None, "missing.txt", "no such file"), ("x", "data.csv", "expected a .txt, .json or .jsonl file"),
     ("\n\n", "empty.txt", "holds no text"), ("{not json", "bad.jsonl", "Cannot read --calibration_file")],
)
def test_kron_compress_rejects_a_bad_calibration_file_before_loading_weights(
    capsys, tmp_path, bert_dir, content, name, message
):
    from kron_transformers.cli import main

    if content is not None:
        (tmp_path / name).write_text(content)
    status = main([str(bert_dir), str(tmp_path / "out"), "--compression", "4", "--calibration_file",
                   str(tmp_path / name)])
    err = capsys.readouterr().err
    assert status == 1 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out").exists()
