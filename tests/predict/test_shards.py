"""Multi-process predict: shards cover every row once in whole blocks, the manifest and the merge
(an incomplete part detected), process options, and a 2-process jax.distributed run whose merged
output is byte-identical to a single process's."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from flaxsent.core.classifier import Classifier
from flaxsent.errors import FlaxsentError
from flaxsent.predict import run as predict
from flaxsent.predict import shards
from tests.helpers import cli, read_output, subprocess_cli, texts, write_input


@pytest.fixture(scope="module")
def clf(tiny_flax) -> Classifier:
    return Classifier.from_pretrained(tiny_flax, window=64)


@pytest.mark.parametrize("count, block, total", [(1, 1, 10), (2, 50, 301), (3, 7, 100)])
def test_shards_cover_every_row_once(count, block, total):
    parts = [shards.Shard(i, count, block) for i in range(count)]
    owners = [[s.index for s in parts if s.owns(row)] for row in range(total)]
    assert all(len(o) == 1 for o in owners)
    for s in parts:
        mine = [row for row in range(total) if s.owns(row)]
        assert s.rows_of(total) == len(mine)
        assert [s.global_row(k) for k in range(len(mine))] == mine


def test_process_shard_from_options_and_environment(monkeypatch):
    for name in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
        monkeypatch.delenv(name, raising=False)
    assert shards.process_shard(False, None, None, None) == (0, 1)
    assert shards.process_shard(False, None, 4, 3) == (3, 4)
    monkeypatch.setenv("JAX_NUM_PROCESSES", "2")
    monkeypatch.setenv("JAX_PROCESS_ID", "1")
    assert shards.process_shard(False, None, None, None) == (1, 2)
    with pytest.raises(FlaxsentError, match="--process-id 2 must be from 0 to"):
        shards.process_shard(False, None, 2, 2)
    with pytest.raises(FlaxsentError, match="--distributed needs --coordinator"):
        shards.process_shard(True, None, None, None)


def test_blocks_must_be_whole_windows(clf, tmp_path):
    src = tmp_path / "in.txt"
    src.write_text("good fun\n")
    with pytest.raises(FlaxsentError, match="not whole classifier windows of 64"):
        predict.predict_file(clf, str(src), str(tmp_path / "o.jsonl"),
                             shard=shards.Shard(0, 2, 32), progress=False)


def test_merge_detects_an_incomplete_part(clf, tmp_path):
    src = tmp_path / "in.txt"
    src.write_text("".join(t + "\n" for t in texts(300, seed=8)))
    out = tmp_path / "o.jsonl"
    parts = [shards.Shard(pid, 3, clf.window) for pid in (0, 1, 2)]
    for shard in parts:
        predict.predict_file(clf, str(src), shard.part_path(str(out)), shard=shard,
                             progress=False)
    manifest = shards.write_manifest(str(out), parts[0], str(src))
    assert shards.merge_parts(manifest, str(tmp_path / "m.jsonl")) == 300
    single = tmp_path / "single.jsonl"
    predict.predict_file(clf, str(src), str(single), progress=False)
    assert (tmp_path / "m.jsonl").read_bytes() == single.read_bytes()
    part0 = Path(parts[0].part_path(str(out)))
    part0.write_bytes(b"".join(part0.read_bytes().splitlines(keepends=True)[:2]))
    with pytest.raises(FlaxsentError, match="incomplete"):
        shards.merge_parts(manifest, str(tmp_path / "m2.jsonl"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_distributed_run_merges_to_single_process_output(tiny_flax, tmp_path):
    window = Classifier.from_pretrained(tiny_flax).window  # what the CLI's classifier uses
    n = 2 * window + 301  # process 0 gets windows 0 and 2, process 1 window 1
    src = tmp_path / "in.jsonl"
    write_input(src, [{"id": i, "text": t} for i, t in enumerate(texts(n, seed=7))])
    single, sharded, merged = (tmp_path / name for name in ("single.jsonl", "out.jsonl",
                                                            "merged.jsonl"))
    common = ["--model", str(tiny_flax), str(src), "--chunk-size", "50", "--no-progress"]
    coordinator = f"127.0.0.1:{free_port()}"
    procs = [subprocess_cli([*common, "-o", str(sharded), "--distributed"],
                            env={"JAX_COORDINATOR_ADDRESS": coordinator,
                                 "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": str(pid)})
             for pid in (0, 1)]
    assert cli([*common, "-o", str(single)]) == 0
    for proc in procs:
        _, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err.decode()[-2000:]
    manifest = json.loads((tmp_path / "out.jsonl.manifest.json").read_text())
    assert manifest["parts"] == ["out.jsonl.part-0-of-2", "out.jsonl.part-1-of-2"]
    assert manifest["block"] == window
    part1 = read_output(tmp_path / "out.jsonl.part-1-of-2")
    # whole windows are dealt out in turn, whatever the chunk size
    assert [r["_row"] for r in part1] == list(range(window, 2 * window))
    assert cli(["--merge", str(tmp_path / "out.jsonl.manifest.json"), "-o", str(merged)]) == 0
    assert "_row" not in read_output(merged)[0]
    assert merged.read_bytes() == single.read_bytes()


@pytest.mark.parametrize(("damage", "ext"), [(b"{not json\n", "jsonl"),
                                             (b'{"_row": 1, "label": "\xff"}\n', "parquet")])
def test_a_corrupt_line_in_a_part_is_one_clear_error(clf, tmp_path, capsys, damage, ext):
    """...and the failed merge leaves no output, not even a partial one beside it."""
    src = tmp_path / "in.txt"
    src.write_text("".join(t + "\n" for t in texts(200, seed=8)))
    out = tmp_path / "o.jsonl"
    parts = _run_two_parts(clf, src, out)
    manifest = shards.write_manifest(str(out), parts[0], str(src))
    part1 = Path(parts[1].part_path(str(out)))
    lines = part1.read_bytes().splitlines(keepends=True)
    lines[3] = damage
    part1.write_bytes(b"".join(lines))
    from flaxsent.cli import main
    capsys.readouterr()
    assert main(["predict", "--merge", manifest, "-o", str(tmp_path / f"m.{ext}")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert "o.jsonl.part-1-of-2, line 4: not a predict record" in err
    assert not list(tmp_path.glob("m.*"))


def _two_parts_of_eight(tiny_flax, tmp_path) -> tuple[Classifier, Path, Path, list[shards.Shard]]:
    """8 rows, 2 processes, window 4: process 0 owns rows 0-3, process 1 rows 4-7; both run."""
    clf4 = Classifier.from_pretrained(tiny_flax, window=4)
    src = tmp_path / "in.txt"
    src.write_text("".join(t + "\n" for t in texts(8, seed=9)))
    out = tmp_path / "o.jsonl"
    return clf4, src, out, _run_two_parts(clf4, src, out)


def _run_two_parts(clf: Classifier, src: Path, out: Path) -> list[shards.Shard]:
    """Both processes' parts of a 2-process run over `src`, written as `predict` writes them."""
    parts = [shards.Shard(pid, 2, clf.window) for pid in (0, 1)]
    for shard in parts:
        predict.predict_file(clf, str(src), shard.part_path(str(out)), shard=shard,
                             progress=False)
    return parts


