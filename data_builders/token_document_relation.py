"""Token-document relation examples (ERNIE 2.0): does a word of this segment occur elsewhere in its document?

A document's sentences are packed into consecutive segments of at most ``segment_tokens`` tokens (a sentence
longer than that is a segment of its own, truncated). Every segment of a document with at least two segments
is one example, ``[CLS] segment [SEP]``, with ``labels`` aligned to ``input_ids``, on each word's FIRST token:

- 1 if the word (lowercased, accents stripped, as the uncased tokenizer sees it) also occurs in at least one
  OTHER segment of the same document;
- 0 if it occurs in no other segment of the document;
- ``IGNORE_INDEX`` (-100) on [CLS]/[SEP], on the other tokens of a word, on words without a letter
  (punctuation, pure numbers such as "1990"), on words cut off by truncation, and on **frequent words**: words
  whose document frequency over the training documents exceeds ``max_doc_freq`` ("the", "of", "was", ...).
  Those occur in nearly every segment of every document, so their label says nothing about the document's
  topic and would be guessable from the word alone.

Documents with a single segment give no example (there is no other segment to relate to).

In Chinese documents a word is a jieba word (from the shared tokenization pass), so "occurs elsewhere" is
about words, not single characters, and frequent words ("的", "应当") are left unlabelled the same way.
"""

from __future__ import annotations

import json
import logging
import os
import re
import unicodedata
from bisect import bisect_right
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from datasets import Dataset
from tokenizers import Tokenizer

from data_builders.errors import EmptyTaskError
from data_builders.language import segment
from data_builders.segments import (
    INPUT_IDS_TYPE,
    batch_rows,
    document_token_lists,
    flat_tokens,
    framed_lists,
    map_fingerprint,
    pack_sentences,
    token_columns,
)

log = logging.getLogger(__name__)

IGNORE_INDEX = -100
MIN_DF_DOCUMENTS = 20
"""Below this many training documents, document frequencies are noise and no word is treated as frequent."""
_WORD = re.compile(r"[^\W_]+")


def word_key(word: str) -> str:
    """The identity of a word as an uncased BERT tokenizer sees it: lowercased, accents stripped."""
    key = word.lower()
    if key.isascii():
        return key
    return "".join(c for c in unicodedata.normalize("NFD", key) if unicodedata.category(c) != "Mn")


def has_letter(key: str) -> bool:
    """Words without a letter (punctuation, numbers) carry no topic and are never labelled."""
    return any(c.isalpha() for c in key)


class _WordKeys(dict):
    """word -> ``word_key(word)``, computed on first lookup."""

    def __missing__(self, word: str) -> str:
        key = self[word] = word_key(word)
        return key


def frequent_words(documents: Dataset, max_doc_freq: float) -> set[str]:
    """Word keys whose document frequency (share of documents containing them) exceeds ``max_doc_freq``.

    Words here are runs of letters and digits, a regex split four times faster than the tokenizer's BERT
    pre-tokenizer; the two agree on every ordinary word (they differ on words with "_" or symbols such as
    "°"), and frequent words are ordinary words."""
    n_docs = len(documents)
    if n_docs < MIN_DF_DOCUMENTS or max_doc_freq >= 1:
        if max_doc_freq < 1:
            log.warning("token_document_relation: only %d training documents (< %d), no word is treated as "
                        "frequent", n_docs, MIN_DF_DOCUMENTS)
        return set()
    df: Counter[str] = Counter()
    chinese = "language" in documents.column_names and "zh" in documents["language"]
    columns = ["paragraphs"] + (["language", "sentences"] if chinese else []) + (
        ["sentence_words"] if chinese and "sentence_words" in documents.column_names else [])
    key_of = _WordKeys().__getitem__  # word -> word_key(word), memoized, looked up without bytecode per word
    for batch in documents.select_columns(columns).iter(batch_size=256):
        for index, paragraphs in enumerate(batch["paragraphs"]):
            if chinese and batch["language"][index] == "zh":
                df.update({word_key(w) for w in _chinese_words(batch, index)})
            else:
                df.update(set(map(key_of, set(_WORD.findall(" ".join(paragraphs).lower())))))
    limit = max_doc_freq * n_docs
    return {key for key, count in df.items() if count > limit and has_letter(key)}


def _chinese_words(batch: dict[str, list], index: int) -> set[str]:
    """The distinct jieba words of Chinese document ``index``: from the shared tokenization pass when the
    batch carries it, segmented here otherwise."""
    if "sentence_words" in batch:
        return {w for sentence in batch["sentence_words"][index] for w in sentence}
    return {w for paragraph in batch["sentences"][index] for sentence in paragraph
            for w, _ in segment(sentence) if w.strip()}


