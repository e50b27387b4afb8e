"""`flaxsent export --format onnx`: HF's interface and the packed forward as ONNX graphs that
compute PyTorch's logits, pass the full checker, load with every optimization; int8 twins that
agree with them."""

import json
import shutil

import numpy as np
import pytest
import torch
import transformers

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("jax2onnx")

from flaxsent.convert.onnx_export import (  # noqa: E402 - after the extra's import check
    DEFAULT_OPSET,
    INT8_KEEP_FLOAT,
    check_opset,
    export_onnx,
    linear_nodes,
)

from flaxsent.core import checkpoint as ckpt  # noqa: E402
from flaxsent.errors import CheckpointError  # noqa: E402
from tests.helpers import random_batch  # noqa: E402

GRAPHS = ["model.onnx", "model_packed.onnx", "model_quantized.onnx",
          "model_packed_quantized.onnx"]


def session(path):
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def torch_logits(hf_folder, ids, mask):
    model = transformers.DistilBertForSequenceClassification.from_pretrained(hf_folder).eval()
    with torch.no_grad():
        return model(torch.tensor(ids), attention_mask=torch.tensor(mask)).logits.numpy()


def dims(value):
    return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]


@pytest.fixture(scope="module")
def exported(tiny_hf, tmp_path_factory):
    """The tiny HF checkpoint exported with its int8 twins."""
    dst = tmp_path_factory.mktemp("onnx") / "model"
    report = export_onnx(tiny_hf, dst, quantize="int8")
    return dst, report


def test_the_folder_holds_hf_interface_graph_config_and_tokenizer(exported, tiny_hf):
    dst, report = exported
    assert sorted(p.name for p in dst.iterdir()) == sorted(
        [*GRAPHS, "config.json", "tokenizer_config.json", "vocab.txt"])
    assert report.graphs == GRAPHS and report.opset == DEFAULT_OPSET
    assert json.loads((dst / "config.json").read_text()) == \
        ckpt.read_config(tiny_hf).to_hf_dict()
    assert transformers.AutoConfig.from_pretrained(dst).model_type == "distilbert"
    graph = onnx.load(str(dst / "model.onnx"))
    assert [(v.name, v.type.tensor_type.elem_type, dims(v)) for v in graph.graph.input] == [
        ("input_ids", onnx.TensorProto.INT64, ["batch", "sequence"]),
        ("attention_mask", onnx.TensorProto.INT64, ["batch", "sequence"])]
    assert [(v.name, v.type.tensor_type.elem_type, dims(v)) for v in graph.graph.output] == [
        ("logits", onnx.TensorProto.FLOAT, ["batch", 2])]
    assert graph.opset_import[0].version == DEFAULT_OPSET
    packed = onnx.load(str(dst / "model_packed.onnx"))
    assert [(v.name, v.type.tensor_type.elem_type, dims(v)) for v in packed.graph.input] == [
        (name, onnx.TensorProto.INT64, ["batch", "sequence"])
        for name in ("input_ids", "segment_ids", "position_ids")] + [
        ("cls_index", onnx.TensorProto.INT64, ["batch", "slots"])]
    assert [dims(v) for v in packed.graph.output] == [["batch", "slots", 2]]


@pytest.mark.parametrize("batch,length", [(1, 1), (2, 5), (3, 17), (8, 64)])
def test_the_standard_graph_gives_pytorchs_logits(exported, tiny_hf, batch, length):
    ids, mask = random_batch(np.random.default_rng(batch * 100 + length), 128, batch, length)
    got = session(exported[0] / "model.onnx").run(
        ["logits"], {"input_ids": ids, "attention_mask": mask})[0]
    assert got.dtype == np.float32 and got.shape == (batch, 2)
    assert np.abs(got - torch_logits(tiny_hf, ids, mask)).max() <= 1e-5


