"""`flaxsent train` end to end: a checkpoint out, metrics, resume, compiled shapes, bad input."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from flaxsent import Classifier
from flaxsent.core import checkpoint as ckpt
from flaxsent.errors import FlaxsentError, TrainError
from flaxsent.train.loop import RUN_INFO, train
from flaxsent.train.recipe import TrainOptions
from tests.helpers import WORDS, build_hf_checkpoint

POSITIVE = {"great", "good", "brilliant", "fun", "love", "best", "enjoyed"}


def _write_tsv(path: Path, n: int, seed: int = 0, header: str = "sentence\tlabel") -> Path:
    """An SST-2-style TSV whose label says whether a positive word occurs."""
    rng = np.random.default_rng(seed)
    lines = [header]
    for _ in range(n):
        words = list(rng.choice(WORDS, rng.integers(2, 12)))
        lines.append(f"{' '.join(words)}\t{int(bool(POSITIVE & set(words)))}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _options(tiny_hf: Path, tmp_path: Path, **changes) -> TrainOptions:
    data = _write_tsv(tmp_path / "train.tsv", 96)
    base = dict(model=str(tiny_hf), data=str(data), out=str(tmp_path / "out"),
                eval=str(_write_tsv(tmp_path / "dev.tsv", 40, seed=1)), batch_size=16,
                max_steps=8, warmup_steps=2, learning_rate=1e-3, max_length=32,
                save_every=3, progress=False)
    return TrainOptions(**{**base, **changes})


def test_a_run_writes_a_checkpoint_metrics_and_curves(tiny_hf, tmp_path):
    result = train(_options(tiny_hf, tmp_path, epochs=2, max_steps=None, tensorboard=True))
    out = tmp_path / "out"
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    assert result.steps == 12 and result.examples == 96  # 2 epochs of 6 steps of 16
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if r["kind"] == "step"]
    evals = [r for r in records if r["kind"] == "eval"]
    assert [r["step"] for r in steps] == list(range(1, 13))
    assert [r["step"] for r in evals] == [6, 12] and 0 <= evals[-1]["accuracy"] <= 1
    assert steps[0]["learning_rate"] == 0.0 and steps[2]["learning_rate"] == pytest.approx(1e-3)
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    clf = Classifier.from_pretrained(out, cache_dir=tmp_path / "cache")
    assert clf(["a great film"])[0]["label"] in ("NEGATIVE", "POSITIVE")
    from flaxsent.convert.flax_to_torch import export_checkpoint
    export_checkpoint(out, tmp_path / "hf")  # the run's output exports like any checkpoint
    import transformers
    torch_model = transformers.DistilBertForSequenceClassification.from_pretrained(tmp_path / "hf")
    assert torch_model.config.id2label == {0: "NEGATIVE", 1: "POSITIVE"}
    assert set(result.compiled_shapes) <= {s.as_tuple() for s in result.plan_shapes}
    # the step ladder for 16 examples on one device; only the rungs the steps used compile
    assert [s.rows for s in result.plan_shapes] == [1, 2, 3, 4, 6, 8, 12, 16]
    assert result.compiled_shapes


def test_it_learns_an_easy_task(tiny_hf, tmp_path):
    """Whether a positive word occurs: the tiny model learns it in 8 epochs."""
    result = train(_options(tiny_hf, tmp_path, epochs=8, max_steps=None, learning_rate=1e-2,
                            warmup_steps=0, dropout=False))
    steps = [json.loads(x) for x in (result.out / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in steps if r["kind"] == "step"]
    assert np.mean(losses[-6:]) < 0.2 * np.mean(losses[:6])
    assert result.eval_metrics["accuracy"] >= 0.75  # held out; the majority class is ~60%


def test_masked_lm_source_needs_num_labels(tmp_path):
    mlm = tmp_path / "mlm"
    build_hf_checkpoint(mlm, head="mlm")
    with pytest.raises(FlaxsentError, match="--num-labels"):
        train(_options(mlm, tmp_path, max_steps=2))
    result = train(_options(mlm, tmp_path, max_steps=2, num_labels=2, force=True,
                            label_names=("NEGATIVE", "POSITIVE")))
    assert ckpt.read_config(result.out).labels == ("NEGATIVE", "POSITIVE")


def test_packed_and_padded_runs_end_with_the_same_weights(tiny_hf, tmp_path):
    """Dropout off: packing changes the layout, not the arithmetic."""
    opts = dict(dropout=False, max_steps=4)
    packed = train(_options(tiny_hf, tmp_path, out=str(tmp_path / "p"), **opts))
    padded = train(_options(tiny_hf, tmp_path, out=str(tmp_path / "q"), packed=False, **opts))
    texts = [" ".join(WORDS[i:i + 7]) for i in range(0, 50, 5)]
    a = Classifier.from_pretrained(packed.out, cache_dir=tmp_path / "c").logits(texts)
    b = Classifier.from_pretrained(padded.out, cache_dir=tmp_path / "c").logits(texts)
    assert np.abs(a - b).max() < 1e-4  # Adam's normalisation amplifies 1e-7 gradient noise
    assert np.abs(a - Classifier.from_pretrained(tiny_hf, cache_dir=tmp_path / "c").logits(
        texts)).max() > 1e-2  # and both did train
    assert len(padded.compiled_shapes) == 1 and padded.compiled_shapes[0][1:] == (32, 1)


def test_resume_after_sigkill_ends_bit_identical(tiny_hf, tmp_path):
    whole = train(_options(tiny_hf, tmp_path, out=str(tmp_path / "whole")))
    opts = _options(tiny_hf, tmp_path, out=str(tmp_path / "killed"))
    cmd = [sys.executable, "-m", "flaxsent", "train", "--model", opts.model, "--data",
           opts.data, "--eval", opts.eval, "--out", opts.out, "--batch-size", "16",
           "--max-steps", "8", "--warmup-steps", "2", "--learning-rate", "1e-3",
           "--max-length", "32", "--save-every", "3", "--no-progress"]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, env={**os.environ})
    metrics = Path(opts.out) / "metrics.jsonl"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if metrics.exists() and metrics.read_text().count('"kind": "step"') >= 5:
            break
        time.sleep(0.05)
    assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (Path(opts.out) / ckpt.FLAX_WEIGHTS).exists()
    config = (Path(opts.out) / ckpt.CONFIG).read_bytes()  # written once, before the first step
    result = subprocess.run([*cmd, "--resume"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "resumed from step 3" in result.stderr or "resumed from step 6" in result.stderr
    a, b = ckpt.load_flax_params(whole.out), ckpt.load_flax_params(Path(opts.out))
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert (Path(opts.out) / ckpt.CONFIG).read_bytes() == config == (
        whole.out / ckpt.CONFIG).read_bytes()
    steps = [json.loads(x)["step"] for x in metrics.read_text().splitlines()
             if '"kind": "step"' in x]
    assert steps == list(range(1, 9))


@pytest.mark.parametrize(("content", "match"), [
    ("sentence\tlabel\n", "holds no labelled examples"),
    ("sentence\tgold\nfine\t1\n", "no label column 'label'"),
    ("sentence\tlabel\nfine\t1\nbad\tmaybe\n", r"line 3: label 'maybe' is not a class"),
    ("sentence\tlabel\n" + "ok\t1\n" * 5, "5 example\\(s\\), fewer than one batch of 16"),
])
def test_bad_data_is_one_clear_error_before_any_write(tiny_hf, tmp_path, content, match):
    data = tmp_path / "bad.tsv"
    data.write_text(content, encoding="utf-8")
    with pytest.raises(FlaxsentError, match=match):
        train(_options(tiny_hf, tmp_path, data=str(data)))
    assert not (tmp_path / "out").exists()  # no run.json to block a plain rerun


@pytest.mark.parametrize("flag", ["data", "eval"])
def test_rows_without_text_are_refused_naming_their_lines_before_any_write(tiny_hf, tmp_path,
                                                                            flag):
    """An empty or whitespace-only text would be trained (or scored) as [CLS] [SEP] with a
    label: every such row is named, the file's lines counted from its header."""
    bad = tmp_path / f"{flag}-bad.tsv"
    rows = ["sentence\tlabel", "a good film\t1", "\t0", "dull\t0", " \u3000 \t1", "fun\t1"]
    bad.write_text("\n".join(rows) + "\n", encoding="utf-8")
    with pytest.raises(TrainError, match=rf"--{flag} {re.escape(str(bad))}: 2 example\(s\) "
                                         r"with no text \(empty or only whitespace\), "
                                         r"line\(s\) 3, 5: .*remove them"):
        train(_options(tiny_hf, tmp_path, **{flag: str(bad)}))
    assert not (tmp_path / "out").exists()


