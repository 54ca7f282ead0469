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
        spans: list[tuple[int, int]] = []
        words: list[str] = []
        previous = None
        for i, (word_id, (char_start, char_end)) in enumerate(zip(enc.word_ids, enc.offsets, strict=True)):
            if word_id != previous:
                spans.append((i, i + 1))
                words.append(text[char_start:char_end])
                previous = word_id
            else:
                start, _ = spans[-1]
                spans[-1] = (start, i + 1)
                words[-1] = text[enc.offsets[start][0] : char_end]
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
