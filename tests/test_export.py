"""ONNX export (every head of both families) and int8 quantisation, run in onnxruntime against PyTorch."""

import onnx
import onnxruntime  # (the test extra installs the export extra's packages: fail, never skip, without them)
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
from kron_transformers.kronecker import _kron_linear_2d, kron_linear


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


def test_session_threads_stop_spinning_when_a_run_ends(tmp_path):
    """onnx_session's threads must not keep busy-waiting after ``run`` returns: sessions (or any other work) taking
    turns on the same cores would lose them to the idle session (3x slower batch-1 runs, measured)."""
    model = build("KroneckerBertModel", bert_config())
    session = onnx_session(export_onnx(model, tmp_path / "model.onnx"), threads=2)
    options = session.get_session_options()
    assert options.get_session_config_entry("session.force_spinning_stop") == "1"
    assert (options.intra_op_num_threads, options.inter_op_num_threads) == (2, 1)
    assert check_onnx(model, tmp_path / "model.onnx", atol=1e-4, session=session) <= 1e-4


def _constants(graph) -> set[str]:
    """Names of the tensors an ONNX graph computes from constants alone: initializers, Constant nodes and every node
    output fed only by those (the exporter leaves each factor's reshape as such a node)."""
    names = {init.name for init in graph.initializer}
    for node in graph.node:  # topologically sorted
        if all(name in names for name in node.input if name):
            names.update(node.output)
    return names


@pytest.mark.parametrize("rank", [1, 2])
def test_export_runs_each_factor_product_as_gemms_without_expanding_a_factor(rank, tmp_path):
    """Attention maps with a narrow B (2x2: transposed into one GEMM) and FFN maps with a wide one (a broadcast MatMul
    of the 2-D factor over the tokens): every factor is a 2-D operand, none is expanded over the batch, and for rank 1
    the only transposes of activations beyond the dense model's (attention heads) are 2-D ones."""
    dense_config = BertConfig(vocab_size=96, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                              intermediate_size=64, max_position_embeddings=64)
    config = KroneckerBertConfig.from_dense_config(dense_config, 4.0, kronecker_rank=rank, attention_a_shape=(16, 16),
                                                ffn_a_shape=(1, 4))
    model = build("KroneckerBertForMaskedLM", config)
    graph = onnx.shape_inference.infer_shapes(onnx.load(str(export_onnx(model, tmp_path / "model.onnx")))).graph
    constants = _constants(graph)
    ranks = {info.name: len(info.type.tensor_type.shape.dim) for info in graph.value_info}
    ranks.update({init.name: len(init.dims) for init in graph.initializer})
    left, right = 0, 0
    for node in graph.node:
        assert node.op_type != "Expand" or node.input[0] not in constants, node.name
        if node.op_type == "MatMul" and node.input[0] in constants:
            assert ranks[node.input[0]] == 2 and ranks[node.input[1]] == 3, node.name  # broadcast over the tokens
            left += 1
        elif node.op_type == "MatMul" and node.input[1] in constants:
            assert ranks[node.input[1]] == 2, node.name
            right += 1
    factored = sum(isinstance(m, KroneckerLinear) for m in model.modules())
    ffn_maps = 2 * config.num_hidden_layers
    assert left == ffn_maps and right >= 2 * factored - ffn_maps  # plus the dense layers' weights
    if rank == 1:
        dense = BertForMaskedLM(dense_config).eval()
        dense_graph = onnx.load(str(export_onnx(dense, tmp_path / "dense.onnx"))).graph

        def wide_transposes(g):
            return sorted(tuple(a.ints) for n in g.node if n.op_type == "Transpose" for a in n.attribute
                          if a.name == "perm" and len(a.ints) > 2)

        assert wide_transposes(graph) == wide_transposes(dense_graph)
        # In onnxruntime's optimised graph, beyond the dense model's: one 2-D transpose per narrow product (the
        # attention maps, B of 2x2), on its way in; on the way out a product with the identity, fused into one GEMM
        # reading its operand transposed (FusedMatMul, transA=1), not a second transpose.
        def optimized(name):
            options = onnxruntime.SessionOptions()
            options.optimized_model_filepath = str(tmp_path / f"{name}.optimized.onnx")
            onnxruntime.InferenceSession(str(tmp_path / f"{name}.onnx"), options, providers=["CPUExecutionProvider"])
            nodes = onnx.load(options.optimized_model_filepath).graph.node
            transposes = sum(n.op_type == "Transpose" and a.name == "perm" and list(a.ints) == [1, 0]
                             for n in nodes for a in n.attribute)
            fused = sum(n.op_type == "FusedMatMul" and a.name == "transA" and a.i == 1
                        for n in nodes for a in n.attribute)
            return transposes, fused

        narrow_maps = sum(isinstance(m, KroneckerLinear) and m.b.shape[1] < 8 for m in model.modules())
        (transposes, fused), (dense_transposes, dense_fused) = optimized("model"), optimized("dense")
        assert narrow_maps > 0 and fused - dense_fused >= narrow_maps
        assert transposes - dense_transposes == fused - dense_fused


