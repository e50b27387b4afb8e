"""Fault injection: a real SIGKILL at chosen points of `flaxsent convert`, `predict` and
`predict --merge`, and a file-size limit (RLIMIT_FSIZE) standing in for a full disk.

The kill points are exact and reproducible: the command runs under a wrapper (FAULTY_CLI) that
SIGKILLs its own process at the K-th file-system step under a folder (an audit hook sees every
open for writing, mkdir, rename, copy, removal) or after the K-th fsync (one per durable output
chunk); K is drawn with a seeded random. After the kill: convert leaves DST absent or complete,
never half; predict `--resume` gives the uninterrupted output byte for byte; a rerun of the
merge gives the single-process output.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from flaxsent.core.classifier import Classifier
from flaxsent.predict import run as predict
from tests.helpers import fault_events, kill_after, killed, one_line_error, run_cli, texts

# -------------------------------------------------------------------------------------- convert

def folder_content(folder: Path) -> dict[str, object]:
    """Each file's bytes; a safetensors file's tensors and metadata (its header's key order
    varies from one write to the next), or None where it does not read."""
    from safetensors import safe_open
    files: dict[str, object] = {}
    for p in sorted(folder.iterdir()):
        if p.suffix != ".safetensors":
            files[p.name] = p.read_bytes()
            continue
        try:
            with safe_open(p, "np") as f:
                files[p.name] = (f.metadata(), {k: (f.get_tensor(k).dtype.str,
                                                    f.get_tensor(k).shape,
                                                    f.get_tensor(k).tobytes())
                                                for k in sorted(f.keys())})
        except Exception:  # a torn file: never equal to a whole one
            files[p.name] = None
    return files


def absent_or_complete(dst: Path, want: dict[str, object],
                       old: dict[str, object] | None = None) -> str:
    """DST is absent, the new checkpoint or (--force) the old one, whole; nothing else beside
    it but hidden temporary folders. Returns which."""
    visible = [p.name for p in dst.parent.iterdir() if not p.name.startswith(".")]
    assert visible in ([], [dst.name]), visible
    leftovers = [p.name for p in dst.parent.iterdir() if p.name.startswith(".")]
    assert all(n.startswith(f".{dst.name}.") for n in leftovers), leftovers
    if not dst.exists():
        return "absent"
    got = folder_content(dst)
    if got == want:
        Classifier.from_pretrained(dst)  # and it loads
        return "new"
    assert old is not None and got == old, "DST holds a half-written checkpoint"
    return "old"


@pytest.fixture(scope="module")
def converted(tiny_hf, tmp_path_factory) -> dict[str, bytes]:
    """The files an uninterrupted convert writes."""
    from flaxsent.convert.torch_to_flax import convert_checkpoint
    dst = tmp_path_factory.mktemp("reference") / "model"
    convert_checkpoint(tiny_hf, dst)
    return folder_content(dst)


def test_convert_killed_at_random_steps_leaves_dst_absent_or_complete(tiny_hf, converted,
                                                                      tmp_path):
    """Random file-system steps of convert, its last (the rename), and a random moment by the
    clock (which may fall inside the weights' write, a step the audit hook cannot see)."""
    from flaxsent.convert.torch_to_flax import convert_checkpoint
    out = tmp_path / "count"
    out.mkdir()
    steps = fault_events(run_cli(["convert", str(tiny_hf), str(out / "model")], fault="fs:0",
                                 under=out))
    assert steps[-1] == "os.rename" and len(steps) >= 4, steps
    rng = random.Random(9)
    points = [f"fs:{k}" for k in sorted(rng.sample(range(1, len(steps)), 3))]
    points += [f"fs:{len(steps)}", f"time:{rng.uniform(0.5, 3):.2f}"]
    seen = set()
    for point in points:
        parent = tmp_path / point.replace(":", "-")
        parent.mkdir()
        dst = parent / "model"
        argv = ["convert", str(tiny_hf), str(dst)]
        if point.startswith("fs:"):
            killed(run_cli(argv, fault=point, under=parent))
        else:  # a SIGKILL after a random delay (it may come after the end)
            kill_after(argv, float(point[5:]))
        state = absent_or_complete(dst, converted)
        seen.add(state)
        if state == "absent":  # and a rerun then converts as if nothing had happened
            convert_checkpoint(tiny_hf, dst)
            assert folder_content(dst) == converted
    assert "absent" in seen  # killed before the rename, the last step


@pytest.fixture(scope="module")
def force_kills(tiny_hf, converted, tmp_path_factory) -> list[str]:
    """convert --force over an older checkpoint (bfloat16), killed at two random file-system
    steps, at the last step before its swap and at the first after it: what DST is after each
    kill (never half-written). The swap is one renameat2(RENAME_EXCHANGE), which the audit hook
    does not see (no os.rename at all); the old folder is then removed from the new one's
    temporary name."""
    from flaxsent.convert.torch_to_flax import convert_checkpoint
    tmp_path = tmp_path_factory.mktemp("force")
    out = tmp_path / "count"
    convert_checkpoint(tiny_hf, out / "model", dtype="bfloat16")
    steps = fault_events(run_cli(["convert", str(tiny_hf), str(out / "model"), "--force"],
                                 fault="fs:0", under=out))
    assert "os.rename" not in steps and "shutil.rmtree" in steps, steps
    after = len(steps) - steps[::-1].index("shutil.rmtree")  # 1-based: the old folder's removal
    rng = random.Random(10)
    states = []
    for k in [*sorted(rng.sample(range(1, after - 1), 2)), after - 1, after]:
        parent = tmp_path / f"fs-{k}"
        dst = parent / "model"
        convert_checkpoint(tiny_hf, dst, dtype="bfloat16")
        old = folder_content(dst)
        assert old != converted
        killed(run_cli(["convert", str(tiny_hf), str(dst), "--force"], fault=f"fs:{k}",
                       under=parent))
        states.append(absent_or_complete(dst, converted, old))
    return states


def test_convert_force_killed_at_random_steps_never_leaves_half_a_checkpoint(force_kills):
    assert force_kills[-2:] == ["old", "new"]  # just before the swap, and just after it


def test_convert_force_killed_mid_swap_still_has_a_checkpoint_at_dst(force_kills):
    assert "absent" not in force_kills, force_kills


@pytest.fixture(scope="module")
def full_disk_convert(tiny_hf, converted, tmp_path_factory
                      ) -> tuple[subprocess.CompletedProcess, Path]:
    """convert under RLIMIT_FSIZE at half the weights' size, standing in for a full disk: a
    write past it fails with EFBIG (Python ignores SIGXFSZ, so the write fails rather than the
    process dying); config.json and the tokenizer files fit."""
    _, tensors = converted["flax_model.safetensors"]
    limit = sum(len(data) for _, _, data in tensors.values()) // 2
    assert all(len(v) < limit for k, v in converted.items() if isinstance(v, bytes))
    parent = tmp_path_factory.mktemp("full_disk")
    return run_cli(["convert", str(tiny_hf), str(parent / "model")], file_size=limit), parent


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_FSIZE as Linux applies it")
def test_convert_on_a_full_disk_fails_and_leaves_no_dst(full_disk_convert):
    result, parent = full_disk_convert
    assert result.returncode not in (0, -signal.SIGXFSZ), result.stderr.decode()
    assert list(parent.iterdir()) == []  # no DST, and no temporary folder left behind


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_FSIZE as Linux applies it")
def test_convert_on_a_full_disk_is_a_one_line_error(full_disk_convert):
    result, _ = full_disk_convert
    err = one_line_error(result)
    assert "File too large" in err, err


# -------------------------------------------------------------------------------------- predict

CHUNK = 100


@pytest.fixture(scope="module")
def clf(tiny_flax) -> Classifier:
    return Classifier.from_pretrained(tiny_flax)  # the CLI's window (4096)


@pytest.fixture(scope="module")
def run(clf, tmp_path_factory) -> tuple[Path, bytes]:
    """An input of two windows and a part, and its uninterrupted output."""
    folder = tmp_path_factory.mktemp("predict")
    src = folder / "in.txt"
    src.write_text("".join(t + "\n" for t in texts(2 * clf.window + 300, seed=21)),
                   encoding="utf-8")
    full = folder / "full.jsonl"
    predict.predict_file(clf, str(src), str(full), chunk_size=CHUNK, progress=False)
    return src, full.read_bytes()


def test_predict_killed_at_random_chunks_resumes_byte_identical(clf, run, tiny_flax, tmp_path):
    src, want = run
    chunks = -(-want.count(b"\n") // CHUNK)
    rng = random.Random(21)
    # one kill in each window, at a random chunk of it
    per_window = clf.window // CHUNK
    points = [rng.randrange(1, per_window), rng.randrange(per_window + 1, 2 * per_window),
              rng.randrange(2 * per_window + 1, chunks)]
    for k in points:
        out = tmp_path / f"out-{k}.jsonl"
        argv = ["predict", "--model", str(tiny_flax), str(src), "-o", str(out),
                "--chunk-size", str(CHUNK), "--no-progress"]
        # the first two fsyncs: OUTPUT.run.json, then its folder (flaxsent.io.durable)
        killed(run_cli(argv, fault=f"fsync:{k + 2}"))
        kept = out.read_bytes()
        assert kept.count(b"\n") == k * CHUNK and want.startswith(kept)
        result = predict.predict_file(clf, str(src), str(out), resume=True, chunk_size=CHUNK,
                                      progress=False)
        assert result.resumed_from == k * CHUNK // clf.window * clf.window
        assert out.read_bytes() == want


def test_merge_killed_at_random_chunks_then_rerun_gives_the_single_run_output(
        clf, run, tiny_flax, tmp_path):
    from flaxsent.cli import main
    src, want = run
    out = tmp_path / "out.jsonl"
    for pid in (0, 1):
        assert main(["predict", "--model", str(tiny_flax), str(src), "-o", str(out),
                     "--num-processes", "2", "--process-id", str(pid), "--no-progress"]) == 0
    manifest = str(out) + ".manifest.json"
    rng = random.Random(22)
    rows = want.count(b"\n")
    for k in sorted(rng.sample(range(1, rows // 1024 + 1), 2)):  # the merge writes 1024 a chunk
        merged = tmp_path / f"merged-{k}.jsonl"
        killed(run_cli(["predict", "--merge", manifest, "-o", str(merged)], fault=f"fsync:{k}"))
        assert not merged.exists()  # the merge is written beside the output, moved in whole
        kept = Path(str(merged) + ".merging").read_bytes()
        assert want.startswith(kept) and kept.count(b"\n") == 1024 * k
        again = run_cli(["predict", "--merge", manifest, "-o", str(merged)])  # no --force
        assert again.returncode == 0, again.stderr.decode()
        assert merged.read_bytes() == want
        assert sorted(p.name for p in tmp_path.glob(f"merged-{k}*")) == [merged.name]
