"""Fast tokenizer with the same ids as the checkpoint's transformers tokenizer.

The BERT WordPiece pipeline runs in the `tokenizers` library (Rust, batch-parallel). Truncation is
done here, in Python, on ids encoded without truncation, so one encode gives both the truncated ids
and the untruncated length the engine reports.

transformers (v4 and v5) builds a BERT tokenizer from the vocabulary (`vocab.txt`, or the model
vocabulary inside `tokenizer.json`) plus `tokenizer_config.json`: the normalizer follows
`do_lower_case` / `strip_accents` / `tokenize_chinese_chars` there, even when `tokenizer.json`
carries a normalizer of its own, and the named special tokens are added tokens, so a literal
"[SEP]" in the text is the [SEP] id. This module does the same.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import (
    AddedToken,
    Encoding,
    Tokenizer,
    decoders,
    normalizers,
    pre_tokenizers,
    processors,
)
from tokenizers.models import WordPiece

from flaxsent.io import durable

TOKENIZER_FILES: tuple[str, ...] = (
    "tokenizer.json",
    "vocab.txt",
    "tokenizer_config.json",
    "special_tokens_map.json",
)

# the transformers defaults for a BERT tokenizer, in transformers' order of adding them
_NAMED_SPECIALS: dict[str, str] = {
    "unk_token": "[UNK]",
    "sep_token": "[SEP]",
    "pad_token": "[PAD]",
    "cls_token": "[CLS]",
    "mask_token": "[MASK]",
}
_DEFAULT_MAX_LENGTH = 512
_SANE_MAX_LENGTH = 1_000_000  # transformers writes 1e30 ("no limit") into some configs
_MAX_INPUT_CHARS_PER_WORD = 100  # longer words become [UNK], as in BERT
# A text longer than this many characters is tokenized from a prefix (see encode_batch): far
# more than max_length tokens' worth of ordinary text, so shorter texts keep exact lengths.
CHAR_BUDGET = 1 << 16
_MAX_PREFIX_CHARS = 1 << 22  # the prefix stops doubling here (4 Mi characters)
# the last ASCII whitespace or punctuation before a position: words end there whatever follows
# (other whitespace-like characters may be controls that BERT's normalizer deletes)
_LAST_BOUNDARY = re.compile(r".*[ \t\n\r!-/:-@\[-`{-~]", re.DOTALL)
_TOKENIZER_CLASS = "DistilBertTokenizer"


def _read_json(path: Path) -> dict[str, Any]:
    """Read a JSON object from `path`, failing with the file's name if it is not one."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from err
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a JSON object, found {type(data).__name__}")
    return data


def _token_content(value: Any) -> str | None:
    """The text of a special token written as a string or as a serialized AddedToken dict."""
    if isinstance(value, dict):
        return value.get("content")
    return value if isinstance(value, str) else None


def _as_added_token(value: str | dict[str, Any], special: bool) -> AddedToken:
    """An AddedToken from a config entry, keeping its strip/normalize flags when it has them."""
    if isinstance(value, str):
        return AddedToken(value, special=special, normalized=not special)
    return AddedToken(
        value["content"],
        single_word=bool(value.get("single_word", False)),
        lstrip=bool(value.get("lstrip", False)),
        rstrip=bool(value.get("rstrip", False)),
        normalized=bool(value.get("normalized", not special)),
        special=special,
    )


def _listed_tokens(value: Any) -> list[str | dict[str, Any]]:
    """Extra special tokens as a list, from a config's list or name -> token dict."""
    if isinstance(value, dict):
        return list(value.values())
    return list(value) if isinstance(value, (list, tuple)) else []


def _special_token_entries(
    folder: Path, config: dict[str, Any]
) -> tuple[dict[str, str], dict[str, Any], list[Any]]:
    """Named special tokens (name -> text), their config entries, and the extra special tokens.

    As in transformers, special_tokens_map.json is read only when tokenizer_config.json has no
    added_tokens_decoder, and then its entries win.
    """
    sources = [config]
    map_path = folder / "special_tokens_map.json"
    if map_path.is_file() and "added_tokens_decoder" not in config:
        sources.append(_read_json(map_path))
    special_tokens = dict(_NAMED_SPECIALS)
    entries: dict[str, Any] = {}
    extra: list[Any] = []
    for source in sources:
        for key in _NAMED_SPECIALS:
            if _token_content(source.get(key)):
                special_tokens[key] = _token_content(source[key])
                entries[key] = source[key]
        for key in ("extra_special_tokens", "additional_special_tokens"):
            extra += _listed_tokens(source.get(key))
    return special_tokens, entries, extra


