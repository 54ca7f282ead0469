"""IR-relevance examples (ERNIE 2.0): a query and a passage, labelled strong / weak / irrelevant.

ERNIE 2.0 used search logs (query, clicked title = strong, shown but not clicked = weak, random = irrelevant).
Without logs, the corpus stands in:

- **query**: the document's title; for a document without a title, a title-like pseudo-query of its top
  ``pseudo_query_terms`` TF-IDF terms (bm25s's word tokenization with English stopwords removed, document
  frequencies over the documents being built), in order of first occurrence in the document. Terms rather
  than the first words of the first sentence, because for a one-paragraph document the strong passage *is*
  that first sentence and the query would be a verbatim prefix of it.
- **passages**: the paragraphs of the documents being built other than each document's first one (a
  Wikipedia article's first paragraph opens with the title verbatim: "X is a ..."; keeping those paragraphs
  out of *every* class means neither the title echo nor the "X is a" shape tells a class), cut to their first
  ``passage_words`` words; a one-paragraph document's only paragraph is its passage (so for those documents
  the strong passage opens with the title). Paragraphs shorter than ``min_passage_words`` words are not
  passages (headings and list debris would make length a cue).
- **0 strong**: a passage of the query's own document, drawn among those sharing a query term with it when
  there are any (what a click on a result implies), else among all of them.
- **1 weak**: a passage of ANOTHER document that BM25 (``bm25s``, index over the passages of the query's
  block) ranks among the ``weak_top_k`` best other-document hits for the query with a positive score:
  retrieved, "shown but not clicked". The index is built once per block and all its queries are scored in
  one pass (:func:`retrieve`); the per-document choices that follow are cheap, and tokenization is a batched
  ``datasets.map``.
- **2 irrelevant**: a uniformly random passage of another document of the block.

Blocks: the documents being built (a split, or a shard's split) are cut into ``ceil(n / block_documents)``
nearly equal runs of consecutive documents, and everything above (passages, BM25 index and IDF, pseudo-query
document frequencies) is per block, so memory is bounded by the block, not the corpus. A corpus of at most
``block_documents`` documents is one block: the examples are those of one whole-corpus index.

One example of each label per document, so the classes are balanced; documents without passages, or whose
query retrieves no other-document passage with a positive score, contribute none. Each example is
``[CLS] query [SEP] passage [SEP]`` (segment ids 0/1; query cut to ``max_query_tokens``, passage cut to fit
``max_seq_len``) with ``doc_id`` (the query's document) and ``passage_doc_id`` (the passage's) for tests.

Chinese documents (``language`` ``zh``) count and cut passages in jieba words (from the shared tokenization
pass, so their leading article numbers are already gone), and BM25 indexes jieba words (punctuation, numbers
and Chinese stopwords removed) instead of bm25s's whitespace-and-regex words, which would make a whole
Chinese clause one term.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import random
import re
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import bm25s
import numpy as np
from datasets import Dataset, concatenate_datasets
from tokenizers import Tokenizer

from data_builders.errors import EmptyTaskError
from data_builders.language import CHINESE_STOPWORDS, segment
from data_builders.segments import map_fingerprint
from data_builders.tokenizer import encode_space_joined

log = logging.getLogger(__name__)

STRONG, WEAK, IRRELEVANT = range(3)
LABELS = ("strong", "weak", "irrelevant")


@dataclass
class Passages:
    """All passages of a documents dataset, stored document by document."""

    texts: list[str]
    doc_index: list[int]
    """Index (row in the documents dataset) of each passage's document."""
    starts: list[int]
    """Passages of document ``d`` are ``texts[starts[d] : starts[d + 1]]`` (``len(starts) = docs + 1``)."""
    terms: list[list[str] | None] | None = None
    """BM25 terms of each Chinese passage (its jieba words through :func:`chinese_terms`; None for English
    passages, which bm25s tokenizes); None when no passage is Chinese."""


