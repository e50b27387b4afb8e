"""Fixtures shared by the server tests."""

import pytest

from flaxsent import Classifier


@pytest.fixture(scope="module")
def ref(tiny_flax, tmp_path_factory):
    """The Classifier the servers' answers are compared with (the servers' token budget)."""
    return Classifier.from_pretrained(tiny_flax, cache_dir=tmp_path_factory.mktemp("cache"),
                                      max_batch_tokens=256)
