"""Knowledge spans of a whole batch at once, in numpy: the lexicon (phrases and titles) as tries over word ids,
and :func:`batch_knowledge_spans`, which finds exactly the spans :func:`data_builders.knowledge.
sentence_knowledge_spans` finds sentence by sentence (the rules are stated there). Its inputs are per-word
facts :func:`data_builders.knowledge.word_forms` computes: the lexicon vocabulary id and the run flags below.
"""

from __future__ import annotations

from collections.abc import Iterable
from collections.abc import Set as AbstractSet

import numpy as np

CAPITALIZED, OPENS_RUN, CAPITALIZED_WORD, CONNECTOR, PERIOD, INITIAL = (1 << k for k in range(6))
"""Bits of a word's run flags (``word_forms(...)[i][6]``): capitalized; may open a capitalized run (capitalized,
not a stopword); capitalized and wordlike (extends a run); a name connector or "-" (may stand inside a run);
"."; one uppercase character (an initial, whose following "." may stand inside a run)."""


class EntryTrie:
    """Multi-word entries (phrases or titles, lowercased word tuples) as a trie over word ids, walked for all
    positions of a batch at once with numpy: node 0 is the root; the child of ``node`` by word ``w`` is
    ``children[k]`` where ``keys[k] == node * width + w`` (``keys`` sorted); ``lengths[node]`` is the length of
    the entry ending there, 0 if none. One-word entries are left out, as :func:`start_index` leaves them."""

    def __init__(self, entries: Iterable[tuple[str, ...]], vocabulary: dict[str, int]) -> None:
        self.width = max(len(vocabulary), 1)
        edges: dict[int, int] = {}
        lengths = [0]
        self.longest = 0
        for entry in entries:
            if len(entry) < 2:
                continue
            node = 0
            for word in entry:
                key = node * self.width + vocabulary[word]
                if key not in edges:
                    edges[key] = len(lengths)
                    lengths.append(0)
                node = edges[key]
            lengths[node] = len(entry)
            self.longest = max(self.longest, len(entry))
        order = sorted(edges)
        self.keys = np.array(order, dtype=np.int64)
        self.children = np.array([edges[k] for k in order], dtype=np.int64)
        self.lengths = np.array(lengths, dtype=np.int64)

    def longest_matches(self, word_ids: np.ndarray, positions: np.ndarray, limits: np.ndarray,
                        max_words: int) -> np.ndarray:
        """For each of ``positions``: the length of the longest entry of at most ``max_words`` words that
        ``word_ids[p : p + length]`` spells with ``p + length <= limits`` (its sentence's end, or a blocked
        word), 0 if none. ``word_ids``: ids in the trie's vocabulary, -1 for words outside it."""
        best = np.zeros(len(positions), dtype=np.int64)
        alive = np.arange(len(positions))
        nodes = np.zeros(len(positions), dtype=np.int64)
        for k in range(min(max_words, self.longest)):
            if not alive.size or not self.keys.size:
                break
            at = positions[alive] + k
            inside = at < limits[alive]
            alive, at = alive[inside], at[inside]
            words = word_ids[at]
            known = words >= 0
            alive, words = alive[known], words[known]
            keys = nodes[alive] * self.width + words
            slot = np.minimum(np.searchsorted(self.keys, keys), len(self.keys) - 1)
            found = self.keys[slot] == keys
            alive = alive[found]
            nodes[alive] = self.children[slot[found]]
            ends = self.lengths[nodes[alive]] > 0
            best[alive[ends]] = k + 1
        return best


class LexiconIndex:
    """A lexicon's phrases and titles as :class:`EntryTrie` over one shared ``vocabulary`` (every word of
    either), for :func:`batch_knowledge_spans`."""

    def __init__(self, phrases: AbstractSet[tuple[str, ...]], titles: AbstractSet[tuple[str, ...]]) -> None:
        self.vocabulary: dict[str, int] = {}
        for entry in (*sorted(phrases), *sorted(titles)):
            for word in entry:
                self.vocabulary.setdefault(word, len(self.vocabulary))
        self.phrases = EntryTrie(phrases, self.vocabulary)
        self.titles = EntryTrie(titles, self.vocabulary)


