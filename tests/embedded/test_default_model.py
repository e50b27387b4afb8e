"""The embedded default model: logits sized like a trained SST-2 classifier's; a versioned cache."""

from __future__ import annotations

import numpy as np
import pytest

from flaxsent.core.tokenizer import TextTokenizer
from flaxsent.embedded import default_model
from flaxsent.embedded.corpus import generate_corpus


def _logits(folder, texts: list[str]) -> np.ndarray:
    """PyTorch logits [N, 2] of the saved folder's model, one sentence at a time (no padding)."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    model = transformers.AutoModelForSequenceClassification.from_pretrained(folder).eval()
    ids, _ = TextTokenizer.from_folder(folder).encode_batch(texts)
    with torch.no_grad():
        return np.concatenate([model(torch.tensor([row])).logits.numpy() for row in ids])


def _check_trained_like(logits: np.ndarray) -> None:
    """|logit| about 3 on typical sentences, as the trained model's (HF's init gives 0.01-0.2)."""
    assert np.isfinite(logits).all()
    assert 2.0 <= np.abs(logits).mean() <= 4.0
    assert np.median(np.abs(logits)) >= 1.5


def test_quick_model_logits_are_sized_like_a_trained_classifier(tmp_path):
    folder = default_model.default_model_folder(quick=True, root=tmp_path)
    _check_trained_like(_logits(folder, generate_corpus(64, seed=0)))


@pytest.mark.slow
def test_full_size_logits_are_sized_like_a_trained_classifier(tmp_path):
    folder = default_model.default_model_folder(quick=False, root=tmp_path)
    logits = _logits(folder, generate_corpus(96, seed=0))
    _check_trained_like(logits)
    # and they depend on the sentence: both classes win somewhere
    assert 0 < (logits[:, 1] > logits[:, 0]).mean() < 1


def test_cache_key_follows_the_weight_recipe(monkeypatch):
    pytest.importorskip("transformers")
    cfg = default_model.default_config(quick=True)
    key = default_model._fingerprint(cfg, 40.0)[0]
    assert default_model._fingerprint(cfg, 40.0)[0] == key
    assert default_model._fingerprint(cfg, 41.0)[0] != key
    monkeypatch.setattr(default_model, "INIT_STD", 0.06)
    assert default_model._fingerprint(cfg, 40.0)[0] != key
