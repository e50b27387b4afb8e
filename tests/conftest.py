"""Shared fixtures: HF DistilBERT checkpoints built locally with random weights (no downloads)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for the network in tests
# Tests run on the CPU (never a GPU), and with the tpu-aot extra installed, jax would otherwise
# probe for a TPU at start-up and print libtpu's errors; compiling for TPU topologies still works.
os.environ.setdefault("JAX_PLATFORMS", "cpu")

from tests.helpers import build_hf_checkpoint  # noqa: E402 - after the environment is set


@pytest.fixture(scope="session")
def tiny_hf(tmp_path_factory) -> Path:
    """A tiny random HF classifier folder (safetensors, vocab.txt, tokenizer_config.json)."""
    folder = tmp_path_factory.mktemp("tiny_hf")
    build_hf_checkpoint(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_flax(tiny_hf, tmp_path_factory) -> Path:
    """The tiny checkpoint converted to a flaxsent folder."""
    from flaxsent.convert.torch_to_flax import convert_checkpoint
    dst = tmp_path_factory.mktemp("tiny_flax") / "model"
    convert_checkpoint(tiny_hf, dst)
    return dst
