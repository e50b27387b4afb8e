"""`flaxsent predict`: every format in and out, order, extras, top-k, bad rows, --resume after a
SIGKILL (byte-identical), --chunk-size as the write size only, and overwrite protection."""

from __future__ import annotations

import io
import json
import os
import platform
import shutil
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from flaxsent.core.classifier import Classifier
from flaxsent.errors import FlaxsentError
from flaxsent.io import writers
from flaxsent.predict import run as predict
from tests.helpers import (
    cli,
    parse,
    poisoned,
    read_output,
    stopped_predict_run,
    subprocess_cli,
    texts,
    write_input,
)


@pytest.fixture(scope="module")
def clf(tiny_flax) -> Classifier:
    return Classifier.from_pretrained(tiny_flax, window=64)


@pytest.mark.parametrize("fmt_in", ["txt", "jsonl", "csv", "tsv", "parquet"])
def test_input_formats_keep_order_and_extras(clf, tmp_path, fmt_in):
    items = [{"id": f"r{i}", "text": t} for i, t in enumerate(texts(150, seed=1))]
    src = tmp_path / f"in.{fmt_in}"
    write_input(src, items)
    out = tmp_path / "out.jsonl"
    result = predict.predict_file(clf, str(src), str(out), chunk_size=40, progress=False)
    assert result.written == 150
    want = list(clf.stream([r["text"] for r in items]))
    got = read_output(out)
    assert [{"label": r["label"], "score": r["score"]} for r in got] == want
    if fmt_in != "txt":
        assert [r["id"] for r in got] == [r["id"] for r in items]


@pytest.mark.parametrize("fmt_out", ["jsonl", "csv", "parquet"])
def test_output_formats_with_top_k_and_logits(clf, tmp_path, fmt_out):
    items = [{"id": i, "text": t} for i, t in enumerate(texts(90, seed=2))]
    src = tmp_path / "in.jsonl"
    write_input(src, items)
    out = tmp_path / f"out.{fmt_out}"
    predict.predict_file(clf, str(src), str(out), top_k=None, logits=True, chunk_size=32,
                         progress=False)
    got = read_output(out)
    plain = [r["text"] for r in items]
    assert [r["labels"] for r in got] == clf(plain, top_k=None)
    logits = np.array([r["logits"] for r in got], dtype=np.float32)
    np.testing.assert_array_equal(logits, clf.logits(plain))
    assert [int(r["id"]) for r in got] == list(range(90))


def test_top_k_cli_value_and_stdin_stdout(tiny_flax, tmp_path, monkeypatch, capsysbinary):
    lines = texts(12, seed=3)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(
        "".join(t + "\n" for t in lines).encode())))
    assert cli(["--model", str(tiny_flax), "-", "--top-k", "2", "--no-progress"]) == 0
    out = capsysbinary.readouterr().out.decode().splitlines()
    got = [json.loads(line) for line in out]
    want = Classifier.from_pretrained(tiny_flax)(lines, top_k=2)
    assert [r["labels"] for r in got] == want
    with pytest.raises(SystemExit):
        parse(["predict", "x.txt", "--model", "m", "--top-k", "0"])


def bad_jsonl(path: Path, n: int, bad: set[int]) -> list[str]:
    """n JSONL rows with an `id`; the 1-based lines in `bad` are not JSON."""
    items = texts(n, seed=4)
    path.write_text("".join(("{broken\n" if i + 1 in bad else
                             json.dumps({"id": i, "text": t}) + "\n")
                            for i, t in enumerate(items)), encoding="utf-8")
    return items


def test_bad_row_fails_after_writing_the_rows_before_it(clf, tmp_path):
    src = tmp_path / "in.jsonl"
    items = bad_jsonl(src, 20, {11})
    out = tmp_path / "out.jsonl"
    with pytest.raises(FlaxsentError, match=r"in\.jsonl, line 11: not valid JSON"):
        predict.predict_file(clf, str(src), str(out), chunk_size=4, progress=False)
    got = read_output(out)
    assert [r["id"] for r in got] == list(range(10))  # every row before the bad one
    assert [{"label": r["label"], "score": r["score"]} for r in got] == list(
        clf.stream(items[:10]))


