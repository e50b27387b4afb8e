"""Attributions: completeness, parity with captum on the same PyTorch model, the word that
flips a label ranked first, compile counts, bad input."""

import numpy as np
import pytest
import torch
from captum.attr import LayerGradientXActivation, LayerIntegratedGradients
from captum.attr._utils.approximation_methods import approximation_parameters

from flaxsent import Classifier
from flaxsent.core.attribution import baseline_ids, quadrature, words_of
from flaxsent.core.plan import CPU_SHORT_PACK_LENGTH, DEFAULT_PACK_LENGTH
from flaxsent.errors import FlaxsentError
from tests.core.test_model import FULL, FULL_SCALE
from tests.helpers import WORDS, build_hf_checkpoint

TEXTS = ["the movie was great", "awful acting , boring plot but fun", "not good",
         "i love this film and the story of it", "dull"]


@pytest.fixture(scope="module")
def clf(tiny_hf, tmp_path_factory):
    return Classifier.from_pretrained(tiny_hf, cache_dir=tmp_path_factory.mktemp("cache"),
                                      max_batch_tokens=256, max_batch_size=8)


@pytest.fixture(scope="module")
def torch_model(tiny_hf):
    import transformers
    return transformers.DistilBertForSequenceClassification.from_pretrained(tiny_hf).eval()


def _captum(model, ids, target, method, steps):
    """captum's attributions per token: the layer's attributions summed over the features."""
    def logits(input_ids):
        return model(input_ids=input_ids).logits

    layer = model.distilbert.embeddings.word_embeddings
    inputs = torch.tensor([ids])
    if method == "gradient-x-input":
        out = LayerGradientXActivation(logits, layer).attribute(inputs, target=target)
    else:
        base = torch.tensor([baseline_ids(ids, 0).tolist()])
        out = LayerIntegratedGradients(logits, layer).attribute(
            inputs, baselines=base, target=target, n_steps=steps)
    return out.sum(-1)[0].detach().double().numpy()


@pytest.mark.parametrize("steps", [1, 7, 50])
def test_the_quadrature_is_captums_gauss_legendre(steps):
    step_sizes, alphas = approximation_parameters("gausslegendre")
    points, weights = quadrature("integrated-gradients", steps)
    np.testing.assert_array_equal(points, alphas(steps))
    np.testing.assert_array_equal(weights, step_sizes(steps))


def test_the_baseline_keeps_cls_and_sep_and_pads_the_rest():
    assert baseline_ids([2, 17, 18, 19, 3], 0).tolist() == [2, 0, 0, 0, 3]


def test_wordpieces_group_into_words_with_summed_attributions():
    tokens = ["[CLS]", "bo", "##ring", "film", "##s", "!", "[SEP]"]
    words, values = words_of(tokens, np.array([0.0, 1.0, 2.0, 0.5, 0.25, -1.0, 0.0]))
    assert words == ["boring", "films", "!"]
    np.testing.assert_allclose(values, [3.0, 0.75, -1.0])


def _smooth_head(folder, seed=0, **overrides):
    """A random checkpoint whose head's ReLUs stay on for every input (pre_classifier's bias
    +20): the integrand is then smooth, so 50 Gauss-Legendre points integrate it closely. (The
    ReLU's kinks along the path are what slow quadrature down on random models.)"""
    model = build_hf_checkpoint(folder, seed=seed, **overrides)
    with torch.no_grad():
        model.pre_classifier.bias += 20.0
    model.save_pretrained(folder)
    return model


def test_attributions_sum_to_the_logit_difference_at_50_steps(tmp_path):
    _smooth_head(tmp_path / "m")
    clf = Classifier.from_pretrained(tmp_path / "m", cache_dir=tmp_path / "cache")
    explained = clf.explain(TEXTS, steps=50)
    gaps = [abs(e.gap) for e in explained]
    assert max(gaps) < 0.01, gaps
    for e in explained:
        assert abs(e.attributions.sum() - e.delta) <= 0.01 * abs(e.delta)
        assert e.attributions[0] == 0 and e.attributions[-1] == 0  # kept in the baseline
    # one point integrates less well: the gap is measured, not assumed
    assert max(abs(e.gap) for e in clf.explain(TEXTS, steps=1)) > max(gaps)


def test_the_gap_closes_with_more_steps_through_the_heads_relu(clf):
    """With the ReLU's kinks on the path, quadrature converges slowly, but it converges."""
    few = [abs(e.gap) for e in clf.explain(TEXTS, steps=20)]
    many = [abs(e.gap) for e in clf.explain(TEXTS, steps=1000)]
    assert max(many) < 0.01 and sum(many) < sum(few), (few, many)


@pytest.mark.parametrize("method,target", [("integrated-gradients", None),
                                           ("integrated-gradients", "NEGATIVE"),
                                           ("gradient-x-input", "POSITIVE")])
def test_attributions_equal_captums_on_the_same_pytorch_model(clf, torch_model, method,
                                                                target):
    explained = clf.explain(TEXTS, target=target, steps=50, method=method)
    ids, _ = clf.tokenizer.encode_batch(TEXTS)
    for e, text_ids in zip(explained, ids, strict=True):
        theirs = _captum(torch_model, text_ids, clf.labels.index(e.target), method, 50)
        scale = np.abs(theirs).max()
        assert scale > 1e-3
        np.testing.assert_allclose(e.attributions, theirs, rtol=1e-4, atol=1e-4 * scale)
    if target is None:
        logits = torch_model(input_ids=torch.tensor([ids[0]])).logits[0].detach()
        assert explained[0].target == clf.labels[int(logits.argmax())]
        assert explained[0].probability == pytest.approx(
            float(torch.softmax(logits, -1).max()), abs=1e-5)


