"""Sentence tokenization with word boundaries, and packing sentences into fixed-budget segments.

Shared by the task builders: every builder works on the tokenizer's ids, but many decisions (whole-word units,
capitalization, phrases) are about words, so each sentence keeps the token span and cased surface form of each
of its words (BERT pre-tokens), recovered from the tokenizer's offsets into the original text.
"""

from __future__ import annotations

from dataclasses import dataclass

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