def _build_backend(folder: Path, config: dict[str, Any]) -> tuple[Tokenizer, dict[str, str]]:
    """The `tokenizers` pipeline transformers' BERT tokenizer runs, and its named special tokens.

    The vocabulary and added tokens come from tokenizer.json when there is one, else vocab.txt;
    normalizer, pre-tokenizer, WordPiece settings and template come from tokenizer_config.json.
    """
    special_tokens, named_entries, extra = _special_token_entries(folder, config)
    json_path, vocab_path = folder / "tokenizer.json", folder / "vocab.txt"
    if json_path.is_file():
        tokenizer = Tokenizer.from_file(str(json_path))
    else:
        vocab = WordPiece.read_file(str(vocab_path))  # the reader transformers uses too
        tokenizer = Tokenizer(WordPiece(vocab, unk_token=special_tokens["unk_token"]))
    # transformers rebuilds all but the vocabulary from tokenizer_config.json, even over a
    # tokenizer.json that says otherwise
    is_bert = isinstance(tokenizer.model, WordPiece)
    if is_bert:
        tokenizer.model.unk_token = special_tokens["unk_token"]
        tokenizer.model.continuing_subword_prefix = "##"
        tokenizer.model.max_input_chars_per_word = _MAX_INPUT_CHARS_PER_WORD
        lowercase = bool(config.get("do_lower_case", True))
        strip_accents = config.get("strip_accents")  # None: strip when lowercasing
        tokenizer.normalizer = normalizers.BertNormalizer(
            clean_text=True,
            handle_chinese_chars=bool(config.get("tokenize_chinese_chars", True)),
            strip_accents=None if strip_accents is None else bool(strip_accents),
            lowercase=lowercase,
        )
        tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tokenizer.decoder = decoders.WordPiece(prefix="##")  # joins "##" pieces on decode

    decoder = config.get("added_tokens_decoder") or {}
    for _, entry in sorted(decoder.items(), key=lambda item: int(item[0])):
        token = _as_added_token(entry, special=bool(entry.get("special", False)))
        if token.special:
            tokenizer.add_special_tokens([token])
        else:
            tokenizer.add_tokens([token])
    present_text = {token.content for token in tokenizer.get_added_tokens_decoder().values()}
    for key in _NAMED_SPECIALS:
        entry = named_entries.get(key, special_tokens[key])
        if _token_content(entry) not in present_text:
            tokenizer.add_special_tokens([_as_added_token(entry, special=True)])
            present_text.add(_token_content(entry))
    for entry in extra:
        if _token_content(entry) and _token_content(entry) not in present_text:
            tokenizer.add_special_tokens([_as_added_token(entry, special=True)])
            present_text.add(_token_content(entry))

    if is_bert:
        cls_tok, sep_tok = special_tokens["cls_token"], special_tokens["sep_token"]
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{cls_tok}:0 $A:0 {sep_tok}:0",
            pair=f"{cls_tok}:0 $A:0 {sep_tok}:0 $B:1 {sep_tok}:1",
            special_tokens=[
                (cls_tok, tokenizer.token_to_id(cls_tok)),
                (sep_tok, tokenizer.token_to_id(sep_tok)),
            ],
        )
    return tokenizer, special_tokens


def copy_tokenizer_files(src_folder: str | os.PathLike, dst_folder: str | os.PathLike) -> list[str]:
    """Copy whichever TOKENIZER_FILES exist in src to dst, so a converted checkpoint keeps them."""
    src, dst = Path(src_folder), Path(dst_folder)
    dst.mkdir(parents=True, exist_ok=True)
    copied = []
    for name in TOKENIZER_FILES:
        source = src / name
        if not source.is_file():
            continue
        target = dst / name
        if not (target.exists() and os.path.samefile(source, target)):
            shutil.copyfile(source, target)
        copied.append(name)
    return copied


