"""Builders the tests share: tiny random HF checkpoints, vocabularies, texts and batches.

Tests import these explicitly (`from tests.helpers import build_hf_checkpoint`); pytest fixtures
built on them live in conftest.py.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import csv
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

FIXTURES = Path(__file__).parent / "fixtures"
TINY_HF = dict(vocab_size=128, dim=32, n_layers=2, n_heads=4, hidden_dim=37,
               max_position_embeddings=64, id2label={0: "NEGATIVE", 1: "POSITIVE"},
               label2id={"NEGATIVE": 0, "POSITIVE": 1})
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = ("the a an is was it this that movie film story plot actor acting great good bad "
         "awful boring fun funny dull brilliant not n't no very too so and but or of to in "
         "for with on at by from i you he she we they my your his her our their one two "
         "best worst love hate like enjoyed fails works").split()


def write_vocab(folder: Path, vocab_size: int) -> list[str]:
    """A BERT-uncased-style vocab.txt of exactly vocab_size entries ([PAD] = 0)."""
    chars = list("abcdefghijklmnopqrstuvwxyz0123456789.,!?'-")
    tokens = SPECIALS + WORDS + chars + ["##" + c for c in chars]
    tokens += [f"[unused{i}]" for i in range(vocab_size - len(tokens))]
    tokens = tokens[:vocab_size]
    (folder / "vocab.txt").write_text("\n".join(tokens) + "\n", encoding="utf-8")
    (folder / "tokenizer_config.json").write_text(
        json.dumps({"model_max_length": 512, "do_lower_case": True}))
    return tokens


def randomize(model, seed: int, scale: float = 0.1) -> None:
    """Non-trivial weights everywhere (LayerNorm scales and biases too) to catch mapping slips.

    `scale` is the weights' standard deviation: 0.1 makes tiny models' logits O(1); full-size
    models use 0.02 (HF's initializer_range), or their logits grow far beyond a trained model's.
    """
    import torch
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "position_embeddings" in name and model.config.sinusoidal_pos_embds:
                continue
            noise = torch.randn(p.shape, generator=gen) * scale
            is_scale = name.endswith("norm.weight") or "LayerNorm.weight" in name
            p.copy_(noise * (0.1 / scale) + 1.0 if is_scale else noise)


def build_hf_checkpoint(folder: Path, *, fmt: str = "safetensors", seed: int = 0,
                        head: str = "classifier", vocab: bool = True, scale: float = 0.1,
                        **overrides):
    """Save a random HF DistilBERT (classifier, masked-LM or bare) to `folder`; return the model."""
    import torch
    import transformers as tf

    kwargs = {**TINY_HF, **overrides}
    cfg = tf.DistilBertConfig(**kwargs)
    torch.manual_seed(seed)
    cls = {"classifier": tf.DistilBertForSequenceClassification,
           "mlm": tf.DistilBertForMaskedLM, "bare": tf.DistilBertModel}[head]
    model = cls(cfg).eval()
    randomize(model, seed, scale)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=(fmt == "safetensors"))
    if fmt == "bin" and not (folder / "pytorch_model.bin").exists():
        # transformers 5 always writes safetensors: write the legacy .bin ourselves.
        torch.save(model.state_dict(), folder / "pytorch_model.bin")
        (folder / "model.safetensors").unlink(missing_ok=True)
    if vocab:
        write_vocab(folder, kwargs["vocab_size"])
    return model


def random_batch(rng: np.random.Generator, vocab: int, batch: int, length: int,
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Random ids [B, L] with random right padding; row 0 is padded down to [CLS] alone."""
    ids = rng.integers(1, vocab, (batch, length)).astype(np.int64)
    lengths = rng.integers(1, length + 1, batch)
    lengths[0] = 1
    lengths[-1] = length
    mask = (np.arange(length)[None, :] < lengths[:, None]).astype(np.int64)
    ids[mask == 0] = 0
    return ids, mask


# ---- prediction over files: inputs, outputs and the command line

ROOT = Path(__file__).resolve().parent.parent  # the repository
CLI = "import sys; from flaxsent.cli import main; sys.exit(main())"


def texts(n: int, seed: int = 0) -> list[str]:
    r = random.Random(seed)
    return [" ".join(r.choice(WORDS) for _ in range(r.randint(1, 30))) for _ in range(n)]


def parse(argv: list[str]) -> argparse.Namespace:
    from flaxsent.cli import build_parser
    return build_parser().parse_args(argv)


def cli(argv: list[str]) -> int:
    args = parse(["predict", *argv])
    return args.func(args)


def subprocess_cli(argv: list[str], prelude: str = "", **kwargs) -> subprocess.Popen:
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT),
           **kwargs.pop("env", {})}
    return subprocess.Popen([sys.executable, "-c", prelude + CLI, "predict", *argv], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)