def test_eval_labels_are_checked_before_training_and_the_fixed_file_then_runs(tiny_hf,
                                                                              tmp_path):
    """A bad --eval label used to end the run at the first epoch's end, and the fixed file was
    then refused by the run record: now nothing is trained or written until it is fixed."""
    opts = _options(tiny_hf, tmp_path, max_steps=2)
    dev = Path(opts.eval)
    good = dev.read_text(encoding="utf-8")
    lines = good.splitlines()
    lines[2] = lines[2].rsplit("\t", 1)[0] + "\tmaybe"
    dev.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(FlaxsentError,
                       match=rf"{re.escape(str(dev))}, line 3: label 'maybe' is not a class"):
        train(opts)
    assert not Path(opts.out).exists()
    dev.write_text(good, encoding="utf-8")
    result = train(opts)  # the same command, no --resume or --force
    assert result.steps == 2 and result.eval_metrics is not None


def _tree(folder: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None
            for p in sorted(folder.rglob("*"))}


@pytest.fixture
def earlier_run(tiny_hf, tmp_path) -> TrainOptions:
    """The options of a finished one-step run in tmp_path/out."""
    opts = _options(tiny_hf, tmp_path, max_steps=1)
    train(opts)
    return opts


def test_force_replaces_an_earlier_run_and_its_leftovers(earlier_run):
    out = Path(earlier_run.out)
    (out / f".{ckpt.FLAX_WEIGHTS}.tmp-0123456789abcdef").write_bytes(b"a killed write's")
    (out / "metrics.jsonl").write_text("{}\n")
    result = train(dataclasses.replace(earlier_run, force=True))
    assert result.steps == 1
    assert not list(out.glob(".*")) and len((out / "metrics.jsonl").read_text().splitlines()) == 2


