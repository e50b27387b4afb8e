"""Ahead-of-time compiles for a TPU v5e slice with libtpu, on this CPU machine (group tpu_aot:
`pip install .[tpu-aot]`; skipped only where libtpu is absent), and the pure helpers."""

import json
import types

import jax.numpy as jnp
import pytest

from flaxsent.aot.compile import (
    ROWS_PER_CHIP,
    abstract_int8_model,
    compile_for_topology,
    forward_int8_flops,
    tiled_bytes,
    tpu_plan,
)
from flaxsent.aot.report import markdown, to_json, write_report
from flaxsent.cli import main
from flaxsent.core import checkpoint as ckpt
from flaxsent.core.config import TINY
from flaxsent.core.engine import Engine, PmapEngine
from flaxsent.core.plan import Shape
from flaxsent.train.recipe import Recipe
from flaxsent.train.step import TrainStep
from tests.helpers import build_hf_checkpoint

TOPOLOGY = "v5e:2x2"


def _layout(major_to_minor, *tiling):
    return types.SimpleNamespace(major_to_minor=major_to_minor, tiling=tiling)


def test_tiled_bytes_pads_the_minor_dimensions_to_the_tile():
    assert tiled_bytes((64, 128), 4, _layout((0, 1), (8, 128))) == 64 * 128 * 4
    assert tiled_bytes((60, 64), 4, _layout((0, 1), (8, 128))) == 64 * 128 * 4
    # [B, S] stored with B minor: S pads to 8 rows, B to 128 lanes
    assert tiled_bytes((64, 16), 4, _layout((1, 0), (8, 128))) == 16 * 128 * 4
    assert tiled_bytes((768,), 2, _layout((0,), (1024,), (128,))) == 1024 * 2
    assert tiled_bytes((3, 5), 2, None) == 30


def test_tpu_plan_rows_are_whole_tiles_per_device():
    plan = tpu_plan(512, 4)
    assert [s.length for s in plan.shapes()] == [128, 256, 512]
    assert all(s.rows % (4 * ROWS_PER_CHIP) == 0 for s in plan.shapes())


def test_engines_and_train_step_lower_from_an_abstract_model():
    """The hooks `flaxsent aot` compiles through, here on this machine's CPU: no weights."""
    model = ckpt.abstract_model(TINY, jnp.float32, jnp.float32)
    shape = Shape(2, 16, 2)
    for engine in (Engine(model, devices=1), PmapEngine(model, devices=1)):
        assert engine.lower(shape).compile().cost_analysis()["flops"] > 0
        assert engine.compiled_shapes == [shape.as_tuple()]
    step = TrainStep(model, Recipe(), devices=1)
    assert step.lower(shape).compile().memory_analysis().argument_size_in_bytes > 0
    assert step.compiled_shapes == [shape.as_tuple()]


def test_the_int8_model_lowers_from_shapes_and_its_int8_matmuls_are_counted():
    """The int8 forward (`--quantize int8`) lowers from an abstract model on this CPU, for the
    same shape; its int8 FLOPs are exactly the encoder's dense layers' (the last block: every
    row's keys and values, only the [CLS] rows' query, output and feed-forward)."""
    model = abstract_int8_model(TINY, jnp.float32)
    shape = Shape(2, 16, 2)
    engine = Engine(model, devices=1)
    assert engine.lower(shape).compile().cost_analysis()["flops"] > 0
    assert engine.compiled_shapes == [shape.as_tuple()]
    d, f, layers = TINY.dim, TINY.hidden_dim, TINY.n_layers
    tokens, slots = shape.rows * shape.length, shape.rows * shape.slots
    dense = 2 * (4 * d * d + 2 * d * f)  # FLOPs a row, all six layers
    expected = (layers - 1) * tokens * dense + tokens * 2 * 2 * d * d \
        + slots * 2 * (2 * d * d + 2 * d * f)
    assert forward_int8_flops(model, shape, shape.rows) == expected
    assert forward_int8_flops(ckpt.abstract_model(TINY), shape, shape.rows) == 0


@pytest.fixture(scope="module")
def tiny256(tmp_path_factory):
    """A tiny checkpoint of 256 positions: two shapes, packed rows of 128 and a 256 bucket."""
    pytest.importorskip("libtpu")
    folder = tmp_path_factory.mktemp("tiny256")
    build_hf_checkpoint(folder, max_position_embeddings=256)
    return folder


@pytest.fixture(scope="module")
def run(tiny256):
    return compile_for_topology(TOPOLOGY, str(tiny256))


def _programs(run, kind):
    return [p for p in run.programs if p.kind == kind]


