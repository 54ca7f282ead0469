"""Knowledge-masking examples (ERNIE 1.0): token sequences partitioned into masking units with a level.

Each example is a segment of consecutive sentences of one document, ``[CLS] ... [SEP]``, with
``token_unit`` (the unit index of each token, -1 for special tokens) and ``unit_level`` (0 word, 1 phrase,
2 entity, per unit). Units never overlap and always cover whole words, so masking a unit masks a whole word,
phrase or entity; which units are masked is decided per step in the task's collate code, not here.

In Chinese documents (ERNIE 1.0's own setting) a word is a jieba word, so all characters of a word are masked
together; entities are jieba-tagged names and document titles, phrases NPMI-mined runs of jieba words.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from datasets import Dataset
from tokenizers import Tokenizer

from data_builders.knowledge import (
    find_chinese_entity_spans,
    find_entity_spans,
    find_phrase_spans,
    mine_phrases,
    start_index,
    title_gazetteer,
)
from data_builders.language import CHINESE_STOPWORDS, segment
from data_builders.segments import document_sentences, pack_sentences

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

    def __post_init__(self) -> None:
        object.__setattr__(self, "phrases", frozenset(self.phrases))
        object.__setattr__(self, "titles", frozenset(self.titles))
        object.__setattr__(self, "phrase_starts", start_index(self.phrases))
        object.__setattr__(self, "title_starts", start_index(self.titles))

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"phrases": sorted(map(list, self.phrases)),
                                   "titles": sorted(map(list, self.titles))}))
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> Lexicon:
        raw = json.loads(path.read_text())
        return cls({tuple(p) for p in raw["phrases"]}, {tuple(t) for t in raw["titles"]})


def build_lexicon(documents: Dataset, tokenizer: Tokenizer, *, phrases: bool, titles: bool,
                  min_count: int, threshold: float, passes: int, max_words: int,
                  sample_documents: int = 5000) -> Lexicon:
    """Mine phrases (NPMI) over the sentences of at most ``sample_documents`` documents (evenly spaced), and
    collect the multi-word titles of all documents. The sample bounds mining's memory and time on large
    corpora; collocation statistics of a few thousand articles already find the frequent phrases.

    English words are the tokenizer's pre-tokens. Chinese documents (``language`` ``zh``) are mined on their
    own, over jieba words (read from the shared tokenization pass when ``documents`` carry it) with Chinese
    stopwords, and their titles are split into jieba words."""
    pre = tokenizer.pre_tokenizer

    def split_words(text: str) -> list[str]:
        return [w for w, _ in pre.pre_tokenize_str(text)]

    languages = documents["language"] if "language" in documents.column_names else None
    chinese = languages is not None and "zh" in languages
    mined: set[tuple[str, ...]] = set()
    if phrases:
        step = max(1, len(documents) // sample_documents)
        sample = documents.select(range(0, len(documents), step)[:sample_documents])
        sample_languages = sample["language"] if chinese else ["en"] * len(sample)
        if not chinese or "en" in sample_languages:
            sentences = (
                [w.lower() for w in split_words(sentence)]
                for doc, language in zip(sample["sentences"], sample_languages, strict=True) if language == "en"
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
        for words, language in zip(sample["sentence_words"], languages, strict=True):
            if language == "zh":
                yield from ([w.lower() for w in sentence] for sentence in words)
        return
    for doc, language in zip(sample["sentences"], languages, strict=True):
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


def knowledge_masking_batch(batch: dict[str, list], *, tokenizer: Tokenizer, lexicon: Lexicon,
                            use_entities: bool, max_seq_len: int, max_phrase_words: int,
                            min_tokens: int) -> dict[str, list]:
    """``datasets.map`` function: a batch of documents -> a batch of examples."""
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    budget = max_seq_len - 2
    out: dict[str, list] = {"input_ids": [], "token_unit": [], "unit_level": [], "doc_id": []}
    for index, doc_id in enumerate(batch["id"]):
        sentences = document_sentences(batch, index, tokenizer)
        for start, end in pack_sentences([len(s.ids) for s in sentences], budget):
            ids, token_unit, levels = [cls_id], [-1], []
            for sentence in sentences[start:end]:
                offset = len(ids)
                ids.extend(sentence.ids)
                token_unit.extend([-1] * len(sentence.ids))
                for w_start, w_end, level in sentence_units(sentence.words, lexicon, use_entities,
                                                            max_phrase_words, sentence.tags):
                    t_start, t_end = sentence.word_spans[w_start][0], sentence.word_spans[w_end - 1][1]
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


def build_knowledge_masking(documents: Dataset, tokenizer: Tokenizer, lexicon: Lexicon, *,
                            use_entities: bool, max_seq_len: int, max_phrase_words: int = 4,
                            min_tokens: int = 8, num_proc: int = 1) -> Dataset:
    """Documents -> knowledge-masking examples (see the module docstring for the columns)."""
    return documents.map(
        knowledge_masking_batch,
        batched=True,
        batch_size=64,
        remove_columns=documents.column_names,
        num_proc=num_proc if num_proc > 1 else None,
        fn_kwargs={"tokenizer": tokenizer, "lexicon": lexicon, "use_entities": use_entities,
                   "max_seq_len": max_seq_len, "max_phrase_words": max_phrase_words,
                   "min_tokens": min_tokens},
        desc="knowledge_masking",
    )
