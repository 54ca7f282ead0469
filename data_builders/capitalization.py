"""Capitalization-prediction examples (ERNIE 2.0): was each word capitalized in the original text?

Each example is a segment of consecutive sentences of one document, ``[CLS] ... [SEP]``, packed up to
``max_seq_len`` tokens as for knowledge masking, with ``labels`` aligned to ``input_ids``: the class of each
word's case on the word's FIRST token, ``IGNORE_INDEX`` (-100) on its other tokens, on [CLS]/[SEP] and on
words that do not start with a cased letter (digits, punctuation, scripts without case) and, if so configured,
on the first cased word of each sentence (whose capital follows from its position). Classes:

- ``binary``: 0 lower (``apple``), 1 capitalized (``Apple``, ``NATO``, ``I``);
- ``three_way``: 0 lower, 1 capitalized, 2 all-caps (two or more letters, all uppercase: ``NATO``, ``USA``).

Chinese documents (``language`` ``zh``) give no examples: the script has no case, and the Latin words of a
Chinese text are too few to learn from. The input must not show the case, so the tokenizer has to lowercase; a cased tokenizer is refused, since the
label would be a function of the token ids alone. The case is read from the original text through the
tokenizer's offsets (``tokenize_sentences`` keeps each word's cased surface form).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from datasets import Dataset
from tokenizers import Tokenizer

from data_builders.errors import EmptyTaskError
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
from data_builders.tokenizer import is_lowercasing

IGNORE_INDEX = -100
SCHEMES = ("binary", "three_way")
LOWER, CAPITALIZED, ALL_CAPS = range(3)


def case_label(word: str, three_way: bool) -> int:
    """The case class of one word (as written), or ``IGNORE_INDEX`` if it does not start with a cased letter."""
    first = word[:1]
    if first.islower():
        return LOWER
    if not first.isupper():  # digit, punctuation, or a letter without case (CJK, Arabic, ...)
        return IGNORE_INDEX
    # isupper() is False as soon as one cased character is lowercase; the letter count keeps "F1" at 1.
    if three_way and word.isupper() and sum(c.isalpha() for c in word) >= 2:
        return ALL_CAPS
    return CAPITALIZED


def require_uncased(tokenizer: Tokenizer, task: str = "capitalization") -> None:
    """Refuse a tokenizer that keeps case: its ids would give the label away."""
    if not is_lowercasing(tokenizer):
        raise EmptyTaskError(
            f"task {task} needs an uncased (lowercasing) tokenizer: this tokenizer keeps case, so whether a "
            "word is capitalized would be visible in the input ids and the label could be read off the input; "
            "set tokenizer.lowercase: true (or give an uncased tokenizer file in tokenizer.path)")


_CASE_MEMO: tuple[dict[str, int], dict[str, int]] = ({}, {})
"""word -> ``case_label(word, three_way)``, per ``three_way`` (a builder sees each frequent word many times)."""


def capitalization_batch(batch: dict[str, list], *, tokenizer: Tokenizer, max_seq_len: int, three_way: bool,
                         sentence_initial: bool, min_tokens: int) -> dict[str, list]:
    """``datasets.map`` function: a batch of documents -> a batch of examples."""
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    budget = max_seq_len - 2
    out: dict[str, list] = {"input_ids": [], "labels": [], "doc_id": []}
    languages = batch.get("language")
    memo = _CASE_MEMO[three_way]
    if len(memo) > 1 << 17:
        memo.clear()
    for index, doc_id in enumerate(batch["id"]):
        if languages is not None and languages[index] == "zh":  # Chinese has no case to predict
            continue
        ids_per_sentence, starts_per_sentence, words_per_sentence, _ = document_token_lists(batch, index, tokenizer)
        for start, end in pack_sentences([len(ids) for ids in ids_per_sentence], budget):
            ids, labels = [cls_id], [IGNORE_INDEX]
            for k in range(start, end):
                sentence_ids = ids_per_sentence[k]
                ids.extend(sentence_ids)
                sentence_labels = [IGNORE_INDEX] * len(sentence_ids)
                words = words_per_sentence[k]
                word_labels = [memo[w] if w in memo else memo.setdefault(w, case_label(w, three_way))
                               for w in words]
                starts = starts_per_sentence[k]
                for t_start, label in zip(starts, word_labels, strict=True):
                    sentence_labels[t_start] = label
                if not sentence_initial:  # the sentence's first cased word stays unlabelled
                    for t_start, label in zip(starts, word_labels, strict=True):
                        if label != IGNORE_INDEX:
                            sentence_labels[t_start] = IGNORE_INDEX
                            break
                labels.extend(sentence_labels)
            if len(ids) - 1 > budget:  # one over-long sentence: truncate (labels stay aligned)
                ids, labels = ids[: budget + 1], labels[: budget + 1]
            ids.append(sep_id)
            labels.append(IGNORE_INDEX)
            if len(ids) - 2 < min_tokens or labels.count(IGNORE_INDEX) == len(labels):
                continue
            out["input_ids"].append(ids)
            out["labels"].append(labels)
            out["doc_id"].append(doc_id)
    return out


def capitalization_table(batch: pa.Table, *, tokenizer: Tokenizer, max_seq_len: int, three_way: bool,
                         sentence_initial: bool, min_tokens: int) -> pa.Table:
    """:func:`capitalization_batch` on an Arrow batch carrying the shared tokenization pass: the same
    examples, computed with numpy over the batch's flattened tokens and words (a case label per distinct
    word, not per occurrence)."""
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    budget = max_seq_len - 2
    flat = flat_tokens(batch)
    memo = _CASE_MEMO[three_way]
    if len(memo) > 1 << 17:
        memo.clear()
    word_labels = np.array([memo[w] if w in memo else memo.setdefault(w, case_label(w, three_way))
                            for w in flat.dictionary], dtype=np.int64)[flat.word_codes]
    if not sentence_initial:  # each sentence's first cased word stays unlabelled
        cased = np.flatnonzero(word_labels != IGNORE_INDEX)
        _, first = np.unique(flat.word_sentence[cased], return_index=True)
        word_labels[cased[first]] = IGNORE_INDEX
    token_labels = np.full(len(flat.tokens), IGNORE_INDEX, dtype=np.int64)
    token_labels[flat.word_tokens] = word_labels
    labelled = np.zeros(len(token_labels) + 1, dtype=np.int64)
    np.cumsum(token_labels != IGNORE_INDEX, out=labelled[1:])
    sentence_lengths = np.diff(flat.sentence_tokens).tolist()
    token_offsets = flat.sentence_tokens.tolist()
    doc_sentences = flat.doc_sentences.tolist()
    languages = batch.column("language").to_pylist() if "language" in batch.column_names else None
    doc_ids = batch.column("id").to_pylist()
    starts, ends, out_ids = [], [], []
    for index, doc_id in enumerate(doc_ids):
        if languages is not None and languages[index] == "zh":  # Chinese has no case to predict
            continue
        first_sentence = doc_sentences[index]
        for start, end in pack_sentences(sentence_lengths[first_sentence : doc_sentences[index + 1]], budget):
            a, b = token_offsets[first_sentence + start], token_offsets[first_sentence + end]
            b = min(b, a + budget)  # one over-long sentence: truncate (labels stay aligned)
            if b - a < min_tokens or labelled[b] == labelled[a]:
                continue
            starts.append(a)
            ends.append(b)
            out_ids.append(doc_id)
    return pa.table({"input_ids": framed_lists(flat.tokens, starts, ends, cls_id, sep_id, INPUT_IDS_TYPE),
                     "labels": framed_lists(token_labels, starts, ends, IGNORE_INDEX, IGNORE_INDEX),
                     "doc_id": pa.array(out_ids, type=pa.string())})


def build_capitalization(documents: Dataset, tokenizer: Tokenizer, *, max_seq_len: int,
                         scheme: str = "binary", sentence_initial: bool = True, min_tokens: int = 8,
                         num_proc: int = 1) -> Dataset:
    """Documents -> capitalization examples (see the module docstring for the columns and classes).
    ``sentence_initial=False`` leaves the first cased word of every sentence unlabelled.

    Raises :class:`EmptyTaskError` for a tokenizer that keeps case or a corpus that yields no example (every
    document shorter than ``min_tokens`` tokens), ``ValueError`` for an unknown scheme."""
    if scheme not in SCHEMES:
        raise ValueError(f"capitalization scheme must be one of {', '.join(SCHEMES)}, got {scheme!r}")
    require_uncased(tokenizer)
    columns = token_columns(documents, tags=False)  # the documents' text stays unread
    arrow = "sentence_ids" in columns.column_names  # the shared pass: numpy over Arrow batches
    examples = (columns.with_format("arrow") if arrow else columns).map(
        capitalization_table if arrow else capitalization_batch,
        batched=True,
        new_fingerprint=map_fingerprint(),
        batch_size=batch_rows(columns),
        remove_columns=columns.column_names,
        num_proc=num_proc if num_proc > 1 else None,
        fn_kwargs={"tokenizer": tokenizer, "max_seq_len": max_seq_len, "three_way": scheme == "three_way",
                   "sentence_initial": sentence_initial, "min_tokens": min_tokens},
        desc="capitalization",
    )
    if arrow:
        examples = examples.with_format(None)
    if len(examples) == 0:
        chinese = list(documents["language"]).count("zh") if "language" in documents.column_names else 0
        why = f" ({chinese} of them Chinese, which have no case)" if chinese else ""
        raise EmptyTaskError(f"task capitalization needs documents with >= {min_tokens} tokens of text with "
                         f"cased words; found 0 in {len(documents)} documents{why}")
    return examples
