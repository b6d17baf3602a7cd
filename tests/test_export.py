"""ONNX export (every head of both families) and int8 quantisation, run in onnxruntime against PyTorch."""

import onnx
import onnxruntime  # noqa: F401  (the test extra installs the export extra's packages: fail, never skip, without them)
import onnxscript  # noqa: F401
import pytest
import torch
from transformers import (
    BertConfig,
    BertForMaskedLM,
    BertForSequenceClassification,
    BertTokenizer,
    GPT2Config,
)

import kron_transformers
from kron_transformers import KroneckerBertConfig, KroneckerGPT2Config, KroneckerLinear
from kron_transformers.export import check_onnx, export_onnx, onnx_session, quantize_onnx_int8
from kron_transformers.kronecker import kron_linear


BERT_HEADS = ["KroneckerBertModel", "KroneckerBertForMaskedLM", "KroneckerBertForSequenceClassification",
              "KroneckerBertForQuestionAnswering", "KroneckerBertForTokenClassification",
              "KroneckerBertForMultipleChoice"]
GPT2_HEADS = ["KroneckerGPT2Model", "KroneckerGPT2LMHeadModel", "KroneckerGPT2ForSequenceClassification",
              "KroneckerGPT2ForTokenClassification"]


def bert_config(rank=2):
    dense = BertConfig(vocab_size=96, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                       max_position_embeddings=64, num_labels=3)
    return KroneckerBertConfig.from_dense_config(dense, 4.0, kronecker_rank=rank)


def gpt2_config(rank=1):
    dense = GPT2Config(vocab_size=96, n_embd=32, n_layer=2, n_head=4, n_positions=64, bos_token_id=0, eos_token_id=0,
                       pad_token_id=1, num_labels=3)
    return KroneckerGPT2Config.from_dense_config(dense, 2.0, kronecker_rank=rank)


def build(class_name, config):
    torch.manual_seed(0)
    model = getattr(kron_transformers, class_name)(config).eval()
    with torch.no_grad():  # fresh biases and LayerNorms are trivial; make every tensor count
        for name, param in model.named_parameters():
            if name.endswith("bias") or "LayerNorm" in name or ".ln_" in name:
                param.add_(0.1 * torch.randn_like(param))
    return model


@pytest.mark.parametrize("class_name", BERT_HEADS + GPT2_HEADS)
def test_every_head_exports_with_dynamic_axes_and_matches_pytorch(class_name, tmp_path):
    config = bert_config() if "Bert" in class_name else gpt2_config()
    if "QuestionAnswering" in class_name:
        config.num_labels = 2  # start and end logits
    model = build(class_name, config)
    path = export_onnx(model, tmp_path / "model.onnx")  # verifies at another batch and length than traced
    session = onnx_session(path)
    inputs = [arg.name for arg in session.get_inputs()]
    assert inputs == (["input_ids", "attention_mask", "token_type_ids"] if "Bert" in class_name
                      else ["input_ids", "attention_mask"])
    axes = [dim for arg in session.get_inputs() for dim in arg.shape]
    assert {"batch", "sequence"} <= set(axes) and not any(isinstance(dim, int) and dim > 2 for dim in axes)
    # Two more sizes, independent of the export's own check.
    for batch_size, length in ((1, 13), (4, 3)):
        assert check_onnx(model, path, atol=1e-4, batch_size=batch_size, sequence_length=length,
                          session=session) <= 1e-4
    assert model.training is False


def test_export_uses_two_dimensional_factor_matmuls(tmp_path):
    """Every MatMul against a Kronecker factor has the factor as a 2-D right operand (one GEMM, pre-packed); no factor
    is expanded over the batch."""
    model = build("KroneckerBertForMaskedLM", bert_config(rank=2))
    path = export_onnx(model, tmp_path / "model.onnx")
    graph = onnx.load(str(path)).graph
    constants = {init.name: list(init.dims) for init in graph.initializer}
    constants.update({node.output[0]: None for node in graph.node if node.op_type == "Constant"})
    factor_matmuls = 0
    for node in graph.node:
        assert node.op_type != "Expand" or not any(name in constants for name in node.input[:1]), node
        if node.op_type == "MatMul":
            assert node.input[0] not in constants, f"{node.name}: a constant left operand is a broadcast MatMul"
            if node.input[1] in constants:
                factor_matmuls += 1
                assert len(constants[node.input[1]]) == 2, node.name
    factored = sum(isinstance(m, KroneckerLinear) for m in model.modules())
    assert factor_matmuls >= 2 * factored  # two per factored map, plus the dense layers' weights


@pytest.mark.parametrize("a_shape,b_shape,rank", [((4, 3), (5, 2), 2), ((2, 8), (6, 3), 1), ((1, 6), (7, 1), 3),
                                                   ((6, 1), (1, 6), 1), ((3, 4), (1, 5), 2), ((5, 1), (3, 4), 2)])