def test_the_packed_graph_gives_each_text_its_own_pytorch_logits(exported, tiny_hf):
    rng = np.random.default_rng(3)
    lengths = [[5, 9, 3], [20], [7, 7, 7, 7], [2]]  # texts per row; the rows hold 30 tokens
    ids = np.zeros((4, 30), np.int64)
    segments, positions = np.zeros_like(ids), np.zeros_like(ids)
    columns = np.zeros((4, 4), np.int64)
    texts = []
    for r, row in enumerate(lengths):
        col = 0
        for k, n in enumerate(row):
            text = rng.integers(1, 128, n)
            ids[r, col:col + n], segments[r, col:col + n] = text, k + 1
            positions[r, col:col + n], columns[r, k] = np.arange(n), col
            texts.append((r, k, text))
            col += n
    got = session(exported[0] / "model_packed.onnx").run(["logits"], {
        "input_ids": ids, "segment_ids": segments, "position_ids": positions,
        "cls_index": columns})[0]
    assert got.shape == (4, 4, 2)
    for r, k, text in texts:
        alone = torch_logits(tiny_hf, text[None], np.ones((1, len(text)), np.int64))[0]
        assert np.abs(got[r, k] - alone).max() <= 1e-5, (r, k)


def test_every_graph_passes_the_full_checker_and_loads_with_every_optimization(exported):
    for name in GRAPHS:
        onnx.checker.check_model(str(exported[0] / name), full_check=True)
        assert session(exported[0] / name).get_outputs()[0].name == "logits"


def test_int8_graphs_agree_with_the_float_ones(exported):
    dst, report = exported
    assert report.keep_float == INT8_KEEP_FLOAT
    assert report.quantized == [f"layers/1/attention/{p}_lin" for p in "kqv"]
    ops = {n.op_type for n in onnx.load(str(dst / "model_quantized.onnx")).graph.node}
    assert {"MatMulInteger", "DynamicQuantizeLinear"} <= ops
    ids, mask = random_batch(np.random.default_rng(7), 128, 64, 48)
    feeds = {"input_ids": ids, "attention_mask": mask}
    fp32 = session(dst / "model.onnx").run(["logits"], feeds)[0]
    int8 = session(dst / "model_quantized.onnx").run(["logits"], feeds)[0]
    assert np.abs(int8 - fp32).max() <= 0.1
    assert (int8.argmax(-1) == fp32.argmax(-1)).mean() >= 0.9


def count_ops(path):
    graph = onnx.load(str(path)).graph
    return {op: sum(n.op_type == op for n in graph.node) for op in ("MatMul", "MatMulInteger")}


def test_every_linear_is_found_and_the_kept_ones_stay_float(exported, tiny_hf, tmp_path):
    model = ckpt.load_model(tiny_hf)
    nodes = linear_nodes(onnx.load(str(exported[0] / "model.onnx")), model)
    assert len(nodes) == 6 * 2 + 2  # q, k, v, out, lin1, lin2 per layer; the head's two
    assert {"classifier", "pre_classifier", "layers/1/ffn/lin2"} <= set(nodes.values())
    attention = 2 * 2  # two layers' two activation x activation matmuls: always float
    for name in ("model_quantized.onnx", "model_packed_quantized.onnx"):
        assert count_ops(exported[0] / name) == {"MatMul": 11 + attention, "MatMulInteger": 3}
    report = export_onnx(tiny_hf, tmp_path / "encoder", quantize="int8",
                         int8_keep_float=("pre_classifier", "classifier"))
    assert len(report.quantized) == 12
    assert count_ops(tmp_path / "encoder" / "model_quantized.onnx") == \
        {"MatMul": 2 + attention, "MatMulInteger": 12}


def test_linears_with_equal_kernels_are_all_found(tiny_hf):
    from flaxsent.convert.onnx_export import standard_graph
    model = ckpt.load_model(tiny_hf)
    for block in model.layers:  # a zeroed q, k, v: three equal kernels a layer
        for linear in (block.attention.q_lin, block.attention.k_lin, block.attention.v_lin):
            linear.kernel[...] = np.zeros(linear.kernel[...].shape, np.float32)
    nodes = linear_nodes(standard_graph(model, DEFAULT_OPSET), model)
    assert sorted(nodes.values()) == sorted(
        p.removesuffix("/kernel") for p in ckpt.params_of(model) if p.endswith("/kernel"))


