"""WordPiece tokenizers through HF `tokenizers`: train on a corpus, or load a ``tokenizer.json`` / ``vocab.txt``.

Training is not bit-reproducible between runs, so a run trains once and then always reuses the saved file
(``tokenizer_for_run``). A freshly trained tokenizer has no [CLS]/[SEP] post-processor; we set it explicitly.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import string
import tempfile
import unicodedata
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

from data_builders.segments import iter_column, ragged_take

if TYPE_CHECKING:
    from datasets import Dataset

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]

DEFAULT_CHINESE_SEED_CHARACTERS = 3500
"""Default of ``tokenizer.chinese_seed_characters``: the size of the common-character list of Chinese schools
(2,500 common and 1,000 less common characters); jieba's 3,500 most frequent cover about 99.2% of the CJK
characters of ChnSentiCorp dev on their own (docs/PERFORMANCE.md)."""


class TokenizerError(ValueError):
    """A tokenizer file is missing, unreadable or lacks the special tokens we need."""


def _configure(tok: Tokenizer, lowercase: bool) -> Tokenizer:
    # BertNormalizer keeps character alignment, so offsets map tokens back to the original (cased) text.
    tok.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=lowercase
    )
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix="##")
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    if cls_id is None or sep_id is None:  # not trained yet: the post-processor comes after training
        return tok
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    return tok


def train_wordpiece(texts: Iterable[str], vocab_size: int, min_frequency: int = 2,
                    lowercase: bool = True) -> Tokenizer:
    """Train an uncased (by default) WordPiece tokenizer on an iterator of texts."""
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]", max_input_chars_per_word=100))
    _configure(tok, lowercase)
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=SPECIAL_TOKENS,
        continuing_subword_prefix="##", show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return _configure(tok, lowercase)


def load_tokenizer(path: str | Path, lowercase: bool = True) -> Tokenizer:
    """Load ``tokenizer.json`` (as saved), a BERT ``vocab.txt`` (configured here as WordPiece, uncased unless
    ``lowercase`` is false) or a Hugging Face model directory (:func:`load_hf_tokenizer`)."""
    path = Path(path).expanduser()
    if path.is_dir():
        return load_hf_tokenizer(path)
    if not path.is_file():
        raise TokenizerError(f"tokenizer file not found: {path}")
    try:
        if path.suffix == ".json":
            tok = Tokenizer.from_file(str(path))
        else:
            vocab = {}
            for i, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
                token = line.rstrip("\n")
                if token:
                    vocab.setdefault(token, i)
            tok = _configure(Tokenizer(models.WordPiece(vocab, unk_token="[UNK]")), lowercase)
    except Exception as err:  # tokenizers raises plain Exceptions with long messages
        raise TokenizerError(f"cannot read tokenizer {path}: {str(err).splitlines()[0]}") from None
    missing = [t for t in SPECIAL_TOKENS if tok.token_to_id(t) is None]
    if missing:
        raise TokenizerError(f"tokenizer {path} lacks special tokens {missing}")
    if tok.post_processor is None:
        _configure(tok, is_lowercasing(tok))
    return tok


def is_lowercasing(tok: Tokenizer) -> bool:
    """Whether the tokenizer lowercases its input (checked by behaviour, not by reading its config)."""
    return tok.normalizer is not None and tok.normalizer.normalize_str("AbC") == "abc"


_PER_CHARACTER_NORMALIZERS = {"BertNormalizer", "Lowercase", "NFC", "NFD", "NFKC", "NFKD", "StripAccents"}
_SPACE_SPLITTERS = {"BertPreTokenizer", "Whitespace", "WhitespaceSplit"}
_PIECE_SPLITTERS = _SPACE_SPLITTERS | {"Punctuation", "Digits", "Split", "UnicodeScripts"}


def _normalizer_is_per_character(spec: dict | None) -> bool:
    if spec is None:
        return True
    if spec["type"] == "Sequence":
        return all(_normalizer_is_per_character(s) for s in spec["normalizers"])
    return spec["type"] in _PER_CHARACTER_NORMALIZERS


def splits_at_spaces(tok: Tokenizer) -> bool:
    """Whether encoding ``" ".join(parts)`` (no special tokens) always gives the concatenated encodings of the
    parts, so that a text's ids can be put together from the ids of its distinct words
    (:func:`encode_space_joined`).

    True for BERT-style tokenizers (ours, and a Hugging Face BERT's ``tokenizer.json``): a normalizer that maps
    characters one by one (BERT's, lowercasing, Unicode forms, accent stripping), a pre-tokenizer that first
    splits at whitespace and drops it (then optionally splits the pieces further), no truncation, and no added
    token with a space inside. False otherwise (byte-level BPE or Metaspace, which mark a word's leading space;
    ``Replace`` normalizers, which can match across a space): callers then encode whole texts."""
    if tok.truncation is not None:
        return False
    spec = json.loads(tok.to_str())
    pre = spec.get("pre_tokenizer")
    if pre is None:
        return False
    steps = pre["pretokenizers"] if pre["type"] == "Sequence" else [pre]
    if not steps or steps[0]["type"] not in _SPACE_SPLITTERS or any(s["type"] not in _PIECE_SPLITTERS
                                                                     for s in steps[1:]):
        return False
    if any(" " in token["content"] for token in spec.get("added_tokens") or []):
        return False
    return _normalizer_is_per_character(spec.get("normalizer"))


def encode_space_joined(texts: list[str], tok: Tokenizer, max_tokens: int, chunk_words: int = 2048
                        ) -> dict[str, list[int]]:
    """Each distinct text of ``texts`` -> its first ``max_tokens`` token ids (no special tokens): exactly
    ``tok.encode(text, add_special_tokens=False).ids[:max_tokens]``.

    When :func:`splits_at_spaces` holds, the tokenizer sees each distinct space-separated word once (in
    pre-tokenized batches of ``chunk_words`` words), and numpy puts each text's ids together from its words'.
    Texts that repeat their words pay: 14,000 Wikipedia passages of 64 words hold 90,269 distinct words, and
    this takes 0.65 s against 1.55-1.7 s for ``encode_batch`` of the passages. Otherwise one ``encode_batch``
    of the distinct texts."""
    distinct = list(dict.fromkeys(texts))
    if not distinct or not splits_at_spaces(tok):
        encodings = tok.encode_batch(distinct, add_special_tokens=False)
        return {text: encoding.ids[:max_tokens] for text, encoding in zip(distinct, encodings, strict=True)}
    split = pc.split_pattern(pa.array(distinct, type=pa.large_string()), " ")
    encoded = pc.dictionary_encode(split.flatten())
    codes = encoded.indices.to_numpy().astype(np.int64)  # each word occurrence -> its distinct word
    ids, counts = encode_words(encoded.dictionary.to_pylist(), tok, chunk_words)
    word_starts = np.cumsum(counts) - counts
    # every word occurrence's ids, in order, and where each occurrence begins
    stream, occurrence_starts = ragged_take(ids, word_starts[codes], word_starts[codes] + counts[codes])
    bounds = occurrence_starts[split.offsets.to_numpy()]  # token range of each text
    starts = bounds[:-1]
    stops = np.minimum(bounds[1:], starts + max_tokens)
    return {text: stream[a:b].tolist() for text, a, b in zip(distinct, starts.tolist(), stops.tolist(), strict=True)}


def encode_words(words: list[str], tok: Tokenizer, chunk_words: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """Each of ``words`` encoded on its own (no special tokens), in pre-tokenized batches of ``chunk_words``:
    (all their ids, word after word, int64; the number of ids of each word)."""
    if not words:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    encodings = tok.encode_batch([words[i : i + chunk_words] for i in range(0, len(words), chunk_words)],
                                 is_pretokenized=True, add_special_tokens=False)
    ids = np.concatenate([np.asarray(e.ids, dtype=np.int64) for e in encodings])
    owners = np.concatenate([np.asarray(e.word_ids, dtype=np.int64) + i * chunk_words
                             for i, e in enumerate(encodings)])
    return ids, np.bincount(owners, minlength=len(words))


def _splits_here(char: str) -> bool:
    """Whether BERT's pre-tokenizer always splits right before and right after ``char`` (a normalized
    character): whitespace, ASCII punctuation, Unicode punctuation."""
    return char in " \t\n\r" or char in string.punctuation or unicodedata.category(char)[0] in "PZ"


def delimiting_characters(chars: list[str], tok: Tokenizer) -> np.ndarray:
    """Which of ``chars`` the tokenizer's normalizer turns into a non-empty text that begins and ends with a
    character the pre-tokenizer always splits around (a CJK character, which BERT's normalizer spaces out; a
    space; punctuation), so that no token runs across a word boundary next to it. Only meaningful where
    :func:`splits_words_like_bert` holds."""
    normalize = tok.normalizer.normalize_str if tok.normalizer is not None else str
    out = np.zeros(len(chars), dtype=bool)
    for k, char in enumerate(chars):
        text = normalize(char)
        out[k] = bool(text) and _splits_here(text[0]) and _splits_here(text[-1])
    return out


def splits_words_like_bert(tok: Tokenizer) -> bool:
    """:func:`splits_at_spaces`, with BERT's pre-tokenizer first (whitespace and punctuation split, each
    punctuation character a piece of its own): then a text's ids are its words' ids put together wherever each
    word boundary has a :func:`delimiting_characters` character on one side and no combining mark after it."""
    if not splits_at_spaces(tok):
        return False
    pre = json.loads(tok.to_str())["pre_tokenizer"]
    steps = pre["pretokenizers"] if pre["type"] == "Sequence" else [pre]
    return steps[0]["type"] == "BertPreTokenizer"


def save_tokenizer(tok: Tokenizer, path: str | Path) -> Path:
    """Save atomically (temporary file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tokenizer-", suffix=".json")
    os.close(fd)
    tok.save(tmp)
    os.replace(tmp, path)
    return path


def tokenizer_hash(tok: Tokenizer) -> str:
    """A content hash: examples built with one tokenizer are never reused with another."""
    return hashlib.sha1(tok.to_str().encode()).hexdigest()[:16]


def tokenizer_for_run(run_path: Path, *, pretrained: str | None, texts: Iterator[str] | None,
                      cache_path: Path | None, vocab_size: int, min_frequency: int,
                      lowercase: bool, chinese: bool = False,
                      chinese_seed_characters: int = DEFAULT_CHINESE_SEED_CHARACTERS) -> Tokenizer:
    """The run's tokenizer: the copy saved in the run directory if there is one (resume never retrains),
    else the configured pretrained file, else one from the cache, else trained now on ``texts``
    (:func:`train_chinese_wordpiece` with ``chinese_seed_characters`` when the corpus has Chinese documents:
    ``chinese``; English corpora are never seeded)."""
    if run_path.is_file():
        return load_tokenizer(run_path)
    if pretrained:
        tok = load_tokenizer(pretrained, lowercase)
    elif cache_path is not None and cache_path.is_file():
        tok = load_tokenizer(cache_path)
    else:
        if texts is None:
            raise TokenizerError("no tokenizer configured and no corpus to train one on")
        if chinese:
            tok = train_chinese_wordpiece(texts, vocab_size, min_frequency, lowercase, chinese_seed_characters)
        else:
            tok = train_wordpiece(texts, vocab_size, min_frequency, lowercase)
        if cache_path is not None:
            save_tokenizer(tok, cache_path)
    save_tokenizer(tok, run_path)
    return tok


def iter_paragraphs(documents: Dataset, batch_size: int = 256) -> Iterator[str]:
    """Every paragraph of a documents dataset, streamed (the tokenizer trainer's input): the paragraphs column
    only, at most ``batch_size`` documents and about a megabyte of text at a time (long documents: fewer)."""
    for texts in iter_column(documents, "paragraphs", batch_size):
        yield from texts


def load_hf_tokenizer(directory: str | Path) -> Tokenizer:
    """The tokenizer of a Hugging Face model directory: its ``tokenizer.json``, else its ``vocab.txt`` with the
    casing of ``tokenizer_config.json`` (``do_lower_case``, default true as BERT's). Truncation and padding
    stored in the file are switched off: examples are cut by our builders, batches padded by our collators."""
    import json

    directory = Path(directory).expanduser()
    tok_json, vocab = directory / "tokenizer.json", directory / "vocab.txt"
    if tok_json.is_file():
        tok = load_tokenizer(tok_json)
    elif vocab.is_file():
        lowercase = True
        config_path = directory / "tokenizer_config.json"
        if config_path.is_file():
            try:
                lowercase = bool(json.loads(config_path.read_text()).get("do_lower_case", True))
            except (OSError, json.JSONDecodeError) as err:
                raise TokenizerError(f"cannot read {config_path}: {err}") from None
        tok = load_tokenizer(vocab, lowercase)
    else:
        raise TokenizerError(f"{directory}: no tokenizer (expected tokenizer.json, or vocab.txt with "
                             "tokenizer_config.json)")
    tok.no_truncation()
    tok.no_padding()
    return tok


def save_hf_tokenizer_files(tok: Tokenizer, directory: str | Path, model_max_length: int = 512) -> None:
    """Write ``tokenizer.json``, ``vocab.txt``, ``tokenizer_config.json`` and ``special_tokens_map.json`` so
    that ``transformers.AutoTokenizer.from_pretrained(directory)`` gives exactly this tokenizer's ids."""
    import json

    directory = Path(directory)
    tok.save(str(directory / "tokenizer.json"))
    vocab = sorted(tok.get_vocab().items(), key=lambda item: item[1])
    if [i for _, i in vocab] != list(range(len(vocab))):
        raise TokenizerError("the vocabulary ids are not contiguous from 0: cannot write vocab.txt")
    (directory / "vocab.txt").write_text("".join(f"{token}\n" for token, _ in vocab), encoding="utf-8")
    special = {"unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]",
               "mask_token": "[MASK]"}
    config = {"tokenizer_class": "BertTokenizer", "do_lower_case": is_lowercasing(tok),
              "tokenize_chinese_chars": True, "strip_accents": None, "model_max_length": model_max_length,
              "clean_up_tokenization_spaces": False, **special}
    (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    (directory / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n")


def chinese_normalizer(lowercase: bool = True) -> normalizers.Normalizer:
    """NFKC, then BERT's normalizer: the Chinese corpus reader's normalization (full-width forms to ASCII,
    ``data_builders.language.normalize_chinese``) applied to every text the tokenizer sees, so fine-tuning
    text that skipped the reader gets the same ids as pretraining text. Offsets still point into the
    original text (``tokenizers`` tracks the alignment through both steps)."""
    return normalizers.Sequence([
        normalizers.NFKC(),
        normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=None,
                                   lowercase=lowercase),
    ])


def chinese_pre_tokenizer() -> pre_tokenizers.PreTokenizer:
    """BERT's pre-tokenizer, then every symbol that is neither a word character nor a space (``×``, ``℃``,
    ``‰``) isolated as well: BERT splits punctuation only, so "30厘米×30厘米" would give the WordPiece token
    "×30" across two jieba words, and a masking unit could no longer be exactly one jieba word."""
    return pre_tokenizers.Sequence([pre_tokenizers.BertPreTokenizer(),
                                    pre_tokenizers.Split(Regex(r"[^\w\s]"), behavior="isolated")])


CJK_PUNCTUATION = "，。！？；：、“”‘’（）《》〈〉【】「」『』〔〕…—～·"
"""Chinese punctuation seeded into every Chinese alphabet (as :func:`chinese_normalizer` outputs it)."""

ASCII_SEEDS = string.punctuation + string.digits + string.ascii_letters
"""ASCII punctuation, digits and letters, seeded too: a law corpus has no ``!`` or ``"`` (measured: the
third most frequent unknown of ChnSentiCorp dev once the characters were seeded)."""

_CJK_CHARACTER = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")


@functools.cache
def _dictionary_character_ranking() -> tuple[str, ...]:
    """The CJK characters of jieba's dictionary (``jieba/dict.txt``: word, frequency, tag per line; it ships
    with the package), most frequent first: a character weighs the summed frequencies of the words holding it
    (ties in order of first appearance)."""
    from importlib.resources import files

    weights: dict[str, int] = {}
    for line in (files("jieba") / "dict.txt").read_text(encoding="utf-8").splitlines():
        word, _, rest = line.partition(" ")
        frequency = rest.partition(" ")[0]
        if not frequency.isdigit():
            continue
        count = int(frequency)
        for char in word:  # every character; the CJK ones are picked once each below
            weights[char] = weights.get(char, 0) + count
    return tuple(sorted((c for c in weights if _CJK_CHARACTER.match(c)), key=lambda c: -weights[c]))


def common_chinese_characters(count: int) -> list[str]:
    """The ``count`` most frequent CJK characters of jieba's dictionary (weighted by its word frequencies):
    a general Chinese source that ships with the dependencies."""
    return list(_dictionary_character_ranking()[:count])


def chinese_seed_alphabet(count: int, lowercase: bool = True) -> list[str]:
    """The characters a Chinese tokenizer's alphabet is seeded with: :func:`common_chinese_characters`,
    :data:`CJK_PUNCTUATION` and :data:`ASCII_SEEDS`, each as :func:`chinese_normalizer` outputs it (``！``
    becomes ``!``), so that a vocabulary trained on a narrow corpus still has ids for everyday characters.
    Empty when ``count`` is 0."""
    if count <= 0:
        return []
    normalizer = chinese_normalizer(lowercase)
    seeds: dict[str, None] = {}
    for char in [*common_chinese_characters(count), *CJK_PUNCTUATION, *ASCII_SEEDS]:
        normalized = normalizer.normalize_str(char).strip()
        if len(normalized) == 1:
            seeds.setdefault(normalized)
    return list(seeds)


def train_chinese_wordpiece(texts: Iterable[str], vocab_size: int, min_frequency: int = 2,
                            lowercase: bool = True,
                            seed_characters: int = DEFAULT_CHINESE_SEED_CHARACTERS) -> Tokenizer:
    """A BERT-Chinese style WordPiece tokenizer trained on ``texts``: every CJK character its own token (BERT's
    ``handle_chinese_chars`` isolates each one before WordPiece), WordPiece subwords for Latin-script runs,
    :func:`chinese_normalizer` in front and :func:`chinese_pre_tokenizer` (symbols isolated too). The vocabulary must hold the corpus's characters: every
    character of the training text enters the alphabet, so ``vocab_size`` should exceed the number of
    distinct characters (about 4,000 in the law corpus) with room for Latin subwords.

    ``seed_characters`` > 0: the alphabet also holds :func:`chinese_seed_alphabet` (the most frequent
    characters of jieba's dictionary and CJK punctuation) whether the corpus has them or not; 0 trains on the
    corpus's characters alone, exactly as before seeding existed."""
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]", max_input_chars_per_word=100))
    _configure(tok, lowercase)
    tok.normalizer, tok.pre_tokenizer = chinese_normalizer(lowercase), chinese_pre_tokenizer()
    seeds = chinese_seed_alphabet(seed_characters, lowercase)
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=SPECIAL_TOKENS,
        continuing_subword_prefix="##", show_progress=False, **({"initial_alphabet": seeds} if seeds else {}),
    )
    tok.train_from_iterator(_ideographs_once(texts), trainer=trainer)
    if seeds:
        _add_continuations(tok, [c for c in ASCII_SEEDS if c.isalnum() and c in seeds])
    _configure(tok, lowercase)
    # _configure set BERT's alone
    tok.normalizer, tok.pre_tokenizer = chinese_normalizer(lowercase), chinese_pre_tokenizer()
    return tok