@pytest.mark.parametrize("fmt_out,chunk_size", [("jsonl", 3), ("csv", 3), ("parquet", 1)])
def test_bad_rows_skipped_as_error_records(clf, tmp_path, fmt_out, chunk_size):
    src = tmp_path / "in.jsonl"
    items = bad_jsonl(src, 20, {1, 7, 20})
    out = tmp_path / f"out.{fmt_out}"
    result = predict.predict_file(clf, str(src), str(out), on_error="skip",
                                  chunk_size=chunk_size, progress=False)
    assert result.skipped_errors == 3 and result.written == 20
    got = read_output(out)
    assert len(got) == 20
    good = [i for i in range(20) if i + 1 not in {1, 7, 20}]
    want = list(clf.stream([items[i] for i in good]))
    for i, row in enumerate(got):
        if i + 1 in {1, 7, 20}:
            assert int(row["line"]) == i + 1 and "not valid JSON" in row["error"]
            assert row["label"] in (None, "")
        else:
            assert int(row["id"]) == i and not row.get("error")
            assert {"label": row["label"], "score": row["score"]} == want.pop(0)


def test_bad_rows_reach_the_classifier_as_none(clf, tmp_path, monkeypatch):
    src = tmp_path / "in.jsonl"
    items = bad_jsonl(src, 12, {2, 9})
    seen: list[str | None] = []
    stream_logits = clf.stream_logits

    def spy(texts):
        def tap():
            for text in texts:
                seen.append(text)
                yield text
        return stream_logits(tap())

    monkeypatch.setattr(clf, "stream_logits", spy)
    predict.predict_file(clf, str(src), str(tmp_path / "out.jsonl"), on_error="skip",
                         progress=False)
    assert seen == [None if i + 1 in {2, 9} else t for i, t in enumerate(items)]


def test_existing_output_refused_without_force_or_resume(clf, tmp_path):
    src = tmp_path / "in.txt"
    src.write_text("good fun\nbad film\n")
    out = tmp_path / "out.jsonl"
    out.write_text("keep me\n")
    with pytest.raises(FlaxsentError, match="already exists.*--resume.*--force"):
        predict.predict_file(clf, str(src), str(out), progress=False)
    assert out.read_text() == "keep me\n"
    predict.predict_file(clf, str(src), str(out), force=True, progress=False)
    assert len(read_output(out)) == 2
    with pytest.raises(FlaxsentError, match="stdout"):
        predict.predict_file(clf, str(src), None, resume=True, progress=False)