def test_the_word_that_flips_the_label_is_ranked_first(tmp_path):
    """A model whose weights make one word decide: the head's bias puts "the plot was good"
    just on the POSITIVE side, and "awful"'s embedding walks 300 normalised gradient steps down
    the margin, so "the plot was awful" is NEGATIVE. Explained, "awful" comes first."""
    from flaxsent.core.tokenizer import TextTokenizer
    model = build_hf_checkpoint(tmp_path / "m", seed=1)
    tokenizer = TextTokenizer.from_folder(tmp_path / "m")
    (good, bad), _ = tokenizer.encode_batch(["the plot was good", "the plot was awful"])
    table = model.distilbert.embeddings.word_embeddings.weight

    def margin(ids):  # POSITIVE - NEGATIVE
        logits = model(input_ids=torch.tensor([ids])).logits[0]
        return logits[1] - logits[0]

    with torch.no_grad():
        model.classifier.bias[1] -= float(margin(good)) - 0.05
    for _ in range(300):
        (grad,) = torch.autograd.grad(margin(bad), table)
        with torch.no_grad():
            table[bad[-2]] -= 0.05 * grad[bad[-2]] / grad[bad[-2]].norm()
    model.save_pretrained(tmp_path / "m")
    clf = Classifier.from_pretrained(tmp_path / "m", cache_dir=tmp_path / "cache")
    assert [r["label"] for r in clf(["the plot was good", "the plot was awful"])] == \
        ["POSITIVE", "NEGATIVE"]
    e = clf.explain(["the plot was awful"])[0]
    assert e.target == "NEGATIVE"
    assert e.top(1)[0][0] == "awful" and e.top(1)[0][1] > 0, e.top(4)


def test_attribution_on_a_cpu_packs_shorter_rows_than_inference(tmp_path):
    folder = tmp_path / "long"  # room for rows of 128: the tiny config stops at 64 positions
    build_hf_checkpoint(folder, max_position_embeddings=256)
    options = dict(cache_dir=tmp_path / "cache", max_batch_tokens=256, max_batch_size=8)
    clf = Classifier.from_pretrained(folder, **options)
    assert clf.plan.pack.length == DEFAULT_PACK_LENGTH
    assert clf.attribution_plan.pack.length == CPU_SHORT_PACK_LENGTH
    clf.explain(TEXTS, steps=4)
    assert [s[1] for s in clf.attribution_engine.compiled_shapes] == [CPU_SHORT_PACK_LENGTH]
    told = Classifier.from_pretrained(folder, pack_length=128, **options)
    assert told.attribution_plan is told.plan


def test_one_program_per_shape_used_and_no_recompiles(tiny_hf, tmp_path):
    clf = Classifier.from_pretrained(tiny_hf, cache_dir=tmp_path, max_batch_tokens=256,
                                     max_batch_size=8, pack_length=24)
    long = " ".join(WORDS[:40])  # past the packed rows: a bucket
    clf.explain(TEXTS + [long], steps=20)
    shapes = clf.attribution_engine.compiled_shapes
    assert len(shapes) == len(set(shapes)) >= 2  # the packed shape and a bucket
    assert set(shapes) <= set(clf.shapes())
    assert clf.attribution_engine.n_compilations == len(shapes)
    clf.explain(TEXTS + [long], steps=20)  # the same batches compile nothing
    assert clf.attribution_engine.compiled_shapes == shapes
    clf.explain(["fun and brilliant", "the worst " + long], steps=50)
    clf.explain(["one more"], method="gradient-x-input")
    shapes = clf.attribution_engine.compiled_shapes  # smaller rungs, each compiled once
    assert len(shapes) == len(set(shapes)) and set(shapes) <= set(clf.shapes())
    assert clf.attribution_engine.n_compilations == len(shapes)


def test_bad_input_is_one_clear_error(clf):
    with pytest.raises(FlaxsentError, match="text 1 is empty"):
        clf.explain(["fine", "  "])
    with pytest.raises(FlaxsentError, match="target 'MAYBE'.*NEGATIVE, POSITIVE"):
        clf.explain(["fine"], target="MAYBE")
    with pytest.raises(FlaxsentError, match="steps=0"):
        clf.explain(["fine"], steps=0)
    with pytest.raises(FlaxsentError, match="method 'saliency'"):
        clf.explain(["fine"], method="saliency")
    assert clf.explain([]) == []


@pytest.mark.slow
def test_completeness_at_full_size(tmp_path):
    """DistilBERT-base dimensions, random weights of std 0.05, the head's ReLUs on (as above)."""
    _smooth_head(tmp_path / "full", seed=3, scale=FULL_SCALE, **FULL)
    clf = Classifier.from_pretrained(tmp_path / "full", cache_dir=tmp_path / "cache")
    explained = clf.explain(TEXTS[:3], steps=50)
    assert max(abs(e.gap) for e in explained) < 0.01, [e.gap for e in explained]
    assert all(e.delta != 0 for e in explained)  # the relative gap is a real ratio
