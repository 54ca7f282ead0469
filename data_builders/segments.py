"""Sentence tokenization with word boundaries, and packing sentences into fixed-budget segments.

Shared by the task builders: every builder works on the tokenizer's ids, but many decisions (whole-word units,
capitalization, phrases) are about words, so each sentence keeps the token span and cased surface form of each
of its words, recovered from the tokenizer's offsets into the original text. An English word is a BERT
pre-token; a Chinese word (documents whose ``language`` is ``zh``) is a jieba word, with its POS tag: the
segmenter (``data.zh_segmenter``: rjieba or jieba) runs here, once per corpus in the shared tokenization pass,
and every builder reads its words from there.
"""

from __future__ import annotations

import unicodedata
from bisect import bisect_right
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from datasets import Dataset
from tokenizers import Tokenizer

from data_builders.language import active_segmenter, segment_many


@dataclass
class Sentence:
    ids: list[int]
    word_spans: list[tuple[int, int]]
    """[start, end) token span of each word."""
    words: list[str]
    """Each word as written in the original (cased) text."""
    tags: list[str] | None = None
    """Chinese sentences: the jieba POS tag of each word (``nr``, ``ns``, ...); None for English ones."""


def tokenize_sentences(tokenizer: Tokenizer, sentences: list[str]) -> list[Sentence]:
    """Tokenize without special tokens; group tokens into words by the encoding's word ids."""
    out = []
    for text, enc in zip(sentences, tokenizer.encode_batch(sentences, add_special_tokens=False), strict=True):
        word_ids, offsets = enc.word_ids, enc.offsets
        n = len(word_ids)
        starts = [i for i in range(n) if i == 0 or word_ids[i] != word_ids[i - 1]]
        ends = [*starts[1:], n]
        spans = list(zip(starts, ends, strict=True))
        words = [text[offsets[a][0] : offsets[b - 1][1]] for a, b in spans]
        out.append(Sentence(enc.ids, spans, words))
    return out


def tokenize_chinese_sentences(tokenizer: Tokenizer, sentences: list[str], segmenter: str | None = None
                               ) -> list[Sentence]:
    """Tokenize Chinese sentences without special tokens; words are ``segmenter``'s (:func:`data_builders.
    language.segment_many`; None: the active one), each with its POS tag.

    A token belongs to the jieba word its first character lies in. Whitespace words have no token and are
    dropped; a word whose characters the normalizer drops entirely has no token either and is dropped with
    them. When a token runs past the end of its word (jieba splitting inside one WordPiece token: "×30" in
    a plain BERT vocabulary; the Chinese tokenizer we train isolates symbols so that it does not happen), the
    words it touches become one word, tagged ``x``, so word spans still partition the tokens.

    Sentences whose every word boundary the tokenizer is bound to split at (:func:`_sentences_by_words`) are
    put together from the ids of their distinct words, each encoded once; the others are encoded whole."""
    segmented = segment_many(sentences, segmenter)
    out = _sentences_by_words(tokenizer, sentences, segmented)
    whole = [k for k, sentence in enumerate(out) if sentence is None]
    encodings = tokenizer.encode_batch([sentences[k] for k in whole], add_special_tokens=False)
    for k, enc in zip(whole, encodings, strict=True):
        out[k] = _aligned_sentence(sentences[k], enc, segmented[k])
    return out  # type: ignore[return-value]


