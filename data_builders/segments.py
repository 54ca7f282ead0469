"""Sentence tokenization with word boundaries, and packing sentences into fixed-budget segments.

Shared by the task builders: every builder works on the tokenizer's ids, but many decisions (whole-word units,
capitalization, phrases) are about words, so each sentence keeps the token span and cased surface form of each
of its words, recovered from the tokenizer's offsets into the original text. An English word is a BERT
pre-token; a Chinese word (documents whose ``language`` is ``zh``) is a jieba word, with its POS tag: jieba runs
here, once per corpus in the shared tokenization pass, and every builder reads its words from there.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass

from datasets import Dataset
from tokenizers import Tokenizer

from data_builders.language import segment


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


def tokenize_chinese_sentences(tokenizer: Tokenizer, sentences: list[str]) -> list[Sentence]:
    """Tokenize Chinese sentences without special tokens; words are jieba's (:func:`data_builders.language.
    segment`), each with its POS tag.

    A token belongs to the jieba word its first character lies in. Whitespace words have no token and are
    dropped; a word whose characters the normalizer drops entirely has no token either and is dropped with
    them. When a token runs past the end of its word (jieba splitting inside one WordPiece token: "×30" in
    a plain BERT vocabulary; the Chinese tokenizer we train isolates symbols so that it does not happen), the
    words it touches become one word, tagged ``x``, so word spans still partition the tokens."""
    out = []
    for text, enc in zip(sentences, tokenizer.encode_batch(sentences, add_special_tokens=False), strict=True):
        starts, ends, words, tags = [], [], [], []
        position = 0
        for word, tag in segment(text):
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
        out.append(Sentence(enc.ids, spans, sentence_words, sentence_tags))
    return out


def tokenize_document_sentences(tokenizer: Tokenizer, sentences: list[str], language: str) -> list[Sentence]:
    """:func:`tokenize_chinese_sentences` for a Chinese document, else :func:`tokenize_sentences`."""
    if language == "zh":
        return tokenize_chinese_sentences(tokenizer, sentences)
    return tokenize_sentences(tokenizer, sentences)


SENTENCE_TOKEN_COLUMNS = ("sentence_ids", "sentence_word_starts", "sentence_words", "sentence_word_tags")
"""Columns the shared tokenization pass adds to documents: per document, per sentence (paragraphs flattened),
the token ids, the first token of each word, each word's cased surface form, and each word's jieba POS tag
(Chinese documents; an empty list per sentence of an English document)."""


def _languages(batch: dict[str, list]) -> list[str]:
    # Documents built before languages existed carry no language column: they are English.
    return batch["language"] if "language" in batch else ["en"] * len(batch["sentences"])


def sentence_tokens_batch(batch: dict[str, list], *, tokenizer: Tokenizer) -> dict[str, list]:
    """``datasets.map`` function of the shared tokenization pass (see ``add_sentence_tokens``)."""
    out: dict[str, list] = {column: [] for column in SENTENCE_TOKEN_COLUMNS}
    for paragraphs, language in zip(batch["sentences"], _languages(batch), strict=True):
        sentences = tokenize_document_sentences(tokenizer, [s for p in paragraphs for s in p], language)
        out["sentence_ids"].append([s.ids for s in sentences])
        out["sentence_word_starts"].append([[start for start, _ in s.word_spans] for s in sentences])
        out["sentence_words"].append([s.words for s in sentences])
        out["sentence_word_tags"].append([s.tags or [] for s in sentences])
    return out


def add_sentence_tokens(documents: Dataset, tokenizer: Tokenizer, num_proc: int = 1) -> Dataset:
    """The shared tokenization pass: ``documents`` plus ``SENTENCE_TOKEN_COLUMNS``. Builders that go through
    ``document_sentences`` then read tokens (and Chinese words) instead of computing them once each."""
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
