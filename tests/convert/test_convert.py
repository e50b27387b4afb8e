"""The two converters: every tensor mapped once, both weight formats, exact round trips."""

import collections

import numpy as np
import pytest
import torch
import transformers
from flaxsent.convert.flax_to_torch import export_checkpoint
from flaxsent.convert.torch_to_flax import convert_checkpoint

from flaxsent.core import checkpoint as ckpt
from flaxsent.core.config import BASE, TINY
from flaxsent.core.mapping import parameter_table
from flaxsent.core.state_dict import flax_to_torch_state, torch_to_flax_params
from flaxsent.errors import CheckpointError
from tests.helpers import build_hf_checkpoint, random_batch


@pytest.mark.parametrize("cfg", [TINY, BASE])
def test_table_covers_the_model_exactly_once(cfg):
    table = parameter_table(cfg)
    flax_paths = [e.flax_path for e in table]
    torch_keys = [e.torch_key for e in table]
    assert len(set(flax_paths)) == len(flax_paths) and len(set(torch_keys)) == len(torch_keys)
    assert {e.flax_path: e.flax_shape for e in table} == ckpt.param_shapes(cfg)


def test_table_matches_transformers_state_dict():
    hf_cfg = transformers.DistilBertConfig(vocab_size=128, dim=32, n_layers=2, n_heads=4,
                                           hidden_dim=37, max_position_embeddings=64)
    state = transformers.DistilBertForSequenceClassification(hf_cfg).state_dict()
    table = parameter_table(TINY)
    assert {e.torch_key: e.torch_shape for e in table} == {
        k: tuple(v.shape) for k, v in state.items()}


def test_every_entry_used_exactly_once_in_both_directions(tiny_hf):
    state = ckpt.read_torch_state_dict(tiny_hf)
    cfg = ckpt.read_config(tiny_hf)
    reads = collections.Counter()

    class Counting(dict):
        def __getitem__(self, key):
            reads[key] += 1
            return super().__getitem__(key)

    params, _ = torch_to_flax_params(state, cfg)
    back = flax_to_torch_state(Counting(params), cfg)
    assert set(reads) == set(params) and set(reads.values()) == {1}
    assert set(back) == set(state)


def _logits_equal(hf_folder, flax_folder, seed=0):
    torch_model = transformers.DistilBertForSequenceClassification.from_pretrained(hf_folder)
    model = ckpt.load_model(flax_folder)
    ids, mask = random_batch(np.random.default_rng(seed), model.config.vocab_size, 5, 17)
    import jax
    with torch.no_grad():
        ref = torch_model.eval()(torch.tensor(ids), attention_mask=torch.tensor(mask)).logits
    with jax.default_matmul_precision("highest"):
        out = np.asarray(model(ids, mask))
    return np.abs(out - ref.numpy()).max()


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
def test_convert_both_formats(tmp_path, fmt):
    src = tmp_path / "hf"
    build_hf_checkpoint(src, fmt=fmt, seed=1)
    assert (src / ("model.safetensors" if fmt == "safetensors" else "pytorch_model.bin")).exists()
    report = convert_checkpoint(src, tmp_path / "flax")
    assert report.source_format == ("safetensors" if fmt == "safetensors" else "pytorch .bin")
    assert report.n_params == sum(int(np.prod(s)) for s in ckpt.param_shapes(TINY).values())
    assert sorted(p.name for p in (tmp_path / "flax").iterdir()) == [
        "config.json", "flax_model.safetensors", "tokenizer_config.json", "vocab.txt"]
    assert _logits_equal(src, tmp_path / "flax") <= 1e-5


def test_legacy_gamma_beta_names(tmp_path):
    src = tmp_path / "hf"
    model = build_hf_checkpoint(src, fmt="bin", seed=2)
    state = {k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias",
                                                                     "LayerNorm.beta"): v
             for k, v in model.state_dict().items()}
    assert any(k.endswith(".gamma") for k in state)
    torch.save(state, src / "pytorch_model.bin")
    convert_checkpoint(src, tmp_path / "flax")
    assert _logits_equal(src, tmp_path / "flax") <= 1e-5


def test_bfloat16_conversion_stores_bfloat16(tiny_hf, tmp_path):
    report = convert_checkpoint(tiny_hf, tmp_path / "bf16", dtype="bfloat16")
    assert report.dtype == "bfloat16"
    params = ckpt.load_flax_params(tmp_path / "bf16")
    assert {str(v.dtype) for v in params.values()} == {"bfloat16"}
    model = ckpt.load_model(tmp_path / "bf16")
    assert str(model.classifier.kernel[...].dtype) == "bfloat16"


