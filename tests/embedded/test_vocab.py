"""The default model's generated vocabulary: bert-base-uncased's size and special ids."""

from __future__ import annotations

import json

from flaxsent.core.tokenizer import TextTokenizer
from flaxsent.embedded.corpus import WORDS
from flaxsent.embedded.vocab import VOCAB_SIZE, build_vocab, write_tokenizer_files


def test_size_and_unique_entries():
    vocab = build_vocab()
    assert len(vocab) == VOCAB_SIZE == 30522
    assert len(set(vocab)) == len(vocab)
    assert all(token and token == token.strip() and "\n" not in token for token in vocab)


def test_special_tokens_sit_where_bert_uncased_has_them():
    vocab = build_vocab()
    assert vocab[0] == "[PAD]"
    assert vocab[1:100] == tuple(f"[unused{i}]" for i in range(99))
    assert vocab[100:104] == ("[UNK]", "[CLS]", "[SEP]", "[MASK]")
    assert vocab[104:999] == tuple(f"[unused{i}]" for i in range(99, 994))
    assert vocab[999] == "!"


def test_uncased_and_holds_the_corpus_words():
    vocab = build_vocab()
    assert not any(ch.isupper() for token in vocab if not token.startswith("[") for ch in token)
    assert set(WORDS) <= set(vocab)


def test_written_files_load_in_the_project_tokenizer(tmp_path):
    write_tokenizer_files(tmp_path)
    lines = (tmp_path / "vocab.txt").read_text(encoding="utf-8").splitlines()
    assert tuple(lines) == build_vocab()
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert config == {"model_max_length": 512, "do_lower_case": True}
    tok = TextTokenizer.from_folder(tmp_path)
    assert (tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id) == (0, 100, 101, 102)
    assert tok.vocab_size == VOCAB_SIZE and tok.model_max_length == 512
    # Words outside the word list split into letter pieces, never [UNK] (ASCII text).
    ids, _ = tok.encode_batch(["Schmaltzy, unwatchable xylophone solos in 1987?"])
    assert tok.unk_id not in ids[0] and len(ids[0]) > 10
