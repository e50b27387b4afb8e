"""Pinning JAX to the CPU on hosts with no accelerator, so libtpu stays quiet there."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from flaxsent.core import devices as accelerators


@pytest.fixture
def no_plugins(monkeypatch):
    """This host's JAX plugins out of the picture: only the fake root decides."""
    real = importlib.util.find_spec
    monkeypatch.setattr(accelerators.metadata, "entry_points", lambda group: [])
    monkeypatch.setattr(accelerators.importlib.util, "find_spec",
                        lambda name: None if name == "jax_plugins" else real(name))


def _root(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    return tmp_path


@pytest.mark.parametrize(("files", "present"), [
    ({}, False),
    ({"sys/bus/pci/devices/0000:00:01.0/vendor": "0x8086\n"}, False),  # an Intel host bridge
    ({"sys/bus/pci/devices/0000:00:04.0/vendor": "0x1ae0\n"}, True),  # a Google TPU
    ({"sys/bus/pci/devices/0000:00:05.0/vendor": "0x10de\n"}, True),  # an NVIDIA GPU
    ({"dev/nvidia0": ""}, True),
    ({"dev/accel0": ""}, True),
    ({"dev/vfio/0": ""}, True),
    ({"dev/kfd": ""}, True),
])
def test_accelerator_present(tmp_path, no_plugins, files, present):
    assert accelerators.accelerator_present(_root(tmp_path, files)) is present


def test_a_jax_plugin_counts_as_an_accelerator(tmp_path, monkeypatch):
    monkeypatch.setattr(accelerators.metadata, "entry_points", lambda group: ["cuda"])
    assert accelerators.accelerator_present(tmp_path)


@pytest.mark.parametrize(("env", "libtpu", "accelerator", "pinned"), [
    (None, True, False, True),  # the case it is for
    ("cuda", True, False, False),  # the user chose
    (None, False, False, False),  # no libtpu: JAX is quiet anyway
    (None, True, True, False),  # an accelerator: JAX must find it
])
def test_pin_cpu_only_where_it_changes_nothing_but_the_noise(monkeypatch, env, libtpu,
                                                             accelerator, pinned):
    if env is None:
        monkeypatch.delenv("JAX_PLATFORMS", raising=False)
    else:
        monkeypatch.setenv("JAX_PLATFORMS", env)
    real = importlib.util.find_spec
    monkeypatch.setattr(accelerators.importlib.util, "find_spec",
                        lambda name: (object() if libtpu else None) if name == "libtpu"
                        else real(name))
    monkeypatch.setattr(accelerators, "accelerator_present", lambda root: accelerator)
    assert accelerators.pin_cpu_where_no_accelerator() is pinned
    assert os.environ.get("JAX_PLATFORMS") == ("cpu" if pinned else env)


@pytest.mark.skipif(importlib.util.find_spec("libtpu") is None
                    or accelerators.accelerator_present(),
                    reason="for hosts with libtpu installed and no accelerator (as CI's)")
def test_predict_prints_only_its_own_lines_on_this_host(tiny_flax, tmp_path):
    """On this accelerator-free test host with libtpu installed, and no JAX_PLATFORMS: stderr
    holds predict's summary and nothing of libtpu's."""
    src = tmp_path / "in.txt"
    src.write_text("a fine film\n")
    env = {k: v for k, v in os.environ.items() if k != "JAX_PLATFORMS"}
    proc = subprocess.run([sys.executable, "-m", "flaxsent", "predict", "--model", str(tiny_flax),
                           str(src), "--no-progress"], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.splitlines() == ["predicted 1 record(s) -> stdout"], proc.stderr