@contextlib.contextmanager
def serving(model: Path, tmp_path: Path, *args: str, env: dict[str, str] | None = None,
            ) -> Iterator:
    """A `flaxsent serve` process on a free port, ready (/health 200) when entered."""
    from flaxsent.bench.serve_load import server_process
    environ = {"PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
               "FLAXSENT_CACHE_DIR": str(tmp_path / "jax-cache"), **(env or {})}
    argv = [sys.executable, "-m", "flaxsent", "serve", str(model), "--port", "0", *args]
    with server_process(argv, tmp_path / f"serve-{time.monotonic_ns()}.log", environ,
                        timeout_s=180) as server:
        yield server


def write_input(path: Path, rows: list[dict]) -> None:
    """rows of {'text', 'id'} in the format of the path's extension."""
    kind = path.suffix
    if kind == ".txt":
        path.write_text("".join(r["text"] + "\n" for r in rows), encoding="utf-8")
    elif kind == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    elif kind in (".csv", ".tsv"):
        with open(path, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f, delimiter="\t" if kind == ".tsv" else ",", lineterminator="\n")
            w.writerow(["id", "text"])
            w.writerows([[r["id"], r["text"]] for r in rows])
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq
        pq.write_table(pa.Table.from_pylist(rows), path)


def read_output(path: Path) -> list[dict]:
    if path.suffix == ".csv":
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        for row in rows:
            for key in ("labels", "logits"):
                if row.get(key):
                    row[key] = json.loads(row[key])
            if row.get("score"):
                row["score"] = float(row["score"])
        return rows
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq
        return pq.read_table(path).to_pylist()
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def poisoned(tiny_flax, word: str):
    """The tiny Classifier with NaN in `word`'s embedding row: texts with it give NaN logits
    (only they: one text a row, no packing)."""
    from flaxsent.core import checkpoint as ckpt
    from flaxsent.core.classifier import Classifier
    from flaxsent.core.tokenizer import TextTokenizer
    model = ckpt.load_model(tiny_flax)
    tokenizer = TextTokenizer.from_folder(tiny_flax)
    table = model.embeddings.word_embeddings.embedding
    table[...] = table[...].at[tokenizer.encode_batch([word])[0][0][1]].set(np.nan)
    return Classifier(model, tokenizer, window=4, pack_length=None)  # rows do not interact


def stopped_predict_run(tiny_flax: Path, tmp_path: Path) -> tuple[Path, Path, Path, bytes]:
    """A model folder, a JSONL input of 20 rows, and its output as a run killed after 9 rows
    leaves it (the run's record beside it); returns (model, input, output, reference)."""
    model = tmp_path / "model"
    shutil.copytree(tiny_flax, model)
    src = tmp_path / "in.jsonl"
    write_input(src, [{"id": i, "text": t} for i, t in enumerate(texts(20, seed=16))])
    out = tmp_path / "out.jsonl"
    from flaxsent.core.classifier import Classifier
    from flaxsent.predict import run as predict
    clf4 = Classifier.from_pretrained(model, window=4)
    predict.predict_file(clf4, str(src), str(out), chunk_size=4, progress=False)
    reference = out.read_bytes()
    out.write_bytes(b"".join(reference.splitlines(keepends=True)[:9]))
    return model, src, out, reference


# ---- fault injection: `flaxsent ARGV` in a subprocess, killed or refused at an exact step

