"""DistilBertConfig: strict reading of real config.json files, round trips, presets."""

import json

import pytest
import transformers

from flaxsent.core.config import BASE, TINY, DistilBertConfig
from flaxsent.errors import ConfigError
from tests.helpers import FIXTURES

SST2 = json.loads((FIXTURES / "sst2_config.json").read_text())


def test_sst2_config_loads_as_base():
    cfg = DistilBertConfig.from_hf_dict(SST2)
    assert cfg == BASE
    assert cfg.labels == ("NEGATIVE", "POSITIVE")
    assert (cfg.dim, cfg.n_layers, cfg.n_heads, cfg.hidden_dim) == (768, 6, 12, 3072)


def test_sst2_config_round_trips_exactly():
    assert DistilBertConfig.from_hf_dict(SST2).to_hf_dict() == SST2


def test_transformers_written_config_loads_and_round_trips(tmp_path):
    hf = transformers.DistilBertConfig(dim=64, n_heads=4, hidden_dim=99, n_layers=3,
                                       sinusoidal_pos_embds=True, num_labels=3)
    hf.save_pretrained(tmp_path)
    raw = json.loads((tmp_path / "config.json").read_text())
    cfg = DistilBertConfig.from_hf_dict(raw)
    assert cfg.sinusoidal_pos_embds and cfg.num_labels == 3 and cfg.hidden_dim == 99
    assert DistilBertConfig.from_hf_dict(cfg.to_hf_dict()) == cfg
    # and transformers reads what we write
    back = transformers.DistilBertConfig.from_dict(cfg.to_hf_dict())
    assert (back.dim, back.n_layers, back.num_labels) == (64, 3, 3)


def test_bert_config_is_refused():
    bert = transformers.BertConfig().to_dict()
    with pytest.raises(ConfigError, match="model_type is 'bert'.*DistilBERT"):
        DistilBertConfig.from_hf_dict(bert)


@pytest.mark.parametrize("key", ["dim", "n_layers", "vocab_size"])
def test_missing_required_field_is_named(key):
    broken = {k: v for k, v in SST2.items() if k != key}
    with pytest.raises(ConfigError, match=f"lacks required field.*{key}"):
        DistilBertConfig.from_hf_dict(broken)


def test_unknown_field_is_an_error_not_swallowed():
    with pytest.raises(ConfigError, match="unknown field.*n_layer"):
        DistilBertConfig.from_hf_dict({**SST2, "n_layer": 12})


@pytest.mark.parametrize("change, message", [
    ({"dim": 770}, "divisible"),
    ({"activation": "swish"}, "not supported"),
    ({"n_layers": 0}, "positive integer"),
    ({"id2label": {"0": "A", "2": "B"}}, "ids must be"),
])
def test_invalid_values_are_errors(change, message):
    with pytest.raises(ConfigError, match=message):
        DistilBertConfig.from_hf_dict({**SST2, **change})


def test_labels_default_to_hf_names():
    raw = {k: v for k, v in SST2.items() if k not in ("id2label", "label2id")}
    assert DistilBertConfig.from_hf_dict(raw).labels == ("LABEL_0", "LABEL_1")


def test_presets():
    assert TINY.head_dim == 8 and TINY.num_labels == 2
    assert BASE.max_position_embeddings == 512 and BASE.vocab_size == 30522


def test_config_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "config.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="config.json: not valid JSON"):
        DistilBertConfig.from_json_file(bad)
