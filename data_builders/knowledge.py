"""Knowledge units for ERNIE-style masking: phrases mined by collocation statistics, entity-like spans.

Words are the tokenizer's pre-tokens (BERT pre-tokenization: whitespace and punctuation split), so units map
exactly onto token spans. Phrases: word n-grams whose normalized PMI is high, mined in word2phrase-style passes
(each pass can join an accepted phrase with a neighbouring word). Entities: runs of capitalized words (with
connectors such as "of" or "de" inside), and spans matching a document title.

Chinese sentences come as jieba words with POS tags (``data_builders.segments``): their entities are the
words jieba tags as names (``nr``, ``ns``, ``nt``, ``nz``) and spans matching a document title, found by
:func:`find_chinese_entity_spans`; their phrases are mined from jieba words with Chinese stopwords.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from collections.abc import Set as AbstractSet

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
                 passes: int = 2, max_words: int = 4,
                 stopwords: AbstractSet[str] = STOPWORDS) -> set[tuple[str, ...]]:
    """Mine multi-word phrases from lowercased word sequences.

    Each pass counts units (words or phrases accepted so far) and adjacent unit pairs; a pair becomes a phrase
    when it occurs at least ``min_count`` times, has NPMI >= ``threshold``, neither end is one of
    ``stopwords`` (English by default; ``data_builders.language.CHINESE_STOPWORDS`` for jieba words) or
    punctuation, and it has at most ``max_words`` words.
    """
    corpus = [tuple(s) for s in sentences]
    phrases: set[tuple[str, ...]] = set()
    for _ in range(passes):
        starts = start_index(phrases)
        units_per_sentence = [_merge_units(s, phrases, max_words, starts) for s in corpus]
        unigram: Counter[tuple[str, ...]] = Counter()
        bigram: Counter[tuple[tuple[str, ...], tuple[str, ...]]] = Counter()
        for units in units_per_sentence:
            unigram.update(units)
            bigram.update(zip(units, units[1:], strict=False))
        total = sum(unigram.values())
        new = set()
        for (a, b), n_ab in bigram.items():
            if n_ab < min_count or len(a) + len(b) > max_words:
                continue
            if not _phrase_edge_ok(a[0], stopwords) or not _phrase_edge_ok(b[-1], stopwords):
                continue
            if not all(is_wordlike(w) for w in a + b):
                continue
            if npmi(n_ab, unigram[a], unigram[b], total) >= threshold:
                new.add(a + b)
        if not new - phrases:
            break
        phrases |= new
    return phrases


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
