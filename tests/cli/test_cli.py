"""`flaxsent convert` / `export` / `predict` / `eval` on bad input: one clear line, exit 2,
nothing half-written."""

import json
import re
import shutil
import subprocess
import sys

import pytest
import transformers

from flaxsent.cli import main
from tests.helpers import build_hf_checkpoint


def run(capsys, *argv):
    capsys.readouterr()  # drop what fixtures printed (transformers' progress bars)
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, err, pattern):
    import re
    assert code == 2
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert re.search(pattern, lines[0]), lines[0]


def test_convert_prints_summary(capsys, tiny_hf, tmp_path):
    code, out, _ = run(capsys, "convert", str(tiny_hf), str(tmp_path / "out"))
    assert code == 0
    assert "parameters: 20,908 (float32)" in out and "vocab.txt" in out


def test_missing_folder(capsys, tmp_path):
    code, _, err = run(capsys, "convert", str(tmp_path / "nope"), str(tmp_path / "out"))
    assert_one_line_error(code, err, "nope: no such folder")


def test_hub_id_offline_names_local_alternative(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, _, err = run(capsys, "convert", "someone/some-model", str(tmp_path / "out"))
    assert_one_line_error(code, err, "could not be downloaded from the Hugging Face Hub.*"
                                     "local folder")


def test_folder_without_weights(capsys, tiny_hf, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(tiny_hf / "config.json", src)
    code, _, err = run(capsys, "convert", str(src), str(tmp_path / "out"))
    assert_one_line_error(code, err, "no weights found")


def test_folder_without_config(capsys, tiny_hf, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(tiny_hf / "model.safetensors", src)
    code, _, err = run(capsys, "convert", str(src), str(tmp_path / "out"))
    assert_one_line_error(code, err, "no config.json")


def test_truncated_safetensors(capsys, tiny_hf, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(tiny_hf, src)
    data = (src / "model.safetensors").read_bytes()
    (src / "model.safetensors").write_bytes(data[: len(data) // 2])
    code, _, err = run(capsys, "convert", str(src), str(tmp_path / "out"))
    assert_one_line_error(code, err, "model.safetensors: not a readable safetensors file")
    assert not (tmp_path / "out").exists()


def test_corrupt_safetensors_header(capsys, tiny_hf, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(tiny_hf, src)
    (src / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{garbage")
    code, _, err = run(capsys, "convert", str(src), str(tmp_path / "out"))
    assert_one_line_error(code, err, "not a readable safetensors file")


def test_corrupt_bin(capsys, tmp_path):
    src = tmp_path / "src"
    build_hf_checkpoint(src, fmt="bin")
    (src / "pytorch_model.bin").write_bytes(b"not a zip file at all")
    code, _, err = run(capsys, "convert", str(src), str(tmp_path / "out"))
    assert_one_line_error(code, err, "pytorch_model.bin: not a readable PyTorch checkpoint")


@pytest.mark.parametrize("arch", ["bert", "roberta"])
def test_other_architectures_are_refused(capsys, tmp_path, arch):
    cfg_cls, model_cls = {
        "bert": (transformers.BertConfig, transformers.BertForSequenceClassification),
        "roberta": (transformers.RobertaConfig, transformers.RobertaForSequenceClassification),
    }[arch]
    cfg = cfg_cls(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                  intermediate_size=20, max_position_embeddings=40)
    model_cls(cfg).save_pretrained(tmp_path / arch)
    code, _, err = run(capsys, "convert", str(tmp_path / arch), str(tmp_path / "out"))
    assert_one_line_error(code, err, f"model_type is '{arch}', not 'distilbert'")


def test_wrong_shapes(capsys, tiny_hf, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(tiny_hf, src)
    cfg = json.loads((src / "config.json").read_text())
    cfg["hidden_dim"] = 40
    (src / "config.json").write_text(json.dumps(cfg))
    code, _, err = run(capsys, "convert", str(src), str(tmp_path / "out"))
    assert_one_line_error(code, err,
                          r"ffn\.lin1\.weight' has shape \(37, 32\), expected \(40, 32\)")


def test_unwritable_dst(capsys, tiny_hf, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _, err = run(capsys, "convert", str(tiny_hf), str(blocker / "out"))
    assert_one_line_error(code, err, "cannot write here")


def test_existing_dst_needs_force(capsys, tiny_hf, tmp_path):
    dst = tmp_path / "out"
    dst.mkdir()
    (dst / "keep.txt").write_text("mine")
    code, _, err = run(capsys, "convert", str(tiny_hf), str(dst))
    assert_one_line_error(code, err, "already exists.*--force")
    assert (dst / "keep.txt").read_text() == "mine"
    for name in ("config.json", "model.safetensors"):  # an earlier checkpoint: replaceable
        shutil.copy(tiny_hf / name, dst)
    code, _, _ = run(capsys, "convert", str(tiny_hf), str(dst), "--force")
    assert code == 0 and not (dst / "keep.txt").exists()
    assert (dst / "flax_model.safetensors").exists()


def test_failed_conversion_leaves_nothing(capsys, tiny_hf, tmp_path, monkeypatch):
    import flaxsent.core.tokenizer as tok

    def explode(*_):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(tok, "copy_tokenizer_files", explode)
    code, _, err = run(capsys, "convert", str(tiny_hf), str(tmp_path / "out"))
    assert_one_line_error(code, err, "No space left on device")
    assert list(tmp_path.iterdir()) == []  # neither DST nor a temporary folder


def test_export_round_trip_and_refusals(capsys, tiny_hf, tmp_path):
    assert run(capsys, "convert", str(tiny_hf), str(tmp_path / "flax"))[0] == 0
    code, out, _ = run(capsys, "export", str(tmp_path / "flax"), str(tmp_path / "hf"))
    assert code == 0 and "model.safetensors" in out
    transformers.DistilBertForSequenceClassification.from_pretrained(tmp_path / "hf")
    code, _, err = run(capsys, "export", str(tiny_hf), str(tmp_path / "hf2"))
    assert_one_line_error(code, err, "not a flaxsent checkpoint")


@pytest.mark.parametrize("argv, pattern", [
    (["predict", "in.txt"], "predict needs --model M and an INPUT file"),
    (["predict", "--merge", "none.json"], "is not a readable predict manifest"),
    (["predict", "--model", "MODEL", "missing.txt"], "'missing.txt' does not exist"),
    (["predict", "--model", "MODEL", "in.txt", "--num-processes", "2", "--process-id", "0"],
     "a sharded run needs -o OUTPUT"),
    (["predict", "--model", "MODEL", "in.txt", "-o", "out.jsonl", "--resume", "--force",
      "--chunk-size", "0"], "--chunk-size 0: must be a positive number"),
    (["eval", "--model", "MODEL", "in.txt"], "plain text, which has no labels"),
])
def test_predict_and_eval_errors_are_one_line(capsys, tiny_flax, tmp_path, monkeypatch, argv,
                                              pattern):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "in.txt").write_text("good fun\n")
    code, _, err = run(capsys, *[str(tiny_flax) if a == "MODEL" else a for a in argv])
    assert_one_line_error(code, err, pattern)


def test_console_script_has_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "flaxsent", "convert", str(tmp_path / "x"),
                           str(tmp_path / "y")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"flaxsent convert: error: {tmp_path / 'x'}: no such folder"


def test_force_replaces_only_an_empty_or_checkpoint_folder(capsys, tiny_hf, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("not a checkpoint")
    code, _, err = run(capsys, "convert", str(tiny_hf), str(mine), "--force")
    assert_one_line_error(code, err, "neither empty nor a checkpoint folder")
    assert (mine / "notes.txt").read_text() == "not a checkpoint"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run(capsys, "convert", str(tiny_hf), str(empty), "--force")[0] == 0
    assert run(capsys, "export", str(empty), str(tmp_path / "hf"))[0] == 0
    assert run(capsys, "export", str(empty), str(tmp_path / "hf"), "--force")[0] == 0


@pytest.mark.parametrize("command", ["convert", "export"])
@pytest.mark.parametrize("where", ["src", "parent"])
def test_force_never_replaces_src_or_a_folder_holding_it(capsys, tiny_hf, tiny_flax, tmp_path,
                                                         command, where):
    src = tmp_path / "models" / "src"
    shutil.copytree(tiny_hf if command == "convert" else tiny_flax, src)
    if where == "parent":  # a checkpoint folder that holds SRC too
        shutil.copy(src / "config.json", src.parent / "config.json")
        shutil.copy(tiny_flax / "flax_model.safetensors", src.parent)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    dst = src if where == "src" else src.parent
    code, _, err = run(capsys, command, str(src), str(dst), "--force")
    assert_one_line_error(code, err, "is the source folder or holds it")
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_output_folder_has_the_normal_permissions(capsys, tiny_hf, tmp_path):
    plain = tmp_path / "plain"
    plain.mkdir()  # what any other program would create here under this umask
    assert run(capsys, "convert", str(tiny_hf), str(tmp_path / "out"))[0] == 0
    assert (tmp_path / "out").stat().st_mode == plain.stat().st_mode


@pytest.mark.parametrize("swap", ["exchange", "two renames"])
def test_a_failed_swap_brings_the_old_folder_back(capsys, tiny_hf, tmp_path, monkeypatch, swap):
    """Linux swaps in one renameat2(RENAME_EXCHANGE); elsewhere two renames, undone on failure."""
    import os

    from flaxsent.io import durable
    dst = tmp_path / "out"
    assert run(capsys, "convert", str(tiny_hf), str(dst))[0] == 0
    before = {p.name: p.read_bytes() for p in dst.iterdir()}
    rename = os.rename

    def failing(a, b, *args, **kwargs):
        if ".out.tmp-" in str(a):  # the new folder moving into place
            raise OSError(5, "Input/output error")
        return rename(a, b, *args, **kwargs)

    def failing_exchange(a, b):
        raise OSError(5, "Input/output error", str(b))
    if swap == "exchange":
        monkeypatch.setattr(durable, "_exchange", failing_exchange)
    else:
        monkeypatch.setattr(durable, "_exchange", lambda a, b: False)
        monkeypatch.setattr(os, "rename", failing)
    code, _, err = run(capsys, "convert", str(tiny_hf), str(dst), "--force", "--dtype",
                       "bfloat16")
    assert_one_line_error(code, err, "Input/output error")
    assert {p.name: p.read_bytes() for p in dst.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # nothing left beside it


@pytest.mark.parametrize("dtype", ["float8_e4m3fn", "int8", "complex64"])
def test_a_bin_tensor_of_an_unusable_dtype_is_one_line(capsys, tmp_path, dtype):
    import torch
    src = tmp_path / "src"
    model = build_hf_checkpoint(src, fmt="bin")
    state = model.state_dict()
    state["classifier.weight"] = state["classifier.weight"].to(getattr(torch, dtype))
    torch.save(state, src / "pytorch_model.bin")
    code, _, err = run(capsys, "convert", str(src), str(tmp_path / "out"))
    assert_one_line_error(code, err, f"classifier.weight.*{dtype}")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_predict_into_an_unwritable_place_is_one_line(capsys, tiny_flax, tmp_path, fmt):
    """A path under a regular file stands in for an unwritable folder (root ignores modes)."""
    src = tmp_path / "in.txt"
    src.write_text("a fine film\n")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _, err = run(capsys, "predict", "--model", str(tiny_flax), str(src), "-o",
                       str(blocker / f"out.{fmt}"), "--no-progress")
    assert_one_line_error(code, err, "Not a directory")


def test_predict_says_how_many_texts_it_truncated(capsys, tiny_flax, tmp_path):
    src = tmp_path / "in.txt"
    src.write_text("a fine film\n" + "good " * 5000 + "\n")
    code, _, err = run(capsys, "predict", "--model", str(tiny_flax), str(src), "-o",
                       str(tmp_path / "out.jsonl"), "--no-progress")
    assert code == 0, err
    assert re.search(r"predicted 2 record\(s\) .*; 1 text\(s\) truncated to \d+ tokens", err), err


# ---- the parsers: defaults from the options dataclasses, --version, a light import

def parse(*argv):
    from flaxsent.cli import build_parser
    return build_parser().parse_args(list(argv))


def test_train_parser_defaults_are_the_model_cards_recipe(capsys):
    from flaxsent.cli import train as train_cli
    from flaxsent.train.recipe import CARD, Recipe, TrainOptions
    opts = train_cli.options(parse("train", "-m", "M", "--data", "D", "--out", "O"))
    assert opts == TrainOptions(model="M", data="D", out="O")
    card = (opts.learning_rate, opts.batch_size, opts.warmup_steps, opts.epochs,
            opts.max_length, opts.weight_decay, opts.max_grad_norm)
    assert card == (1e-5, 32, 600, 3, 128, 0.0, 1.0)  # the model card's numbers
    recipe = Recipe()
    assert (recipe.learning_rate, recipe.warmup_steps, recipe.weight_decay, recipe.max_grad_norm,
            recipe.beta1, recipe.beta2, recipe.epsilon) == (1e-5, 600, 0.0, 1.0, 0.9, 0.999, 1e-8)
    assert (CARD.beta1, CARD.beta2, CARD.epsilon) == (0.9, 0.999, 1e-8)
    with pytest.raises(SystemExit):
        parse("train", "--help")
    shown = " ".join(capsys.readouterr().out.split())
    for text in ("peak (default 1e-5)", "examples a step (default 32)",
                 "linear warm-up from 0 (default 600)", "passes over --data (default 3)",
                 "truncate examples to N tokens (default 128)",
                 "LayerNorm (default 0)", "global norm (default 1.0, as"):
        assert text in shown


def test_every_train_flag_reaches_its_option():
    from flaxsent.cli import train as train_cli
    opts = train_cli.options(parse(
        "train", "-m", "M", "--data", "D", "--out", "O", "--eval", "E", "--num-labels", "3",
        "--label-names", "a, b,c", "--text-column", "t", "--label-column", "y",
        "--learning-rate", "2e-5", "--batch-size", "8", "--warmup-steps", "0", "--epochs", "1",
        "--max-steps", "5", "--max-length", "64", "--weight-decay", "0.01",
        "--max-grad-norm", "0", "--seed", "7", "--grad-accum", "2", "--dtype", "bfloat16",
        "--no-dropout", "--no-shuffle", "--no-packing", "--save-every", "9", "--devices", "1",
        "--resume", "--force", "--tensorboard", "--no-progress"))
    assert opts.label_names == ("a", "b", "c") and opts.max_grad_norm is None  # 0: no clipping
    assert (opts.dropout, opts.shuffle, opts.packed, opts.progress) == (False,) * 4
    assert (opts.eval, opts.num_labels, opts.text_column, opts.label_column) == ("E", 3, "t", "y")
    assert (opts.learning_rate, opts.batch_size, opts.warmup_steps, opts.epochs, opts.max_steps,
            opts.max_length, opts.weight_decay, opts.seed, opts.grad_accum, opts.dtype) == \
        (2e-5, 8, 0, 1, 5, 64, 0.01, 7, 2, "bfloat16")
    assert (opts.save_every, opts.devices, opts.resume, opts.force, opts.tensorboard) == \
        (9, 1, True, True, True)


def test_serve_parser_defaults_are_the_serve_options(monkeypatch):
    from flaxsent.cli import serve as serve_cli
    from flaxsent.serve.options import ServeOptions
    monkeypatch.delenv("FLAXSENT_API_KEY", raising=False)
    args = parse("serve", "M")
    assert serve_cli.options(args) == ServeOptions(model_id="M")
    assert (args.host, args.port) == ("127.0.0.1", 8080)
    monkeypatch.setenv("FLAXSENT_API_KEY", "k")
    opts = serve_cli.options(parse("serve", "M", "--max-wait-ms", "0", "--payload-limit", "10"))
    assert (opts.api_key, opts.max_wait_ms, opts.payload_limit) == ("k", 0.0, 10)


def test_version_prints_the_installed_version(capsys):
    from importlib import metadata
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out == f"flaxsent {metadata.version('flaxsent')}\n"


def test_building_the_parser_loads_no_jax_and_no_web_framework():
    """The defaults come from light modules: `--help` and JAX's CPU pinning happen before jax."""
    check = ("import sys; from flaxsent.cli import build_parser; build_parser(); "
             "print(sorted(m for m in ('jax', 'optax', 'fastapi', 'uvicorn', 'torch') "
             "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


# ---- --quantize: the int8 variant of the runtime, on every command that builds a Classifier

@pytest.mark.parametrize("command", ["predict", "eval", "probe", "serve"])
def test_quantize_reaches_the_classifier_options(command):
    from flaxsent.cli.common import classifier_options
    argv = {"predict": ["predict", "-m", "M", "in.txt"], "eval": ["eval", "-m", "M", "in.tsv"],
            "probe": ["probe", "-m", "M"], "serve": ["serve", "M"]}[command]
    assert parse(*argv).quantize == "none"
    assert "quantize" not in classifier_options(parse(*argv))
    assert classifier_options(parse(*argv, "--quantize", "int8"))["quantize"] == "int8"


def test_a_bad_quantize_value_is_refused_by_the_parser(capsys):
    with pytest.raises(SystemExit) as stop:
        parse("predict", "-m", "M", "in.txt", "--quantize", "int4")
    assert stop.value.code == 2
    err = capsys.readouterr().err
    # (Python versions differ in quoting the choices)
    assert re.search(r"error: argument --quantize: invalid choice: 'int4' "
                     r"\(choose from '?none'?, '?int8'?\)", err), err


def test_predict_with_quantize_int8(capsys, tiny_flax, tmp_path):
    src = tmp_path / "in.txt"
    src.write_text("a fine film\nawful , boring plot\nthe story was great fun\n")
    labels = {}
    for quantize in ("none", "int8"):
        out = tmp_path / f"{quantize}.jsonl"
        code, _, err = run(capsys, "predict", "--model", str(tiny_flax), str(src), "-o",
                           str(out), "--no-progress", "--quantize", quantize, "--logits")
        assert code == 0, err
        rows = [json.loads(line) for line in out.read_text().splitlines()]
        labels[quantize] = [r["label"] for r in rows]
        assert len(rows) == 3
    assert labels["int8"] == labels["none"]
    run_record = json.loads((tmp_path / "int8.jsonl.run.json").read_text())
    assert run_record["quantize"] == "int8"
    assert "quantize" not in json.loads((tmp_path / "none.jsonl.run.json").read_text())


# ---- ONNX: `export --format onnx` and `--runtime onnxruntime`

def test_export_onnx_writes_the_folder_and_predict_runs_it(capsys, tiny_hf, tiny_flax, tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("jax2onnx")
    dst = tmp_path / "onnx"
    code, out, err = run(capsys, "export", str(tiny_hf), str(dst), "--format", "onnx")
    assert code == 0, err
    assert f"-> {dst} (ONNX opset 17)" in out and "graphs: model.onnx, model_packed.onnx" in out
    src = tmp_path / "in.txt"
    src.write_text("a fine film\nawful , boring plot\n" + "the story was great fun " * 8 + "\n")
    scores = {}
    for runtime, model in (("jax", tiny_flax), ("onnxruntime", dst)):
        output = tmp_path / f"{runtime}.jsonl"
        code, _, err = run(capsys, "predict", "--model", str(model), str(src), "-o",
                           str(output), "--no-progress", "--runtime", runtime)
        assert code == 0, err
        scores[runtime] = [json.loads(line) for line in output.read_text().splitlines()]
        record = json.loads((tmp_path / f"{runtime}.jsonl.run.json").read_text())
        assert record.get("runtime", "jax") == runtime  # --resume never mixes the two
        assert record.get("graphs") == (["model.onnx", "model_packed.onnx"]
                                        if runtime == "onnxruntime" else None)
    assert [r["label"] for r in scores["onnxruntime"]] == [r["label"] for r in scores["jax"]]
    assert [r["score"] for r in scores["onnxruntime"]] == pytest.approx(
        [r["score"] for r in scores["jax"]], abs=1e-5)


@pytest.mark.parametrize("argv, pattern", [
    (["--opset", "9"], r"--opset 9: choose an ONNX opset from 17 to \d+ \(default 17\)"),
    (["--quantize", "int8", "--format", "torch"], "--quantize and --opset apply to --format onnx"),
    (["--opset", "18"], "--quantize and --opset apply to --format onnx"),  # torch, the default
])
def test_export_option_errors_are_one_line(capsys, tiny_flax, tmp_path, argv, pattern):
    if "9" in argv:
        pytest.importorskip("jax2onnx")
        argv = [*argv, "--format", "onnx"]
    code, _, err = run(capsys, "export", str(tiny_flax), str(tmp_path / "out"), *argv)
    assert_one_line_error(code, err, pattern)
    assert not (tmp_path / "out").exists()


def test_export_onnx_refusals_are_one_line(capsys, tiny_flax, tmp_path):
    pytest.importorskip("jax2onnx")
    code, _, err = run(capsys, "export", str(tmp_path / "nope"), str(tmp_path / "out"),
                       "--format", "onnx")
    assert_one_line_error(code, err, "nope: no such folder")
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    code, _, err = run(capsys, "export", str(tiny_flax), str(tmp_path / "taken"),
                       "--format", "onnx")
    assert_one_line_error(code, err, r"taken: already exists \(pass --force")
    code, _, err = run(capsys, "export", str(tiny_flax), str(tmp_path / "taken"),
                       "--format", "onnx", "--force")
    assert_one_line_error(code, err, "neither empty nor a checkpoint folder")
    assert (tmp_path / "taken" / "notes.txt").read_text() == "mine"


def test_export_onnx_without_the_extra_names_it(capsys, tiny_flax, tmp_path, monkeypatch):
    import flaxsent.convert
    monkeypatch.delitem(sys.modules, "flaxsent.convert.onnx_export", raising=False)
    monkeypatch.delattr(flaxsent.convert, "onnx_export", raising=False)
    monkeypatch.setitem(sys.modules, "jax2onnx", None)
    code, _, err = run(capsys, "export", str(tiny_flax), str(tmp_path / "out"), "--format",
                       "onnx")
    assert_one_line_error(code, err, r"ONNX export needs jax2onnx: pip install 'flaxsent\[onnx\]'")


def test_the_opset_help_matches_the_exporter(capsys):
    pytest.importorskip("jax2onnx")
    from flaxsent.convert.onnx_export import DEFAULT_OPSET, OPSETS
    with pytest.raises(SystemExit):
        parse("export", "--help")
    shown = " ".join(capsys.readouterr().out.split())
    assert f"the ONNX opset, {OPSETS.start} to {OPSETS.stop - 1} (default {DEFAULT_OPSET})" in shown


@pytest.mark.parametrize("command", ["predict", "eval", "probe", "serve"])
def test_runtime_reaches_the_classifier_options(command):
    from flaxsent.cli.common import classifier_options
    argv = {"predict": ["predict", "-m", "M", "in.txt"], "eval": ["eval", "-m", "M", "in.tsv"],
            "probe": ["probe", "-m", "M"], "serve": ["serve", "M"]}[command]
    assert parse(*argv).runtime == "jax"
    assert "runtime" not in classifier_options(parse(*argv))
    assert classifier_options(parse(*argv, "--runtime", "onnxruntime"))["runtime"] == \
        "onnxruntime"


def test_runtime_onnxruntime_on_a_folder_without_onnx_is_one_line(capsys, tiny_flax, tmp_path):
    pytest.importorskip("onnxruntime")
    src = tmp_path / "in.txt"
    src.write_text("good fun\n")
    code, _, err = run(capsys, "predict", "--model", str(tiny_flax), str(src), "--runtime",
                       "onnxruntime", "--no-progress")
    assert_one_line_error(code, err, r"no model\.onnx \(the onnxruntime runtime runs an ONNX "
                                     r"export: flaxsent export SRC DST --format onnx\)")