def test_sigkill_then_resume_is_byte_identical(tiny_flax, tmp_path):
    window = Classifier.from_pretrained(tiny_flax).window  # what the CLI's classifier uses
    n = 3 * window + 100
    src = tmp_path / "in.txt"
    src.write_text("".join(t + "\n" for t in texts(n, seed=5)), encoding="utf-8")
    full, killed = tmp_path / "full.jsonl", tmp_path / "killed.jsonl"
    common = ["--model", str(tiny_flax), str(src), "--chunk-size", "100",
              "--no-progress"]
    reference = subprocess_cli([*common, "-o", str(full)])
    proc = subprocess_cli([*common, "-o", str(killed)])
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if killed.exists() and killed.read_bytes().count(b"\n") > window:
            break
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()
    kept = killed.read_bytes()
    assert window < kept.count(b"\n") < n  # killed mid-run, past the first window
    killed.write_bytes(kept + b'{"label": "POSI')  # and as if torn inside a write
    _, err = reference.communicate(timeout=120)
    assert reference.returncode == 0, err.decode()
    resumed = subprocess_cli([*common, "-o", str(killed), "--resume"])
    _, err = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, err.decode()
    # a restart at the last whole window: the chunks of 100 do not divide it
    assert b"after %d kept" % (kept.count(b"\n") // window * window) in err
    assert killed.read_bytes() == full.read_bytes()


def test_chunk_size_is_only_the_write_size(clf, tmp_path, monkeypatch):
    src = tmp_path / "in.txt"
    src.write_text("".join(t + "\n" for t in texts(150, seed=9)), encoding="utf-8")
    writes: list[int] = []
    write_chunk = writers.RecordWriter.write_chunk
    monkeypatch.setattr(writers.RecordWriter, "write_chunk",
                        lambda self, rows: writes.append(len(rows)) or write_chunk(self, rows))
    outputs = []
    for chunk_size in (7, 1024):
        writes.clear()
        out = tmp_path / f"out-{chunk_size}.jsonl"
        predict.predict_file(clf, str(src), str(out), chunk_size=chunk_size, progress=False)
        outputs.append(out.read_bytes())
        assert sum(writes) == 150 and max(writes) == min(chunk_size, 150)
    assert outputs[0] == outputs[1]  # the window, not the chunk size, forms the batches


def test_resume_csv_and_refuse_parquet(clf, tiny_flax, tmp_path):
    src = tmp_path / "in.jsonl"
    write_input(src, [{"id": i, "text": t} for i, t in enumerate(texts(50, seed=6))])
    full, part = tmp_path / "full.csv", tmp_path / "part.csv"
    clf = Classifier.from_pretrained(tiny_flax, window=10)
    predict.predict_file(clf, str(src), str(full), chunk_size=7, progress=False)
    lines = full.read_bytes().splitlines(keepends=True)
    # header + 25 rows + a torn row: the resume restarts at the window boundary, row 20
    part.write_bytes(b"".join(lines[:26]) + lines[26][:5])
    shutil.copy(f"{full}{predict.RUN_SUFFIX}", f"{part}{predict.RUN_SUFFIX}")  # the same run
    result = predict.predict_file(clf, str(src), str(part), resume=True, chunk_size=7,
                                  progress=False)
    assert result.resumed_from == 20 and result.written == 30
    assert part.read_bytes() == full.read_bytes()
    with pytest.raises(FlaxsentError, match="parquet"):
        predict.predict_file(clf, str(src), str(tmp_path / "o.parquet"), resume=True,
                             progress=False)


def _rss_mib() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024


@pytest.mark.skipif(not (sys.platform == "linux" and platform.libc_ver()[0] == "glibc"),
                    reason="glibc's malloc only")
def test_freed_big_blocks_go_back_to_the_os(clf, tmp_path):
    """What keeps predict's peak memory flat: a big block freed during a run is unmapped, not
    kept in a heap (where glibc's rising mmap threshold would put the next one)."""
    src = tmp_path / "in.txt"
    src.write_text("good fun\n")
    predict.predict_file(clf, str(src), str(tmp_path / "out.jsonl"), progress=False)
    size = 24 << 20
    first = np.ones(size, np.uint8)  # freeing a mapped block raises glibc's default threshold
    del first
    block = np.ones(size, np.uint8)  # so, by default, this one would come from the heap
    held = _rss_mib()
    del block
    assert held - _rss_mib() > 20, "a freed 24 MiB block stayed resident"


@pytest.mark.parametrize("on_error", ["fail", "skip"])
def test_a_non_finite_logit_is_an_error_naming_the_line_never_a_record(tiny_flax, tmp_path,
                                                                       on_error):
    clf = poisoned(tiny_flax, "awful")  # window 4
    lines = ["good fun", "great film", "fine", "dull", "the end", "fun", "awful plot", "bad"]
    src = tmp_path / "in.txt"
    src.write_text("".join(t + "\n" for t in lines))
    out = tmp_path / "out.jsonl"
    with pytest.raises(FlaxsentError, match=r"in\.txt, line 7: the model gave non-finite logits"
                                            r".*the 4 row\(s\) before it are in"):
        predict.predict_file(clf, str(src), str(out), chunk_size=1, on_error=on_error,
                             progress=False)
    assert read_output(out) == clf(lines[:4])  # the rows before it, all finite


def _peak_rss_mib() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="Linux /proc only")
def test_a_huge_line_is_predicted_in_bounded_memory_and_counted_truncated(clf, tmp_path):
    src = tmp_path / "in.txt"
    line = "the movie was great , but the plot was dull ! " * 500_000  # 23 MB
    src.write_text("fine\n" + line + "\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    Path("/proc/self/clear_refs").write_text("5")  # restart the peak (VmHWM) here
    start = _peak_rss_mib()
    result = predict.predict_file(clf, str(src), str(out), progress=False)
    grew = _peak_rss_mib() - start
    assert clf.last_run.n_truncated == 1 and result.truncated == 1
    assert read_output(out) == clf(["fine", line])
    assert grew < 250, f"peak RSS grew {grew:.0f} MiB for a 23 MB line"  # whole: gigabytes


@pytest.mark.parametrize("fault", ["drops the last result", "stops reading early"])
def test_a_short_output_is_an_internal_error_never_a_success(clf, tmp_path, monkeypatch,
                                                             fault):
    """A classifier that loses rows (a bug) must not leave a short output behind a success."""
    src = tmp_path / "in.txt"
    src.write_text("".join(t + "\n" for t in texts(30, seed=11)))
    stream_logits = clf.stream_logits

    def lossy(texts):
        if fault == "stops reading early":
            import itertools
            texts = itertools.islice(texts, 20)
        rows = list(stream_logits(texts))
        yield from rows[:-1] if fault == "drops the last result" else rows
    monkeypatch.setattr(clf, "stream_logits", lossy)
    with pytest.raises(RuntimeError, match="internal error: .* please report"):
        predict.predict_file(clf, str(src), str(tmp_path / "out.jsonl"), progress=False)


@pytest.mark.parametrize("fmt_in", ["csv", "jsonl"])
@pytest.mark.parametrize("fmt_out", ["csv", "parquet"])
def test_a_first_chunk_of_bad_rows_does_not_fix_the_columns(clf, tmp_path, fmt_in, fmt_out):
    """The columns come from the input's header (JSONL: the first good row), never from a
    first chunk that holds only error records without the carried columns."""
    src = tmp_path / f"in.{fmt_in}"
    write_input(src, [{"id": f"r{i}", "text": t} for i, t in enumerate(texts(12, seed=12))])
    lines = src.read_bytes().splitlines(keepends=True)
    first = 1 if fmt_in == "csv" else 0  # the header
    for i in (first, first + 1, first + 2):
        lines[i] = b"\xff\xfe not UTF-8\n"
    src.write_bytes(b"".join(lines))
    outputs = []
    for chunk_size in (2, 1024):
        out = tmp_path / f"out-{chunk_size}.{fmt_out}"
        result = predict.predict_file(clf, str(src), str(out), on_error="skip",
                                      chunk_size=chunk_size, progress=False)
        assert result.written == 12 and result.skipped_errors == 3
        outputs.append(read_output(out))
    assert outputs[0] == outputs[1]
    assert [r["id"] for r in outputs[0][3:]] == [f"r{i}" for i in range(3, 12)]


def test_a_parquet_write_that_fails_is_one_clear_error(clf, tmp_path, monkeypatch):
    import pyarrow.parquet as pq
    src = tmp_path / "in.txt"
    src.write_text("".join(t + "\n" for t in texts(20, seed=13)))

    def full(*_, **__):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(pq.ParquetWriter, "write_table", full)
    with pytest.raises(FlaxsentError, match="cannot write .*out.parquet.*No space left"):
        predict.predict_file(clf, str(src), str(tmp_path / "out.parquet"), progress=False)


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_FSIZE as Linux applies it")
def test_a_full_disk_is_one_line_and_resume_continues(tiny_flax, tmp_path):
    """RLIMIT_FSIZE stands in for a full disk: writes past it fail with EFBIG."""
    window = Classifier.from_pretrained(tiny_flax).window
    src = tmp_path / "in.txt"
    src.write_text("".join(t + "\n" for t in texts(2 * window + 50, seed=14)))
    full, cut = tmp_path / "full.jsonl", tmp_path / "cut.jsonl"
    common = ["--model", str(tiny_flax), str(src), "--chunk-size", "100", "--no-progress"]
    reference = subprocess_cli([*common, "-o", str(full)])  # warms the compilation cache too
    _, err = reference.communicate(timeout=300)
    assert reference.returncode == 0, err.decode()
    limit = len(full.read_bytes()) * 2 // 3  # past the first window, short of the end
    small_disk = f"import resource as r; r.setrlimit(r.RLIMIT_FSIZE, ({limit}, {limit})); "
    proc = subprocess_cli([*common, "-o", str(cut)], prelude=small_disk)
    _, err = proc.communicate(timeout=300)
    err = err.decode()
    assert proc.returncode == 2, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert "File too large" in err and "--resume" in err
    kept = cut.read_bytes()
    assert full.read_bytes().startswith(kept) and window < kept.count(b"\n")
    resumed = subprocess_cli([*common, "-o", str(cut), "--resume"])
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err.decode()
    assert cut.read_bytes() == full.read_bytes()


@pytest.mark.parametrize("change, what", [
    ("input longer", "input (head_sha256, mtime_ns, size changed)"),
    ("input edited", "input (head_sha256, mtime_ns changed)"),
    ("model", "model (config_sha256, path changed)"),
    ("weights", "model (weights changed)"),
    ("top_k", "top_k: 1 -> None"),
    ("logits", "logits: False -> True"),
    ("max_length", "max_length: 64 -> 16"),
    ("dtype", "dtype: 'float32' -> 'bfloat16'"),
    ("quantize", "quantize: None -> 'int8'"),
    ("text_column", "text_column: None -> 'id'"),
    ("input_format", "input_format: None -> 'jsonl'"),
    ("on_error", "on_error: 'fail' -> 'skip'"),
    ("window", "window: 4 -> 8"),
])
def test_resume_refuses_to_continue_another_run(tiny_flax, tmp_path, change, what):
    """--resume refuses, saying what differs, when the input, model or options differ from the
    run recorded beside the output: one output never mixes two runs."""
    model, src, out, _ = stopped_predict_run(tiny_flax, tmp_path)
    load: dict = {"window": 4}
    options: dict = {}
    if change == "input longer":
        src.write_text(src.read_text() + json.dumps({"id": 20, "text": "and more"}) + "\n")
    elif change == "input edited":
        src.write_text(src.read_text().replace('"id": 0', '"id": 9'))
    elif change == "model":  # another model: its own folder and labels
        other = tmp_path / "other"
        shutil.copytree(model, other)
        config = json.loads((other / "config.json").read_text())
        config["id2label"] = {"0": "BAD", "1": "GOOD"}
        config["label2id"] = {"BAD": 0, "GOOD": 1}
        (other / "config.json").write_text(json.dumps(config))
        model = other
    elif change == "weights":  # the weights replaced in place
        weights = next(model.glob("*.safetensors"))
        os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))
    elif change in ("max_length", "dtype", "quantize", "window"):
        load[change] = {"max_length": 16, "dtype": "bfloat16", "quantize": "int8",
                        "window": 8}[change]
    else:
        options = {"top_k": {"top_k": None}, "logits": {"logits": True},
                   "text_column": {"text_column": "id"}, "input_format": {"input_fmt": "jsonl"},
                   "on_error": {"on_error": "skip"}}[change]
    before = out.read_bytes()
    clf = Classifier.from_pretrained(model, **load)
    with pytest.raises(FlaxsentError, match="--resume: .*out.jsonl was written by another run") \
            as caught:
        predict.predict_file(clf, str(src), str(out), resume=True, progress=False, **options)
    assert what in str(caught.value) and "--force" in str(caught.value)
    assert out.read_bytes() == before  # untouched: not even trimmed