@pytest.mark.tpu_aot
def test_compiles_every_shape_of_the_plan_through_mesh_and_pmap(run):
    assert len(run.topology.devices) == 4 and run.topology.device_kind == "TPU v5 lite"
    shapes = run.plan.shapes()
    assert [s.length for s in shapes] == [128, 256]
    assert [p.shape for p in _programs(run, "mesh")] == shapes
    assert [p.shape for p in _programs(run, "pmap")] == shapes
    # what the engines traced (recorded at trace time) is exactly the plan
    assert run.traced["mesh"] == run.traced["pmap"] == [s.as_tuple() for s in shapes]
    for mesh, pmap in zip(_programs(run, "mesh"), _programs(run, "pmap"), strict=True):
        assert pmap.flops == pytest.approx(mesh.flops, rel=0.01)
    (train,) = _programs(run, "train")
    assert train.shape in run.train_plan.shapes()
    assert run.traced["train"] == [train.shape.as_tuple()]


@pytest.mark.tpu_aot
def test_memory_fits_a_v5e_chip(run):
    for p in run.programs:
        m = p.memory
        assert 0 < m["arguments"] <= m["total"] <= run.topology.device_hbm_bytes, p.kind
    (train,) = _programs(run, "train")
    assert train.memory["aliased"] > 0  # params and optimizer state are donated


@pytest.mark.tpu_aot
def test_flops_are_positive_and_scale_with_rows_and_length(run, tiny256):
    """Per device: twice the rows, twice the FLOPs; twice the length, more than twice (the
    attention grows with its square) but at most four times."""
    model = ckpt.abstract_model(ckpt.read_config(tiny256), jnp.bfloat16, jnp.bfloat16)
    engine = Engine(model, devices=run.topology.devices, precision="default")

    def flops(rows, length):
        return engine.lower(Shape(rows, length, 1)).compile().cost_analysis()["flops"]

    base = flops(32, 128)
    assert base > 0
    assert flops(64, 128) / base == pytest.approx(2.0, rel=0.02)
    assert 2.0 < flops(32, 256) / base < 4.0


@pytest.mark.tpu_aot
def test_report_json_and_markdown(run, tmp_path):
    report = to_json(run)
    path = write_report(report, tmp_path)
    assert json.loads(path.read_text()) == json.loads(json.dumps(report))
    assert report["plan"]["same_as_classifier_default"] is True
    for entry in report["programs"]:
        assert entry["fits_hbm"] and entry["estimate"]["items_per_s"] > 0
        assert entry["tiles"]["batch"]["tiled"] >= entry["tiles"]["batch"]["logical"] > 0
    assert report["corpus_estimate"]["sentences_per_s"] > 0
    text = markdown(report)
    assert text == (tmp_path / "aot.md").read_text()
    assert "ESTIMATE" in text and text.count("| forward, jit mesh") == 2
    assert "| train step" in text


@pytest.mark.tpu_aot
def test_int8_programs_beside_the_bf16_ones(tiny256, tmp_path):
    run = compile_for_topology(TOPOLOGY, str(tiny256), quantize="int8", pmap=False, train=False)
    shapes = run.plan.shapes()
    float_programs = [p for p in run.programs if p.quantize == "none"]
    int8_programs = [p for p in run.programs if p.quantize == "int8"]
    assert [p.shape for p in float_programs] == [p.shape for p in int8_programs] == shapes
    assert run.traced["mesh"] == run.traced["mesh-int8"] == [s.as_tuple() for s in shapes]
    for bf16, int8 in zip(float_programs, int8_programs, strict=True):
        assert 0 < int8.int8_flops < int8.flops and bf16.int8_flops == 0
        assert int8.memory["arguments"] < bf16.memory["arguments"]  # int8 kernels
    report = to_json(run)
    assert report["quantize"] == "int8" and report["corpus_estimate_int8"]["sentences_per_s"] > 0
    text = markdown(report)
    assert text.count(", **int8** |") == len(shapes)
    assert "int8 (the encoder's dense layers as int8 x int8 -> int32 matmuls at 394 TOP/s" in text
    write_report(report, tmp_path)


@pytest.mark.tpu_aot
def test_topology_libtpu_rejects_is_one_line(capsys):
    pytest.importorskip("libtpu")
    assert main(["aot", "--topology", "v5e:3x3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "topology 'v5e:3x3': libtpu says:" in err[0], err


def test_without_model_and_transformers_names_the_extra_to_install(capsys, monkeypatch):
    """transformers is the bench extra's, not a base dependency: the embedded default model
    (`flaxsent aot` without --model) says how to get it, or to pass --model."""
    import sys

    import flaxsent.aot.compile as aot_compile
    monkeypatch.setattr(aot_compile, "get_topology", lambda topology: None)
    monkeypatch.setitem(sys.modules, "transformers", None)
    assert main(["aot", "--topology", TOPOLOGY]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install 'flaxsent[bench]', or pass --model" in err[0], err