def test_flax_and_bfloat16_folders_export_too(tiny_hf, tiny_flax, tmp_path):
    from flaxsent.convert.torch_to_flax import convert_checkpoint
    ids, mask = random_batch(np.random.default_rng(1), 128, 4, 20)
    feeds = {"input_ids": ids, "attention_mask": mask}
    export_onnx(tiny_flax, tmp_path / "from_flax", opset=18)
    graph = onnx.load(str(tmp_path / "from_flax" / "model.onnx"))
    assert graph.opset_import[0].version == 18
    got = session(tmp_path / "from_flax" / "model.onnx").run(["logits"], feeds)[0]
    assert np.abs(got - torch_logits(tiny_hf, ids, mask)).max() <= 1e-5
    convert_checkpoint(tiny_hf, tmp_path / "bf16", dtype="bfloat16")
    export_onnx(tmp_path / "bf16", tmp_path / "from_bf16")  # bf16 weights, float32 graph
    got = session(tmp_path / "from_bf16" / "model.onnx").run(["logits"], feeds)[0]
    widened = ckpt.load_model(tmp_path / "bf16", dtype="float32")
    assert np.abs(got - np.asarray(widened(ids, mask))).max() <= 1e-5


def test_bad_opset_and_quantization_are_one_line_errors(tiny_hf, tmp_path):
    for bad in (16, 99, "17", True):
        with pytest.raises(CheckpointError, match="choose an ONNX opset from 17 to"):
            check_opset(bad)
    with pytest.raises(CheckpointError, match="--quantize int4: choose int8"):
        export_onnx(tiny_hf, tmp_path / "x", quantize="int4")
    assert not (tmp_path / "x").exists()


def test_force_replaces_an_onnx_export_but_never_the_source(exported, tiny_hf, tmp_path):
    dst = tmp_path / "onnx"
    shutil.copytree(exported[0], dst)
    with pytest.raises(CheckpointError, match="already exists"):
        export_onnx(tiny_hf, dst)
    export_onnx(tiny_hf, dst, force=True)
    assert not (dst / "model_quantized.onnx").exists()  # the new folder, whole
    with pytest.raises(CheckpointError, match="is the source folder"):
        export_onnx(tiny_hf, tiny_hf, force=True)


# ---- full size: the embedded default model (DistilBERT-base, logits as large as a trained one's)

@pytest.fixture(scope="module")
def full_size(tmp_path_factory):
    """The embedded default model's HF folder and its ONNX export with the int8 twins."""
    from flaxsent.embedded.default_model import default_model_folder
    folder = default_model_folder()
    dst = tmp_path_factory.mktemp("full_size") / "onnx"
    export_onnx(folder, dst, quantize="int8")
    return folder, dst


@pytest.mark.slow
@pytest.mark.parametrize("batch,length", [(2, 17), (4, 128), (1, 512)])
def test_full_size_graph_gives_pytorchs_logits(full_size, batch, length):
    folder, dst = full_size
    ids, mask = random_batch(np.random.default_rng(length), 30522, batch, length)
    got = session(dst / "model.onnx").run(["logits"],
                                          {"input_ids": ids, "attention_mask": mask})[0]
    assert np.abs(got - torch_logits(folder, ids, mask)).max() <= 1e-4  # measured 6e-6


@pytest.mark.slow
def test_full_size_runtime_and_int8_agree_with_pytorch_on_the_embedded_corpus(full_size):
    """872 sentences through the onnxruntime runtime. Measured (docs/converting.md): float32
    max |dlogit| 1.6e-5; int8 99.1% of labels the same (8 flips) packed, 99.2% bucketed, max
    |dlogit| 0.29 next to logits up to 7.8."""
    from flaxsent import Classifier
    from flaxsent.embedded.corpus import generate_corpus
    folder, dst = full_size
    texts = generate_corpus(872)
    model = transformers.DistilBertForSequenceClassification.from_pretrained(folder).eval()
    tok = transformers.AutoTokenizer.from_pretrained(folder)
    order = np.argsort([len(t) for t in texts])  # length-sorted batches: less padding to run
    ref = np.zeros((len(texts), 2), np.float32)
    with torch.no_grad():
        for i in range(0, len(texts), 32):
            at = order[i:i + 32]
            ref[at] = model(**tok([texts[j] for j in at], padding=True,
                                  return_tensors="pt")).logits.numpy()
    fp32 = Classifier.from_pretrained(dst, runtime="onnxruntime").logits(texts)
    assert np.abs(fp32 - ref).max() <= 1e-4
    for pack_length in (128, None):
        int8 = Classifier.from_pretrained(dst, runtime="onnxruntime", quantize="int8",
                                          pack_length=pack_length).logits(texts)
        assert (int8.argmax(-1) == ref.argmax(-1)).mean() >= 0.985, pack_length
        assert np.abs(int8 - ref).max() <= 0.5