@pytest.mark.parametrize("damage", ["empty", "missing", "stopped", "no-record",
                                    "truncated-after-done", "other-input"])
def test_merge_never_drops_the_rows_of_an_unfinished_part(tiny_flax, tmp_path, capsys, damage):
    """Merge refuses, naming the part, when a part is empty or stopped: never a short output
    with exit 0."""
    clf4, src, out, parts = _two_parts_of_eight(tiny_flax, tmp_path)
    manifest = shards.write_manifest(str(out), parts[0], str(src))
    part1 = Path(parts[1].part_path(str(out)))
    done1 = Path(str(part1) + shards.DONE_SUFFIX)
    assert json.loads(done1.read_text())["rows"] == 4 and part1.read_bytes().count(b"\n") == 4
    if damage == "empty":  # process 1 started, then died before its first chunk
        part1.write_bytes(b"")
        done1.unlink()
    elif damage == "missing":
        part1.unlink()
        done1.unlink()
    elif damage == "stopped":  # killed after two of its rows
        part1.write_bytes(b"".join(part1.read_bytes().splitlines(keepends=True)[:2]))
        done1.unlink()
    elif damage == "no-record":  # all rows, but the process never said it finished
        done1.unlink()
    elif damage == "truncated-after-done":
        part1.write_bytes(b"".join(part1.read_bytes().splitlines(keepends=True)[:2]))
    elif damage == "other-input":  # process 1 read a longer input than process 0
        src.write_text(src.read_text() + "one more row\n")
        predict.predict_file(clf4, str(src), str(part1), shard=parts[1], force=True,
                             progress=False)
    from flaxsent.cli import main
    capsys.readouterr()
    code = main(["predict", "--merge", manifest, "-o", str(tmp_path / "m.jsonl")])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert "o.jsonl.part-1-of-2" in err or damage == "other-input", err


