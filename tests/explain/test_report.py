"""explain's outputs: the JSONL record, the HTML's shading and escaping, the PNG, --force."""

import json
from html.parser import HTMLParser

import numpy as np
import pytest

from flaxsent.core.attribution import Explanation
from flaxsent.errors import ExplainError
from flaxsent.explain.report import (
    MAX_PNG_TEXTS,
    record,
    render_html,
    shades,
    write_outputs,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def explanation(text="<b>bad</b> & good", words=("<b>bad</b>", "&", "good"),
                values=(-0.5, 0.0, 0.25)) -> Explanation:
    values = np.asarray(values, float)
    return Explanation(text, ("[CLS]", *words, "[SEP]"), np.concatenate([[0], values, [0]]),
                       tuple(words), values, "POSITIVE", "NEGATIVE", 0.3, -0.2, 0.001,
                       "integrated-gradients", 50)


class Spans(HTMLParser):
    """The shaded words of a page: (text, style) of each span of class w inside the table."""

    def __init__(self):
        super().__init__()
        self.spans, self._style, self.scripts = [], None, 0

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.scripts += tag == "script" or any(k.startswith("on") for k in attrs)
        if tag == "span" and attrs.get("class") == "w" and "title" in attrs:
            self._style = attrs["style"]

    def handle_data(self, data):
        if self._style is not None:
            self.spans.append((data, self._style))
            self._style = None


def test_the_record_holds_tokens_words_target_probability_and_gap():
    r = json.loads(json.dumps(record(explanation())))
    assert r["tokens"][0] == "[CLS]" and r["words"] == ["<b>bad</b>", "&", "good"]
    assert r["word_attributions"] == [-0.5, 0.0, 0.25] and len(r["attributions"]) == 5
    assert (r["target"], r["predicted"], r["probability"], r["gap"]) == \
        ("POSITIVE", "NEGATIVE", 0.3, 0.001)


def test_words_for_the_target_are_green_against_it_red_scaled_to_the_largest():
    (neg, a_neg), (zero, a_zero), (pos, a_pos) = shades(np.array([-0.5, 0.0, 0.25]))
    assert neg[0] > neg[1] and pos[1] > pos[0]  # red against, green for
    assert (a_neg, a_zero, a_pos) == (1.0, 0.0, 0.5)
    assert shades(np.zeros(2))[0][1] == 0.0


def test_the_html_escapes_the_text_and_shades_each_word():
    page = render_html([explanation()], "m<odel>")
    parser = Spans()
    parser.feed(page)
    assert [w for w, _ in parser.spans] == ["<b>bad</b>", "&", "good"]
    assert "<b>bad</b>" not in page and "m&lt;odel&gt;" in page
    assert parser.scripts == 0 and "http" not in page  # self-contained, nothing runs
    (_, red), _, (_, green) = parser.spans
    assert "rgba(220,30,30,0.850)" in red and "rgba(0,160,60,0.425)" in green


def test_outputs_are_written_and_refused_again_without_force(tmp_path):
    out = tmp_path / "x"
    written = write_outputs([explanation()] * 3, "m", str(out))
    assert [p.rsplit("/", 1)[1] for p in written] == \
        ["attributions.jsonl", "explain.html", "explain.png"]
    lines = (out / "attributions.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 3 and json.loads(lines[0])["text"] == "<b>bad</b> & good"
    assert (out / "explain.png").read_bytes()[:8] == PNG_MAGIC
    with pytest.raises(ExplainError, match="already holds attributions.jsonl"):
        write_outputs([explanation()], "m", str(out))
    # too many texts for a chart: the earlier chart goes too, never left beside new files
    write_outputs([explanation()] * (MAX_PNG_TEXTS + 1), "m", str(out), force=True)
    assert not (out / "explain.png").exists()