def test_force_refuses_a_run_folder_holding_files_no_run_writes(earlier_run):
    out = Path(earlier_run.out)
    (out / "notes.txt").write_text("mine")
    (out / "more").mkdir()
    before = _tree(out)
    with pytest.raises(TrainError, match=r"--force: .*out holds files no training run writes "
                                         r"\(more, notes\.txt\); refusing to delete them"):
        train(dataclasses.replace(earlier_run, force=True))
    assert _tree(out) == before


@pytest.mark.parametrize("inside", ["model", "data", "eval"])
def test_out_may_not_be_or_hold_an_input_even_with_force(earlier_run, tmp_path, inside):
    """Fine-tuning a trained folder in place would delete the model before reading it; a data
    file inside --out would go with it."""
    out = Path(earlier_run.out)
    if inside == "model":  # the earlier run's output is a checkpoint: train it again, in place
        opts = dataclasses.replace(earlier_run, model=str(out), force=True)
    else:
        moved = out / f"{inside}.tsv"
        shutil.copy(getattr(earlier_run, inside), moved)
        opts = dataclasses.replace(earlier_run, force=True, **{inside: str(moved)})
    before = _tree(out)
    with pytest.raises(TrainError, match=rf"--out {re.escape(str(out))} is the --{inside} .* or "
                                         "holds it"):
        train(opts)
    with pytest.raises(TrainError, match="or holds it"):
        train(dataclasses.replace(opts, out=str(tmp_path), force=True))  # a folder above
    assert _tree(out) == before


@pytest.mark.parametrize("spoilt", ["", "{\n  \"options\": {", '{"name": "another tool"}\n'])
def test_an_unusable_run_record_is_one_line_whose_advice_works(earlier_run, spoilt):
    """Empty, torn or foreign run.json: --resume says to start afresh with --force, which
    then does."""
    (Path(earlier_run.out) / RUN_INFO).write_text(spoilt)
    with pytest.raises(TrainError, match="is unreadable .*start afresh with --force") as caught:
        train(dataclasses.replace(earlier_run, resume=True))
    assert "\n" not in str(caught.value)
    assert train(dataclasses.replace(earlier_run, force=True)).steps == 1


def test_output_folder_rules(tiny_hf, tmp_path):
    other = tmp_path / "out"
    other.mkdir()
    (other / "precious.txt").write_text("keep me")
    with pytest.raises(TrainError, match="already exists"):
        train(_options(tiny_hf, tmp_path, max_steps=1))
    with pytest.raises(TrainError, match="not a flaxsent training output"):
        train(_options(tiny_hf, tmp_path, max_steps=1, force=True))
    assert (other / "precious.txt").exists()
    with pytest.raises(TrainError, match="no training run to continue"):
        train(_options(tiny_hf, tmp_path, max_steps=1, resume=True))


def test_a_diverging_loss_stops_and_keeps_the_last_good_state(tiny_hf, tmp_path):
    """Step 1 runs at lr 0 (warm-up), step 2's update explodes, step 3's loss is not finite:
    the state saved after step 2 is bad too, so step 1's is the last good one."""
    with pytest.raises(TrainError, match=r"loss became (nan|inf) at step 3: stopped\. The "
                                         r"last good train state is step 1 .*--resume"):
        train(_options(tiny_hf, tmp_path, learning_rate=1e30, warmup_steps=2,
                       max_grad_norm=None, max_steps=8, save_every=1))
    assert sorted(p.name for p in (tmp_path / "out" / "train_state").iterdir()
                  if p.name.isdigit()) == ["1"]