def collect_passages(paragraphs: list[list[str]], passage_words: int, min_passage_words: int,
                     chinese_words: list[list[list[str]] | None] | None = None) -> Passages:
    """Passages per document (see the module docstring): non-first paragraphs, cut to ``passage_words``.
    ``chinese_words[d]``: the jieba words of each paragraph of a Chinese document ``d`` (None for English
    ones), which then count and cut its passages instead of whitespace words."""
    texts, doc_index, starts = [], [], [0]
    terms: list[list[str] | None] = []
    for d, doc in enumerate(paragraphs):
        zh = chinese_words[d] if chinese_words is not None else None
        if zh is not None:
            for words in (zh[1:] if len(zh) > 1 else zh):
                if len(words) >= min_passage_words:
                    texts.append(join_words(words[:passage_words]))
                    terms.append(chinese_terms(words[:passage_words]))
                    doc_index.append(d)
            starts.append(len(texts))
            continue
        for paragraph in (doc[1:] if len(doc) > 1 else doc):
            words = paragraph.split()
            if len(words) >= min_passage_words:
                texts.append(" ".join(words[:passage_words]))
                terms.append(None)
                doc_index.append(d)
        starts.append(len(texts))
    return Passages(texts, doc_index, starts, terms if chinese_words is not None else None)


def join_words(words: list[str]) -> str:
    """Jieba words back to text: no space between words, except between two Latin/digit words."""
    out: list[str] = []
    for word in words:
        if out and out[-1][-1:].isascii() and out[-1][-1:].isalnum() and word[:1].isascii() and word[:1].isalnum():
            out.append(" ")
        out.append(word)
    return "".join(out)


_LATIN_TERM = re.compile(r"(?u)\b\w\w+\b")


def chinese_terms(text: str | list[str]) -> list[str]:
    """BM25 terms of a Chinese text (segmented here) or of its jieba words: lowercased, without punctuation,
    numbers and :data:`~data_builders.language.CHINESE_STOPWORDS` (a Latin run inside is one jieba word, kept
    when it has two or more letters, as bm25s keeps English words)."""
    words = [w for w, _ in segment(text)] if isinstance(text, str) else text
    return [term for term in map(_chinese_term, words) if term is not None]


@functools.lru_cache(maxsize=1 << 18)
def _chinese_term(word: str) -> str | None:
    """One jieba word's BM25 term, or None when it is not one (see :func:`chinese_terms`); words repeat, so
    each distinct word is looked at once."""
    word = word.strip().lower()
    if not word or word in CHINESE_STOPWORDS or not any(c.isalpha() for c in word):
        return None
    if word.isascii() and not _LATIN_TERM.fullmatch(word):
        return None
    return word


def _terms(texts: list[str], chinese: list[bool], known: list[list[str] | None] | None = None) -> list[list[str]]:
    """BM25 terms of each text: bm25s's English tokenization, or :func:`chinese_terms` where ``chinese``
    (``known[i]`` when given: terms already taken from the shared pass's jieba words)."""
    english = [t for t, zh in zip(texts, chinese, strict=True) if not zh]
    english_terms = iter(bm25s.tokenize(english, stopwords="en", return_ids=False, show_progress=False)
                         if english else [])
    out = []
    for i, (text, zh) in enumerate(zip(texts, chinese, strict=True)):
        if not zh:
            out.append(list(next(english_terms)))
        else:
            out.append(known[i] if known is not None and known[i] is not None else chinese_terms(text))
    return out


def pseudo_queries(paragraphs: list[list[str]], wanted: list[int], terms: int,
                   chinese: list[bool] | None = None,
                   chinese_words: list[list[list[str]] | None] | None = None) -> dict[int, str]:
    """Top-``terms`` TF-IDF words of each wanted document, in order of first occurrence (document
    frequencies over all documents given). Chinese documents (``chinese[d]``) count jieba words (those of
    ``chinese_words[d]``, the shared pass's, when given: not segmented again), and their query joins the
    words without spaces."""
    if chinese is None or not any(chinese):
        tokens = bm25s.tokenize([" ".join(doc) for doc in paragraphs], stopwords="en", return_ids=False,
                                show_progress=False)
    else:
        known = None if chinese_words is None else [
            None if words is None else chinese_terms([w for paragraph in words for w in paragraph])
            for words in chinese_words]
        tokens = _terms(["".join(doc) if zh else " ".join(doc) for doc, zh in zip(paragraphs, chinese, strict=True)],
                        chinese, known)
    df = Counter(t for doc in tokens for t in set(doc))
    n_docs = len(paragraphs)
    queries = {}
    for d in wanted:
        tf = Counter(tokens[d])
        first = {}
        for position, token in enumerate(tokens[d]):
            first.setdefault(token, position)
        # Ties (common in short documents) go to the earlier word, so the choice is stable.
        best = sorted(tf, key=lambda t: (-tf[t] * math.log(n_docs / df[t] + 1), first[t]))[:terms]
        queries[d] = ("" if chinese is not None and chinese[d] else " ").join(sorted(best, key=first.__getitem__))
    return queries


