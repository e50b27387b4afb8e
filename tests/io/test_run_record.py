"""The run record and `--resume` guard (`flaxsent.io.run_record.check_or_record`), the one of
predict and of train: a fresh run records what it depends on; a resume refuses a run that
differs, naming what; a missing, torn, empty or foreign record is one line, never a traceback."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from flaxsent.core.classifier import Classifier
from flaxsent.errors import FlaxsentError, PredictError, TrainError
from flaxsent.io import run_record
from flaxsent.predict import run as predict
from flaxsent.train.loop import RUN_INFO, TrainOptions, train
from tests.helpers import WORDS, stopped_predict_run

IDENTITY = {"input": {"path": "/data/in.txt", "size": 10}, "top_k": 1, "dtype": "float32"}
REFUSAL = "--resume: out was written by another run ({}): start afresh with --force"

# what a record beside an output can be instead of a run record (None: no record at all)
UNUSABLE = {
    "missing": None,
    "empty": "",
    "blank": "\n \n",
    "torn": '{\n  "input": {\n    "path": "/da',
    "not JSON": "hello\n",
    "a list": "[1, 2]\n",
    "a string": '"run"\n',
    "foreign": '{"name": "another tool\'s file"}\n',
    "not UTF-8": b"\xff\xfe{}",
}


def _guard(path: Path, identity: dict, resume: bool, **kwargs) -> None:
    run_record.check_or_record(path, identity, resume=resume, error=PredictError,
                               refusal=REFUSAL.format, **kwargs)


def _spoil(path: Path, case: str) -> None:
    content = UNUSABLE[case]
    if content is None:
        path.unlink(missing_ok=True)
    elif isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")


def _assert_one_line(err: BaseException, record: Path) -> str:
    message = str(err)
    assert "\n" not in message and str(record) in message, message
    assert "start afresh with --force" in message, message
    return message


# -------------------------------------------------------------------------------- the guard alone

def test_a_fresh_run_records_its_identity_durably(tmp_path, monkeypatch):
    path = tmp_path / "out.run.json"
    path.write_text("an earlier run's")
    fsynced = []
    monkeypatch.setattr(os, "fsync", lambda fd: fsynced.append(fd))
    _guard(path, IDENTITY, resume=False)
    assert json.loads(path.read_text()) == IDENTITY
    assert len(fsynced) == 2  # the record, then its folder
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.run.json"]


def test_resume_of_the_same_identity_goes_on_and_keeps_the_record(tmp_path):
    path = tmp_path / "out.run.json"
    _guard(path, IDENTITY, resume=False)
    before = path.read_bytes()
    _guard(path, json.loads(json.dumps(IDENTITY)), resume=True)
    assert path.read_bytes() == before


@pytest.mark.parametrize("change, what", [
    ({"top_k": 5}, "top_k: 1 -> 5"),
    ({"input": {"path": "/data/in.txt", "size": 11}}, "input (size changed)"),
    ({"window": 8}, "window: None -> 8"),
])
def test_resume_refuses_a_changed_identity_naming_what_changed(tmp_path, change, what):
    path = tmp_path / "out.run.json"
    _guard(path, IDENTITY, resume=False)
    before = path.read_bytes()
    with pytest.raises(PredictError) as caught:
        _guard(path, {**IDENTITY, **change}, resume=True)
    assert str(caught.value) == REFUSAL.format(what)
    assert path.read_bytes() == before  # the recorded run stays what it was


def test_resume_compares_with_the_callers_comparison(tmp_path):
    path = tmp_path / "run.json"
    _guard(path, IDENTITY, resume=False)
    with pytest.raises(PredictError, match=r"\(top_k is not 1; dtype\)"):
        _guard(path, {**IDENTITY, "top_k": 2}, resume=True,
               compare=lambda old, new: [f"top_k is not {old['top_k']}", "dtype"])


@pytest.mark.parametrize("case", UNUSABLE)
def test_an_unusable_record_is_one_line_naming_it(tmp_path, case):
    path = tmp_path / "out.jsonl.run.json"
    _spoil(path, case)
    with pytest.raises(PredictError) as caught:
        _guard(path, IDENTITY, resume=True, wrote=tmp_path / "out.jsonl")
    message = _assert_one_line(caught.value, path)
    assert message.startswith("--resume: ")
    if case == "missing":
        assert f"no {path} records the run that wrote {tmp_path / 'out.jsonl'}" in message
    else:
        assert f"{path} is unreadable (" in message


def test_an_unreadable_record_is_one_line(tmp_path):
    path = tmp_path / "run.json"
    path.mkdir()  # read_text: IsADirectoryError
    with pytest.raises(FlaxsentError) as caught:
        run_record.read_record(path)
    assert "is unreadable (Is a directory)" in _assert_one_line(caught.value, path)


# --------------------------------------------------------------------------------------- predict

@pytest.fixture
def stopped_predict(tiny_flax, tmp_path) -> tuple[Path, Path, Path, bytes]:
    """A predict run killed after 9 of 20 rows (see `tests.helpers.stopped_predict_run`)."""
    return stopped_predict_run(tiny_flax, tmp_path)


def test_a_fresh_predict_run_records_what_it_depends_on(stopped_predict):
    model, src, out, _ = stopped_predict
    recorded = run_record.read_record(f"{out}{predict.RUN_SUFFIX}")
    assert recorded["input"]["path"] == str(src.resolve()) and recorded["window"] == 4
    assert recorded["model"]["path"] == str(model.resolve())


@pytest.mark.parametrize("case", UNUSABLE)
def test_predict_resume_with_an_unusable_record_is_one_line(stopped_predict, case):
    model, src, out, _ = stopped_predict
    record = Path(f"{out}{predict.RUN_SUFFIX}")
    _spoil(record, case)
    before = out.read_bytes()
    with pytest.raises(PredictError) as caught:
        predict.predict_file(Classifier.from_pretrained(model, window=4), str(src), str(out),
                             resume=True, progress=False)
    _assert_one_line(caught.value, record)
    if case == "missing":
        assert str(caught.value).startswith(f"--resume: no {record} records the run that "
                                            f"wrote {out}, so it cannot be continued safely")
    assert out.read_bytes() == before  # untouched: not even trimmed


def test_predict_resume_refusals_are_one_line_on_the_command_line(stopped_predict, capsys):
    from flaxsent.cli import main
    model, src, out, _ = stopped_predict
    capsys.readouterr()
    argv = ["predict", "--model", str(model), str(src), "-o", str(out), "--resume",
            "--no-progress"]
    assert main(argv) == 2  # the CLI's window is not 4
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "window: 4 -> 4096" in err, err
    _spoil(Path(f"{out}{predict.RUN_SUFFIX}"), "torn")
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "is unreadable (not JSON" in err, err
    assert "Traceback" not in err


# ----------------------------------------------------------------------------------------- train

def _write_tsv(path: Path, n: int, seed: int = 0) -> Path:
    """An SST-2-style TSV with a random 0/1 label."""
    rng = np.random.default_rng(seed)
    lines = ["sentence\tlabel"] + [
        f"{' '.join(rng.choice(WORDS, rng.integers(2, 12)))}\t{rng.integers(0, 2)}"
        for _ in range(n)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _train_options(tiny_hf: Path, tmp_path: Path, **changes) -> TrainOptions:
    data = tmp_path / "train.tsv"
    if not data.exists():
        _write_tsv(data, 32)
    base = dict(model=str(tiny_hf), data=str(data), out=str(tmp_path / "out"), batch_size=16,
                max_steps=2, warmup_steps=1, learning_rate=1e-3, max_length=32, save_every=1,
                progress=False)
    return TrainOptions(**{**base, **changes})


def test_a_train_run_records_itself_and_resume_refuses_other_options_or_data(tiny_hf,
                                                                            tmp_path):
    train(_train_options(tiny_hf, tmp_path))
    recorded = run_record.read_record(tmp_path / "out" / RUN_INFO)
    assert recorded["options"]["learning_rate"] == 1e-3
    assert recorded["data"]["path"] == str((tmp_path / "train.tsv").resolve())
    with pytest.raises(TrainError, match="learning_rate: 0.001 -> 0.002"):
        train(_train_options(tiny_hf, tmp_path, learning_rate=2e-3, resume=True))
    _write_tsv(tmp_path / "train.tsv", 33)
    with pytest.raises(TrainError, match=r"--resume: this run differs from the one in .*out: "
                                         r"data file changed\. Rerun with the same options"):
        train(_train_options(tiny_hf, tmp_path, resume=True))


@pytest.mark.parametrize("case", UNUSABLE)
def test_train_resume_with_an_unusable_record_is_one_line(tiny_hf, tmp_path, case):
    """A run.json that is not a run record: one line before any training, not a traceback."""
    out = tmp_path / "out"
    out.mkdir()
    record = out / RUN_INFO
    _spoil(record, case)
    with pytest.raises(TrainError) as caught:
        train(_train_options(tiny_hf, tmp_path, resume=True))
    message = str(caught.value)
    if case == "missing":  # the output folder's own check comes first
        assert "\n" not in message and "holds no training run to continue" in message
    else:
        assert f"{record} is unreadable (" in _assert_one_line(caught.value, record)
    assert sorted(p.name for p in out.iterdir()) == ([] if case == "missing" else [RUN_INFO])


def test_train_resume_with_a_torn_record_is_one_line_on_the_command_line(tiny_hf, tmp_path,
                                                                         capsys):
    from flaxsent.cli import main
    opts = _train_options(tiny_hf, tmp_path)
    (tmp_path / "out").mkdir()
    _spoil(tmp_path / "out" / RUN_INFO, "torn")
    capsys.readouterr()
    assert main(["train", "--model", opts.model, "--data", opts.data, "--out", opts.out,
                 "--batch-size", "16", "--max-steps", "2", "--resume", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert f"{tmp_path / 'out' / RUN_INFO} is unreadable (not JSON" in err, err