def save_frequent_words(path: Path, words: Iterable[str], max_doc_freq: float, n_docs: int) -> None:
    """Atomic JSON write (temporary file, then rename), as the knowledge-masking lexicon."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # shards may write it at once
    tmp.write_text(json.dumps({"max_doc_freq": max_doc_freq, "documents": n_docs, "words": sorted(words)}))
    tmp.replace(path)


def load_frequent_words(path: Path, max_doc_freq: float) -> set[str] | None:
    """The cached set, or None if there is none for this ``max_doc_freq``."""
    if not path.is_file():
        return None
    raw = json.loads(path.read_text())
    if raw.get("max_doc_freq") != max_doc_freq:
        return None
    return set(raw["words"])


_KEY_MEMO: dict[str, str | None] = {}
"""surface form -> its ``word_key`` if that has a letter, else None (never labelled); shared by batches."""


def _labelled_key(word: str) -> str | None:
    key = word_key(word)
    key = key if has_letter(key) else None
    if len(_KEY_MEMO) > 1 << 17:
        _KEY_MEMO.clear()
    _KEY_MEMO[word] = key
    return key


def token_document_relation_batch(batch: dict[str, list], *, tokenizer: Tokenizer, segment_tokens: int,
                                  frequent: frozenset[str], min_tokens: int) -> dict[str, list]:
    """``datasets.map`` function: a batch of documents -> a batch of examples (one per segment)."""
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    budget = segment_tokens
    memo = _KEY_MEMO
    out: dict[str, list] = {"input_ids": [], "labels": [], "doc_id": [], "segment": []}
    for index, doc_id in enumerate(batch["id"]):
        ids_per_sentence, starts_per_sentence, words_per_sentence, _ = document_token_lists(batch, index, tokenizer)
        groups = pack_sentences([len(ids) for ids in ids_per_sentence], budget)
        if len(groups) < 2:
            continue
        segments: list[tuple[list[int], list[int], list[str]]] = []
        for start, end in groups:
            ids, positions, keys = [cls_id], [], []
            for k in range(start, end):
                sentence_ids = ids_per_sentence[k]
                offset = len(ids)
                ids.extend(sentence_ids)
                starts, words = starts_per_sentence[k], words_per_sentence[k]
                if len(starts) != len(words):
                    raise ValueError(f"{len(starts)} word starts for {len(words)} words")
                room = budget + 1 - offset  # tokens of this sentence that fit before truncation
                if len(sentence_ids) > room:  # words cut off (in part) by truncation are not in the input
                    kept = max(bisect_right(starts, room) - 1, 0)  # words whose end is <= room
                    starts, words = starts[:kept], words[:kept]
                for t_start, word in zip(starts, words, strict=True):
                    key = memo[word] if word in memo else _labelled_key(word)
                    if key is not None and key not in frequent:
                        positions.append(offset + t_start)
                        keys.append(key)
            segments.append((ids[: budget + 1] + [sep_id], positions, keys))
        # in how many segments each word occurs: > 1 means "also in another segment"
        spread = Counter(key for _, _, keys in segments for key in set(keys))
        for index, (ids, positions, keys) in enumerate(segments):
            if len(ids) - 2 < min_tokens or not keys:
                continue
            labels = [IGNORE_INDEX] * len(ids)
            for position, key in zip(positions, keys, strict=True):
                labels[position] = int(spread[key] > 1)
            out["input_ids"].append(ids)
            out["labels"].append(labels)
            out["doc_id"].append(doc_id)
            out["segment"].append(index)
    return out


class _LabelledKeys(dict):
    """surface form -> its key if the word is labelled (a key with a letter, not in ``frequent``), else
    None; computed on first lookup."""

    def __init__(self, frequent: frozenset[str]) -> None:
        super().__init__()
        self.frequent = frequent

    def __missing__(self, word: str) -> str | None:
        key = _KEY_MEMO[word] if word in _KEY_MEMO else _labelled_key(word)
        key = self[word] = None if key is None or key in self.frequent else key
        return key


_LABELLED_KEYS: list[_LabelledKeys] = []


def _labelled_keys(frequent: frozenset[str]) -> _LabelledKeys:
    """The memo of :class:`_LabelledKeys` for this set of frequent words (one kept at a time)."""
    if not _LABELLED_KEYS or _LABELLED_KEYS[0].frequent is not frequent or len(_LABELLED_KEYS[0]) > 1 << 18:
        _LABELLED_KEYS[:] = [_LabelledKeys(frequent)]
    return _LABELLED_KEYS[0]


def token_document_relation_table(batch: pa.Table, *, tokenizer: Tokenizer, segment_tokens: int,
                                  frequent: frozenset[str], min_tokens: int) -> pa.Table:
    """:func:`token_document_relation_batch` on an Arrow batch carrying the shared tokenization pass: the same
    examples, computed with numpy over the batch's flattened tokens and words (a key per distinct word)."""
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    budget = segment_tokens
    flat = flat_tokens(batch)
    labelled_keys = _labelled_keys(frequent)
    encoded_keys = pc.dictionary_encode(pa.array(list(map(labelled_keys.__getitem__, flat.dictionary)),
                                                 type=pa.string()))
    n_keys = len(encoded_keys.dictionary)
    word_keys = encoded_keys.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)[
        flat.word_codes]
    word_sentence = flat.word_sentence
    word_tokens = flat.word_tokens
    word_ends = np.empty_like(word_tokens)  # each word's end: the next word's start, or its sentence's end
    word_ends[:-1] = word_tokens[1:]
    last_words = flat.sentence_words[1:][np.diff(flat.sentence_words) > 0] - 1
    word_ends[last_words] = flat.sentence_tokens[1:][word_sentence[last_words]]
    sentence_lengths = np.diff(flat.sentence_tokens).tolist()
    token_offsets = flat.sentence_tokens.tolist()
    doc_sentences = flat.doc_sentences.tolist()
    sentence_segment = np.full(len(sentence_lengths), -1, dtype=np.int64)
    segment_doc, segment_index, starts, ends = [], [], [], []
    for index in range(len(doc_sentences) - 1):
        first_sentence = doc_sentences[index]
        groups = pack_sentences(sentence_lengths[first_sentence : doc_sentences[index + 1]], budget)
        if len(groups) < 2:
            continue
        for number, (start, end) in enumerate(groups):
            sentence_segment[first_sentence + start : first_sentence + end] = len(starts)
            a = token_offsets[first_sentence + start]
            starts.append(a)
            ends.append(min(token_offsets[first_sentence + end], a + budget))
            segment_doc.append(index)
            segment_index.append(number)
    n_segments = len(starts)
    token_labels = np.full(len(flat.tokens), IGNORE_INDEX, dtype=np.int64)
    keep = np.zeros(n_segments, dtype=bool)
    if n_segments:
        segment_starts, segment_ends = np.array(starts), np.array(ends)
        word_segment = sentence_segment[word_sentence]
        labelled = (word_keys >= 0) & (word_segment >= 0)
        # in the input: a word cut off (in part) by truncation is not
        labelled[labelled] = word_ends[labelled] <= segment_starts[word_segment[labelled]] + budget
        segments, keys = word_segment[labelled], word_keys[labelled]
        doc_keys = np.array(segment_doc, dtype=np.int64)[segments] * (n_keys + 1) + keys
        # in how many segments of its document each key occurs: > 1 means "also in another segment"
        present = np.unique(doc_keys * n_segments + segments) // n_segments
        spread_keys, spread = np.unique(present, return_counts=True)
        token_labels[word_tokens[labelled]] = spread[np.searchsorted(spread_keys, doc_keys)] > 1
        keep = (segment_ends - segment_starts >= min_tokens) & (np.bincount(segments, minlength=n_segments) > 0)
    kept = np.flatnonzero(keep)
    starts_kept, ends_kept = np.array(starts, dtype=np.int64)[kept], np.array(ends, dtype=np.int64)[kept]
    doc_ids = batch.column("id").to_pylist()
    return pa.table({
        "input_ids": framed_lists(flat.tokens, starts_kept, ends_kept, cls_id, sep_id, INPUT_IDS_TYPE),
        "labels": framed_lists(token_labels, starts_kept, ends_kept, IGNORE_INDEX, IGNORE_INDEX),
        "doc_id": pa.array([doc_ids[segment_doc[k]] for k in kept.tolist()], type=pa.string()),
        "segment": pa.array(np.array(segment_index, dtype=np.int64)[kept], type=pa.int64())})