@dataclass
class Retrieval:
    hits: list[np.ndarray]
    """Per query: passage indices with a positive BM25 score, best first (ties: lower index first)."""
    scores: list[np.ndarray]
    """Per query: their BM25 scores."""
    seconds: float
    """Indexing + retrieval wall time."""


def retrieve(passages: list[str], queries: list[str], k: int, keep: list[tuple[int, int]],
             chinese_passages: list[bool] | None = None, chinese_queries: list[bool] | None = None,
             passage_terms: list[list[str] | None] | None = None) -> Retrieval:
    """Index all passages with BM25 (bm25s, English stopwords, default Lucene variant) once, then score
    every query against all passages; per query, keep its best ``k`` hits plus every hit in its own
    ``keep[q] = (start, end)`` passage range.

    Scores come from bm25s (``BM25.get_scores_from_ids``); only the ranking is ours: ``BM25.retrieve`` selects
    the top k with ``np.argpartition`` over all passages, which numpy 2.x makes ~30x slower when most
    scores are 0, as they are for short title queries (11 ms instead of 0.3 ms per query over 34k
    passages: 80 s instead of 3 s on the full sample), so we rank the positive scores only.
    """
    started = time.perf_counter()
    retriever = bm25s.BM25()
    if chinese_passages is not None and any(chinese_passages):
        # Chinese text has no spaces: its terms are jieba words (the English ones still bm25s's).
        retriever.index(_terms(passages, chinese_passages, passage_terms), show_progress=False)
        query_tokens = _terms(queries, chinese_queries or [False] * len(queries))
    else:
        retriever.index(bm25s.tokenize(passages, stopwords="en", show_progress=False), show_progress=False)
        query_tokens = bm25s.tokenize(queries, stopwords="en", return_ids=False, show_progress=False)
    vocab = retriever.vocab_dict
    hits, scores = [], []
    for tokens, (start, end) in zip(query_tokens, keep, strict=True):
        ids = [vocab[t] for t in tokens if t in vocab]
        if not ids:
            hits.append(np.zeros(0, dtype=np.int64))
            scores.append(np.zeros(0, dtype=np.float32))
            continue
        all_scores = retriever.get_scores_from_ids(ids)
        positive = np.flatnonzero(all_scores > 0)
        order = positive[np.argsort(-all_scores[positive], kind="stable")]
        own = (order >= start) & (order < end)
        order = np.concatenate([order[own], order[~own][:k]])
        hits.append(order)
        scores.append(all_scores[order])
    return Retrieval(hits, scores, time.perf_counter() - started)


