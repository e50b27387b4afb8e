"""The declared Apache Beam floor works: pyproject's `beam` extra says `apache-beam>=FLOOR`; this
installs exactly that release, beside the jax installed here, and runs a DirectRunner pipeline
through FlaxsentModelHandler on it, every element back once and equal to the Classifier's.

The release and what it needs go in with `pip install --target` into a folder placed first on
PYTHONPATH (so the newer Beam installed here cannot leak in), resolved together with the numpy
that jax here requires. The folder is cached beside the bench's models (~/.cache/flaxsent, or
$FLAXSENT_BENCH_CACHE), one per Beam, Python and numpy requirement, so CI pays the install
once. Skipped only when the index is unreachable.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from flaxsent.core.classifier import Classifier
from flaxsent.embedded.default_model import cache_root
from tests.helpers import ROOT, WORDS

pytestmark = pytest.mark.distributed_engines

# pip's words for an index it could not reach (not for a release it could not find)
UNREACHABLE = re.compile(r"NewConnectionError|ConnectTimeoutError|Max retries exceeded|"
                         r"Temporary failure in name resolution|Network is unreachable|"
                         r"Name or service not known|ProxyError")

SCRIPT = """
import json, sys
import apache_beam as beam
import numpy
from apache_beam.ml.inference.base import KeyedModelHandler, RunInference
from flaxsent.integrations.beam import WEIGHTED_BATCHING, FlaxsentModelHandler

model, values, out = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
handler = FlaxsentModelHandler(model, max_batch_size=16, share_model_across_processes=False)
with beam.Pipeline(runner="DirectRunner") as p:
    _ = (p | beam.Create(list(enumerate(values)))
         | RunInference(KeyedModelHandler(handler), inference_args={"top_k": None})
         | beam.Map(lambda kv: json.dumps({"key": kv[0], **kv[1].inference}))
         | beam.io.WriteToText(out, shard_name_template=""))
print(json.dumps({"beam": beam.__version__, "beam_file": beam.__file__,
                  "numpy": numpy.__version__, "weighted": WEIGHTED_BATCHING}))
"""


def declared_floor() -> str:
    """The release in pyproject's `beam` extra, `apache-beam>=X`."""
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    (requirement,) = extras["project"]["optional-dependencies"]["beam"]
    return re.fullmatch(r"apache-beam>=([0-9.]+)", requirement).group(1)


def numpy_requirements() -> list[str]:
    """What the jax here asks of numpy (the floor must resolve beside it)."""
    return sorted({r for dist in ("jax", "jaxlib", "ml_dtypes")
                   for r in importlib.metadata.requires(dist) or []
                   if r.startswith("numpy") and "extra ==" not in r})


@pytest.fixture(scope="module")
def floor_site() -> tuple[str, Path]:
    """(the floor release, a folder holding exactly it and its dependencies), cached."""
    floor = declared_floor()
    wanted = [f"apache-beam=={floor}", *numpy_requirements()]
    key = hashlib.sha256("\n".join(wanted).encode()).hexdigest()[:12]
    site = (cache_root() / "beam-floor"
            / f"apache-beam-{floor}-py{sys.version_info.major}{sys.version_info.minor}-{key}")
    if (site / "INSTALLED").is_file():
        return floor, site
    partial = site.with_name(f"{site.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         "--no-warn-script-location", "--retries", "1", "--timeout", "30",
         "--target", str(partial), *wanted],
        capture_output=True, text=True)
    if done.returncode:
        shutil.rmtree(partial, ignore_errors=True)
        if UNREACHABLE.search(done.stderr + done.stdout):
            pytest.skip(f"the package index is unreachable, so apache-beam=={floor} cannot be "
                        "installed: " + done.stderr.strip().splitlines()[-1])
        pytest.fail(f"apache-beam=={floor} (the declared floor) does not install beside the "
                    f"jax here ({', '.join(wanted[1:])}):\n{done.stderr}")
    (partial / "INSTALLED").write_text("\n".join(wanted) + "\n", encoding="utf-8")
    try:
        partial.rename(site)  # atomic: a half-done install is never taken for a cached one
    except OSError:  # another run cached it first
        shutil.rmtree(partial, ignore_errors=True)
    return floor, site


def test_the_handler_runs_a_pipeline_on_the_declared_beam_floor(floor_site, tiny_flax, tmp_path):
    floor, site = floor_site
    values: list = [" ".join(WORDS[i:i + 1 + i % 9]) for i in range(40)]
    values[7] = None
    out = tmp_path / "out.jsonl"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)]),
           "JAX_PLATFORMS": "cpu", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(tiny_flax), json.dumps(values),
                           str(out)], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    ran = json.loads(done.stdout.strip().splitlines()[-1])
    assert ran["beam"] == floor  # exactly the floor ...
    assert Path(ran["beam_file"]).is_relative_to(site)  # ... from the installed folder
    # the feature test agrees with the release: Beam's batch weights came after the floor
    assert ran["weighted"] == ("max_batch_weight" in (
        site / "apache_beam" / "transforms" / "util.py").read_text(encoding="utf-8"))

    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert sorted(r["key"] for r in records) == list(range(len(values)))
    good = [i for i, v in enumerate(values) if v is not None]
    want = dict(zip(good, Classifier.from_pretrained(tiny_flax)(
        [values[i] for i in good], top_k=None), strict=True))
    for record in records:
        if record["key"] == 7:
            assert record == {"key": 7, "labels": None, "error": "the element is missing (null)"}
            continue
        expected = want[record["key"]]
        assert [r["label"] for r in record["labels"]] == [r["label"] for r in expected]
        assert [r["score"] for r in record["labels"]] == pytest.approx(
            [r["score"] for r in expected], abs=1e-6)