def build_token_document_relation(documents: Dataset, tokenizer: Tokenizer, frequent: Iterable[str], *,
                                  segment_tokens: int, min_tokens: int = 8, num_proc: int = 1) -> Dataset:
    """Documents -> token-document relation examples (see the module docstring).

    ``segment_tokens`` is the segment budget without [CLS]/[SEP]. Raises :class:`EmptyTaskError` when no document has
    two segments (the task needs documents longer than ``segment_tokens`` tokens)."""
    columns = token_columns(documents, tags=False)  # the documents' text stays unread
    arrow = "sentence_ids" in columns.column_names  # the shared pass: numpy over Arrow batches
    examples = (columns.with_format("arrow") if arrow else columns).map(
        token_document_relation_table if arrow else token_document_relation_batch,
        batched=True,
        new_fingerprint=map_fingerprint(),
        batch_size=batch_rows(columns),
        remove_columns=columns.column_names,
        num_proc=num_proc if num_proc > 1 else None,
        fn_kwargs={"tokenizer": tokenizer, "segment_tokens": segment_tokens, "frequent": frozenset(frequent),
                   "min_tokens": min_tokens},
        desc="token_document_relation",
    )
    if arrow:
        examples = examples.with_format(None)
    if len(examples) == 0:
        raise EmptyTaskError(f"task token_document_relation needs documents with >= 2 segments of <= "
                         f"{segment_tokens} tokens (documents longer than {segment_tokens} tokens); found 0 in "
                         f"{len(documents)} documents")
    return examples