def test_exported_form_matches_torch_kron(a_shape, b_shape, rank):
    """The form torch.export traces (2-D matmuls), both orders, in float64 against torch.kron."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(rank, *a_shape, generator=g, dtype=torch.float64)
    b = torch.randn(rank, *b_shape, generator=g, dtype=torch.float64)
    bias = torch.randn(a_shape[0] * b_shape[0], generator=g, dtype=torch.float64)
    x = torch.randn(2, 3, a_shape[1] * b_shape[1], generator=g, dtype=torch.float64)
    weight = sum(torch.kron(a[r], b[r]) for r in range(rank))

    class Layer(torch.nn.Module):
        def forward(self, x, a, b, bias):
            return kron_linear(x, a, b, bias)

    exported = torch.export.export(Layer(), (x, a, b, bias))
    torch.testing.assert_close(exported.module()(x, a, b, bias), x @ weight.T + bias, rtol=1e-10, atol=1e-10)
    ops = {node.target for node in exported.graph.nodes if node.op == "call_function"}
    assert torch.ops.aten.bmm.default not in ops and torch.ops.aten.expand.default not in ops


def test_dense_model_exports_too(tmp_path):
    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(vocab_size=96, hidden_size=32, num_hidden_layers=1,
                                                     num_attention_heads=4, intermediate_size=64)).eval()
    assert check_onnx(model, export_onnx(model, tmp_path / "dense.onnx")) <= 1e-4


def test_int8_quantises_the_factors_and_stays_close(tmp_path):
    model = build("KroneckerBertForSequenceClassification", bert_config(rank=1))
    path = export_onnx(model, tmp_path / "model.onnx")
    quantized = quantize_onnx_int8(path, tmp_path / "model.int8.onnx", min_weight_side=1)  # every factor
    graph = onnx.load(str(quantized)).graph
    ops = [node.op_type for node in graph.node]
    assert any(op in ("DynamicQuantizeMatMul", "MatMulInteger") for op in ops), sorted(set(ops))
    int8_weights = [init for init in graph.initializer if init.data_type == onnx.TensorProto.INT8]
    assert len(int8_weights) >= 2 * sum(isinstance(m, KroneckerLinear) for m in model.modules())
    # int8 changes the outputs, but only a little: agreement measured, not exact.
    inputs = {"input_ids": torch.randint(0, 96, (4, 9)), "token_type_ids": torch.zeros(4, 9, dtype=torch.long)}
    inputs["attention_mask"] = torch.ones_like(inputs["input_ids"])
    feeds = {name: tensor.numpy() for name, tensor in inputs.items()}
    float_logits = torch.from_numpy(onnx_session(path).run(None, feeds)[0])
    int8_logits = torch.from_numpy(onnx_session(quantized).run(None, feeds)[0])
    cosine = torch.nn.functional.cosine_similarity(float_logits.flatten(), int8_logits.flatten(), dim=0)
    assert 0.98 < cosine.item() and not torch.equal(float_logits, int8_logits)


def test_int8_keeps_products_with_a_small_weight_in_float(tmp_path):
    model = build("KroneckerBertForSequenceClassification", bert_config(rank=1))
    path = export_onnx(model, tmp_path / "model.onnx")

    def constant_weight_sides(graph):
        shapes = {init.name: tuple(init.dims) for init in graph.initializer}
        return [min(shapes[node.input[1]]) for node in graph.node if node.op_type in ("MatMul", "Gemm")
                and node.input[1] in shapes and len(shapes[node.input[1]]) == 2]

    sides = constant_weight_sides(onnx.load(str(path)).graph)
    threshold = sorted(set(sides))[len(set(sides)) // 2]  # some products on each side of it
    small = sum(side < threshold for side in sides)
    assert 0 < small < len(sides)
    graph = onnx.load(str(quantize_onnx_int8(path, tmp_path / "model.int8.onnx", min_weight_side=threshold))).graph
    assert sorted(constant_weight_sides(graph)) == sorted(side for side in sides if side < threshold)  # still float
    int8_weights = [init for init in graph.initializer
                    if init.data_type == onnx.TensorProto.INT8 and init.name.endswith("_quantized")]
    assert len(int8_weights) == len(sides) - small


def test_bad_arguments(tmp_path):
    model = build("KroneckerBertModel", bert_config())
    with pytest.raises(ValueError, match=r"\.onnx"):
        export_onnx(model, tmp_path / "model.bin")
    with pytest.raises(ValueError, match="float32"):
        export_onnx(build("KroneckerBertModel", bert_config()).to(torch.bfloat16), tmp_path / "model.onnx")
    with pytest.raises(ValueError, match="sequence_length"):
        export_onnx(model, tmp_path / "model.onnx", sequence_length=1)
    with pytest.raises(OSError, match="No ONNX file"):
        quantize_onnx_int8(tmp_path / "missing.onnx", tmp_path / "out.onnx")
    assert not (tmp_path / "model.onnx").exists()
    with pytest.raises(ValueError, match="min_weight_side must be a positive integer; got 0"):
        quantize_onnx_int8(export_onnx(model, tmp_path / "model.onnx"), tmp_path / "out.onnx", min_weight_side=0)
    assert not (tmp_path / "out.onnx").exists()


def test_cli_export_onnx(tmp_path):
    from kron_transformers.cli import main

    folder = tmp_path / "tiny-bert"
    torch.manual_seed(0)
    BertForMaskedLM(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                               vocab_size=64)).save_pretrained(folder)
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *[f"w{i}" for i in range(59)]]) + "\n")
    BertTokenizer(str(vocab)).save_pretrained(folder)
    assert main([str(folder), str(tmp_path / "out"), "--compression", "4", "--export", "onnx"]) == 0
    session = onnx_session(tmp_path / "out" / "model.onnx")
    assert [arg.name for arg in session.get_outputs()] == ["logits"]
    assert "model.onnx" in (tmp_path / "out" / "README.md").read_text()
