"""Sentence-reordering examples (ERNIE 2.0): a paragraph cut into n segments and shuffled; the label names the
permutation.

Each paragraph (a greedy chunk of its consecutive sentences when it is longer than the token budget) gives one
example. n is drawn uniformly from 1..m (``max_segments``); the cut points are n - 1 random sentence boundaries
when the chunk has >= n sentences, else n - 1 random word boundaries (every segment non-empty). A chunk with
fewer than n words is cut at every word boundary (n becomes its word count; with the default 6-word paragraph
minimum this only happens to short sentences of long, chunked paragraphs).

Input: ``[CLS] s_perm[0] [SEP] s_perm[1] [SEP] ... [SEP]`` where ``perm[i]`` is the original index of the segment
at input position i, drawn uniformly from all n! orders (the identity included). ``segment_ids`` are all 0:
anything else would have to be a function of the shuffled position only, and zeros say that most plainly.
The label is ``offset(n) + rank(perm)`` with ``offset(n) = 1! + ... + (n-1)!`` and ``rank`` the lexicographic
(Lehmer) rank, so all permutations of 1..m segments share one label space of ``1! + ... + m!`` classes (9 for
m = 3). n itself is readable from the number of [SEP]s by design; the task is the order within n.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from math import factorial

from datasets import Dataset
from tokenizers import Tokenizer

from data_builders.segments import Sentence, document_sentences, pack_sentences

MAX_SEGMENTS = 5
"""Largest supported m: 1! + ... + 5! = 153 classes; 6 would already give 873."""


def num_reordering_classes(m: int) -> int:
    """Number of labels for up to ``m`` segments: 1! + 2! + ... + m!."""
    if m < 1:
        raise ValueError(f"max_segments must be >= 1, got {m}")
    return sum(factorial(j) for j in range(1, m + 1))


def _offset(n: int) -> int:
    return sum(factorial(j) for j in range(1, n))


def permutation_to_label(perm: Sequence[int]) -> int:
    """A permutation of ``range(n)`` -> its label ``offset(n) + Lehmer rank`` (identity of n = offset(n))."""
    n = len(perm)
    if n < 1 or sorted(perm) != list(range(n)):
        raise ValueError(f"not a permutation of range(n): {tuple(perm)}")
    rank = 0
    for i, value in enumerate(perm):
        smaller_later = sum(1 for later in perm[i + 1 :] if later < value)
        rank += smaller_later * factorial(n - 1 - i)
    return _offset(n) + rank


def label_to_permutation(label: int) -> tuple[int, ...]:
    """Inverse of :func:`permutation_to_label`."""
    if label < 0:
        raise ValueError(f"labels are >= 0, got {label}")
    n = 1
    while label >= _offset(n + 1):
        n += 1
    rank = label - _offset(n)
    remaining = list(range(n))
    perm = []
    for i in range(n):
        index, rank = divmod(rank, factorial(n - 1 - i))
        perm.append(remaining.pop(index))
    return tuple(perm)


def reordering_example(segments: Sequence[Sequence[int]], perm: Sequence[int], cls_id: int,
                       sep_id: int) -> tuple[list[int], list[int], int]:
    """Segments in original order + a permutation -> (input_ids, segment_ids, label); input position i holds
    ``segments[perm[i]]``. segment_ids depend only on the length, never on ``perm``."""
    if len(segments) != len(perm):
        raise ValueError(f"{len(segments)} segments but a permutation of {len(perm)}")
    input_ids = [cls_id]
    for original in perm:
        input_ids.extend(segments[original])
        input_ids.append(sep_id)
    return input_ids, [0] * len(input_ids), permutation_to_label(perm)


def _word_starts(sentence: Sentence) -> list[int]:
    """Token offsets (> 0) where a new word begins."""
    return [start for start, _ in sentence.word_spans[1:]]


def cut_segments(chunk: Sequence[Sentence], n: int, rng: random.Random) -> tuple[list[list[int]], bool]:
    """Cut the concatenated sentences of ``chunk`` into (at most) ``n`` non-empty segments.

    Returns (segments in original order, whether the cuts are at sentence boundaries). With fewer than n
    sentences the cuts fall on word boundaries; with fewer than n words every word boundary is cut.
    """
    ids: list[int] = []
    sentence_starts: list[int] = []
    for sentence in chunk:
        if ids:
            sentence_starts.append(len(ids))
        ids.extend(sentence.ids)
    at_sentences = len(chunk) >= n
    if at_sentences:
        cuts = sorted(rng.sample(sentence_starts, n - 1))
    else:
        boundaries, offset = [], 0
        for sentence in chunk:
            if offset:
                boundaries.append(offset)
            boundaries.extend(offset + start for start in _word_starts(sentence))
            offset += len(sentence.ids)
        cuts = sorted(rng.sample(boundaries, n - 1)) if len(boundaries) >= n - 1 else boundaries
    edges = [0, *cuts, len(ids)]
    return [ids[a:b] for a, b in zip(edges, edges[1:], strict=False)], at_sentences


def _truncate(sentence: Sentence, budget: int) -> Sentence:
    """Cut an over-long sentence to ``budget`` tokens, at a word boundary when there is one."""
    if len(sentence.ids) <= budget:
        return sentence
    starts = [s for s in _word_starts(sentence) if s <= budget]
    cut = starts[-1] if starts else budget
    spans = [(a, min(b, cut)) for a, b in sentence.word_spans if a < cut]
    return Sentence(sentence.ids[:cut], spans, sentence.words[: len(spans)])


def sentence_reordering_batch(batch: dict[str, list], *, tokenizer: Tokenizer, max_seq_len: int,
                              max_segments: int, seed: int) -> dict[str, list]:
    """``datasets.map`` function: a batch of documents -> a batch of reordering examples."""
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    # [CLS] + up to max_segments [SEP]s: every chunk fits whatever n it draws.
    budget = max_seq_len - 1 - max_segments
    out: dict[str, list] = {"input_ids": [], "segment_ids": [], "label": [], "num_segments": [],
                            "sentence_cuts": [], "doc_id": []}
    for index, (doc_id, paragraphs) in enumerate(zip(batch["id"], batch["sentences"], strict=True)):
        rng = random.Random(f"{seed}:sentence_reordering:{doc_id}")
        flat = iter(document_sentences(batch, index, tokenizer))
        for paragraph in paragraphs:
            sentences = [e for e in (next(flat) for _ in paragraph) if e.ids]
            for start, end in pack_sentences([len(e.ids) for e in sentences], budget):
                chunk = [_truncate(e, budget) for e in sentences[start:end]]
                n = rng.randint(1, max_segments)
                segments, at_sentences = cut_segments(chunk, n, rng)
                perm = list(range(len(segments)))
                rng.shuffle(perm)
                input_ids, segment_ids, label = reordering_example(segments, perm, cls_id, sep_id)
                out["input_ids"].append(input_ids)
                out["segment_ids"].append(segment_ids)
                out["label"].append(label)
                out["num_segments"].append(len(segments))
                out["sentence_cuts"].append(at_sentences)
                out["doc_id"].append(doc_id)
    return out


def build_sentence_reordering(documents: Dataset, tokenizer: Tokenizer, *, max_seq_len: int,
                              max_segments: int = 3, seed: int = 0, num_proc: int = 1) -> Dataset:
    """Documents -> sentence-reordering examples (columns ``input_ids``, ``segment_ids``, ``label``,
    ``num_segments``, ``sentence_cuts``, ``doc_id``; see the module docstring)."""
    if not 1 <= max_segments <= MAX_SEGMENTS:
        raise ValueError(f"max_segments must be in 1..{MAX_SEGMENTS}, got {max_segments}")
    if max_seq_len - 1 - max_segments < 1:
        raise ValueError(f"max_seq_len {max_seq_len} leaves no room for text with {max_segments} segments")
    examples = documents.map(
        sentence_reordering_batch,
        batched=True,
        batch_size=64,
        remove_columns=documents.column_names,
        num_proc=num_proc if num_proc > 1 else None,
        fn_kwargs={"tokenizer": tokenizer, "max_seq_len": max_seq_len, "max_segments": max_segments,
                   "seed": seed},
        desc="sentence_reordering",
    )
    if len(examples) == 0:
        raise ValueError(f"task sentence_reordering needs paragraphs with at least one token; found 0 in "
                         f"{len(documents)} documents")
    return examples
