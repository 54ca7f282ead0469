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
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from datasets import Dataset
from tokenizers import Tokenizer

from data_builders.language import segment
from data_builders.segments import document_sentences, pack_sentences

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
    for batch in documents.select_columns(columns).iter(batch_size=256):
        for index, paragraphs in enumerate(batch["paragraphs"]):
            if chinese and batch["language"][index] == "zh":
                df.update({word_key(w) for w in _chinese_words(batch, index)})
            else:
                df.update({word_key(w) for w in set(_WORD.findall(" ".join(paragraphs).lower()))})
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
    tmp = path.with_suffix(".tmp")
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


def token_document_relation_batch(batch: dict[str, list], *, tokenizer: Tokenizer, segment_tokens: int,
                                  frequent: frozenset[str], min_tokens: int) -> dict[str, list]:
    """``datasets.map`` function: a batch of documents -> a batch of examples (one per segment)."""
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    budget = segment_tokens
    keys: dict[str, str | None] = {}  # surface form -> key, None if never labelled (memo across the batch)
    out: dict[str, list] = {"input_ids": [], "labels": [], "doc_id": [], "segment": []}
    for index, doc_id in enumerate(batch["id"]):
        sentences = document_sentences(batch, index, tokenizer)
        groups = pack_sentences([len(s.ids) for s in sentences], budget)
        if len(groups) < 2:
            continue
        segments: list[tuple[list[int], list[tuple[int, str]]]] = []
        for start, end in groups:
            ids, words = [cls_id], []
            for sentence in sentences[start:end]:
                offset = len(ids)
                ids.extend(sentence.ids)
                for (t_start, t_end), word in zip(sentence.word_spans, sentence.words, strict=True):
                    if offset + t_end > budget + 1:  # cut off (in part) by truncation: not in the input
                        break
                    if word in keys:
                        key = keys[word]
                    else:
                        key = word_key(word)
                        key = keys[word] = key if has_letter(key) and key not in frequent else None
                    if key is not None:
                        words.append((offset + t_start, key))
            segments.append((ids[: budget + 1] + [sep_id], words))
        # in how many segments each word occurs: > 1 means "also in another segment"
        spread = Counter(key for _, words in segments for key in {k for _, k in words})
        for index, (ids, words) in enumerate(segments):
            if len(ids) - 2 < min_tokens or not words:
                continue
            labels = [IGNORE_INDEX] * len(ids)
            for position, key in words:
                labels[position] = int(spread[key] > 1)
            out["input_ids"].append(ids)
            out["labels"].append(labels)
            out["doc_id"].append(doc_id)
            out["segment"].append(index)
    return out


def build_token_document_relation(documents: Dataset, tokenizer: Tokenizer, frequent: Iterable[str], *,
                                  segment_tokens: int, min_tokens: int = 8, num_proc: int = 1) -> Dataset:
    """Documents -> token-document relation examples (see the module docstring).

    ``segment_tokens`` is the segment budget without [CLS]/[SEP]. Raises ``ValueError`` when no document has
    two segments (the task needs documents longer than ``segment_tokens`` tokens)."""
    examples = documents.map(
        token_document_relation_batch,
        batched=True,
        batch_size=64,
        remove_columns=documents.column_names,
        num_proc=num_proc if num_proc > 1 else None,
        fn_kwargs={"tokenizer": tokenizer, "segment_tokens": segment_tokens, "frequent": frozenset(frequent),
                   "min_tokens": min_tokens},
        desc="token_document_relation",
    )
    if len(examples) == 0:
        raise ValueError(f"task token_document_relation needs documents with >= 2 segments of <= "
                         f"{segment_tokens} tokens (documents longer than {segment_tokens} tokens); found 0 in "
                         f"{len(documents)} documents")
    return examples