def test_resume_of_the_same_run_goes_on_whatever_the_chunk_size(tiny_flax, tmp_path):
    """(A missing, torn or foreign record, and the refusals on the command line: the guard's
    own tests, tests/io/test_run_record.py.)"""
    model, src, out, reference = stopped_predict_run(tiny_flax, tmp_path)
    clf4 = Classifier.from_pretrained(model, window=4)
    # the chunk size is only the write size: another one continues the same run
    result = predict.predict_file(clf4, str(src), str(out), resume=True, chunk_size=3,
                                  progress=False)
    assert result.resumed_from == 8 and out.read_bytes() == reference


def test_csv_output_neutralises_formulas_unless_told_not_to(tiny_flax, tmp_path):
    """A carried-through `=...` cell gets a leading ' in CSV output (a spreadsheet would run
    it as a formula), unless --no-csv-safe."""
    src = tmp_path / "in.csv"
    write_input(src, [{"id": "=HYPERLINK(\"http://evil\")", "text": "good fun"},
                      {"id": "-3", "text": "bad film"}, {"id": "@x", "text": "fine"}])
    for flag, want in (([], ["'=HYPERLINK(\"http://evil\")", "-3", "'@x"]),
                       (["--no-csv-safe"], ["=HYPERLINK(\"http://evil\")", "-3", "@x"])):
        out = tmp_path / f"out{len(flag)}.csv"
        assert cli(["--model", str(tiny_flax), str(src), "-o", str(out), "--no-progress",
                    *flag]) == 0
        assert [r["id"] for r in read_output(out)] == want


@pytest.mark.parametrize("fmt_out", ["jsonl", "csv"])
def test_a_csv_row_with_invalid_bytes_comes_back_as_an_error_with_its_id(clf, tmp_path,
                                                                         fmt_out):
    src = tmp_path / "in.csv"
    src.write_bytes(b"id,text\n0,a good film\n1,\xff\xfe broken\n2,dull\n")
    out = tmp_path / f"out.{fmt_out}"
    predict.predict_file(clf, str(src), str(out), on_error="skip", progress=False)
    got = read_output(out)
    assert [str(r["id"]) for r in got] == ["0", "1", "2"]
    assert "invalid UTF-8" in got[1]["error"] and not got[1]["label"]