def _aligned_sentence(text: str, enc: Any, pairs: list[tuple[str, str]]) -> Sentence:
    """One sentence's encoding and its (word, tag) pairs -> :class:`Sentence` (the rules above)."""
    starts, ends, words, tags = [], [], [], []
    position = 0
    for word, tag in pairs:
        if word.strip():
            starts.append(position)
            ends.append(position + len(word))
            words.append(word)
            tags.append(tag)
        position += len(word)
    if not starts:  # nothing but spaces: the sentence is one (token-less) word
        starts, ends, words, tags = [0], [len(text)], [text], ["x"]
    spans: list[tuple[int, int]] = []
    sentence_words: list[str] = []
    sentence_tags: list[str] = []
    word_start = word_end = -1  # characters of the current word
    for t, (char_start, char_end) in enumerate(enc.offsets):
        if spans and char_start < word_end:  # another token of the current word
            spans[-1] = (spans[-1][0], t + 1)
        else:
            w = max(bisect_right(starts, char_start) - 1, 0)
            word_start, word_end = starts[w], ends[w]
            spans.append((t, t + 1))
            sentence_words.append(words[w])
            sentence_tags.append(tags[w])
        if char_end > word_end:  # the token runs past its word: merge the words it touches
            word_end = max(ends[bisect_right(starts, char_end - 1) - 1], char_end)
            sentence_words[-1] = text[word_start:word_end]
            sentence_tags[-1] = "x"
    return Sentence(enc.ids, spans, sentence_words, sentence_tags)


def _sentences_by_words(tokenizer: Tokenizer, sentences: list[str], segmented: list[list[tuple[str, str]]]
                        ) -> list[Sentence | None]:
    """The sentences whose ids are their words' ids put together, each distinct word encoded once: those whose
    words spell the sentence, where at every word boundary one of the two characters is delimiting (see
    :func:`data_builders.tokenizer.delimiting_characters`: a CJK character, a space, punctuation) and the
    next word opens with no combining mark, and whose whitespace words have no ids. They get exactly the
    :class:`Sentence` of encoding them whole (no token can then cross a word); the others None."""
    from data_builders.tokenizer import delimiting_characters, encode_words, splits_words_like_bert  # a cycle

    if not sentences or not splits_words_like_bert(tokenizer):
        return [None] * len(sentences)
    words = [w for pairs in segmented for w, _ in pairs]
    tags = [t for pairs in segmented for _, t in pairs]
    lengths = np.fromiter(map(len, segmented), dtype=np.int64, count=len(segmented))
    encoded = pc.dictionary_encode(pa.array(words, type=pa.large_string()))
    codes = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    distinct = encoded.dictionary.to_pylist()
    ids, counts = encode_words(distinct, tokenizer)
    spaces = np.fromiter((not w.strip() for w in distinct), dtype=bool, count=len(distinct))
    edges = pc.dictionary_encode(pa.array([w[:1] for w in distinct] + [w[-1:] for w in distinct]))
    edge_chars = edges.dictionary.to_pylist()
    delimiting = delimiting_characters(edge_chars, tokenizer)
    marks = np.fromiter((unicodedata.category(c or " ")[0] == "M" for c in edge_chars), dtype=bool)
    edge_codes = edges.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    first, last = edge_codes[: len(distinct)], edge_codes[len(distinct) :]
    sentence_of = np.repeat(np.arange(len(sentences)), lengths)
    follows = np.ones(len(words), dtype=bool)  # a word that has a previous word in its sentence
    firsts = np.cumsum(lengths) - lengths
    follows[firsts[lengths > 0]] = False
    after = np.flatnonzero(follows)
    unsafe = ~(delimiting[last[codes[after - 1]]] | delimiting[first[codes[after]]]) | marks[first[codes[after]]]
    spelled = np.fromiter(("".join(w for w, _ in pairs) == text for pairs, text in zip(segmented, sentences,
                                                                                        strict=True)),
                          dtype=bool, count=len(sentences))
    bad = ~spelled | (np.bincount(sentence_of[after[unsafe]], minlength=len(sentences)) > 0)
    bad |= np.bincount(sentence_of[spaces[codes] & (counts[codes] > 0)], minlength=len(sentences)) > 0
    keep = np.flatnonzero(~spaces[codes] & (counts[codes] > 0) & ~bad[sentence_of])
    word_starts = np.cumsum(counts) - counts
    stream, offsets = ragged_take(ids, word_starts[codes[keep]], word_starts[codes[keep]] + counts[codes[keep]])
    kept_per_sentence = np.bincount(sentence_of[keep], minlength=len(sentences))
    word_bounds = np.concatenate([[0], np.cumsum(kept_per_sentence)])
    token_bounds = offsets[word_bounds].tolist()
    all_ids, all_starts = stream.tolist(), offsets[:-1].tolist()
    keep_list = keep.tolist()
    word_bounds_list = word_bounds.tolist()
    out: list[Sentence | None] = []
    for k, is_bad in enumerate(bad.tolist()):
        if is_bad:
            out.append(None)
            continue
        a, b = word_bounds_list[k], word_bounds_list[k + 1]
        t0, t1 = token_bounds[k], token_bounds[k + 1]
        starts = [s - t0 for s in all_starts[a:b]]
        positions = keep_list[a:b]
        ends = [*starts[1:], t1 - t0] if starts else []
        out.append(Sentence(all_ids[t0:t1], list(zip(starts, ends, strict=True)), [words[i] for i in positions],
                            [tags[i] for i in positions]))
    return out