def select_examples(titles: list[str], doc_ids: list[str], paragraphs: list[list[str]], *, seed: int,
                    weak_top_k: int, passage_words: int, min_passage_words: int,
                    pseudo_query_terms: int, chinese_words: list[list[list[str]] | None] | None = None
                    ) -> tuple[dict[str, list], dict[str, float]]:
    """The whole-corpus step: queries, passages, BM25 and the (query, passage, label) choice per document.
    Returns the rows (text, not yet tokenized) and statistics (seconds, skipped documents).
    ``chinese_words``: see :func:`collect_passages`."""
    passages = collect_passages(paragraphs, passage_words, min_passage_words, chinese_words)
    chinese = [w is not None for w in chinese_words] if chinese_words is not None else [False] * len(doc_ids)
    with_passages = [d for d in range(len(doc_ids)) if passages.starts[d + 1] > passages.starts[d]]
    if len(with_passages) < 2:
        raise EmptyTaskError(f"task ir_relevance needs >= 2 documents with passages (paragraphs of >= "
                         f"{min_passage_words} words) to draw weak and irrelevant passages from other "
                         f"documents; found {len(with_passages)} in {len(doc_ids)} documents")
    untitled = [d for d in with_passages if not titles[d].strip()]
    generated = pseudo_queries(paragraphs, untitled, pseudo_query_terms, chinese, chinese_words) if untitled else {}
    queries = [generated[d] if d in generated else titles[d].strip() for d in with_passages]
    found = retrieve(passages.texts, queries, weak_top_k,
                     [(passages.starts[d], passages.starts[d + 1]) for d in with_passages],
                     [chinese[d] for d in passages.doc_index], [chinese[d] for d in with_passages], passages.terms)

    rows: dict[str, list] = {"doc_id": [], "query": [], "passage": [], "label": [], "passage_doc_id": []}
    total, skipped = len(passages.texts), 0
    for q, d in enumerate(with_passages):
        start, end = passages.starts[d], passages.starts[d + 1]
        hits = found.hits[q]
        own = (hits >= start) & (hits < end)
        weak_pool = hits[~own].tolist()
        if not weak_pool:
            skipped += 1
            continue
        strong_pool = hits[own].tolist() or list(range(start, end))
        rng = random.Random(f"{seed}:ir_relevance:{doc_ids[d]}")
        strong = rng.choice(strong_pool)
        weak = rng.choice(weak_pool)
        other = rng.randrange(total - (end - start))  # uniform over the passages outside [start, end)
        irrelevant = other if other < start else other + (end - start)
        for label, p in ((STRONG, strong), (WEAK, weak), (IRRELEVANT, irrelevant)):
            rows["doc_id"].append(doc_ids[d])
            rows["query"].append(queries[q])
            rows["passage"].append(passages.texts[p])
            rows["label"].append(label)
            rows["passage_doc_id"].append(doc_ids[passages.doc_index[p]])
    stats = {"retrieval_seconds": found.seconds, "passages": total, "queries": len(queries),
             "no_weak_passage": skipped, "pseudo_queries": len(generated)}
    return rows, stats


def chinese_paragraph_words(documents: Dataset) -> list[list[list[str]] | None] | None:
    """Per document, the jieba words of each paragraph of a Chinese document (None for English ones), read
    from the shared tokenization pass when ``documents`` carry it (paragraph boundaries from the
    ``sentences`` column), segmented here otherwise. None when no document is Chinese."""
    if "language" not in documents.column_names or "zh" not in documents["language"]:
        return None
    columns = ["language", "sentences"] + (["sentence_words"] if "sentence_words" in documents.column_names
                                           else [])
    out: list[list[list[str]] | None] = []
    for batch in documents.select_columns(columns).iter(batch_size=256):
        for index, language in enumerate(batch["language"]):
            if language != "zh":
                out.append(None)
                continue
            paragraphs = batch["sentences"][index]
            if "sentence_words" in batch:
                flat = iter(batch["sentence_words"][index])
                out.append([[w for _ in paragraph for w in next(flat)] for paragraph in paragraphs])
            else:
                out.append([[w for sentence in paragraph for w, _ in segment(sentence) if w.strip()]
                            for paragraph in paragraphs])
    return out


def ir_relevance_batch(batch: dict[str, list], *, queries: dict[str, list[int]], passages: dict[str, list[int]],
                       cls_id: int, sep_id: int, max_seq_len: int) -> dict[str, list]:
    """``datasets.map`` function: (query, passage) texts -> ``input_ids`` and ``segment_ids``, from each
    distinct text's token ids (:func:`~data_builders.tokenizer.encode_space_joined`: a query serves three
    examples, a passage often more)."""
    input_ids, segment_ids = [], []
    for query, passage in zip(batch["query"], batch["passage"], strict=True):
        q = queries[query]
        p = passages[passage][: max_seq_len - 3 - len(q)]
        input_ids.append([cls_id, *q, sep_id, *p, sep_id])
        segment_ids.append([0] * (len(q) + 2) + [1] * (len(p) + 1))
    return {"input_ids": input_ids, "segment_ids": segment_ids}