class TextTokenizer:
    """Batch tokenizer for a DistilBERT checkpoint: ids with [CLS]/[SEP], truncation, lengths."""

    def __init__(
        self,
        tokenizer: Tokenizer,
        *,
        max_length: int,
        model_max_length: int,
        special_tokens: dict[str, str],
        files: dict[str, bytes],
        config: dict[str, Any],
    ) -> None:
        """Wrap a configured `tokenizers.Tokenizer`; use `from_folder` to build one."""
        tokenizer.no_truncation()
        tokenizer.no_padding()
        self._tokenizer = tokenizer
        self._files = files
        self._config = config
        self.model_max_length = model_max_length
        self.special_tokens = dict(special_tokens)
        ids = {}
        for key in ("pad_token", "cls_token", "sep_token", "unk_token"):
            token_id = tokenizer.token_to_id(special_tokens[key])
            if token_id is None:
                raise ValueError(f"the tokenizer has no id for its {key} {special_tokens[key]!r}")
            ids[key] = token_id
        self.pad_id: int = ids["pad_token"]
        self.cls_id: int = ids["cls_token"]
        self.sep_id: int = ids["sep_token"]
        self.unk_id: int = ids["unk_token"]
        # ids run 0..vocab_size-1, added tokens included: the model's embedding must be this big
        self.vocab_size: int = max(tokenizer.get_vocab(with_added_tokens=True).values()) + 1
        # what the post-processor puts around a text, e.g. [CLS] ... [SEP]: read off a probe text
        probe = tokenizer.encode(special_tokens["unk_token"], add_special_tokens=True)
        last_content = max(i for i, seq in enumerate(probe.sequence_ids) if seq is not None)
        self._suffix: list[int] = probe.ids[last_content + 1 :]
        self._n_special = len(tokenizer.encode("", add_special_tokens=True).ids)
        # an added token (matched in the raw text) may span a prefix's end by this much
        self._added_span = max((len(t.content) for t in
                                tokenizer.get_added_tokens_decoder().values()), default=0)
        self.max_length: int = self._check_max_length(max_length)

    def _check_max_length(self, max_length: int) -> int:
        """Validate a truncation length: room for the special tokens, within the model's limit."""
        if isinstance(max_length, bool) or not isinstance(max_length, (int, np.integer)):
            raise TypeError(f"max_length must be an int, got {type(max_length).__name__}")
        if max_length <= self._n_special:
            raise ValueError(
                f"max_length={max_length} leaves no room for text after the "
                f"{self._n_special} special tokens; pass a value above {self._n_special}"
            )
        if max_length > self.model_max_length:
            raise ValueError(
                f"max_length={max_length} is over this tokenizer's model_max_length="
                f"{self.model_max_length}; pass a value up to {self.model_max_length}"
            )
        return int(max_length)

    def with_max_length(self, max_length: int) -> TextTokenizer:
        """The same tokenizer truncating at another length (shares the Rust tokenizer)."""
        clone = copy.copy(self)
        clone.max_length = self._check_max_length(max_length)
        return clone

    @classmethod
    def from_folder(cls, path: str | os.PathLike, max_length: int | None = None) -> TextTokenizer:
        """Load an HF checkpoint folder's tokenizer, built as transformers builds it (same ids)."""
        folder = Path(path)
        json_path, vocab_path = folder / "tokenizer.json", folder / "vocab.txt"
        if not (json_path.is_file() or vocab_path.is_file()):
            raise FileNotFoundError(
                f"no tokenizer in {str(folder)!r}: looked for tokenizer.json or vocab.txt "
                "(with optional tokenizer_config.json and special_tokens_map.json); "
                "pass the folder of a DistilBERT checkpoint saved with save_pretrained"
            )
        files = {
            name: (folder / name).read_bytes()
            for name in TOKENIZER_FILES
            if (folder / name).is_file()
        }
        config_path = folder / "tokenizer_config.json"
        config = _read_json(config_path) if config_path.is_file() else {}

        tokenizer, special_tokens = _build_backend(folder, config)
        configured = config.get("model_max_length")
        sane = (
            isinstance(configured, (int, float))
            and not isinstance(configured, bool)
            and 0 < configured <= _SANE_MAX_LENGTH
        )
        model_max_length = int(configured) if sane else _DEFAULT_MAX_LENGTH
        return cls(
            tokenizer,
            max_length=model_max_length if max_length is None else max_length,
            model_max_length=model_max_length,
            special_tokens=special_tokens,
            files=files,
            config=config,
        )

    def __repr__(self) -> str:
        return (
            f"TextTokenizer(vocab_size={self.vocab_size}, max_length={self.max_length}, "
            f"pad_id={self.pad_id}, cls_id={self.cls_id}, sep_id={self.sep_id})"
        )

    def encode_batch(
        self, texts: Sequence[str], truncation: bool = True, offset: int = 0
    ) -> tuple[list[list[int]], np.ndarray]:
        """Token ids ([CLS] ... [SEP]) per text, and their untruncated lengths, in one Rust pass.

        `offset` is added to the indices in error messages, for callers that encode in chunks.
        A text past `CHAR_BUDGET` characters is tokenized from a prefix, never whole (a 1 GB line
        would take tens of GB): its ids are exact, its length a lower bound past max_length.
        """
        if isinstance(texts, (str, bytes)):
            raise TypeError(
                f"texts must be a sequence of str, got a single {type(texts).__name__}; "
                "wrap it in a list"
            )
        texts = texts if isinstance(texts, list) else list(texts)
        if not all(issubclass(kind, str) for kind in set(map(type, texts))):
            for i, text in enumerate(texts):
                if not isinstance(text, str):
                    raise TypeError(
                        f"text {offset + i} is a {type(text).__name__}, not a str; "
                        "decode bytes and convert other values to str first"
                    )
        budget = max(CHAR_BUDGET, 64 * self.max_length)
        long = [i for i, text in enumerate(texts) if len(text) > budget]
        batch = [text if len(text) <= budget else "" for text in texts] if long else texts
        encode = getattr(self._tokenizer, "encode_batch_fast", self._tokenizer.encode_batch)
        ids = [encoding.ids for encoding in encode(batch, add_special_tokens=True)]
        for i in long:  # encoded from a prefix
            ids[i] = self._encode_long(texts[i], budget)
        lengths = np.array(list(map(len, ids)), dtype=np.int64)
        too_long = np.flatnonzero(lengths > self.max_length)
        if too_long.size:
            if not truncation:
                i = int(too_long[0])
                least = "at least " if len(texts[i]) > budget else ""
                raise ValueError(
                    f"text {offset + i} is {least}{int(lengths[i])} tokens long, over max_length="
                    f"{self.max_length} ({too_long.size} such text(s) in this batch); "
                    "shorten it or enable truncation"
                )
            # the cut BERT makes for one sequence: content first, then the closing special token(s)
            keep = self.max_length - len(self._suffix)
            for i in too_long.tolist():
                ids[i] = ids[i][:keep] + self._suffix
        return ids, lengths

    def encodings(self, texts: Sequence[str], add_special_tokens: bool = True) -> list[Encoding]:
        """The `tokenizers` encodings of whole texts, untruncated: ids, tokens, character
        offsets and the special-token mask, for showing a text's tokens (not for the model)."""
        return self._tokenizer.encode_batch(list(texts), add_special_tokens=add_special_tokens)

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        """The text of token ids, as the checkpoint's tokenizer decodes them."""
        return self._tokenizer.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def tokens(self, ids: Sequence[int]) -> list[str]:
        """The vocabulary entries of token ids (WordPieces: '##' marks a word's continuation)."""
        return [self._tokenizer.id_to_token(int(i)) for i in ids]

    def _encode_long(self, text: str, budget: int) -> list[int]:
        """The ids of a text past the character budget, from a prefix: those of the whole text
        wherever truncation keeps them (the ids past max_length are a prefix's).

        The prefix's first max_length tokens are the whole text's when they end before an ASCII
        space or punctuation mark that lies before any added token that may cross the prefix's
        end (words end there whatever follows; normalization is per character). Else the prefix
        doubles, up to the whole text or _MAX_PREFIX_CHARS (a text with no such mark in millions
        of characters: its last kept tokens may then differ from the whole text's).
        """
        keep = self.max_length - len(self._suffix)  # [CLS] + content ids truncation keeps
        end = budget
        while end < min(len(text), _MAX_PREFIX_CHARS):
            encoding = self._tokenizer.encode(text[:end], add_special_tokens=True)
            boundary = _LAST_BOUNDARY.match(text, 0, max(end - self._added_span, 0))
            if (boundary is not None and len(encoding.ids) > keep
                    and encoding.sequence_ids[keep] == 0
                    and encoding.offsets[keep][1] < boundary.end()):
                return encoding.ids
            end *= 2
        return self._tokenizer.encode(text[:_MAX_PREFIX_CHARS], add_special_tokens=True).ids

    def save(self, dst_folder: str | os.PathLike) -> list[str]:
        """Write the tokenizer files to dst, loadable by from_folder and by AutoTokenizer."""
        dst = Path(dst_folder)
        dst.mkdir(parents=True, exist_ok=True)
        written = []
        for name in TOKENIZER_FILES:
            if name == "tokenizer_config.json":
                continue
            if name in self._files:
                durable.write_bytes(dst / name, self._files[name])
                written.append(name)
            elif (dst / name).is_file():
                (dst / name).unlink()  # a stale tokenizer.json there would win over our vocab.txt
        # spell out what from_folder assumed, so every reader of the folder agrees with it
        config = dict(self._config)
        config.setdefault("tokenizer_class", _TOKENIZER_CLASS)
        config.setdefault("model_max_length", self.model_max_length)
        if isinstance(self._tokenizer.model, WordPiece):
            config.setdefault("do_lower_case", True)
        durable.write_text(dst / "tokenizer_config.json",
                           json.dumps(config, indent=2, ensure_ascii=False) + "\n")
        written.append("tokenizer_config.json")
        return written