def tokenize_document_sentences(tokenizer: Tokenizer, sentences: list[str], language: str,
                                segmenter: str | None = None) -> list[Sentence]:
    """:func:`tokenize_chinese_sentences` (by ``segmenter``) for a Chinese document, else
    :func:`tokenize_sentences`."""
    if language == "zh":
        return tokenize_chinese_sentences(tokenizer, sentences, segmenter)
    return tokenize_sentences(tokenizer, sentences)


SENTENCE_TOKEN_COLUMNS = ("sentence_ids", "sentence_word_starts", "sentence_words", "sentence_word_tags")
"""Columns the shared tokenization pass adds to documents: per document, per sentence (paragraphs flattened),
the token ids, the first token of each word, each word's cased surface form, and each word's jieba POS tag
(Chinese documents; an empty list per sentence of an English document)."""


BATCH_BYTES = 1 << 20
"""About how much Arrow data one ``datasets.map`` batch of a builder holds (:func:`batch_rows`)."""


def batch_rows(rows: Dataset, most: int = 64, budget: int = BATCH_BYTES) -> int:
    """Rows per ``datasets.map`` batch over ``rows``: ``most``, fewer where the rows are large, so that a batch
    holds about ``budget`` bytes of Arrow data (measured on the columns ``rows`` has, averaged over its table)
    whatever the documents' length. A corpus cut into 100,000-character documents (a one-line dump) would
    otherwise hold about 16 times the text of ordinary articles per batch, and the Python objects a builder makes
    from them with it. The examples do not depend on the batch size (every builder draws per document)."""
    table = rows.data
    if table.num_rows == 0:
        return most
    return max(1, min(most, int(budget * table.num_rows // max(1, table.nbytes))))


def iter_column(rows: Dataset, column: str, most: int = 256) -> Iterator[Any]:
    """Each row's value of ``column``, read alone, in batches of at most ``most`` rows and about
    :data:`BATCH_BYTES` (:func:`batch_rows`), so long documents do not make a batch large."""
    one = rows.select_columns([column])
    for batch in one.iter(batch_size=batch_rows(one, most)):
        yield from batch[column]


def map_fingerprint() -> str:
    """``new_fingerprint`` for a builder's ``datasets.map``: a random one. Without it ``datasets`` hashes the
    map function's arguments (a phrase lexicon, the frequent words, a pool of documents) on every call, about a
    second per knowledge-masking build of the Wikipedia sample, only to name a cache entry that a changed
    builder could wrongly reuse: reuse of built examples is the caller's cache's job (keyed on the builder
    version), so every build here is a fresh map."""
    from datasets.fingerprint import generate_random_fingerprint

    return generate_random_fingerprint()


def _languages(batch: dict[str, list]) -> list[str]:
    # Documents built before languages existed carry no language column: they are English.
    return batch["language"] if "language" in batch else ["en"] * len(batch["sentences"])


def sentence_tokens_batch(batch: dict[str, list], *, tokenizer: Tokenizer, segmenter: str | None = None
                          ) -> dict[str, list]:
    """``datasets.map`` function of the shared tokenization pass (see ``add_sentence_tokens``). The Chinese
    documents of the batch are tokenized together, so that a word they share is encoded once."""
    out: dict[str, list] = {column: [] for column in SENTENCE_TOKEN_COLUMNS}
    languages = _languages(batch)
    texts = [[s for p in paragraphs for s in p] for paragraphs in batch["sentences"]]
    chinese = tokenize_chinese_sentences(tokenizer, [s for text, language in zip(texts, languages, strict=True)
                                                     if language == "zh" for s in text], segmenter)
    position = 0
    for text, language in zip(texts, languages, strict=True):
        if language == "zh":
            sentences = chinese[position : position + len(text)]
            position += len(text)
        else:
            sentences = tokenize_sentences(tokenizer, text)
        out["sentence_ids"].append([s.ids for s in sentences])
        out["sentence_word_starts"].append([[start for start, _ in s.word_spans] for s in sentences])
        out["sentence_words"].append([s.words for s in sentences])
        out["sentence_word_tags"].append([s.tags or [] for s in sentences])
    return out


def add_sentence_tokens(documents: Dataset, tokenizer: Tokenizer, num_proc: int = 1,
                        segmenter: str | None = None) -> Dataset:
    """The shared tokenization pass: ``documents`` plus ``SENTENCE_TOKEN_COLUMNS``. Builders that go through
    ``document_sentences`` then read tokens (and Chinese words) instead of computing them once each.
    ``segmenter``: of Chinese documents (None: :func:`data_builders.language.active_segmenter`, named here so
    that workers of any start method use it)."""
    return documents.map(
        sentence_tokens_batch,
        batched=True,
        new_fingerprint=map_fingerprint(),
        batch_size=batch_rows(documents),
        num_proc=num_proc if num_proc > 1 else None,
        fn_kwargs={"tokenizer": tokenizer, "segmenter": segmenter or active_segmenter()},
        desc="tokenize sentences",
    )


def document_sentences(batch: dict[str, list], index: int, tokenizer: Tokenizer) -> list[Sentence]:
    """The sentences of document ``index`` of a ``datasets.map`` batch, paragraphs flattened: read from the
    shared tokenization pass's columns when the documents carry them (they must come from ``tokenizer``),
    tokenized (and, for a Chinese document, segmented) here otherwise."""
    if "sentence_ids" not in batch:
        return tokenize_document_sentences(tokenizer, [s for p in batch["sentences"][index] for s in p],
                                           _languages(batch)[index])
    tags_column = batch.get("sentence_word_tags")
    tags_per_sentence = tags_column[index] if tags_column is not None else None
    out = []
    for k, (ids, starts, words) in enumerate(zip(batch["sentence_ids"][index],
                                                 batch["sentence_word_starts"][index],
                                                 batch["sentence_words"][index], strict=True)):
        tags = tags_per_sentence[k] if tags_per_sentence is not None and tags_per_sentence[k] else None
        out.append(Sentence(ids, list(zip(starts, [*starts[1:], len(ids)], strict=True)), words, tags))
    return out


def document_token_lists(batch: dict[str, list], index: int, tokenizer: Tokenizer
                         ) -> tuple[list[list[int]], list[list[int]], list[list[str]] | None, list | None]:
    """:func:`document_sentences` as plain per-sentence lists, without building ``Sentence`` objects:
    (token ids, first token of each word, cased words, jieba tags) per sentence. The words are None when the
    batch carries the shared tokenization pass without ``sentence_words`` (a builder that needs only ids and
    word starts leaves that column unread, see :func:`token_columns`); the tags are None when the batch has no
    tags column, else per sentence a list that is empty (or None) where the sentence has no tags (English).
    The lists may be the batch's own: read them, do not change them."""
    if "sentence_ids" not in batch:
        sentences = document_sentences(batch, index, tokenizer)
        return ([s.ids for s in sentences], [[start for start, _ in s.word_spans] for s in sentences],
                [s.words for s in sentences], [s.tags for s in sentences])
    tags_column = batch.get("sentence_word_tags")
    words_column = batch.get("sentence_words")
    return (batch["sentence_ids"][index], batch["sentence_word_starts"][index],
            words_column[index] if words_column is not None else None,
            tags_column[index] if tags_column is not None else None)


def token_columns(documents: Dataset, *, words: bool = True, tags: bool = True,
                  extra: tuple[str, ...] = ()) -> Dataset:
    """``documents`` narrowed to the columns a builder reading the shared tokenization pass needs (``id``,
    ``language``, the pass's columns (``sentence_words`` only with ``words``, ``sentence_word_tags`` only
    with ``tags``) and ``extra``), so that ``datasets.map`` does not turn the others (the documents' text)
    into Python objects. Documents without the pass keep ``sentences`` (they are tokenized per builder)."""
    wanted = ["id", "language", *extra]
    if "sentence_ids" in documents.column_names:
        wanted += ["sentence_ids", "sentence_word_starts"] + (["sentence_words"] if words else []) + (
            ["sentence_word_tags"] if tags else [])
    else:
        wanted.append("sentences")
    keep = [c for c in documents.column_names if c in set(wanted)]
    return documents if len(keep) == len(documents.column_names) else documents.select_columns(keep)


INPUT_IDS_TYPE = pa.int32()
"""The type ``datasets`` gives the values of a column named ``input_ids`` built from Python lists of ints."""
INT64 = pa.int64()
"""The type it gives the values of any other column of Python ints."""


@dataclass
class FlatTokens:
    """The shared tokenization pass's columns of a batch of documents (an Arrow table), flattened into numpy
    arrays without a Python object per token or word: documents -> sentences -> tokens and words."""

    doc_sentences: np.ndarray
    """Sentence offsets per document (length documents + 1): document d has sentences [o[d], o[d + 1])."""
    sentence_tokens: np.ndarray
    """Token offsets per sentence (length sentences + 1) into ``tokens``."""
    tokens: np.ndarray
    """Every token id (int64), documents and sentences in order."""
    sentence_words: np.ndarray
    """Word offsets per sentence (length sentences + 1) into ``word_starts`` (and ``word_codes``)."""
    word_starts: np.ndarray
    """Each word's first token, counted from its sentence's first token."""
    word_codes: np.ndarray | None = None
    """Each word's index into ``dictionary`` (with ``words``), else None."""
    dictionary: list[str] | None = None
    """The distinct cased words of the batch (with ``words``), else None."""
    tag_codes: np.ndarray | None = None
    """Each word's index into ``tag_dictionary`` (with ``tags``), else None."""
    tag_dictionary: list[str] | None = None
    """The distinct POS tags of the batch (with ``tags``), else None."""

    @property
    def word_sentence(self) -> np.ndarray:
        """The sentence of each word."""
        return np.repeat(np.arange(len(self.sentence_words) - 1), np.diff(self.sentence_words))

    @property
    def word_tokens(self) -> np.ndarray:
        """Each word's first token as an index into ``tokens``."""
        return self.sentence_tokens[:-1][self.word_sentence] + self.word_starts


def _list_levels(column: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, pa.Array]:
    """Offsets (from 0) and flattened values of a list column."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    offsets = array.offsets.to_numpy().astype(np.int64)
    return offsets - offsets[0], array.flatten()


def flat_tokens(table: pa.Table, words: bool = True, tags: bool = False) -> FlatTokens:
    """A batch (``datasets`` Arrow format) carrying ``SENTENCE_TOKEN_COLUMNS`` -> :class:`FlatTokens`. ``tags``:
    also the words' POS tags, which every sentence must then have, one per word (all documents Chinese)."""
    doc_sentences, sentences = _list_levels(table.column("sentence_ids"))
    sentence_tokens, tokens = _list_levels(sentences)
    starts_docs, starts = _list_levels(table.column("sentence_word_starts"))
    sentence_words, word_starts = _list_levels(starts)
    if not np.array_equal(starts_docs, doc_sentences):
        raise ValueError("sentence_word_starts and sentence_ids disagree on the sentences of a document")
    out = FlatTokens(doc_sentences, sentence_tokens, tokens.to_numpy(zero_copy_only=False).astype(np.int64),
                     sentence_words, word_starts.to_numpy(zero_copy_only=False).astype(np.int64))
    if words:
        out.word_codes, out.dictionary = _word_codes(table, "sentence_words", doc_sentences, sentence_words)
    if tags:
        out.tag_codes, out.tag_dictionary = _word_codes(table, "sentence_word_tags", doc_sentences, sentence_words)
    return out


def _word_codes(table: pa.Table, column: str, doc_sentences: np.ndarray, sentence_words: np.ndarray
                ) -> tuple[np.ndarray, list]:
    """A per-word column (words, tags) flattened and dictionary-encoded: (codes, dictionary); its nesting
    must match the sentences' and their words'."""
    docs, sentences = _list_levels(table.column(column))
    offsets, flat = _list_levels(sentences)
    if not (np.array_equal(docs, doc_sentences) and np.array_equal(offsets, sentence_words)):
        raise ValueError(f"{column} and sentence_word_starts disagree on the words of a sentence")
    encoded = pc.dictionary_encode(flat)
    return encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64), encoded.dictionary.to_pylist()


def framed_lists(values: np.ndarray, starts: np.ndarray, ends: np.ndarray, first: int, last: int,
                 value_type: pa.DataType = INT64, shift: np.ndarray | None = None) -> pa.Array:
    """``[first, *values[a:b], last]`` for each ``(a, b)`` of ``starts``/``ends``, as an Arrow list array of
    ``value_type``: what ``datasets`` makes of the same Python lists is list<int64>, except for a column named
    ``input_ids``, which it stores as list<int32> (pass ``INPUT_IDS_TYPE``). ``shift``: one number per list,
    subtracted from its ``values`` (not from ``first`` and ``last``)."""
    starts = np.asarray(starts, dtype=np.int64)
    ends = np.asarray(ends, dtype=np.int64)
    lengths = ends - starts + 2
    offsets = np.zeros(len(starts) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    total = int(offsets[-1])
    source = np.repeat(starts - 1 - offsets[:-1], lengths) + np.arange(total, dtype=np.int64)
    flat = (np.asarray(values, dtype=np.int64)[np.clip(source, 0, len(values) - 1)] if len(values)
            else np.zeros(total, dtype=np.int64))
    if shift is not None:  # values[a:b] - shift, per list
        flat -= np.repeat(np.asarray(shift, dtype=np.int64), lengths)
    flat[offsets[:-1]] = first
    flat[offsets[1:] - 1] = last
    return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), pa.array(flat).cast(value_type))


def ragged_take(values: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``values[a:b]`` for each ``(a, b)`` of ``starts``/``ends``, concatenated (int64), and where each piece
    begins in it (``len(starts) + 1`` offsets)."""
    starts = np.asarray(starts, dtype=np.int64)
    lengths = np.asarray(ends, dtype=np.int64) - starts
    offsets = np.zeros(len(starts) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    source = np.repeat(starts - offsets[:-1], lengths) + np.arange(int(offsets[-1]), dtype=np.int64)
    return np.asarray(values, dtype=np.int64)[source], offsets


def ragged_lists(values: np.ndarray, starts: np.ndarray, ends: np.ndarray,
                 value_type: pa.DataType = INT64) -> pa.Array:
    """``values[a:b]`` for each ``(a, b)`` of ``starts``/``ends``, as an Arrow list array of ``value_type``."""
    flat, offsets = ragged_take(values, starts, ends)
    return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), pa.array(flat).cast(value_type))


def pack_sentences(lengths: list[int], budget: int) -> list[tuple[int, int]]:
    """Greedy packing of consecutive sentences into [start, end) groups of at most ``budget`` tokens.
    A sentence longer than the budget forms a group of its own (the caller truncates it)."""
    groups = []
    start, used = 0, 0
    for i, length in enumerate(lengths):
        if i > start and used + length > budget:
            groups.append((start, i))
            start, used = i, 0
        used += length
    if start < len(lengths):
        groups.append((start, len(lengths)))
    return groups
