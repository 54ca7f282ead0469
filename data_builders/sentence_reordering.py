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

import itertools
import random
from collections.abc import Sequence
from math import factorial

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from datasets import Dataset
from tokenizers import Tokenizer

from data_builders.errors import EmptyTaskError
from data_builders.segments import (
    INPUT_IDS_TYPE,
    Sentence,
    batch_rows,
    document_token_lists,
    flat_tokens,
    map_fingerprint,
    pack_sentences,
    token_columns,
)

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


def _cut_token_lists(chunk: Sequence[tuple[list[int], list[int]]], n: int, rng: random.Random
                     ) -> tuple[list[list[int]], bool]:
    """:func:`cut_segments` over (token ids, word starts) pairs instead of ``Sentence`` objects: the same
    cuts, drawn with the same calls on ``rng``."""
    ids: list[int] = []
    sentence_starts: list[int] = []
    for sentence_ids, _ in chunk:
        if ids:
            sentence_starts.append(len(ids))
        ids.extend(sentence_ids)
    at_sentences = len(chunk) >= n
    if at_sentences:
        cuts = sorted(rng.sample(sentence_starts, n - 1))
    else:
        boundaries: list[int] = []
        offset = 0
        for sentence_ids, starts in chunk:
            if offset:
                boundaries.append(offset)
            boundaries.extend([offset + start for start in starts[1:]] if offset else starts[1:])
            offset += len(sentence_ids)
        cuts = sorted(rng.sample(boundaries, n - 1)) if len(boundaries) >= n - 1 else boundaries
    edges = [0, *cuts, len(ids)]
    return [ids[a:b] for a, b in zip(edges, edges[1:], strict=False)], at_sentences


def _truncate_token_lists(ids: list[int], starts: list[int], budget: int) -> tuple[list[int], list[int]]:
    """:func:`_truncate` over token ids and word starts."""
    if len(ids) <= budget:
        return ids, starts
    inner = [s for s in starts[1:] if s <= budget]
    cut = inner[-1] if inner else budget
    return ids[:cut], [a for a in starts if a < cut]


def sentence_reordering_batch(batch: dict[str, list], *, tokenizer: Tokenizer, max_seq_len: int,
                              max_segments: int, seed: int) -> dict[str, list]:
    """``datasets.map`` function: a batch of documents -> a batch of reordering examples."""
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    # [CLS] + up to max_segments [SEP]s: every chunk fits whatever n it draws.
    budget = max_seq_len - 1 - max_segments
    out: dict[str, list] = {"input_ids": [], "segment_ids": [], "label": [], "num_segments": [],
                            "sentence_cuts": [], "doc_id": []}
    labels: dict[tuple[int, ...], int] = {}  # permutation -> label
    for index, (doc_id, paragraphs) in enumerate(zip(batch["id"], batch["sentences"], strict=True)):
        rng = random.Random(f"{seed}:sentence_reordering:{doc_id}")
        ids_per_sentence, starts_per_sentence, _, _ = document_token_lists(batch, index, tokenizer)
        position = 0
        for paragraph in paragraphs:
            sentences = [(ids_per_sentence[k], starts_per_sentence[k])
                         for k in range(position, position + len(paragraph)) if ids_per_sentence[k]]
            position += len(paragraph)
            for start, end in pack_sentences([len(ids) for ids, _ in sentences], budget):
                chunk = [_truncate_token_lists(ids, starts, budget) for ids, starts in sentences[start:end]]
                n = rng.randint(1, max_segments)
                segments, at_sentences = _cut_token_lists(chunk, n, rng)
                perm = list(range(len(segments)))
                rng.shuffle(perm)
                input_ids = [cls_id]
                for original in perm:
                    input_ids.extend(segments[original])
                    input_ids.append(sep_id)
                key = tuple(perm)
                label = labels[key] if key in labels else labels.setdefault(key, permutation_to_label(perm))
                out["input_ids"].append(input_ids)
                out["segment_ids"].append([0] * len(input_ids))
                out["label"].append(label)
                out["num_segments"].append(len(segments))
                out["sentence_cuts"].append(at_sentences)
                out["doc_id"].append(doc_id)
        if position != len(ids_per_sentence):
            raise ValueError(f"document {doc_id}: {len(ids_per_sentence)} tokenized sentences for {position}")
    return out