_IDEOGRAPH_RUN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff]+")
"""Runs of CJK unified ideographs (and extension A): characters NFKC leaves as they are, each one a word of its
own after the normalizer (BERT's ``handle_chinese_chars``)."""


def _ideographs_once(texts: Iterable[str]) -> Iterator[str]:
    """What the Chinese WordPiece trainer needs of ``texts``, at a fraction of the characters: each text with
    its ideograph runs replaced by a space, then every distinct ideograph once.

    The trainer learns the same vocabulary from this. Each ideograph is a one-character word (the normalizer
    isolates it), so it only enters the alphabet, which keeps every character seen whatever its count (no
    ``limit_alphabet``) and orders it by code point; a one-character word has no pair to merge. A space
    where a run was separates its neighbours exactly as the isolated ideographs did. Ideographs are most of
    a Chinese corpus's characters (85% of the law corpus), and each one costs the trainer a normalization
    with offsets, a pre-tokenization and a word count."""
    seen: set[str] = set()
    for text in texts:
        seen.update(text)
        yield _IDEOGRAPH_RUN.sub(" ", text)
    yield " ".join(sorted(c for c in seen if _IDEOGRAPH_RUN.match(c)))


def _add_continuations(tok: Tokenizer, chars: list[str]) -> None:
    """Give the trained WordPiece model a ``##c`` token for each of ``chars`` it lacks (new ids after the
    others), so that any Latin word or number spells out instead of becoming [UNK]: a corpus with little Latin
    text ("vista", "USB" in reviews) never saw most letters inside a word."""
    vocab = tok.get_vocab()
    missing = [f"##{c}" for c in chars if f"##{c}" not in vocab]
    if missing:
        vocab.update({token: len(vocab) + i for i, token in enumerate(missing)})
        tok.model = models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100,
                                     continuing_subword_prefix="##")
