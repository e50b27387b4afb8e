"""Faults while `flaxsent train` saves its train state: a SIGKILL, and a full disk (ENOSPC), at
the file-system steps of a save; and a real full disk (RLIMIT_FSIZE) under tensorstore's own
writes, which no audit hook sees.

The steps are those `tests.helpers.FAULTY_CLI` sees under `train_state/` (each open for writing,
mkdir, rename and removal of orbax's Python code) during one save: the one after step 3, which
also drops the save of step 1 (two are kept). After a fault, a full disk is one line naming the
path and the save `--resume` continues from, and `--resume` ends with the uninterrupted run's
weights, bit for bit. A seeded draw of the steps runs by default; under `slow`, five steps across
the save (its first, middle and last three); every step with FLAXSENT_EVERY_FAULT_STEP=1.

Each run is a subprocess (one compiled shape, `--no-packing`), sharing a persistent compilation
cache so that only the first compiles.
"""

from __future__ import annotations

import os
import random
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from flaxsent.core import checkpoint as ckpt
from flaxsent.train.loop import STATE_DIR
from tests.helpers import WORDS, fault_events, fault_paths, killed, one_line_error, run_cli

SAVED_AT = 3  # the save whose steps are faulted (saves after steps 1, 2, 3, 4)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """A folder with a 16-row training file, and the runs' compilation cache (in the
    environment for the module's subprocesses)."""
    folder = tmp_path_factory.mktemp("train_faults")
    rng = np.random.default_rng(5)
    (folder / "train.tsv").write_text("sentence\tlabel\n" + "".join(
        f"{' '.join(rng.choice(WORDS, rng.integers(2, 9)))}\t{rng.integers(0, 2)}\n"
        for _ in range(16)), encoding="utf-8")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("JAX_COMPILATION_CACHE_DIR", str(folder / "jax-cache"))
        env.setenv("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
        yield folder


def _argv(model: Path, folder: Path, out: Path, *extra: str) -> list[str]:
    """Four steps of 8 examples, the train state saved after each."""
    return ["train", "--model", str(model), "--data", str(folder / "train.tsv"), "--out",
            str(out), "--batch-size", "8", "--max-steps", "4", "--warmup-steps", "1",
            "--learning-rate", "1e-3", "--max-length", "16", "--save-every", "1",
            "--no-packing", "--no-progress", *extra]


@pytest.fixture(scope="module")
def whole(tiny_flax, folder) -> tuple[dict[str, np.ndarray], list[int]]:
    """An uninterrupted run, counting its file-system steps under train_state/: its weights,
    and the 1-based numbers of the steps of the save after step SAVED_AT (from its folder's
    first step to the next save's, the old save's removal included)."""
    out = folder / "whole"
    result = run_cli(_argv(tiny_flax, folder, out), fault="fs:0", under=out / STATE_DIR)
    names, paths = fault_events(result), fault_paths(result)
    first = [i + 1 for i, p in enumerate(paths) if p.startswith(f"{SAVED_AT}.")][0]
    after = [i + 1 for i, p in enumerate(paths) if p.startswith(f"{SAVED_AT + 1}.")][0]
    steps = list(range(first, after))
    assert names[steps[-1] - 1] == "os.rmdir" and paths[steps[-1] - 1] == str(SAVED_AT - 2)
    return ckpt.load_flax_params(out), steps, names


def _resume_ends_bit_identical(model: Path, folder: Path, out: Path,
                               want: dict[str, np.ndarray]) -> int:
    """--resume in a fresh process: the step it resumed from; the weights are checked."""
    result = run_cli(_argv(model, folder, out, "--resume"))
    err = result.stderr.decode()
    assert result.returncode == 0, err
    got = ckpt.load_flax_params(out)
    assert got.keys() == want.keys() and all(np.array_equal(got[k], want[k]) for k in want)
    resumed = re.search(r"resumed from step (\d+)", err)
    return int(resumed[1]) if resumed else 0


def _sigkill(model: Path, folder: Path, want: dict[str, np.ndarray], k: int, parent: Path
             ) -> int:
    out = parent / f"fs-{k}"
    killed(run_cli(_argv(model, folder, out), fault=f"fs:{k}", under=out / STATE_DIR))
    assert not (out / ckpt.FLAX_WEIGHTS).exists()
    return _resume_ends_bit_identical(model, folder, out, want)


def _full_disk(model: Path, folder: Path, want: dict[str, np.ndarray], k: int, parent: Path
               ) -> int:
    out = parent / f"enospc-{k}"
    err = one_line_error(run_cli(_argv(model, folder, out), fault=f"enospc:{k}",
                                 under=out / STATE_DIR))
    said = re.search(r"cannot write (.*): No space left on device; the last complete save "
                     r"is step (\d) in .*: --resume continues from it", err)
    assert said and str(out / STATE_DIR) in said[1], err
    assert _resume_ends_bit_identical(model, folder, out, want) == int(said[2])
    return int(said[2])


def test_a_save_has_many_storage_steps(whole):
    _, steps, _ = whole
    assert len(steps) >= 10, steps


def test_sigkill_at_a_drawn_step_of_a_save_then_resume_ends_bit_identical(tiny_flax, folder,
                                                                         whole, tmp_path):
    want, steps, _ = whole
    k = random.Random(31).choice(steps[:-3])  # before the save is complete
    assert _sigkill(tiny_flax, folder, want, k, tmp_path) == SAVED_AT - 1


def test_a_full_disk_at_a_drawn_step_of_a_save_is_one_line_and_resume_continues(
        tiny_flax, folder, whole, tmp_path):
    want, steps, _ = whole
    k = random.Random(32).choice(steps[:-3])
    assert _full_disk(tiny_flax, folder, want, k, tmp_path) == SAVED_AT - 1


def _swept(steps: list[int]) -> list[int]:
    """The steps a sweep faults: all of them with FLAXSENT_EVERY_FAULT_STEP=1; else the save's
    first step and its last three (the rename that completes it, and the old save's removal),
    which keeps the suite under its time budget (about 8 s a fault point: two fresh
    processes). A step in between is drawn by the two tests above."""
    if os.environ.get("FLAXSENT_EVERY_FAULT_STEP") == "1":
        return steps
    return sorted({steps[0], *steps[-3:]})


def _expected(steps: list[int], swept: list[int]) -> list[int]:
    """The save each swept fault resumes from: the earlier one until the save's folder has its
    name (the third step from the end), the new one after."""
    return [SAVED_AT if k in steps[-2:] else SAVED_AT - 1 for k in swept]


@pytest.mark.slow
@pytest.mark.parametrize("fault", [_sigkill, _full_disk], ids=["sigkill", "full-disk"])
def test_a_fault_across_a_save_then_resume_ends_bit_identical(tiny_flax, folder, whole, tmp_path,
                                                              fault):
    want, steps, _ = whole
    swept = _swept(steps)
    resumed = [fault(tiny_flax, folder, want, k, tmp_path) for k in swept]
    # a full disk: the old save's removal succeeds, the next save's first step fails
    assert resumed == _expected(steps, swept), (swept, resumed)


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_FSIZE as Linux applies it")
def test_a_full_disk_inside_tensorstore_is_one_line_and_resume_continues(tiny_flax, folder,
                                                                         whole, tmp_path):
    """Tensorstore's writes past RLIMIT_FSIZE fail with EFBIG, which it reports as a ValueError
    (OUT_OF_RANGE), not an OSError; the limit lets the small files (run.json, the config, the
    tokenizer, metrics.jsonl) through."""
    want, _, _ = whole
    out = tmp_path / "out"
    limit = 16 << 10
    assert all(p.stat().st_size < limit for p in (folder / "whole").iterdir()
               if p.suffix in (".json", ".jsonl", ".txt"))
    err = one_line_error(run_cli(_argv(tiny_flax, folder, out), file_size=limit))
    assert re.search(rf"cannot write {re.escape(str(out / STATE_DIR))}.*: .*; no train state was "
                     r"saved yet: --resume starts the run again from step 0", err), err
    assert _resume_ends_bit_identical(tiny_flax, folder, out, want) == 0


# safetensors' Rust writer on a full disk: a SafetensorError, not an OSError
FULL_DISK_SAFETENSORS = """
import safetensors, safetensors.numpy
def full(*args, **kwargs):
    raise safetensors.SafetensorError('Error while serializing: IoError(Os { code: 28, kind: '
                                      'StorageFull, message: "No space left on device" })')
safetensors.numpy.save_file = full
"""


def test_a_full_disk_under_the_weights_write_is_one_line_and_resume_writes_them(
        tiny_flax, folder, whole, tmp_path):
    want, _, _ = whole
    out = tmp_path / "out"
    err = one_line_error(run_cli(_argv(tiny_flax, folder, out), prelude=FULL_DISK_SAFETENSORS))
    assert re.search(rf"cannot write {re.escape(str(out))}/\.{ckpt.FLAX_WEIGHTS}\.tmp-\w+: No "
                     r"space left on device; the last complete save is step 4 in .*: --resume "
                     r"continues from it", err), err
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []
    assert _resume_ends_bit_identical(tiny_flax, folder, out, want) == 4