def sentence_reordering_table(batch: pa.Table, *, tokenizer: Tokenizer, max_seq_len: int, max_segments: int,
                              seed: int) -> pa.Table:
    """:func:`sentence_reordering_batch` on an Arrow batch carrying the shared tokenization pass: the same
    examples, drawn with the same calls on the same per-document generators. A chunk's tokens are one
    contiguous run of the batch's flattened tokens (its sentences are consecutive, and only a sentence alone
    in its chunk is truncated, at its end), so an example is a list of (start, length) pieces of that run,
    gathered with numpy."""
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    budget = max_seq_len - 1 - max_segments
    flat = flat_tokens(batch, words=False)
    n_tokens = len(flat.tokens)
    cls_at, sep_at = n_tokens, n_tokens + 1  # [CLS] and [SEP] appended to the tokens
    sentence_lengths = np.diff(flat.sentence_tokens).tolist()
    token_offsets = flat.sentence_tokens.tolist()
    sentence_words = flat.sentence_words.tolist()
    word_starts = flat.word_starts
    doc_sentences = flat.doc_sentences.tolist()
    paragraphs_column = batch.column("sentences").combine_chunks()
    paragraph_counts = pc.list_value_length(paragraphs_column).to_numpy(zero_copy_only=False).tolist()
    paragraph_sizes = pc.list_value_length(paragraphs_column.flatten()).to_numpy(zero_copy_only=False).tolist()
    doc_ids = batch.column("id").to_pylist()
    piece_starts: list[int] = []
    piece_lengths: list[int] = []
    example_lengths: list[int] = []
    labels: list[int] = []
    num_segments: list[int] = []
    sentence_cuts: list[bool] = []
    out_ids: list[str] = []
    label_of: dict[tuple[int, ...], int] = {}
    paragraph = 0
    for index, doc_id in enumerate(doc_ids):
        rng = random.Random(f"{seed}:sentence_reordering:{doc_id}")
        position = doc_sentences[index]
        for _ in range(paragraph_counts[index]):
            size = paragraph_sizes[paragraph]
            paragraph += 1
            sentences = [k for k in range(position, position + size) if sentence_lengths[k]]
            position += size
            for start, end in pack_sentences([sentence_lengths[k] for k in sentences], budget):
                chunk = sentences[start:end]
                first = token_offsets[chunk[0]]
                if len(chunk) == 1 and sentence_lengths[chunk[0]] > budget:  # _truncate
                    k = chunk[0]
                    starts = word_starts[sentence_words[k] + 1 : sentence_words[k + 1]].tolist()
                    inner = [w for w in starts if w <= budget]
                    cut = inner[-1] if inner else budget
                    lengths, starts = [cut], [w for w in starts if w < cut]
                    chunk_starts = [starts]
                else:
                    lengths = [sentence_lengths[k] for k in chunk]
                    chunk_starts = None
                n = rng.randint(1, max_segments)
                total = sum(lengths)
                at_sentences = len(chunk) >= n
                if at_sentences:
                    sentence_starts = list(itertools.accumulate(lengths[:-1]))
                    cuts = sorted(rng.sample(sentence_starts, n - 1))
                else:
                    if chunk_starts is None:
                        chunk_starts = [word_starts[sentence_words[k] + 1 : sentence_words[k + 1]].tolist()
                                        for k in chunk]
                    boundaries: list[int] = []
                    offset = 0
                    for length, starts in zip(lengths, chunk_starts, strict=True):
                        if offset:
                            boundaries.append(offset)
                            boundaries.extend([offset + w for w in starts])
                        else:
                            boundaries.extend(starts)
                        offset += length
                    cuts = sorted(rng.sample(boundaries, n - 1)) if len(boundaries) >= n - 1 else boundaries
                edges = [0, *cuts, total]
                count = len(edges) - 1
                perm = list(range(count))
                rng.shuffle(perm)
                piece_starts.append(cls_at)
                piece_lengths.append(1)
                for original in perm:
                    piece_starts.append(first + edges[original])
                    piece_lengths.append(edges[original + 1] - edges[original])
                    piece_starts.append(sep_at)
                    piece_lengths.append(1)
                example_lengths.append(total + count + 1)
                key = tuple(perm)
                labels.append(label_of[key] if key in label_of else label_of.setdefault(key, permutation_to_label(perm)))
                num_segments.append(count)
                sentence_cuts.append(at_sentences)
                out_ids.append(doc_id)
    tokens = np.concatenate([flat.tokens, np.array([cls_id, sep_id], dtype=np.int64)])
    starts_np = np.array(piece_starts, dtype=np.int64)
    lengths_np = np.array(piece_lengths, dtype=np.int64)
    piece_offsets = np.zeros(len(starts_np) + 1, dtype=np.int64)
    np.cumsum(lengths_np, out=piece_offsets[1:])
    source = np.repeat(starts_np - piece_offsets[:-1], lengths_np) + np.arange(int(piece_offsets[-1]), dtype=np.int64)
    offsets = np.zeros(len(example_lengths) + 1, dtype=np.int64)
    np.cumsum(np.array(example_lengths, dtype=np.int64), out=offsets[1:])
    list_offsets = pa.array(offsets.astype(np.int32))
    return pa.table({
        "input_ids": pa.ListArray.from_arrays(list_offsets, pa.array(tokens[source]).cast(INPUT_IDS_TYPE)),
        "segment_ids": pa.ListArray.from_arrays(list_offsets, pa.array(np.zeros(int(offsets[-1]), dtype=np.int64))),
        "label": pa.array(labels, type=pa.int64()),
        "num_segments": pa.array(num_segments, type=pa.int64()),
        "sentence_cuts": pa.array(sentence_cuts, type=pa.bool_()),
        "doc_id": pa.array(out_ids, type=pa.string())})


