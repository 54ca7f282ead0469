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

from datasets import Dataset
from tokenizers import Tokenizer

from data_builders.segments import document_sentences, pack_sentences
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
        raise ValueError(
            f"task {task} needs an uncased (lowercasing) tokenizer: this tokenizer keeps case, so whether a "
            "word is capitalized would be visible in the input ids and the label could be read off the input; "
            "set tokenizer.lowercase: true (or give an uncased tokenizer file in tokenizer.path)")


def capitalization_batch(batch: dict[str, list], *, tokenizer: Tokenizer, max_seq_len: int, three_way: bool,
                         sentence_initial: bool, min_tokens: int) -> dict[str, list]:
    """``datasets.map`` function: a batch of documents -> a batch of examples."""
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    budget = max_seq_len - 2
    out: dict[str, list] = {"input_ids": [], "labels": [], "doc_id": []}
    languages = batch.get("language")
    for index, doc_id in enumerate(batch["id"]):
        if languages is not None and languages[index] == "zh":  # Chinese has no case to predict
            continue
        sentences = document_sentences(batch, index, tokenizer)
        for start, end in pack_sentences([len(s.ids) for s in sentences], budget):
            ids, labels = [cls_id], [IGNORE_INDEX]
            for sentence in sentences[start:end]:
                offset = len(ids)
                ids.extend(sentence.ids)
                labels.extend([IGNORE_INDEX] * len(sentence.ids))
                first = True
                for (t_start, _), word in zip(sentence.word_spans, sentence.words, strict=True):
                    label = case_label(word, three_way)
                    if label != IGNORE_INDEX and first:
                        first = False
                        if not sentence_initial:
                            continue
                    labels[offset + t_start] = label
            if len(ids) - 1 > budget:  # one over-long sentence: truncate (labels stay aligned)
                ids, labels = ids[: budget + 1], labels[: budget + 1]
            ids.append(sep_id)
            labels.append(IGNORE_INDEX)
            if len(ids) - 2 < min_tokens or all(label == IGNORE_INDEX for label in labels):
                continue
            out["input_ids"].append(ids)
            out["labels"].append(labels)
            out["doc_id"].append(doc_id)
    return out


def build_capitalization(documents: Dataset, tokenizer: Tokenizer, *, max_seq_len: int,
                         scheme: str = "binary", sentence_initial: bool = True, min_tokens: int = 8,
                         num_proc: int = 1) -> Dataset:
    """Documents -> capitalization examples (see the module docstring for the columns and classes).
    ``sentence_initial=False`` leaves the first cased word of every sentence unlabelled.

    Raises ``ValueError`` for a tokenizer that keeps case, an unknown scheme, or a corpus that yields no
    example (every document shorter than ``min_tokens`` tokens)."""
    if scheme not in SCHEMES:
        raise ValueError(f"capitalization scheme must be one of {', '.join(SCHEMES)}, got {scheme!r}")
    require_uncased(tokenizer)
    examples = documents.map(
        capitalization_batch,
        batched=True,
        batch_size=64,
        remove_columns=documents.column_names,
        num_proc=num_proc if num_proc > 1 else None,
        fn_kwargs={"tokenizer": tokenizer, "max_seq_len": max_seq_len, "three_way": scheme == "three_way",
                   "sentence_initial": sentence_initial, "min_tokens": min_tokens},
        desc="capitalization",
    )
    if len(examples) == 0:
        chinese = list(documents["language"]).count("zh") if "language" in documents.column_names else 0
        why = f" ({chinese} of them Chinese, which have no case)" if chinese else ""
        raise ValueError(f"task capitalization needs documents with >= {min_tokens} tokens of text with "
                         f"cased words; found 0 in {len(documents)} documents{why}")
    return examples
