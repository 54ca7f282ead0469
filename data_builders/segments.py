"""Sentence tokenization with word boundaries, and packing sentences into fixed-budget segments.

Shared by the task builders: every builder works on the tokenizer's ids, but many decisions (whole-word units,
capitalization, phrases) are about words, so each sentence keeps the token span and cased surface form of each
of its words (BERT pre-tokens), recovered from the tokenizer's offsets into the original text.
"""

from __future__ import annotations

from dataclasses import dataclass

from datasets import Dataset
from tokenizers import Tokenizer


@dataclass
class Sentence:
    ids: list[int]
    word_spans: list[tuple[int, int]]
    """[start, end) token span of each word."""
    words: list[str]
    """Each word as written in the original (cased) text."""


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


SENTENCE_TOKEN_COLUMNS = ("sentence_ids", "sentence_word_starts", "sentence_words")
"""Columns the shared tokenization pass adds to documents: per document, per sentence (paragraphs flattened),
the token ids, the first token of each word, and each word's cased surface form."""


def sentence_tokens_batch(batch: dict[str, list], *, tokenizer: Tokenizer) -> dict[str, list]:
    """``datasets.map`` function of the shared tokenization pass (see ``add_sentence_tokens``)."""
    out: dict[str, list] = {column: [] for column in SENTENCE_TOKEN_COLUMNS}
    for paragraphs in batch["sentences"]:
        sentences = tokenize_sentences(tokenizer, [s for p in paragraphs for s in p])
        out["sentence_ids"].append([s.ids for s in sentences])
        out["sentence_word_starts"].append([[start for start, _ in s.word_spans] for s in sentences])
        out["sentence_words"].append([s.words for s in sentences])
    return out


def add_sentence_tokens(documents: Dataset, tokenizer: Tokenizer, num_proc: int = 1) -> Dataset:
    """The shared tokenization pass: ``documents`` plus ``SENTENCE_TOKEN_COLUMNS``. Builders that go through
    ``document_sentences`` then read tokens instead of tokenizing the corpus once each."""
    return documents.map(
        sentence_tokens_batch,
        batched=True,
        batch_size=64,
        num_proc=num_proc if num_proc > 1 else None,
        fn_kwargs={"tokenizer": tokenizer},
        desc="tokenize sentences",
    )


def document_sentences(batch: dict[str, list], index: int, tokenizer: Tokenizer) -> list[Sentence]:
    """The sentences of document ``index`` of a ``datasets.map`` batch, paragraphs flattened: read from the
    shared tokenization pass's columns when the documents carry them (they must come from ``tokenizer``),
    tokenized here otherwise."""
    if "sentence_ids" not in batch:
        return tokenize_sentences(tokenizer, [s for p in batch["sentences"][index] for s in p])
    out = []
    for ids, starts, words in zip(batch["sentence_ids"][index], batch["sentence_word_starts"][index],
                                  batch["sentence_words"][index], strict=True):
        out.append(Sentence(ids, list(zip(starts, [*starts[1:], len(ids)], strict=True)), words))
    return out


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
