"""Knowledge-masking examples (ERNIE 1.0): token sequences partitioned into masking units with a level.

Each example is a segment of consecutive sentences of one document, ``[CLS] ... [SEP]``, with
``token_unit`` (the unit index of each token, -1 for special tokens) and ``unit_level`` (0 word, 1 phrase,
2 entity, per unit). Units never overlap and always cover whole words, so masking a unit masks a whole word,
phrase or entity; which units are masked is decided per step in the task's collate code, not here.

In Chinese documents (ERNIE 1.0's own setting) a word is a jieba word, so all characters of a word are masked
together; entities are jieba-tagged names and document titles, phrases NPMI-mined runs of jieba words.
"""

from __future__ import annotations

import itertools
import json
import operator
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from datasets import Dataset
from tokenizers import Tokenizer, pre_tokenizers

from data_builders.knowledge import (
    find_chinese_entity_spans,
    find_entity_spans,
    find_phrase_spans,
    mine_phrases,
    sentence_knowledge_spans,
    start_index,
    title_gazetteer,
    word_forms,
)
from data_builders.knowledge_batch import (
    LexiconIndex,
    batch_chinese_knowledge_spans,
    batch_knowledge_spans,
    covered,
)
from data_builders.language import CHINESE_STOPWORDS, is_entity_tag, segment
from data_builders.segments import (
    INPUT_IDS_TYPE,
    FlatTokens,
    batch_rows,
    document_token_lists,
    flat_tokens,
    framed_lists,
    iter_column,
    map_fingerprint,
    pack_sentences,
    ragged_lists,
    token_columns,
)

_ASCII_BERT_WORDS = re.compile(r"[!-/:-@\[-`{-~]|[^\t\n\x0b\x0c\r !-/:-@\[-`{-~]+")
"""``BertPreTokenizer`` on ASCII text: whitespace (Rust's ``char::is_whitespace``: tab, line feed, vertical tab,
form feed, carriage return, space) separates words and is dropped, and each ASCII punctuation character
(``char::is_ascii_punctuation``) is a word of its own."""

LEVELS = ("word", "phrase", "entity")
WORD, PHRASE, ENTITY = range(3)


@dataclass(frozen=True)
class Lexicon:
    """Phrases and title entities mined from the training documents (lowercased word tuples), with their
    ``start_index`` (built once here, not once per sentence or per map batch)."""

    phrases: frozenset[tuple[str, ...]] = frozenset()
    titles: frozenset[tuple[str, ...]] = frozenset()
    phrase_starts: dict[str, tuple[int, ...]] = field(init=False, repr=False, compare=False)
    title_starts: dict[str, tuple[int, ...]] = field(init=False, repr=False, compare=False)
    index: LexiconIndex = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "phrases", frozenset(self.phrases))
        object.__setattr__(self, "titles", frozenset(self.titles))
        object.__setattr__(self, "phrase_starts", start_index(self.phrases))
        object.__setattr__(self, "title_starts", start_index(self.titles))
        object.__setattr__(self, "index", LexiconIndex(self.phrases, self.titles))

    def save(self, path: Path) -> None:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # shards may write it at once
        tmp.write_text(json.dumps({"phrases": sorted(map(list, self.phrases)),
                                   "titles": sorted(map(list, self.titles))}))
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> Lexicon:
        raw = json.loads(path.read_text())
        return cls({tuple(p) for p in raw["phrases"]}, {tuple(t) for t in raw["titles"]})


def document_characters(documents: Dataset) -> int:
    """Characters in the sentences of the documents (Arrow compute over batches of about a megabyte, no Python
    strings)."""
    rows = documents.select_columns(["sentences" if "sentences" in documents.column_names else "paragraphs"])
    total = 0
    for batch in rows.with_format("arrow").iter(batch_size=batch_rows(rows, 4096)):
        for chunk in batch.column(0).chunks:
            while pa.types.is_list(chunk.type):
                chunk = chunk.flatten()
            total += pc.sum(pc.utf8_length(chunk)).as_py() or 0
    return total


