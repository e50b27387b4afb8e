"""TextTokenizer gives the ids of the transformers tokenizer, on vocabularies built here."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest

from flaxsent.core.tokenizer import TOKENIZER_FILES, TextTokenizer, copy_tokenizer_files

transformers = pytest.importorskip("transformers")

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = """
the a an and or but if then of to in on at by for with from as is are was were be been being it
its this that these those i you he she we they me him her us them my your his our their what which
who whom whose when where why how all any both each few more most other some such no nor not only
own same so than too very can will just don should now good bad great movie film story plot actor
actors acting performance director script scene scenes music score funny boring beautiful ugly
love loved hate hated like liked enjoy enjoyed watch watched see seen make made time year years
people man woman world life day night way thing things hello fast slow quick brown fox jumps over
lazy dog cafe coffee tea book books read write word words long short sentence text token tokens
one two three four five six seven eight nine ten hundred thousand first last new old big small
high low right left up down out off again never always often still even also well really quite
rather almost enough however although because while during before after above below between into
through un ##believ ##able ##s ##es ##ed ##ing ##ly ##er ##est ##ness ##ful ##less ##ment ##tion
##ize ##ise ##al ##ic ##ive ##ous ##y ##ie ##n ##t ##d ##r ##l na ##iv ##ve ang ##st ##rom
""".split()
LETTERS = list("abcdefghijklmnopqrstuvwxyz0123456789")
PUNCTUATION = list("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~") + ["...", "--"]
ACCENTED = list("éèêëïîôöüçñåøæß")
CJK = list("中文字日本語한국")
CASED_EXTRA = ["Hello", "The", "Movie", "World", "café", "naïve", "Ångström", "Å", "É", "##é"]

CASES = {
    "plain": ["the movie was great .", "i loved this film, the acting was beautiful!"],
    "mixed_case": ["ThE MoViE wAs GrEaT", "HELLO World", "iPhone McDonald"],
    "accents": ["café", "naïve", "Ångström", "CAFÉ crème brûlée", "résumé déjà vu"],
    "cjk": ["中文字", "我爱中文字 and english", "日本語のテキスト", "한국어"],
    "emoji": ["great movie 😀👍", "🎬🍿", "family: 👨‍👩‍👧 flag: 🇫🇷"],
    "control": ["a\x00b", "bell\x07ring", "zero\u200bwidth", "tab\tsep", "line\r\nbreak", "\x7f"],
    "whitespace": [" ", "   \t\n  ", "\u3000\u00a0", "\n"],
    "empty": [""],
    "punctuation": ["!!!", "...???!!!", "(--)[]{}", "a,b.c;d:e", "'\"`", "$%^&*"],
    "special_text": ["hello [SEP] world", "[cls] [Mask]", "[CLS][MASK]x", "[PAD]", "[UNK]word"],
    "long_words": ["a" * 100, "a" * 101, "b" * 250, "un" + "believ" * 30],
}


def _write_checkpoint(folder: Path, vocab: list[str], tokenizer_config: dict | None) -> Path:
    """A checkpoint-like folder: vocab.txt, tokenizer_config.json, and a DistilBERT config.json."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    if tokenizer_config is not None:
        (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    (folder / "config.json").write_text(json.dumps({"model_type": "distilbert"}))
    return folder


def _uncased_vocab() -> list[str]:
    pieces = ["##" + c for c in LETTERS + ACCENTED]
    return _unique(SPECIALS + WORDS + LETTERS + pieces + PUNCTUATION + ACCENTED + CJK)


def _unique(tokens: list[str]) -> list[str]:
    return list(dict.fromkeys(tokens))


def _hf(folder: Path):
    return transformers.AutoTokenizer.from_pretrained(str(folder))


def _hf_ids(hf, texts: list[str], max_length: int) -> list[list[int]]:
    return hf(texts, truncation=True, max_length=max_length)["input_ids"]


def _hf_untruncated_lengths(hf, texts: list[str]) -> list[int]:
    return [len(ids) for ids in hf(texts, truncation=False)["input_ids"]]


def _random_texts(seed: int, n: int) -> list[str]:
    """Random texts mixing vocabulary words, case, accents, CJK, emoji, controls, specials."""
    rng = random.Random(seed)
    atoms = (
        WORDS[:80]
        + LETTERS
        + PUNCTUATION
        + ACCENTED
        + CJK
        + ["Ä", "É", "Ñ", "ΣΑΣ", "ﬁ", "Ⅻ", "x\u0301", "😀", "\u200d", "\ufeff", "\x00", "\x1f"]
        + [" ", "  ", "\t", "\n", "\r\n", "\u00a0", "\u2028"]
        + SPECIALS
        + ["[sep]", "MOVIE", "Great"]
    )
    texts = []
    for _ in range(n):
        parts = rng.choices(atoms, k=rng.randint(0, 25))
        texts.append("".join(p + rng.choice(["", " ", " ", " "]) for p in parts))
    return texts


@pytest.fixture(scope="module")
def uncased(tmp_path_factory) -> Path:
    config = {"model_max_length": 512, "do_lower_case": True}
    return _write_checkpoint(tmp_path_factory.mktemp("uncased"), _uncased_vocab(), config)


@pytest.fixture(scope="module")
def uncased_pair(uncased):
    return TextTokenizer.from_folder(uncased), _hf(uncased)


@pytest.fixture(scope="module")
def cased(tmp_path_factory) -> Path:
    vocab = _unique(_uncased_vocab() + CASED_EXTRA + [c.upper() for c in LETTERS if c.isalpha()])
    config = {"model_max_length": 512, "do_lower_case": False}
    return _write_checkpoint(tmp_path_factory.mktemp("cased"), vocab, config)


@pytest.fixture(scope="module")
def with_json(tmp_path_factory, uncased) -> Path:
    """The uncased checkpoint as transformers saves it: tokenizer.json, no vocab.txt."""
    folder = tmp_path_factory.mktemp("with_json")
    _hf(uncased).save_pretrained(str(folder))
    (folder / "vocab.txt").unlink(missing_ok=True)
    shutil.copy(uncased / "config.json", folder / "config.json")
    assert (folder / "tokenizer.json").is_file()
    return folder


@pytest.mark.parametrize("case", sorted(CASES))
def test_ids_match_transformers(uncased_pair, case):
    ours, hf = uncased_pair
    texts = CASES[case]
    ids, lengths = ours.encode_batch(texts)
    assert ids == _hf_ids(hf, texts, 512)
    assert lengths.dtype == np.int64
    assert lengths.tolist() == [len(x) for x in ids]


@pytest.mark.parametrize("skip_special_tokens", [True, False])
def test_decode_matches_transformers_rust_tokenizer(uncased_pair, skip_special_tokens):
    """What TEI decodes with: the tokenizers pipeline transformers builds (pieces joined)."""
    ours, hf = uncased_pair
    texts = CASES["plain"] + CASES["accents"] + ["unbelievable movies", "hello [SEP] world"]
    for ids in ours.encode_batch(texts)[0]:
        assert ours.decode(ids, skip_special_tokens) == hf.backend_tokenizer.decode(
            ids, skip_special_tokens=skip_special_tokens)


def test_encodings_are_the_whole_texts_with_offsets(uncased_pair):
    ours, hf = uncased_pair
    text = "Un" + "believ" * 100 + "able café"  # past max_length: not truncated here
    encoding = ours.with_max_length(16).encodings([text])[0]
    assert encoding.ids == hf(text, add_special_tokens=True)["input_ids"]
    assert encoding.special_tokens_mask[0] == encoding.special_tokens_mask[-1] == 1
    start, stop = encoding.offsets[-2]
    assert text[start:stop] == "café"


def test_single_text_calls_agree_with_batch(uncased_pair):
    ours, hf = uncased_pair
    for text in ["Hello, World!", "café 中文字", ""]:
        assert (
            ours.encode_batch([text])[0][0]
            == hf(text, truncation=True, max_length=512)["input_ids"]
        )


def test_empty_string_is_cls_sep(uncased_pair):
    ours, _ = uncased_pair
    ids, lengths = ours.encode_batch([""])
    assert ids == [[ours.cls_id, ours.sep_id]]
    assert lengths.tolist() == [2]


def test_random_texts_match_transformers(uncased_pair, cased):
    texts = _random_texts(seed=0, n=300)
    ours, hf = uncased_pair
    assert ours.encode_batch(texts)[0] == _hf_ids(hf, texts, 512)
    assert TextTokenizer.from_folder(cased).encode_batch(texts)[0] == _hf_ids(
        _hf(cased), texts, 512
    )


@pytest.mark.parametrize("max_length", [3, 16, 512])
def test_truncation_matches_transformers_and_keeps_full_length(uncased, uncased_pair, max_length):
    _, hf = uncased_pair
    ours = TextTokenizer.from_folder(uncased, max_length=max_length)
    texts = [
        "hello world " * 400,
        "the movie " * (max_length // 2),
        "one two three four five six seven eight nine ten eleven twelve thirteen fourteen",
        "短" * 600,
        "",
    ]
    ids, lengths = ours.encode_batch(texts)
    assert ids == _hf_ids(hf, texts, max_length)
    assert lengths.tolist() == _hf_untruncated_lengths(hf, texts)
    assert max(map(len, ids)) <= max_length
    assert lengths[0] == 802 and len(ids[0]) == max_length
    assert all(row[0] == ours.cls_id and row[-1] == ours.sep_id for row in ids)


def test_truncation_off_names_the_index(uncased):
    ours = TextTokenizer.from_folder(uncased, max_length=8)
    texts = ["the movie", "the movie was great", "the movie " * 4]
    with pytest.raises(ValueError, match=r"text 12 is 10 tokens long, over max_length=8"):
        ours.encode_batch(texts, truncation=False, offset=10)
    ids, lengths = ours.encode_batch(texts[:2], truncation=False)
    assert lengths.tolist() == [4, 6]


def test_non_str_names_index_and_type(uncased_pair):
    ours, _ = uncased_pair
    with pytest.raises(TypeError, match=r"text 7 is a NoneType"):
        ours.encode_batch(["ok", "fine", None], offset=5)
    with pytest.raises(TypeError, match=r"text 1 is a bytes"):
        ours.encode_batch(["ok", b"bytes"])
    with pytest.raises(TypeError, match=r"text 0 is a tuple"):  # would be a text pair to tokenizers
        ours.encode_batch([("a", "b")])
    with pytest.raises(TypeError, match="wrap it in a list"):
        ours.encode_batch("a single string")


def test_accepts_str_subclasses_tuples_and_empty_batches(uncased_pair):
    ours, _ = uncased_pair
    assert (
        ours.encode_batch((np.str_("hello"), "world"))[0]
        == ours.encode_batch(["hello", "world"])[0]
    )
    ids, lengths = ours.encode_batch([])
    assert ids == [] and lengths.shape == (0,) and lengths.dtype == np.int64


def test_tokenizer_json_folder_gives_the_same_ids(uncased_pair, with_json):
    ours_vocab, hf = uncased_pair
    ours_json = TextTokenizer.from_folder(with_json)
    texts = [t for case in CASES.values() for t in case] + _random_texts(seed=1, n=100)
    texts.append("the movie " * 300)
    expected = _hf_ids(hf, texts, 512)
    assert ours_json.encode_batch(texts)[0] == expected
    assert _hf_ids(_hf(with_json), texts, 512) == expected
    assert ours_vocab.encode_batch(texts)[0] == expected


def test_truncation_and_padding_inside_tokenizer_json_are_ignored(tmp_path, with_json):
    from tokenizers import Tokenizer

    folder = tmp_path / "padded"
    shutil.copytree(with_json, folder)
    backend = Tokenizer.from_file(str(folder / "tokenizer.json"))
    backend.enable_truncation(max_length=6)
    backend.enable_padding(length=20)
    backend.save(str(folder / "tokenizer.json"))
    texts = ["the movie was great and i loved it", "the"]
    ids, lengths = TextTokenizer.from_folder(folder).encode_batch(texts)
    assert ids == TextTokenizer.from_folder(with_json).encode_batch(texts)[0]
    assert lengths.tolist() == [10, 3]


def test_tokenizer_json_normalizer_follows_tokenizer_config(tmp_path, with_json):
    """transformers rebuilds the BERT normalizer from tokenizer_config.json; so do we."""
    folder = tmp_path / "json_says_cased"
    shutil.copytree(with_json, folder)
    data = json.loads((folder / "tokenizer.json").read_text())
    data["normalizer"]["lowercase"] = False
    data["normalizer"]["strip_accents"] = False
    (folder / "tokenizer.json").write_text(json.dumps(data))
    texts = ["HELLO Café World", "Ångström"]
    expected = _hf_ids(_hf(folder), texts, 512)
    assert TextTokenizer.from_folder(folder).encode_batch(texts)[0] == expected
    assert expected == _hf_ids(_hf(with_json), texts, 512)


def test_cased_vocab(cased):
    ours, hf = TextTokenizer.from_folder(cased), _hf(cased)
    texts = ["Hello World", "hello world", "The Movie", "café naïve Ångström", "CAFÉ", "É é"]
    ids = ours.encode_batch(texts)[0]
    assert ids == _hf_ids(hf, texts, 512)
    assert ids[0] != ids[1]  # case kept
    assert hf.convert_ids_to_tokens(ids[3])[1:4] == ["café", "naïve", "Ångström"]


def test_strip_accents_without_lowercase(tmp_path):
    vocab = _unique(_uncased_vocab() + CASED_EXTRA)
    folder = _write_checkpoint(
        tmp_path / "strip", vocab, {"do_lower_case": False, "strip_accents": True}
    )
    texts = ["Café Ångström", "naïve É"]
    assert TextTokenizer.from_folder(folder).encode_batch(texts)[0] == _hf_ids(
        _hf(folder), texts, 512
    )


def test_special_ids_come_from_the_vocab(tmp_path):
    vocab = _unique(
        ["[UNK]", "the", "movie", "[SEP]", "[CLS]"] + WORDS[10:50] + ["[PAD]"] + LETTERS
    )
    folder = _write_checkpoint(tmp_path / "odd", vocab, {"do_lower_case": True})
    ours, hf = TextTokenizer.from_folder(folder), _hf(folder)
    assert (ours.pad_id, ours.cls_id, ours.sep_id, ours.unk_id) == (vocab.index("[PAD]"), 4, 3, 0)
    assert ours.pad_id != 0
    assert (ours.pad_id, ours.cls_id, ours.sep_id, ours.unk_id) == (
        hf.pad_token_id,
        hf.cls_token_id,
        hf.sep_token_id,
        hf.unk_token_id,
    )
    # [MASK] is missing from this vocab: like transformers, it is added after it
    texts = ["the movie [MASK] zzz", "[PAD] [CLS]", "Movie!!"]
    assert ours.encode_batch(texts)[0] == _hf_ids(hf, texts, 512)
    assert ours.vocab_size == len(vocab) + 1 == len(hf)


def test_special_tokens_renamed_in_special_tokens_map(tmp_path):
    vocab = _unique(["<pad>", "<unk>", "<cls>", "<sep>", "<mask>"] + WORDS + LETTERS + PUNCTUATION)
    folder = _write_checkpoint(tmp_path / "renamed", vocab, {"do_lower_case": True})
    names = {"unk_token": "<unk>", "sep_token": "<sep>", "pad_token": "<pad>"}
    names |= {"cls_token": "<cls>", "mask_token": {"content": "<mask>", "lstrip": True}}
    (folder / "special_tokens_map.json").write_text(json.dumps(names))
    ours, hf = TextTokenizer.from_folder(folder), _hf(folder)
    assert (ours.pad_id, ours.unk_id, ours.cls_id, ours.sep_id) == (0, 1, 2, 3)
    texts = ["the <mask> movie", "<sep> qqq [SEP]", "the movie <MASK>"]
    assert ours.encode_batch(texts)[0] == _hf_ids(hf, texts, 512)


def test_max_length_defaults_and_limits(tmp_path, uncased):
    assert TextTokenizer.from_folder(uncased).max_length == 512
    assert TextTokenizer.from_folder(uncased, max_length=128).max_length == 128
    with pytest.raises(ValueError, match="over this tokenizer's model_max_length=512"):
        TextTokenizer.from_folder(uncased, max_length=1024)
    with pytest.raises(ValueError, match="no room"):
        TextTokenizer.from_folder(uncased, max_length=2)
    huge = _write_checkpoint(tmp_path / "huge", _uncased_vocab(), {"model_max_length": 1e30})
    assert TextTokenizer.from_folder(huge).max_length == 512
    bare = _write_checkpoint(tmp_path / "bare", _uncased_vocab(), None)
    assert TextTokenizer.from_folder(bare).max_length == 512
    small = _write_checkpoint(tmp_path / "small", _uncased_vocab(), {"model_max_length": 64})
    assert TextTokenizer.from_folder(small).max_length == 64


def test_missing_files_error_names_folder_and_files(tmp_path):
    (tmp_path / "tokenizer_config.json").write_text("{}")
    with pytest.raises(FileNotFoundError) as err:
        TextTokenizer.from_folder(tmp_path)
    assert str(tmp_path) in str(err.value)
    assert "tokenizer.json" in str(err.value) and "vocab.txt" in str(err.value)
    with pytest.raises(FileNotFoundError, match="no tokenizer in"):
        TextTokenizer.from_folder(tmp_path / "does-not-exist")


@pytest.mark.parametrize("source", ["uncased", "with_json", "cased"])
def test_save_round_trip(request, tmp_path, source):
    src = request.getfixturevalue(source)
    original = TextTokenizer.from_folder(src)
    written = original.save(tmp_path / "saved")
    assert set(written) <= set(TOKENIZER_FILES) and "tokenizer_config.json" in written
    assert not (tmp_path / "saved" / "config.json").exists()  # AutoTokenizer needs no model config
    texts = _random_texts(seed=2, n=50) + ["Hello World", "the movie " * 300]
    expected = original.encode_batch(texts)[0]
    assert TextTokenizer.from_folder(tmp_path / "saved").encode_batch(texts)[0] == expected
    assert _hf_ids(_hf(tmp_path / "saved"), texts, 512) == expected


def test_save_replaces_stale_tokenizer_files(tmp_path, uncased, with_json):
    dst = tmp_path / "dst"
    copy_tokenizer_files(with_json, dst)
    vocab_only = TextTokenizer.from_folder(uncased)
    assert vocab_only.save(dst) == ["vocab.txt", "tokenizer_config.json"]
    assert not (dst / "tokenizer.json").exists()


def test_transformers_v4_style_config(tmp_path):
    """added_tokens_decoder (with a non-special added token) and extra special tokens."""
    vocab = _uncased_vocab()
    folder = _write_checkpoint(tmp_path / "v4", vocab, None)
    entry = {"lstrip": False, "normalized": False, "rstrip": False, "single_word": False}
    decoder = {str(i): {**entry, "content": t, "special": True} for i, t in enumerate(SPECIALS)}
    decoder[str(len(vocab))] = {**entry, "content": "<new>", "normalized": True, "special": False}
    decoder[str(len(vocab) + 1)] = {**entry, "content": "<extra>", "special": True}
    config = {"added_tokens_decoder": decoder, "additional_special_tokens": ["<extra>"]}
    config |= {"do_lower_case": True, "model_max_length": 512, "unk_token": "[UNK]"}
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    texts = ["the <extra> movie", "x<new>y <NEW>", "<EXTRA>[SEP]"] + _random_texts(seed=3, n=50)
    ours = TextTokenizer.from_folder(folder)
    assert ours.encode_batch(texts)[0] == _hf_ids(_hf(folder), texts, 512)
    assert ours.vocab_size == len(vocab) + 2


def test_extra_special_tokens_in_special_tokens_map(tmp_path):
    folder = _write_checkpoint(tmp_path / "extra", _uncased_vocab(), {"do_lower_case": True})
    (folder / "special_tokens_map.json").write_text(
        json.dumps({"unk_token": "[UNK]", "additional_special_tokens": ["<extra>"]})
    )
    texts = ["the <extra> movie", "<EXTRA>"]
    assert TextTokenizer.from_folder(folder).encode_batch(texts)[0] == _hf_ids(
        _hf(folder), texts, 512
    )


def test_copy_tokenizer_files(tmp_path, with_json, uncased):
    copied = copy_tokenizer_files(uncased, tmp_path / "a")
    assert copied == ["vocab.txt", "tokenizer_config.json"]
    assert (tmp_path / "a" / "vocab.txt").read_bytes() == (uncased / "vocab.txt").read_bytes()
    assert not (tmp_path / "a" / "config.json").exists()
    assert "tokenizer.json" in copy_tokenizer_files(with_json, tmp_path / "b")
    assert copy_tokenizer_files(tmp_path / "a", tmp_path / "a") == copied  # onto itself: no-op
    assert copy_tokenizer_files(tmp_path / "empty", tmp_path / "c") == []


def _vm_hwm_mib() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024


@pytest.mark.parametrize("max_length", [16, 512])
def test_texts_past_the_character_budget_give_the_whole_texts_ids(uncased, uncased_pair,
                                                                  max_length):
    from flaxsent.core.tokenizer import CHAR_BUDGET
    _, hf = uncased_pair
    ours = TextTokenizer.from_folder(uncased, max_length=max_length)
    rng = random.Random(max_length)
    words = [w for w in WORDS if not w.startswith("##")]
    texts = [
        " ".join(rng.choice(words) for _ in range(CHAR_BUDGET // 3)),  # plain words
        # words of 150 letters are one [UNK] each: the budget's prefix has too few tokens and
        # must grow before it holds max_length of them
        " ".join("x" * 150 for _ in range(3 * CHAR_BUDGET // 151)),
        "y" * (CHAR_BUDGET + 10) + " the end",  # no boundary at all in the prefix
        "[MASK]" * (CHAR_BUDGET // 6 + 50),  # added tokens across the prefix's end
    ]
    assert all(len(t) > CHAR_BUDGET for t in texts)
    ids, lengths = ours.encode_batch(texts)
    assert ids == _hf_ids(hf, texts, max_length)
    assert all(max_length < n <= m for n, m in zip(lengths, _hf_untruncated_lengths(hf, texts),
                                                   strict=True) if n > max_length)
    with pytest.raises(ValueError, match="text 0 is at least .* tokens long"):
        ours.encode_batch(texts[:1], truncation=False)


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="Linux /proc only")
def test_a_huge_text_is_not_tokenized_whole(uncased_pair):
    ours, _ = uncased_pair
    text = "the movie was great , " * (1 << 20)  # 23 MB of words
    Path("/proc/self/clear_refs").write_text("5")  # restart the peak (VmHWM) here
    start = _vm_hwm_mib()
    ids, lengths = ours.encode_batch([text])
    assert len(ids[0]) == 512 and lengths[0] > 512
    assert _vm_hwm_mib() - start < 100  # whole, it takes gigabytes