def test_merge_of_complete_parts_and_a_rerun_withdraws_completion(tiny_flax, tmp_path):
    clf4, src, out, parts = _two_parts_of_eight(tiny_flax, tmp_path)
    manifest = shards.write_manifest(str(out), parts[0], str(src))
    single = tmp_path / "single.jsonl"
    predict.predict_file(clf4, str(src), str(single), progress=False)
    assert shards.merge_parts(manifest, str(tmp_path / "m.jsonl")) == 8
    assert (tmp_path / "m.jsonl").read_bytes() == single.read_bytes()
    # a rerun of part 1 that stops (a bad row under --on-error fail) no longer claims completion
    src.write_text("".join(t + "\n" for t in texts(5, seed=9)) + "\udcff\n" * 3,
                   errors="surrogateescape")
    part1 = parts[1].part_path(str(out))
    with pytest.raises(FlaxsentError, match="line 6"):
        predict.predict_file(clf4, str(src), part1, shard=parts[1], force=True, progress=False)
    assert not Path(part1 + shards.DONE_SUFFIX).exists()
    with pytest.raises(FlaxsentError, match="part-1-of-2.*not complete"):
        shards.merge_parts(manifest, str(tmp_path / "m2.jsonl"))


@pytest.mark.parametrize("fmt_in", ["csv", "jsonl", "txt"])
@pytest.mark.parametrize("fmt_out", ["jsonl", "csv", "parquet"])
@pytest.mark.parametrize("on_error", ["skip", "fail"])
def test_merge_is_byte_identical_to_one_process_in_every_format(tiny_flax, tmp_path, fmt_in,
                                                                 fmt_out, on_error):
    """Parts holding error records merge into csv, parquet or jsonl exactly as the
    single-process run writes that file."""
    clf4 = Classifier.from_pretrained(tiny_flax, window=4)
    src = tmp_path / f"in.{fmt_in}"
    write_input(src, [{"id": f"r{i}", "text": t} for i, t in enumerate(texts(23, seed=15))])
    if on_error == "skip":  # a first chunk of bad rows, and bad rows in both parts
        lines = src.read_bytes().splitlines(keepends=True)
        first = 1 if fmt_in == "csv" else 0  # the header
        for i in (0, 1, 2, 5, 13, 22):
            lines[first + i] = b"\xff\xfe not UTF-8\n"
        src.write_bytes(b"".join(lines))
    options = {"on_error": on_error, "chunk_size": 3, "logits": True, "progress": False}
    single = tmp_path / f"single.{fmt_out}"
    predict.predict_file(clf4, str(src), str(single), **options)
    out = tmp_path / f"o.{fmt_out}"
    parts = [shards.Shard(pid, 2, clf4.window) for pid in (0, 1)]
    for shard in parts:
        predict.predict_file(clf4, str(src), shard.part_path(str(out)), shard=shard, **options)
    manifest = shards.write_manifest(str(out), parts[0], str(src))
    assert shards.merge_parts(manifest, str(out)) == 23
    assert out.read_bytes() == single.read_bytes()