def build_sentence_reordering(documents: Dataset, tokenizer: Tokenizer, *, max_seq_len: int,
                              max_segments: int = 3, seed: int = 0, num_proc: int = 1) -> Dataset:
    """Documents -> sentence-reordering examples (columns ``input_ids``, ``segment_ids``, ``label``,
    ``num_segments``, ``sentence_cuts``, ``doc_id``; see the module docstring)."""
    if not 1 <= max_segments <= MAX_SEGMENTS:
        raise ValueError(f"max_segments must be in 1..{MAX_SEGMENTS}, got {max_segments}")
    if max_seq_len - 1 - max_segments < 1:
        raise ValueError(f"max_seq_len {max_seq_len} leaves no room for text with {max_segments} segments")
    # the paragraphs' sentences only for their number; tokens from the shared pass (words and text unread)
    columns = token_columns(documents, words=False, tags=False, extra=("sentences",))
    arrow = "sentence_ids" in columns.column_names  # the shared pass: numpy over Arrow batches
    examples = (columns.with_format("arrow") if arrow else columns).map(
        sentence_reordering_table if arrow else sentence_reordering_batch,
        batched=True,
        new_fingerprint=map_fingerprint(),
        batch_size=batch_rows(columns),
        remove_columns=columns.column_names,
        num_proc=num_proc if num_proc > 1 else None,
        fn_kwargs={"tokenizer": tokenizer, "max_seq_len": max_seq_len, "max_segments": max_segments,
                   "seed": seed},
        desc="sentence_reordering",
    )
    if arrow:
        examples = examples.with_format(None)
    if len(examples) == 0:
        raise EmptyTaskError(f"task sentence_reordering needs paragraphs with at least one token; found 0 in "
                         f"{len(documents)} documents")
    return examples
