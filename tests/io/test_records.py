"""flaxsent.io.records: the one output record of predict, Beam, Ray and serve: its fields in
order for top_k=1, top_k=k and logits; the bad row's same keys set to None plus 'error'; an
input column named like an output field carried as input_<name>."""

from __future__ import annotations

import json

import numpy as np
import pytest

from flaxsent.io import records

ONE = {"label": "POSITIVE", "score": 0.75}
RANKED = [{"label": "POSITIVE", "score": 0.75}, {"label": "NEGATIVE", "score": 0.25}]
LOGITS = np.array([1.5, -0.25], np.float32)


@pytest.mark.parametrize("top_k, logits, fields", [
    (1, False, ("label", "score")),
    (1, True, ("label", "score", "logits")),
    (2, False, ("labels",)),
    (None, True, ("labels", "logits")),
])
def test_prediction_fields_in_order_for_top_k_one_k_and_logits(top_k, logits, fields):
    assert records.prediction_fields(top_k, logits) == fields
    result = ONE if top_k == 1 else RANKED
    good = records.good_row(result, top_k, LOGITS if logits else None)
    assert tuple(good) == fields
    assert tuple(records.bad_row("why", top_k, logits)) == (*fields, "error")


def test_a_good_row_is_the_pipeline_result_plus_plain_float_logits():
    good = records.good_row(ONE, 1, LOGITS)
    assert good == {"label": "POSITIVE", "score": 0.75, "logits": [1.5, -0.25]}
    assert all(type(v) is float for v in good["logits"])
    assert json.dumps(good) == '{"label": "POSITIVE", "score": 0.75, "logits": [1.5, -0.25]}'
    assert records.good_row(RANKED, None) == {"labels": RANKED}
    result = dict(ONE)
    records.good_row(result, 1)["label"] = "changed"
    assert result == ONE  # a copy: the classifier's result is not touched


@pytest.mark.parametrize("top_k, logits", [(1, False), (1, True), (3, False), (None, True)])
def test_a_bad_row_has_the_good_rows_keys_set_to_none_plus_error(top_k, logits):
    good = records.good_row(ONE if top_k == 1 else RANKED, top_k, LOGITS if logits else None)
    bad = records.bad_row("'text' is missing (null)", top_k, logits)
    assert list(bad) == [*good, "error"]
    assert bad == {**dict.fromkeys(good), "error": "'text' is missing (null)"}


def test_a_bad_row_with_a_line_says_it_before_the_error():
    assert list(records.bad_row("not JSON", 1, False, line=7).items()) == [
        ("label", None), ("score", None), ("line", 7), ("error", "not JSON")]


def test_an_input_column_named_like_an_output_field_becomes_input_name():
    assert [records.input_name(c) for c in ("text", "label", "score", "labels", "logits",
                                            "line", "error", "id")] == [
        "text", "input_label", "input_score", "input_labels", "input_logits", "input_line",
        "input_error", "id"]
    # only the fields the output has: a Ray batch gets label, score and error
    taken = (*records.prediction_fields(1, False), records.ERROR)
    assert [records.input_name(c, taken) for c in ("label", "logits", "error")] == [
        "input_label", "logits", "input_error"]


def test_score_first_is_teis_order_of_every_label():
    assert [list(d) for d in records.score_first(RANKED)] == [["score", "label"]] * 2
    assert records.score_first(RANKED) == RANKED