def test_masked_lm_checkpoint_is_refused_without_num_labels(tmp_path):
    src = tmp_path / "mlm"
    build_hf_checkpoint(src, head="mlm")
    with pytest.raises(CheckpointError, match="no sequence-classification head.*masked-LM.*"
                                              "--num-labels"):
        convert_checkpoint(src, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_masked_lm_with_num_labels_gets_fresh_head(tmp_path):
    src = tmp_path / "mlm"
    mlm = build_hf_checkpoint(src, head="mlm", seed=3)
    report = convert_checkpoint(src, tmp_path / "out", num_labels=3)
    assert report.fresh_head
    assert set(report.skipped) >= {"vocab_transform.weight", "vocab_layer_norm.weight"}
    model = ckpt.load_model(tmp_path / "out")
    assert model.config.num_labels == 3 and model.config.labels[2] == "LABEL_2"
    # the encoder is the masked-LM's, unchanged
    np.testing.assert_array_equal(
        model.layers[1].ffn.lin1.kernel[...],
        mlm.distilbert.transformer.layer[1].ffn.lin1.weight.detach().numpy().T)
    kernel = np.asarray(model.classifier.kernel[...])
    assert kernel.shape == (32, 3) and 0.01 < kernel.std() < 0.03


def test_bare_encoder_with_num_labels(tmp_path):
    src = tmp_path / "bare"
    build_hf_checkpoint(src, head="bare")
    with pytest.raises(CheckpointError, match="bare encoder"):
        convert_checkpoint(src, tmp_path / "out")
    convert_checkpoint(src, tmp_path / "out", num_labels=2)
    assert ckpt.load_model(tmp_path / "out").config.num_labels == 2


def test_num_labels_conflicting_with_existing_head(tiny_hf, tmp_path):
    with pytest.raises(CheckpointError, match="already has a 2-label head"):
        convert_checkpoint(tiny_hf, tmp_path / "out", num_labels=5)


def test_missing_unexpected_and_misshaped_tensors_are_named(tiny_hf):
    cfg = ckpt.read_config(tiny_hf)
    state = ckpt.read_torch_state_dict(tiny_hf)
    dropped = dict(state)
    del dropped["distilbert.transformer.layer.1.ffn.lin2.bias"]
    with pytest.raises(CheckpointError, match=r"missing 1: distilbert\.transformer\.layer\.1\."
                                              r"ffn\.lin2\.bias"):
        torch_to_flax_params(dropped, cfg)
    with pytest.raises(CheckpointError, match="unexpected 1: extra.weight"):
        torch_to_flax_params({**state, "extra.weight": np.zeros(3)}, cfg)
    bad = dict(state)
    bad["pre_classifier.weight"] = np.zeros((32, 31), np.float32)
    with pytest.raises(CheckpointError, match=r"'pre_classifier.weight' has shape \(32, 31\)"):
        torch_to_flax_params(bad, cfg)


def test_round_trip_flax_to_torch_is_exact(tiny_hf, tmp_path):
    convert_checkpoint(tiny_hf, tmp_path / "flax")
    written = export_checkpoint(tmp_path / "flax", tmp_path / "back")
    assert {"config.json", "model.safetensors", "vocab.txt"} <= set(written)
    original = ckpt.read_torch_state_dict(tiny_hf)
    again = ckpt.read_torch_state_dict(tmp_path / "back")
    assert set(original) == set(again)
    for key in original:
        np.testing.assert_array_equal(original[key], again[key], err_msg=key)
    # transformers loads it and computes the same logits, bit for bit
    a = transformers.DistilBertForSequenceClassification.from_pretrained(tiny_hf).eval()
    b = transformers.DistilBertForSequenceClassification.from_pretrained(tmp_path / "back").eval()
    ids, mask = random_batch(np.random.default_rng(0), 128, 4, 11)
    with torch.no_grad():
        la = a(torch.tensor(ids), attention_mask=torch.tensor(mask)).logits
        lb = b(torch.tensor(ids), attention_mask=torch.tensor(mask)).logits
    assert torch.equal(la, lb)
    assert b.config.id2label == {0: "NEGATIVE", 1: "POSITIVE"}
    tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "back")
    assert tok("the movie")["input_ids"][0] == tok.cls_token_id


def test_load_model_accepts_hf_folder_directly(tiny_hf, tiny_flax):
    a, b = ckpt.load_model(tiny_hf), ckpt.load_model(tiny_flax)
    ids = np.arange(10).reshape(2, 5)
    np.testing.assert_array_equal(a(ids), b(ids))


def test_sharded_safetensors(tmp_path):
    src = tmp_path / "hf"
    model = build_hf_checkpoint(src, seed=4)
    from safetensors.torch import save_file
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    keys = sorted(state)
    half = len(keys) // 2
    save_file({k: state[k] for k in keys[:half]}, src / "model-00001-of-00002.safetensors")
    save_file({k: state[k] for k in keys[half:]}, src / "model-00002-of-00002.safetensors")
    import json
    (src / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": {
        k: f"model-0000{1 if i < half else 2}-of-00002.safetensors" for i, k in enumerate(keys)}}))
    (src / "model.safetensors").unlink()
    convert_checkpoint(src, tmp_path / "flax")
    assert _logits_equal(src, tmp_path / "flax") <= 1e-5


def test_consuming_load_frees_host_arrays_as_it_goes(tiny_flax):
    params = ckpt.load_flax_params(tiny_flax)
    keep = dict(params)
    model = ckpt.model_from_params(ckpt.read_config(tiny_flax), params, consume=True)
    assert params == {}
    np.testing.assert_array_equal(model.classifier.kernel[...], keep["classifier/kernel"])


def test_safetensors_reader_matches_the_library(tiny_hf):
    from safetensors.numpy import load_file
    ours = ckpt.read_safetensors(tiny_hf / "model.safetensors")
    theirs = load_file(str(tiny_hf / "model.safetensors"))
    assert set(ours) == set(theirs)
    for key in theirs:
        assert ours[key].dtype == theirs[key].dtype
        np.testing.assert_array_equal(ours[key], theirs[key])
