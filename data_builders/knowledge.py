"""Knowledge units for ERNIE-style masking: phrases mined by collocation statistics, entity-like spans.

Words are the tokenizer's pre-tokens (BERT pre-tokenization: whitespace and punctuation split), so units map
exactly onto token spans. Phrases: word n-grams whose normalized PMI is high, mined in word2phrase-style passes
(each pass can join an accepted phrase with a neighbouring word). Entities: runs of capitalized words (with
connectors such as "of" or "de" inside), and spans matching a document title.

Chinese sentences come as jieba words with POS tags (``data_builders.segments``): their entities are the
words jieba tags as names (``nr``, ``ns``, ``nt``, ``nz``) and spans matching a document title, found by
:func:`find_chinese_entity_spans`; their phrases are mined from jieba words with Chinese stopwords.

The same spans for a whole batch at once, in numpy (:func:`batch_knowledge_spans`, the lexicon as tries), live
in :mod:`data_builders.knowledge_batch`; their names are importable from here too.
"""

from __future__ import annotations

import math
import re
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from collections.abc import Set as AbstractSet

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

# The batch matcher lives in knowledge_batch; its names stay importable from here (re-exported).
from data_builders.knowledge_batch import (  # noqa: F401
    CAPITALIZED,
    CAPITALIZED_WORD,
    CONNECTOR,
    INITIAL,
    OPENS_RUN,
    PERIOD,
    EntryTrie,
    LexiconIndex,
    batch_knowledge_spans,
    covered,
)

STOPWORDS = frozenset(
    """a an the and or but nor of in on at to for from by with without as is are was were be been being am
    it its this that these those he she they we you i his her their our your my me him them us who whom whose
    which what when where why how than then there here so such not no yes all any some each every both either
    neither one into onto over under after before about above below between through during until while since
    also only just very can could will would shall should may might must do does did has have had having if
    else up down out off again further once more most other same own too s t""".split()
)

# Lowercase words that may stand inside a capitalized name ("University of Oxford", "Liga Uruguaya de ...").
NAME_CONNECTORS = frozenset("of de da del della di du des la le van von der den y the and for".split())

_WORDLIKE = re.compile(r"\w", re.UNICODE)


def is_wordlike(word: str) -> bool:
    return bool(_WORDLIKE.search(word))


def npmi(count_ab: int, count_a: int, count_b: int, total: int) -> float:
    """Normalized pointwise mutual information in [-1, 1] (1 = the words only ever occur together)."""
    p_ab = count_ab / total
    if p_ab >= 1.0:
        return 1.0
    return math.log(p_ab / ((count_a / total) * (count_b / total))) / -math.log(p_ab)