def phrase_sample(documents: Dataset, max_documents: int, max_chars: int) -> Dataset:
    """The documents phrases are mined from: evenly spaced, at most ``max_documents`` of them and, from the
    average document length, about ``max_chars`` characters at most. The character bound makes mining's
    memory independent of how the text is cut into documents: a one-line dump cut into 100,000-character
    documents mines as much text as a corpus of articles, not 40 times more per document."""
    n = len(documents)
    if n == 0:
        return documents
    per_document = document_characters(documents) / n
    limit = min(max_documents, max(1, int(max_chars // max(per_document, 1.0))))
    if n <= limit:
        return documents
    # spread over the whole corpus (an integer step n // limit would take the first `limit` documents of any
    # corpus with fewer than 2 * limit of them)
    return documents.select([i * n // limit for i in range(limit)])


def build_lexicon(documents: Dataset, tokenizer: Tokenizer, *, phrases: bool, titles: bool,
                  min_count: int, threshold: float, passes: int, max_words: int,
                  sample_documents: int = 5000, sample_chars: int = 20_000_000) -> Lexicon:
    """Mine phrases (NPMI) over the sentences of :func:`phrase_sample` (at most ``sample_documents``
    documents and about ``sample_chars`` characters, evenly spaced), and collect the multi-word titles of all
    documents. The sample bounds mining's memory and time on large corpora; collocation statistics of a few
    thousand articles already find the frequent phrases.

    English words are the tokenizer's pre-tokens. Chinese documents (``language`` ``zh``) are mined on their
    own, over jieba words (read from the shared tokenization pass when ``documents`` carry it) with Chinese
    stopwords, and their titles are split into jieba words."""
    pre = tokenizer.pre_tokenizer
    bert = type(pre) is pre_tokenizers.BertPreTokenizer

    def split_words(text: str) -> list[str]:
        return [w for w, _ in pre.pre_tokenize_str(text)]

    def lower_words(sentence: str) -> list[str]:
        if bert and sentence.isascii():  # BERT pre-tokenization of ASCII text, as a regex (same words)
            return _ASCII_BERT_WORDS.findall(sentence.lower())
        return [w.lower() for w in split_words(sentence)]

    languages = documents["language"] if "language" in documents.column_names else None
    chinese = languages is not None and "zh" in languages
    mined: set[tuple[str, ...]] = set()
    if phrases:
        sample = phrase_sample(documents, sample_documents, sample_chars)
        sample_languages = sample["language"] if chinese else ["en"] * len(sample)
        if not chinese or "en" in sample_languages:
            sentences = (
                lower_words(sentence)
                for doc, language in zip(iter_column(sample, "sentences"), sample_languages, strict=True)
                if language == "en"
                for paragraph in doc for sentence in paragraph
            )
            mined = mine_phrases(sentences, min_count=min_count, threshold=threshold, passes=passes,
                                 max_words=max_words)
        if chinese:
            mined |= mine_phrases(_chinese_word_sentences(sample, sample_languages), min_count=min_count,
                                  threshold=threshold, passes=passes, max_words=max_words,
                                  stopwords=CHINESE_STOPWORDS)
    gazetteer: set[tuple[str, ...]] = set()
    if titles:
        all_titles = documents["title"]
        if chinese:
            gazetteer = title_gazetteer((t for t, lang in zip(all_titles, languages, strict=True) if lang == "en"),
                                        split_words)
            gazetteer |= title_gazetteer((t for t, lang in zip(all_titles, languages, strict=True) if lang == "zh"),
                                         _jieba_words)
        else:
            gazetteer = title_gazetteer(all_titles, split_words)
    return Lexicon(mined, gazetteer)


def _jieba_words(text: str) -> list[str]:
    return [word for word, _ in segment(text) if word.strip()]


def _chinese_word_sentences(sample: Dataset, languages: list[str]) -> Iterator[list[str]]:
    """Lowercased jieba words of every sentence of the Chinese documents of ``sample``."""
    if "sentence_words" in sample.column_names:
        for words, language in zip(iter_column(sample, "sentence_words"), languages, strict=True):
            if language == "zh":
                yield from ([w.lower() for w in sentence] for sentence in words)
        return
    for doc, language in zip(iter_column(sample, "sentences"), languages, strict=True):
        if language == "zh":
            for paragraph in doc:
                yield from ([w.lower() for w in _jieba_words(sentence)] for sentence in paragraph)


def sentence_units(words: list[str], lexicon: Lexicon, use_entities: bool,
                   max_phrase_words: int, tags: list[str] | None = None) -> list[tuple[int, int, int]]:
    """Partition a sentence's words into (start, end, level) units: entities first, then phrases among
    the remaining words, then single words. ``tags``: the jieba POS tags of a Chinese sentence's words, whose
    entities are then tagged names and titles (:func:`find_chinese_entity_spans`)."""
    if not use_entities:
        entities = []
    elif tags is None:
        entities = find_entity_spans(words, lexicon.titles, starts=lexicon.title_starts)
    else:
        entities = find_chinese_entity_spans(words, tags, lexicon.titles, starts=lexicon.title_starts)
    blocked = [False] * len(words)
    for start, end in entities:
        blocked[start:end] = [True] * (end - start)
    lower = [w.lower() for w in words]
    phrases = (find_phrase_spans(lower, lexicon.phrases, max_phrase_words, blocked,
                                 starts=lexicon.phrase_starts)
               if lexicon.phrases else [])
    spans = sorted([(s, e, ENTITY) for s, e in entities] + [(s, e, PHRASE) for s, e in phrases])
    units, i = [], 0
    for start, end, level in spans:
        units.extend((w, w + 1, WORD) for w in range(i, start))
        units.append((start, end, level))
        i = end
    units.extend((w, w + 1, WORD) for w in range(i, len(words)))
    return units


def _sentence_token_units(words: list[str], starts: list[int], n_tokens: int, lexicon: Lexicon,
                          use_entities: bool, max_phrase_words: int, first_unit: int,
                          levels: list[int]) -> list[int] | None:
    """The unit index of each token of one English sentence (units numbered from ``first_unit``), their levels
    appended to ``levels``: what :func:`sentence_units` and the token spans of its words give, computed from
    the word starts without per-unit tuples. None (nothing appended) when the word starts do not partition
    the tokens from token 0 on; the caller then goes the general way."""
    if len(starts) != len(words) or (starts and starts[0] != 0) or (not starts and n_tokens):
        return None
    entities, phrases = sentence_knowledge_spans(
        words, lexicon.phrases, lexicon.phrase_starts, max_phrase_words,
        lexicon.titles if use_entities else None, lexicon.title_starts)
    n_words = len(words)
    if not entities and not phrases:
        unit_of_word: list[int] | range = range(first_unit, first_unit + n_words)
        levels.extend([WORD] * n_words)
    else:
        spans = sorted([(s, e, ENTITY) for s, e in entities] + [(s, e, PHRASE) for s, e in phrases])
        unit_of_word = []
        unit, i = first_unit, 0
        for start, end, level in spans:
            if start > i:
                unit_of_word.extend(range(unit, unit + start - i))
                levels.extend([WORD] * (start - i))
                unit += start - i
            unit_of_word.extend([unit] * (end - start))
            levels.append(level)
            unit += 1
            i = end
        if n_words > i:
            unit_of_word.extend(range(unit, unit + n_words - i))
            levels.extend([WORD] * (n_words - i))
    if n_words == n_tokens:  # one token per word (starts are 0..n-1)
        return list(unit_of_word)
    ends = itertools.chain(itertools.islice(starts, 1, None), (n_tokens,))
    return list(itertools.chain.from_iterable(map(itertools.repeat, unit_of_word, map(operator.sub, ends, starts))))


def knowledge_masking_batch(batch: dict[str, list], *, tokenizer: Tokenizer, lexicon: Lexicon,
                            use_entities: bool, max_seq_len: int, max_phrase_words: int,
                            min_tokens: int) -> dict[str, list]:
    """``datasets.map`` function: a batch of documents -> a batch of examples."""
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    budget = max_seq_len - 2
    out: dict[str, list] = {"input_ids": [], "token_unit": [], "unit_level": [], "doc_id": []}
    for index, doc_id in enumerate(batch["id"]):
        ids_per_sentence, starts_per_sentence, words_per_sentence, tags_per_sentence = document_token_lists(
            batch, index, tokenizer)
        for start, end in pack_sentences([len(ids) for ids in ids_per_sentence], budget):
            ids, token_unit, levels = [cls_id], [-1], []
            for k in range(start, end):
                sentence_ids, words = ids_per_sentence[k], words_per_sentence[k]
                tags = (tags_per_sentence[k] or None) if tags_per_sentence is not None else None
                units = None if tags is not None else _sentence_token_units(
                    words, starts_per_sentence[k], len(sentence_ids), lexicon, use_entities, max_phrase_words,
                    len(levels), levels)
                offset = len(ids)
                ids.extend(sentence_ids)
                if units is not None:
                    token_unit.extend(units)
                    continue
                starts = starts_per_sentence[k]
                word_spans = list(zip(starts, [*starts[1:], len(sentence_ids)], strict=True))
                token_unit.extend([-1] * len(sentence_ids))
                for w_start, w_end, level in sentence_units(words, lexicon, use_entities, max_phrase_words,
                                                            tags):
                    t_start, t_end = word_spans[w_start][0], word_spans[w_end - 1][1]
                    token_unit[offset + t_start : offset + t_end] = [len(levels)] * (t_end - t_start)
                    levels.append(level)
            if len(ids) - 1 > budget:  # one over-long sentence: truncate, dropping units cut off entirely
                ids, token_unit = ids[: budget + 1], token_unit[: budget + 1]
                kept = max((u for u in token_unit if u >= 0), default=-1) + 1
                levels = levels[:kept]
            ids.append(sep_id)
            token_unit.append(-1)
            if len(ids) - 2 < min_tokens:
                continue
            out["input_ids"].append(ids)
            out["token_unit"].append(token_unit)
            out["unit_level"].append(levels)
            out["doc_id"].append(doc_id)
    return out


def _table(out: dict[str, list]) -> pa.Table:
    """Examples of :func:`knowledge_masking_batch` as an Arrow table, with the types ``datasets`` gives them."""
    return pa.table({"input_ids": pa.array(out["input_ids"], type=pa.list_(INPUT_IDS_TYPE)),
                     "token_unit": pa.array(out["token_unit"], type=pa.list_(pa.int64())),
                     "unit_level": pa.array(out["unit_level"], type=pa.list_(pa.int64())),
                     "doc_id": pa.array(out["doc_id"], type=pa.string())})


def knowledge_masking_table(batch: pa.Table, *, tokenizer: Tokenizer, lexicon: Lexicon, use_entities: bool,
                            max_seq_len: int, max_phrase_words: int, min_tokens: int) -> pa.Table:
    """:func:`knowledge_masking_batch` on an Arrow batch carrying the shared tokenization pass: the same
    examples. Entities and phrases are found for the whole batch at once (:func:`~data_builders.knowledge.
    batch_knowledge_spans`), and units, token units and levels are computed with numpy over the batch's
    flattened words and tokens.
    Batches of Chinese documents only find their spans by the Chinese rules (:func:`~data_builders.
    knowledge_batch.batch_chinese_knowledge_spans`); batches that mix Chinese and other documents, or whose
    word starts do not partition the tokens, go through :func:`knowledge_masking_batch`."""
    options = {"tokenizer": tokenizer, "lexicon": lexicon, "use_entities": use_entities,
               "max_seq_len": max_seq_len, "max_phrase_words": max_phrase_words, "min_tokens": min_tokens}
    languages = set(batch.column("language").to_pylist()) if "language" in batch.column_names else {"en"}
    chinese = languages == {"zh"} and "sentence_word_tags" in batch.column_names
    if "zh" in languages and not chinese:
        return _table(knowledge_masking_batch(batch.to_pydict(), **options))
    flat = flat_tokens(batch, tags=chinese)
    n_words, n_tokens = len(flat.word_starts), len(flat.tokens)
    word_sentence = flat.word_sentence
    word_tokens = flat.word_tokens
    word_ends = np.empty_like(word_tokens)  # the next word's start, or the sentence's end
    word_ends[:-1] = word_tokens[1:]
    sentence_word_counts = np.diff(flat.sentence_words)
    last_words = flat.sentence_words[1:][sentence_word_counts > 0] - 1
    word_ends[last_words] = flat.sentence_tokens[1:][word_sentence[last_words]]
    first_words = flat.sentence_words[:-1][sentence_word_counts > 0]
    sentence_lengths_np = np.diff(flat.sentence_tokens)
    if (np.any(word_ends <= word_tokens) or np.any(flat.word_starts[first_words] != 0)
            or np.any((sentence_word_counts == 0) & (sentence_lengths_np > 0))):
        return _table(knowledge_masking_batch(batch.to_pydict(), **options))
    entity_starts, entity_ends, phrase_starts, phrase_ends = _batch_spans(flat, lexicon, use_entities,
                                                                          max_phrase_words, chinese)
    span_words = np.concatenate([entity_starts, phrase_starts])
    span_levels = np.concatenate([np.full(len(entity_starts), ENTITY, dtype=np.int64),
                                  np.full(len(phrase_starts), PHRASE, dtype=np.int64)])
    # 1 where a word opens a unit: all but the words after a span's first
    unit_starts = (~covered(span_words + 1, np.concatenate([entity_ends, phrase_ends]), n_words)).astype(np.int64)
    word_unit = np.cumsum(unit_starts) - 1  # the batch-wide unit of each word
    n_units = int(word_unit[-1]) + 1 if n_words else 0
    unit_levels = np.full(n_units, WORD, dtype=np.int64)
    if span_words.size:
        unit_levels[word_unit[span_words]] = span_levels
    token_unit = np.repeat(word_unit, word_ends - word_tokens)  # words partition the tokens
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    budget = max_seq_len - 2
    sentence_lengths = sentence_lengths_np.tolist()
    token_offsets = flat.sentence_tokens.tolist()
    doc_sentences = flat.doc_sentences.tolist()
    doc_ids = batch.column("id").to_pylist()
    starts, ends, out_ids = [], [], []
    for index, doc_id in enumerate(doc_ids):
        first_sentence = doc_sentences[index]
        for start, end in pack_sentences(sentence_lengths[first_sentence : doc_sentences[index + 1]], budget):
            a, b = token_offsets[first_sentence + start], token_offsets[first_sentence + end]
            b = min(b, a + budget)  # one over-long sentence: truncate, dropping units cut off entirely
            if b - a < min_tokens:
                continue
            starts.append(a)
            ends.append(b)
            out_ids.append(doc_id)
    starts_np, ends_np = np.array(starts, dtype=np.int64), np.array(ends, dtype=np.int64)
    nonempty = ends_np > starts_np
    first_units = np.zeros(len(starts), dtype=np.int64)
    last_units = np.full(len(starts), -1, dtype=np.int64)
    if n_tokens:
        first_units[nonempty] = token_unit[starts_np[nonempty]]
        last_units[nonempty] = token_unit[ends_np[nonempty] - 1]
    input_ids = framed_lists(flat.tokens, starts_np, ends_np, cls_id, sep_id, INPUT_IDS_TYPE)
    units = framed_lists(token_unit, starts_np, ends_np, -1, -1, shift=first_units)  # units from 0 per example
    levels = ragged_lists(unit_levels, first_units, last_units + 1)
    return pa.table({"input_ids": input_ids, "token_unit": units, "unit_level": levels,
                     "doc_id": pa.array(out_ids, type=pa.string())})


def _batch_spans(flat: FlatTokens, lexicon: Lexicon, use_entities: bool, max_phrase_words: int,
                 chinese: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(entity starts, entity ends, phrase starts, phrase ends) of a flattened batch, batch-wide word positions:
    by the English rules (capitalized runs, titles at capitalized words), or by the Chinese ones (tagged names
    of two characters or more, titles at any word; ``flat`` then carries the tags)."""
    gazetteer = lexicon.titles if use_entities else None
    forms = word_forms(flat.dictionary, lexicon.phrases, lexicon.phrase_starts, gazetteer, lexicon.title_starts,
                       lexicon.index.vocabulary)
    codes = flat.word_codes
    lexicon_ids = np.fromiter((f[7] for f in forms), dtype=np.int64, count=len(forms))[codes]
    if chinese:
        long_words = np.fromiter((len(w) >= 2 for w in flat.dictionary), dtype=bool, count=len(forms))
        name_tags = np.fromiter(map(is_entity_tag, flat.tag_dictionary), dtype=bool,
                                count=len(flat.tag_dictionary))
        return batch_chinese_knowledge_spans(
            lexicon_ids, long_words[codes] & name_tags[flat.tag_codes], flat.sentence_words, lexicon.index,
            entities=use_entities, phrases=bool(lexicon.phrases), max_phrase_words=max_phrase_words)
    flags = np.fromiter((f[6] for f in forms), dtype=np.int64, count=len(forms))[codes]
    return batch_knowledge_spans(lexicon_ids, flags, flat.sentence_words, lexicon.index,
                                 entities=gazetteer is not None, phrases=bool(lexicon.phrases),
                                 max_phrase_words=max_phrase_words)


def build_knowledge_masking(documents: Dataset, tokenizer: Tokenizer, lexicon: Lexicon, *,
                            use_entities: bool, max_seq_len: int, max_phrase_words: int = 4,
                            min_tokens: int = 8, num_proc: int = 1) -> Dataset:
    """Documents -> knowledge-masking examples (see the module docstring for the columns)."""
    columns = token_columns(documents)  # the documents' text stays unread
    arrow = "sentence_ids" in columns.column_names  # the shared pass: numpy over Arrow batches
    examples = (columns.with_format("arrow") if arrow else columns).map(
        knowledge_masking_table if arrow else knowledge_masking_batch,
        batched=True,
        new_fingerprint=map_fingerprint(),
        batch_size=batch_rows(columns),
        remove_columns=columns.column_names,
        num_proc=num_proc if num_proc > 1 else None,
        fn_kwargs={"tokenizer": tokenizer, "lexicon": lexicon, "use_entities": use_entities,
                   "max_seq_len": max_seq_len, "max_phrase_words": max_phrase_words,
                   "min_tokens": min_tokens},
        desc="knowledge_masking",
    )
    return examples.with_format(None) if arrow else examples