def blocks(n: int, block_documents: int) -> list[tuple[int, int]]:
    """``[start, end)`` row ranges of ``ceil(n / block_documents)`` nearly equal blocks covering ``range(n)``
    (so no block is a small remainder with too few other documents to retrieve from)."""
    count = max(1, math.ceil(n / block_documents))
    bounds = [round(i * n / count) for i in range(count + 1)]
    return [(bounds[i], bounds[i + 1]) for i in range(count)]


def build_ir_relevance(documents: Dataset, tokenizer: Tokenizer, *, max_seq_len: int, seed: int,
                       weak_top_k: int = 5, passage_words: int = 64, min_passage_words: int = 12,
                       pseudo_query_terms: int = 4, max_query_tokens: int = 24,
                       block_documents: int = 10_000, work_dir: Path | None = None) -> Dataset:
    """Documents -> IR-relevance examples (see the module docstring for what each label means).

    Retrieval works per block of at most ``block_documents`` documents (consecutive rows, nearly equal
    blocks): the BM25 index, the passages and the pseudo-query statistics are those of the block, so memory
    is bounded by the block, not the corpus. The weak passage is then a hit among the block's other
    documents, the irrelevant one a passage of another document of the block. With ``work_dir``, each
    block's tokenized examples go to an Arrow file there (memory-mapped), not to memory.

    Raises :class:`EmptyTaskError` when fewer than two documents have passages (no weak or irrelevant passage can
    come from another document) or when no query retrieves a weak passage.
    """
    if block_documents < 2:
        raise ValueError(f"block_documents must be >= 2, got {block_documents}")
    parts, errors, queries = [], [], 0
    for b, (start, end) in enumerate(blocks(len(documents), block_documents)):
        block = documents.select(range(start, end)) if (start, end) != (0, len(documents)) else documents
        try:
            # Whole columns as lists: indexing a datasets Column row by row costs a table lookup per access.
            rows, stats = select_examples(
                block["title"][:], block["id"][:], block["paragraphs"][:], seed=seed, weak_top_k=weak_top_k,
                passage_words=passage_words, min_passage_words=min_passage_words,
                pseudo_query_terms=pseudo_query_terms, chinese_words=chinese_paragraph_words(block))
        except EmptyTaskError as err:
            errors.append(str(err))
            continue
        queries += stats["queries"]
        log.info("ir_relevance: block %d: BM25 over %d passages, %d queries (%d pseudo-queries): %.2fs; %d "
                 "queries without a weak passage", b, stats["passages"], stats["queries"], stats["pseudo_queries"],
                 stats["retrieval_seconds"], stats["no_weak_passage"])
        if not rows["label"]:
            continue
        cache_file = None
        if work_dir is not None:
            work_dir.mkdir(parents=True, exist_ok=True)
            cache_file = str(work_dir / f"ir_block_{b:05d}_{os.getpid()}.arrow")
        ids = {"queries": encode_space_joined(rows["query"], tokenizer, max_query_tokens),
               "passages": encode_space_joined(rows["passage"], tokenizer, max_seq_len - 3)}
        parts.append(Dataset.from_dict(rows).map(
            ir_relevance_batch,
            batched=True,
            batch_size=512,
            remove_columns=["query", "passage"],
            cache_file_name=cache_file,
            fn_kwargs={**ids, "cls_id": tokenizer.token_to_id("[CLS]"), "sep_id": tokenizer.token_to_id("[SEP]"),
                       "max_seq_len": max_seq_len},
            new_fingerprint=map_fingerprint(),  # not a hash of every distinct text's ids
            desc="ir_relevance",
        ))
    if not parts:
        if errors and queries == 0:
            raise EmptyTaskError(errors[0])
        raise EmptyTaskError(f"task ir_relevance needs queries that retrieve a passage of another document; "
                         f"found 0 in {len(documents)} documents ({queries} queries)")
    return concatenate_datasets(parts) if len(parts) > 1 else parts[0]