def mine_phrases(sentences: Iterable[Sequence[str]], *, min_count: int = 5, threshold: float = 0.5,
                 passes: int = 2, max_words: int = 4, stopwords: AbstractSet[str] = STOPWORDS,
                 chunk_words: int = 1 << 20) -> set[tuple[str, ...]]:
    """Mine multi-word phrases from lowercased word sequences.

    Each pass counts units (words or phrases accepted so far) and adjacent unit pairs; a pair becomes a phrase
    when it occurs at least ``min_count`` times, has NPMI >= ``threshold``, neither end is one of
    ``stopwords`` (English by default; ``data_builders.language.CHINESE_STOPWORDS`` for jieba words) or
    punctuation, and it has at most ``max_words`` words.

    Units are counted as integer ids with numpy (one id per distinct unit, a pair as one 64-bit key), and a
    pass merges phrases only in the sentences holding a word some phrase can start with; the statistics, and
    so the phrases, are those of counting the unit tuples themselves. The words are read ``chunk_words`` at a
    time into their ids (in order of first occurrence, whatever the chunk size), so mining holds 8 bytes per
    word, not a Python string per word.
    """
    lengths_list: list[int] = []
    vocabulary: dict[str, int] = {}
    id_chunks: list[np.ndarray] = []
    chunk: list[str] = []

    def encode_chunk() -> None:
        encoded = pc.dictionary_encode(pa.array(chunk, type=pa.string()))
        ids = np.array([vocabulary.setdefault(w, len(vocabulary)) for w in encoded.dictionary.to_pylist()],
                       dtype=np.int64)
        id_chunks.append(ids[encoded.indices.to_numpy(zero_copy_only=False)])
        chunk.clear()

    for sentence in sentences:
        lengths_list.append(len(sentence))
        chunk.extend(sentence)
        if len(chunk) >= chunk_words:
            encode_chunk()
    if chunk:
        encode_chunk()
    words = list(vocabulary)
    flat_words = np.concatenate(id_chunks) if id_chunks else np.zeros(0, dtype=np.int64)
    id_chunks.clear()
    lengths = np.array(lengths_list, dtype=np.int64)
    phrases: set[tuple[str, ...]] = set()
    for _ in range(passes):
        units, unit_ids, unit_lengths = _merged_unit_ids(words, flat_words, lengths, phrases, max_words)
        n_units = len(units)
        unigram = np.bincount(unit_ids, minlength=n_units)
        total = int(unit_ids.size)
        # adjacent pairs inside a sentence: every position but each sentence's last
        ends = np.cumsum(unit_lengths)
        follows = np.ones(unit_ids.size, dtype=bool)
        follows[ends[unit_lengths > 0] - 1] = False
        firsts = unit_ids[:-1][follows[:-1]] if unit_ids.size else unit_ids
        seconds = unit_ids[1:][follows[:-1]] if unit_ids.size else unit_ids
        keys, counts = np.unique(firsts * n_units + seconds, return_counts=True)
        frequent = counts >= min_count
        new = set()
        for key, n_ab in zip(keys[frequent].tolist(), counts[frequent].tolist(), strict=True):
            a, b = units[key // n_units], units[key % n_units]
            if len(a) + len(b) > max_words:
                continue
            if not _phrase_edge_ok(a[0], stopwords) or not _phrase_edge_ok(b[-1], stopwords):
                continue
            if not all(is_wordlike(w) for w in a + b):
                continue
            if npmi(n_ab, int(unigram[key // n_units]), int(unigram[key % n_units]), total) >= threshold:
                new.add(a + b)
        if not new - phrases:
            break
        phrases |= new
    return phrases


def _merged_unit_ids(words: list[str], flat_words: np.ndarray, lengths: np.ndarray,
                     phrases: set[tuple[str, ...]], max_words: int
                     ) -> tuple[list[tuple[str, ...]], np.ndarray, np.ndarray]:
    """The units of every sentence (:func:`_merge_units`: greedy longest phrase matches) as ids: (unit tuples
    by id, the flat unit ids of all sentences, units per sentence). A word's id is its index in ``words``;
    a phrase gets the next free id. Only positions whose word opens some phrase are visited."""
    units: list[tuple[str, ...]] = [(w,) for w in words]
    if not phrases:
        return units, flat_words, lengths
    index = {w: i for i, w in enumerate(words)}
    starts: dict[int, tuple[int, ...]] = {}
    coded: set[tuple[int, ...]] = set()
    for phrase in phrases:
        if all(w in index for w in phrase):  # a phrase with a word absent here can match nowhere
            coded.add(tuple(index[w] for w in phrase))
    for word, phrase_lengths in start_index(coded).items():
        starts[word] = phrase_lengths
    can_start = np.zeros(len(words), dtype=bool)
    can_start[list(starts)] = True
    sentence_ends = np.cumsum(lengths)
    positions = np.flatnonzero(can_start[flat_words])
    position_ends = sentence_ends[np.searchsorted(sentence_ends, positions, side="right")].tolist()
    flat = flat_words.tolist()
    unit_index: dict[tuple[int, ...], int] = {}
    span_starts, span_units, span_lengths = [], [], []
    next_free = 0
    for position, sentence_end in zip(positions.tolist(), position_ends, strict=True):
        if position < next_free:
            continue
        for length in starts[flat[position]]:
            if length > max_words or position + length > sentence_end:
                continue
            phrase = tuple(flat[position : position + length])
            if phrase in coded:
                if phrase not in unit_index:
                    unit_index[phrase] = len(units)
                    units.append(tuple(words[i] for i in phrase))
                span_starts.append(position)
                span_units.append(unit_index[phrase])
                span_lengths.append(length)
                next_free = position + length
                break
    if not span_starts:
        return units, flat_words, lengths
    unit_ids = flat_words.copy()
    keep = np.ones(len(flat_words), dtype=bool)
    span_starts_np, lengths_np = np.array(span_starts, dtype=np.int64), np.array(span_lengths, dtype=np.int64)
    unit_ids[span_starts_np] = span_units
    repeats = lengths_np - 1  # a span's words after its first are merged into it
    offsets = np.zeros(len(repeats) + 1, dtype=np.int64)
    np.cumsum(repeats, out=offsets[1:])
    keep[np.repeat(span_starts_np + 1 - offsets[:-1], repeats) + np.arange(int(offsets[-1]), dtype=np.int64)] = False
    sentence_of = np.repeat(np.arange(len(lengths)), lengths)
    removed = np.bincount(sentence_of[~keep], minlength=len(lengths))
    return units, unit_ids[keep], lengths - removed


def _phrase_edge_ok(word: str, stopwords: AbstractSet[str] = STOPWORDS) -> bool:
    return word not in stopwords and is_wordlike(word) and not word.isdigit()


def _merge_units(words: Sequence[str], phrases: set[tuple[str, ...]], max_words: int,
                 starts: dict[str, tuple[int, ...]] | None = None) -> list[tuple[str, ...]]:
    spans = find_phrase_spans(words, phrases, max_words, starts=starts) if phrases else []
    units: list[tuple[str, ...]] = []
    i = 0
    for start, end in spans:
        units.extend((w,) for w in words[i:start])
        units.append(tuple(words[start:end]))
        i = end
    units.extend((w,) for w in words[i:])
    return units


def start_index(spans: Iterable[tuple[str, ...]]) -> dict[str, tuple[int, ...]]:
    """First word -> the lengths (longest first) of the multi-word entries starting with it. Lets the greedy
    matchers below skip, with one dict lookup, every position where no entry can start."""
    lengths: dict[str, set[int]] = {}
    for entry in spans:
        if len(entry) >= 2:
            lengths.setdefault(entry[0], set()).add(len(entry))
    return {word: tuple(sorted(ls, reverse=True)) for word, ls in lengths.items()}


def find_phrase_spans(words: Sequence[str], phrases: AbstractSet[tuple[str, ...]], max_words: int = 4,
                      blocked: Sequence[bool] | None = None,
                      starts: dict[str, tuple[int, ...]] | None = None) -> list[tuple[int, int]]:
    """Greedy longest-match of ``phrases`` over lowercased ``words``: non-overlapping [start, end) spans.
    Words flagged in ``blocked`` (already inside an entity) are never part of a phrase. ``starts``:
    ``start_index(phrases)``, passed by callers that match many sentences against the same phrases."""
    if starts is None:
        starts = start_index(phrases)
    spans = []
    i, n = 0, len(words)
    while i < n:
        for length in starts.get(words[i], ()):
            if length > max_words or i + length > n:
                continue
            if blocked is not None and any(blocked[i : i + length]):
                continue
            if tuple(words[i : i + length]) in phrases:
                spans.append((i, i + length))
                i += length
                break
        else:
            i += 1
    return spans


def title_gazetteer(titles: Iterable[str], split_words) -> set[tuple[str, ...]]:
    """Lowercased word tuples of multi-word titles ("Foo Bar (band)" -> ("foo", "bar"))."""
    gazetteer = set()
    for title in titles:
        title = re.sub(r"\s*\([^)]*\)\s*$", "", title or "").strip()
        words = tuple(w.lower() for w in split_words(title))
        if len(words) >= 2 and is_wordlike(words[0]) and is_wordlike(words[-1]):
            gazetteer.add(words)
    return gazetteer


def _capitalized(word: str) -> bool:
    return word[:1].isupper()


def _is_initial_dot(words: Sequence[str], j: int) -> bool:
    """The period of an initial inside a name ("Helena D. Cooper-Thomas")."""
    return words[j] == "." and len(words[j - 1]) == 1 and words[j - 1].isupper()


def find_entity_spans(words: Sequence[str], gazetteer: AbstractSet[tuple[str, ...]] | None = None,
                      max_title_words: int = 8,
                      starts: dict[str, tuple[int, ...]] | None = None) -> list[tuple[int, int]]:
    """Entity-like [start, end) spans over cased ``words`` of one sentence: title matches first (longest
    first), then runs of >= 2 capitalized words, allowing name connectors and hyphens inside.
    Leading stopwords ("In", "The" at a sentence start) are not part of a name. ``starts``:
    ``start_index(gazetteer)``, passed by callers that match many sentences against one gazetteer."""
    n = len(words)
    taken = [False] * n
    spans = []
    if gazetteer:
        if starts is None:
            starts = start_index(gazetteer)
        lower = [w.lower() for w in words]
        i = 0
        while i < n:
            lengths = starts.get(lower[i], ()) if _capitalized(words[i]) else ()
            for length in lengths:
                if length > max_title_words or i + length > n:
                    continue
                if tuple(lower[i : i + length]) in gazetteer:
                    spans.append((i, i + length))
                    taken[i : i + length] = [True] * length
                    i += length
                    break
            else:
                i += 1
    i = 0
    while i < n:
        if taken[i] or not _capitalized(words[i]) or words[i].lower() in STOPWORDS:
            i += 1
            continue
        j = i + 1
        end = i + 1  # end of the last capitalized word in the run
        while j < n and not taken[j]:
            word = words[j]
            if _capitalized(word) and is_wordlike(word):
                end = j + 1
            elif not (word in NAME_CONNECTORS or word == "-" or _is_initial_dot(words, j)):
                break
            j += 1
        capitalized_words = sum(1 for w in words[i:end] if _capitalized(w))
        if capitalized_words >= 2:
            spans.append((i, end))
            i = end
        else:
            i += 1
    return sorted(spans)


class _WordForms:
    """word -> (lowercased, capitalized, may open a capitalized run (capitalized, not a stopword), capitalized
    and wordlike, lengths of the titles it may open (capitalized words only), lengths of the phrases it may
    open, run flags (the bits above), the lowercased word's id in a :class:`LexiconIndex` vocabulary or -1):
    the per-word facts :func:`sentence_knowledge_spans` and :func:`batch_knowledge_spans` read, memoized
    across sentences for one set of start indexes and vocabulary (a new set starts a new memo)."""

    def __init__(self) -> None:
        self.owner: tuple = (None, None, None)
        self.memo: dict[str, tuple] = {}

    def table(self, title_starts: dict | None, phrase_starts: dict | None,
              vocabulary: dict[str, int] | None = None) -> dict[str, tuple]:
        if (any(a is not b for a, b in zip(self.owner, (title_starts, phrase_starts, vocabulary), strict=True))
                or len(self.memo) > 1 << 18):
            self.owner = (title_starts, phrase_starts, vocabulary)
            self.memo = {}
        return self.memo

    def add(self, word: str) -> tuple:
        lower = word.lower()
        capitalized = _capitalized(word)
        title_starts, phrase_starts, vocabulary = self.owner
        opens = capitalized and lower not in STOPWORDS
        wordlike = capitalized and is_wordlike(word)
        flags = (capitalized * CAPITALIZED | opens * OPENS_RUN | wordlike * CAPITALIZED_WORD
                 | (word in NAME_CONNECTORS or word == "-") * CONNECTOR | (word == ".") * PERIOD
                 | (len(word) == 1 and word.isupper()) * INITIAL)
        forms = (lower, capitalized, opens, wordlike,
                 title_starts.get(lower, ()) if capitalized and title_starts else (),
                 phrase_starts.get(lower, ()) if phrase_starts else (),
                 flags, vocabulary.get(lower, -1) if vocabulary else -1)
        self.memo[word] = forms
        return forms


_WORD_FORMS = _WordForms()


def word_forms(words: Sequence[str], phrases: AbstractSet[tuple[str, ...]] | None,
               phrase_starts: dict[str, tuple[int, ...]] | None, gazetteer: AbstractSet[tuple[str, ...]] | None,
               title_starts: dict[str, tuple[int, ...]] | None,
               vocabulary: dict[str, int] | None = None) -> list[tuple]:
    """The per-word facts of ``words`` that :func:`sentence_knowledge_spans` reads (see ``_WordForms``), for
    these start indexes (those of ``phrases`` and ``gazetteer``; an empty or absent lexicon part has none)
    and, for :func:`batch_knowledge_spans`, a :class:`LexiconIndex`'s ``vocabulary``."""
    memo = _WORD_FORMS.table(title_starts if gazetteer else None, phrase_starts if phrases else None, vocabulary)
    add = _WORD_FORMS.add
    return [memo[w] if w in memo else add(w) for w in words]


def sentence_knowledge_spans(words: Sequence[str], phrases: AbstractSet[tuple[str, ...]],
                             phrase_starts: dict[str, tuple[int, ...]] | None, max_phrase_words: int,
                             gazetteer: AbstractSet[tuple[str, ...]] | None,
                             title_starts: dict[str, tuple[int, ...]] | None,
                             max_title_words: int = 8, forms: list[tuple] | None = None
                             ) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """(entity spans, phrase spans) of one sentence of cased ``words``: exactly
    ``find_entity_spans(words, gazetteer, max_title_words, title_starts)`` and then ``find_phrase_spans`` of
    the lowercased words over ``phrases`` with the entities' words blocked (``gazetteer`` None: no entities;
    ``phrase_starts``/``title_starts``: the entries' ``start_index``), but visiting only the positions where
    a title, a capitalized run or a phrase can start, with the per-word facts memoized. ``forms``: the
    words' :func:`word_forms` when the caller has them."""
    if gazetteer and title_starts is None:
        title_starts = start_index(gazetteer)
    if phrases and phrase_starts is None:
        phrase_starts = start_index(phrases)
    if forms is None:
        forms = word_forms(words, phrases, phrase_starts, gazetteer, title_starts)
    n = len(forms)
    entities: list[tuple[int, int]] = []
    if gazetteer is not None:
        capitals = [i for i, f in enumerate(forms) if f[1]]
        taken = None
        if title_starts:
            next_free = 0
            for i in capitals:
                if i < next_free:
                    continue
                for length in forms[i][4]:
                    if length > max_title_words or i + length > n:
                        continue
                    if tuple([f[0] for f in forms[i : i + length]]) in gazetteer:
                        entities.append((i, i + length))
                        if taken is None:
                            taken = [False] * n
                        taken[i : i + length] = [True] * length
                        next_free = i + length
                        break
        if len(capitals) >= 2:
            next_free = 0
            for c, i in enumerate(capitals):
                if i < next_free or not forms[i][2] or (taken is not None and taken[i]):
                    continue
                j = i + 1
                end = i + 1  # end of the last capitalized word in the run
                while j < n and (taken is None or not taken[j]):
                    if forms[j][3]:
                        end = j + 1
                    else:
                        word = words[j]
                        if not (word in NAME_CONNECTORS or word == "-" or _is_initial_dot(words, j)):
                            break
                    j += 1
                if bisect_left(capitals, end, c) - c >= 2:  # capitalized words in the run
                    entities.append((i, end))
                    next_free = end
        entities.sort()
    found: list[tuple[int, int]] = []
    if phrase_starts:
        blocked = None
        if entities:
            blocked = [False] * n
            for start, end in entities:
                blocked[start:end] = [True] * (end - start)
        next_free = 0
        for i in [i for i, f in enumerate(forms) if f[5]]:
            if i < next_free:
                continue
            for length in forms[i][5]:
                if length > max_phrase_words or i + length > n:
                    continue
                if blocked is not None and any(blocked[i : i + length]):
                    continue
                if tuple([f[0] for f in forms[i : i + length]]) in phrases:
                    found.append((i, i + length))
                    next_free = i + length
                    break
    return entities, found


def find_title_spans(words: Sequence[str], gazetteer: AbstractSet[tuple[str, ...]],
                     starts: dict[str, tuple[int, ...]] | None = None,
                     max_title_words: int = 8) -> list[tuple[int, int]]:
    """Greedy longest matches of ``gazetteer`` entries over ``words`` (lowercased here), for scripts without
    case: any word may open a title."""
    return find_phrase_spans([w.lower() for w in words], gazetteer, max_title_words, starts=starts)


def find_chinese_entity_spans(words: Sequence[str], tags: Sequence[str],
                              gazetteer: AbstractSet[tuple[str, ...]] | None = None,
                              starts: dict[str, tuple[int, ...]] | None = None,
                              min_chars: int = 2) -> list[tuple[int, int]]:
    """Entity [start, end) spans of one Chinese sentence of jieba ``words`` and their POS ``tags``: title
    matches first (longest first), then every other word tagged as a name (``nr``, ``ns``, ``nt``, ``nz`` and
    their sub-tags) with at least ``min_chars`` characters (jieba tags lone characters as names too often)."""
    from data_builders.language import is_entity_tag

    spans = find_title_spans(words, gazetteer, starts) if gazetteer else []
    taken = [False] * len(words)
    for start, end in spans:
        taken[start:end] = [True] * (end - start)
    for i, (word, tag) in enumerate(zip(words, tags, strict=True)):
        if not taken[i] and is_entity_tag(tag) and len(word) >= min_chars:
            spans.append((i, i + 1))
    return sorted(spans)