def _greedy(positions: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Left to right, the matches (``positions`` ascending, ``lengths`` > 0 where one starts) that do not
    overlap an earlier kept one: the greedy longest-match rule."""
    hits = np.flatnonzero(lengths)
    starts, ends, next_free = [], [], -1
    for position, length in zip(positions[hits].tolist(), lengths[hits].tolist(), strict=True):
        if position >= next_free:
            starts.append(position)
            next_free = position + length
            ends.append(next_free)
    return np.array(starts, dtype=np.int64), np.array(ends, dtype=np.int64)


def covered(starts: np.ndarray, ends: np.ndarray, n: int) -> np.ndarray:
    """Which of ``n`` positions lie inside one of the disjoint [start, end) spans."""
    depth = np.zeros(n + 1, dtype=np.int64)
    np.add.at(depth, starts, 1)
    np.add.at(depth, ends, -1)
    return np.cumsum(depth[:-1]) > 0


def batch_knowledge_spans(word_ids: np.ndarray, flags: np.ndarray, sentence_starts: np.ndarray,
                          index: LexiconIndex, *, entities: bool, phrases: bool, max_phrase_words: int,
                          max_title_words: int = 8) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`sentence_knowledge_spans` for every sentence of a batch at once, in numpy: the same spans.

    ``word_ids`` (lexicon vocabulary ids, -1 outside it) and ``flags`` (run flags) per word of the batch,
    words of all sentences flattened; ``sentence_starts``: each sentence's first word, then the total.
    ``entities``: search titles and capitalized runs (a gazetteer was given); ``phrases``: search phrases.
    Returns (entity starts, entity ends, phrase starts, phrase ends), batch-wide word positions, ascending.

    The rules are the same: titles open at capitalized words, longest first, left to right; a run opens at a
    capitalized non-stopword outside a title and goes on through capitalized wordlike words, connectors, "-"
    and an initial's "." to its last capitalized wordlike word, and counts when it holds two capitalized
    words; phrases, longest first, left to right, never touch an entity's words. Only the matches found are
    visited in Python (to keep the left-to-right rule); looking them up is a trie walk over all positions."""
    n = len(word_ids)
    empty = np.zeros(0, dtype=np.int64)
    sentence_ends = _sentence_ends(sentence_starts, n)
    entity_starts, entity_ends = empty, empty
    if entities and n:
        capitalized = (flags & CAPITALIZED) != 0
        taken = np.zeros(n, dtype=bool)
        title_starts, title_ends = empty, empty
        if index.titles.keys.size:
            openers = np.flatnonzero(capitalized)
            title_starts, title_ends = _greedy(openers, index.titles.longest_matches(
                word_ids, openers, sentence_ends[openers], max_title_words))
            taken = covered(title_starts, title_ends, n)
        positions = np.arange(n)
        extends = (flags & CAPITALIZED_WORD) != 0
        initial_period = np.zeros(n, dtype=bool)
        initial_period[1:] = ((flags[1:] & PERIOD) != 0) & ((flags[:-1] & INITIAL) != 0)
        inside = (extends | ((flags & CONNECTOR) != 0) | initial_period) & ~taken
        stops = ~inside
        stops[sentence_starts[:-1][np.diff(sentence_starts) > 0]] = True  # a run never crosses a sentence
        stop_positions = np.append(np.flatnonzero(stops), n)
        openers = np.flatnonzero(((flags & OPENS_RUN) != 0) & ~taken)
        run_stops = stop_positions[np.searchsorted(stop_positions, openers + 1)]  # first stop after the opener
        last_extending = np.maximum.accumulate(np.where(extends, positions, -1))
        last = last_extending[run_stops - 1]
        run_ends = np.where(last > openers, last + 1, openers + 1)
        capitals = np.concatenate([[0], np.cumsum(capitalized)])
        holds_two = capitals[run_ends] - capitals[openers] >= 2
        run_starts, run_ends = _greedy(openers, np.where(holds_two, run_ends - openers, 0))
        entity_starts, entity_ends = _in_order([title_starts, run_starts], [title_ends, run_ends])
    return _with_phrases(word_ids, sentence_ends, entity_starts, entity_ends, index, phrases, max_phrase_words)


def _sentence_ends(sentence_starts: np.ndarray, n: int) -> np.ndarray:
    """For each of the batch's ``n`` words, the end (exclusive) of its sentence."""
    if not n:
        return np.zeros(0, dtype=np.int64)
    return sentence_starts[1:][np.repeat(np.arange(len(sentence_starts) - 1), np.diff(sentence_starts))]


def _in_order(starts: list[np.ndarray], ends: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Spans of several kinds as one list, by start (stable: ties keep the kinds' order)."""
    all_starts, all_ends = np.concatenate(starts), np.concatenate(ends)
    order = np.argsort(all_starts, kind="stable")
    return all_starts[order], all_ends[order]


def _with_phrases(word_ids: np.ndarray, sentence_ends: np.ndarray, entity_starts: np.ndarray,
                  entity_ends: np.ndarray, index: LexiconIndex, phrases: bool, max_phrase_words: int
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(entity starts, entity ends, phrase starts, phrase ends): the entities and, if asked, the phrases."""
    phrase_starts = phrase_ends = np.zeros(0, dtype=np.int64)
    if phrases and len(word_ids):
        phrase_starts, phrase_ends = _phrase_spans(word_ids, sentence_ends, entity_starts, entity_ends, index,
                                                   max_phrase_words)
    return entity_starts, entity_ends, phrase_starts, phrase_ends


def _phrase_spans(word_ids: np.ndarray, sentence_ends: np.ndarray, entity_starts: np.ndarray,
                  entity_ends: np.ndarray, index: LexiconIndex, max_phrase_words: int
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Phrases, longest first, left to right, inside their sentence and never touching an entity's words."""
    if not index.phrases.keys.size:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    n = len(word_ids)
    openers = np.flatnonzero(word_ids >= 0)
    limits = sentence_ends[openers]
    if entity_starts.size:
        blocked = np.append(np.flatnonzero(covered(entity_starts, entity_ends, n)), n)
        limits = np.minimum(limits, blocked[np.searchsorted(blocked, openers)])  # the first blocked word
    return _greedy(openers, index.phrases.longest_matches(word_ids, openers, limits, max_phrase_words))


def batch_chinese_knowledge_spans(word_ids: np.ndarray, tagged: np.ndarray, sentence_starts: np.ndarray,
                                  index: LexiconIndex, *, entities: bool, phrases: bool, max_phrase_words: int,
                                  max_title_words: int = 8
                                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The spans :func:`data_builders.knowledge_masking.sentence_units` finds in Chinese sentences (by
    :func:`data_builders.knowledge.find_chinese_entity_spans`), for every sentence of a batch at once.

    ``word_ids``: lexicon vocabulary ids of the lowercased words (-1 outside it), words of all sentences
    flattened; ``tagged``: whether a word counts as a tagged name (an entity POS tag and at least two
    characters); ``sentence_starts``: each sentence's first word, then the total. ``entities``: search titles
    and tagged names. Titles open at any word, longest first, left to right; every tagged word outside a title
    is an entity of its own; phrases as in :func:`batch_knowledge_spans`. Returns (entity starts, entity ends,
    phrase starts, phrase ends), batch-wide word positions, ascending."""
    n = len(word_ids)
    empty = np.zeros(0, dtype=np.int64)
    sentence_ends = _sentence_ends(sentence_starts, n)
    entity_starts, entity_ends = empty, empty
    if entities and n:
        title_starts, title_ends = empty, empty
        if index.titles.keys.size:
            openers = np.flatnonzero(word_ids >= 0)
            title_starts, title_ends = _greedy(openers, index.titles.longest_matches(
                word_ids, openers, sentence_ends[openers], max_title_words))
        names = np.flatnonzero(tagged & ~covered(title_starts, title_ends, n))
        entity_starts, entity_ends = _in_order([title_starts, names], [title_ends, names + 1])
    return _with_phrases(word_ids, sentence_ends, entity_starts, entity_ends, index, phrases, max_phrase_words)