def _float64_factors(a_shape, b_shape, rank):
    """Random float64 factors, bias and input (batch 2 x 3 tokens), and the dense ``sum_r torch.kron(a[r], b[r])``."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(rank, *a_shape, generator=g, dtype=torch.float64)
    b = torch.randn(rank, *b_shape, generator=g, dtype=torch.float64)
    bias = torch.randn(a_shape[0] * b_shape[0], generator=g, dtype=torch.float64)
    x = torch.randn(2, 3, a_shape[1] * b_shape[1], generator=g, dtype=torch.float64)
    return a, b, bias, x, sum(torch.kron(a[r], b[r]) for r in range(rank))


@pytest.mark.parametrize("b_first", [True, False])
@pytest.mark.parametrize("a_shape,b_shape,rank", [((4, 3), (5, 2), 2), ((2, 8), (6, 3), 1), ((1, 6), (7, 1), 3),
                                                   ((3, 2), (8, 10), 1), ((2, 3), (9, 8), 2), ((3, 4), (2, 9), 1),
                                                   ((6, 1), (1, 6), 1), ((5, 1), (3, 4), 2)])
def test_export_form_in_both_orders_matches_torch_kron(a_shape, b_shape, rank, b_first):
    """Every branch of the exported form (each order; narrow and wide trailing widths; ranks 1-3) in float64."""
    a, b, bias, x, weight = _float64_factors(a_shape, b_shape, rank)
    expected = x @ weight.T + bias
    torch.testing.assert_close(_kron_linear_2d(x, a, b, bias, b_first), expected, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(_kron_linear_2d(x, a, b, None, b_first), expected - bias, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("a_shape,b_shape,rank", [((4, 3), (5, 2), 2), ((2, 8), (6, 3), 1), ((1, 6), (7, 1), 3),
                                                   ((6, 1), (1, 6), 1), ((3, 4), (1, 5), 2), ((5, 1), (3, 4), 2),
                                                   ((3, 2), (8, 10), 1), ((2, 3), (9, 8), 2)])
def test_exported_form_matches_torch_kron(a_shape, b_shape, rank):
    """The form torch.export traces, in float64 against torch.kron: no bmm, no factor expanded."""
    a, b, bias, x, weight = _float64_factors(a_shape, b_shape, rank)

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
    # Factors above the exporter's constant-folding limit (8,192 elements: A 96x96 and B 384x48 here), whose reshaped
    # views stay nodes in the exported graph, as in every real model.
    dense = BertConfig(vocab_size=96, hidden_size=192, num_hidden_layers=1, num_attention_heads=4,
                       intermediate_size=384, max_position_embeddings=64, num_labels=3)
    config = KroneckerBertConfig.from_dense_config(dense, 4.0, attention_a_shape=(96, 96), ffn_a_shape=(1, 4))
    model = build("KroneckerBertForSequenceClassification", config)
    assert max(p.numel() for name, p in model.named_parameters() if name.endswith((".a", ".b"))) > 8192
    path = export_onnx(model, tmp_path / "model.onnx")
    quantized = quantize_onnx_int8(path, tmp_path / "model.int8.onnx", min_weight_side=1)  # every factor
    graph = onnx.load(str(quantized)).graph
    ops = [node.op_type for node in graph.node]
    assert any(op in ("DynamicQuantizeMatMul", "MatMulInteger") for op in ops), sorted(set(ops))
    int8_weights = [init for init in graph.initializer if init.data_type == onnx.TensorProto.INT8]
    assert len(int8_weights) >= sum(isinstance(m, KroneckerLinear) for m in model.modules())
    # No product with a constant weight is left in float32, the factors' reshaped views included (without folding
    # them first, quantize_dynamic saw no constant there and quantised nothing but the pooler of a real model).
    constants = _constants(graph)
    assert not [node.name for node in graph.node if node.op_type in ("MatMul", "Gemm") and node.input[1] in constants]
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


@pytest.mark.parametrize("class_name", ["KroneckerBertForSequenceClassification", "KroneckerGPT2LMHeadModel"])
def test_default_opset_fuses_attention_and_gelu(class_name, tmp_path):
    """At the default opset (23) attention is one ``Attention`` node per layer and BERT's GELU one ``Gelu`` node
    (fused kernels in onnxruntime), not their elementwise decompositions; padding and causality still match PyTorch
    (export_onnx verifies). GPT-2's ``gelu_new`` is written out in Python, so it stays elementwise."""
    model = build(class_name, bert_config() if "Bert" in class_name else gpt2_config())
    graph = onnx.load(str(export_onnx(model, tmp_path / "model.onnx"))).graph
    ops = [node.op_type for node in graph.node]
    layers = model.config.num_hidden_layers
    assert ops.count("Attention") == layers and "Softmax" not in ops and "IsNaN" not in ops, sorted(set(ops))
    if "Bert" in class_name:
        assert ops.count("Gelu") == layers and "Erf" not in ops
    old = onnx.load(str(export_onnx(model, tmp_path / "opset18.onnx", opset_version=18))).graph
    assert "Attention" not in [node.op_type for node in old.node]