# At the FLAXSENT_FAULT'th event: "fs:K" SIGKILLs at the K-th file-system step on a path under
# FLAXSENT_FAULT_UNDER (audit events fire before the step is taken); "enospc:K" fails that step
# and every later one there but removals with ENOSPC, as a full disk would (not taken);
# "fsync:K" SIGKILLs after the K-th fsync. K = 0 counts only, printing "fault paths: [each
# step's path under the folder]" and "fault events: N [names]" on stderr at exit.
FAULTY_CLI = r"""
import atexit, errno, os, signal, sys
kind, _, at = os.environ["FLAXSENT_FAULT"].partition(":")
at, seen, names, paths = int(at), [0], [], []
REMOVALS = {"os.remove", "os.rmdir", "shutil.rmtree"}
def hit(name="", path=None):
    seen[0] += 1
    names.append(name)
    paths.append(os.path.relpath(os.fsdecode(path), under) if path is not None else "")
    if at and seen[0] >= at and kind == "enospc" and name not in REMOVALS:  # removals succeed
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
    if seen[0] == at and kind != "enospc":
        os.kill(os.getpid(), signal.SIGKILL)
under = os.environ.get("FLAXSENT_FAULT_UNDER", "/")
if at == 0:
    atexit.register(lambda: print(f"fault paths: {paths}\nfault events: {seen[0]} {names}",
                                  file=sys.stderr))
if kind in ("fs", "enospc"):
    STEPS = {"os.mkdir", "os.rename", "os.remove", "os.rmdir", "os.chmod", "os.truncate",
             "shutil.copyfile", "shutil.rmtree", "shutil.move"}
    def ours(args):
        return any(isinstance(a, (str, os.PathLike)) and os.fspath(a).startswith(under)
                   for a in args)
    def audit(event, args):
        if event == "open" and ours(args[:1]):
            mode, flags = args[1], args[2]
            if (any(c in mode for c in "wax+") if isinstance(mode, str)
                    else flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)):
                hit(f"open {os.path.basename(args[0])}", args[0])
        elif event in STEPS and ours(args):
            hit(event, args[0])
    sys.addaudithook(audit)
else:
    fsync = os.fsync
    def counted(fd):
        fsync(fd)
        hit()
    os.fsync = counted
from flaxsent.cli import main
sys.exit(main())
"""


def _command(argv: list[str], fault: str | None, under: Path | None,
             file_size: int | None = None, prelude: str = "") -> tuple[list[str], dict[str, str]]:
    """The command line and environment of `flaxsent ARGV`, under FAULTY_CLI with a `fault`,
    with RLIMIT_FSIZE at `file_size` bytes (set in the child: no preexec_fn, whose fork in a
    process running JAX's threads is unsafe), after the code `prelude` (a patch, say)."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT)}
    code = "import sys; from flaxsent.cli import main; sys.exit(main())"
    if fault is not None:
        code = FAULTY_CLI
        env["FLAXSENT_FAULT"] = fault
        env["FLAXSENT_FAULT_UNDER"] = str(under or "/")
    if file_size is not None:
        code = (f"import resource; resource.setrlimit(resource.RLIMIT_FSIZE, "
                f"({file_size}, {file_size}))\n{code}")
    return [sys.executable, "-c", prelude + code, *argv], env


def run_cli(argv: list[str], *, fault: str | None = None, under: Path | None = None,
            file_size: int | None = None, prelude: str = "", timeout: float = 300,
            ) -> subprocess.CompletedProcess:
    """`flaxsent ARGV` run to its end (or its fault) in a subprocess."""
    args, env = _command(argv, fault, under, file_size, prelude)
    return subprocess.run(args, env=env, capture_output=True, timeout=timeout)


def kill_after(argv: list[str], seconds: float) -> None:
    """`flaxsent ARGV` in a subprocess, SIGKILLed after `seconds` wherever it then is."""
    args, env = _command(argv, None, None)
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(seconds)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def fault_events(result: subprocess.CompletedProcess) -> list[str]:
    """The events a counting run (fault "KIND:0") saw, in order."""
    assert result.returncode == 0, result.stderr.decode()
    count, names = result.stderr.decode().rsplit("fault events: ", 1)[1].split(" ", 1)
    names = ast.literal_eval(names.strip())
    assert len(names) == int(count)
    return names


def fault_paths(result: subprocess.CompletedProcess) -> list[str]:
    """The paths (under FLAXSENT_FAULT_UNDER) of the events a counting run saw, in order."""
    err = result.stderr.decode()
    return ast.literal_eval(err.rsplit("fault paths: ", 1)[1].split("\n", 1)[0])


def one_line_error(result: subprocess.CompletedProcess) -> str:
    err = result.stderr.decode()
    assert result.returncode == 2, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


def killed(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == -signal.SIGKILL, result.stderr.decode()
