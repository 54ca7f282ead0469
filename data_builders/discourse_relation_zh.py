"""Chinese discourse pairs: two clauses or sentences joined by a connective, the connective removed.

The markers (:data:`CHINESE_MARKERS`) follow the DisSent Chinese inventory. Three patterns give a pair
``(A, B)`` and the relation class of the marker, over the sentences of a Chinese document (normalized by the
reader, so commas are ``,`` but ``，`` is accepted too):

- **sentence-initial** (contrast, result, elaboration, addition, temporal): sentence ``S_i`` opens with a
  marker, optionally followed by a comma ("但是,用人单位..."); ``A`` is the sentence before it, ``B`` is
  ``S_i`` without the marker. ``之后`` and ``另外`` need the comma (without it they are "after X" and
  "another"); the others do not, as Chinese connectives often stand without one.
- **clause-initial** (every class): a clause of one sentence opens with a marker right after a comma
  ("...的,但是不得..."); ``A`` is the sentence up to the comma, ``B`` the rest after the marker. For
  ``因为`` a copula before it belongs to the marker ("...,是因为...").
- **subordinate** (reason, condition): a sentence opens with ``因为/由于`` or ``如果/假如/只要``: ``A`` is the
  clause after the marker up to the first comma, ``B`` the rest (the main clause).

The correlative half of a pair goes with the marker: ``虽然/尽管`` opening ``A`` of a contrast, ``不但/不仅``
opening ``A`` of an addition, ``所以/因此`` (reason) or ``那么`` (condition) opening ``B``. ``A`` is given a
final ``。`` (clauses and sentences then end alike). A pair is skipped when either side still contains any
marker or correlative word (:data:`CUE_WORDS`), or is shorter than ``min_words`` units (CJK characters
count half a unit each, Latin words one), or has unbalanced brackets or quotes.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from data_builders.language import cjk_count

CHINESE_MARKERS: dict[str, tuple[str, ...]] = {
    "contrast": ("但是", "然而", "不过", "可是"),
    "result": ("因此", "所以", "因而"),
    "elaboration": ("例如", "比如", "譬如"),
    "addition": ("而且", "并且", "此外", "另外"),
    "temporal": ("同时", "随后", "然后", "之后"),
    "reason": ("因为", "由于"),
    "condition": ("如果", "假如", "只要"),
}
"""Relation class -> its Chinese connectives. The class names are those of
``data_builders.discourse_relation.ALL_RELATIONS`` (label ids are shared across languages)."""

_SUBORDINATE = ("reason", "condition")
_NEEDS_COMMA = frozenset({"之后", "另外"})
_CORRELATIVE_A = {"contrast": ("虽然", "尽管"), "addition": ("不但", "不仅")}
_CORRELATIVE_B = {"reason": ("所以", "因此"), "condition": ("那么",)}
CUE_WORDS: tuple[str, ...] = tuple(sorted(
    {m for ms in CHINESE_MARKERS.values() for m in ms}
    | {w for ws in _CORRELATIVE_A.values() for w in ws} | {w for ws in _CORRELATIVE_B.values() for w in ws},
    key=len, reverse=True))
"""Every marker and correlative word: none may be left in either side of a pair."""

_MARKER_CLASS = {marker: cls for cls, markers in CHINESE_MARKERS.items() for marker in markers}
_MARKERS_LONGEST_FIRST = tuple(sorted(_MARKER_CLASS, key=len, reverse=True))
_COMMA = ",，"
_CLAUSE_MARKER = re.compile("[,，](是(?=因为))?(" + "|".join(map(re.escape, _MARKERS_LONGEST_FIRST)) + ")")
_EDGE_PUNCTUATION = ",，;；:：。.!！?？、 "
_PAIRS = (("(", ")"), ("（", "）"), ("“", "”"), ("《", "》"), ("[", "]"), ("【", "】"))


def _length(text: str) -> float:
    # Two characters make about one word: the English min_words then means the same amount of text.
    return cjk_count(text) / 2 + len(re.findall(r"[A-Za-z0-9]+", text))


def _balanced(text: str) -> bool:
    return all(text.count(o) == text.count(c) for o, c in _PAIRS) and text.count('"') % 2 == 0


def _strip_prefix(text: str, words: tuple[str, ...]) -> str:
    for word in words:
        if text.startswith(word):
            return text[len(word):].lstrip(_COMMA + " ")
    return text


def _pair(a: str, b: str, relation: str, min_words: int) -> tuple[str, str] | None:
    a = _strip_prefix(a.strip(), _CORRELATIVE_A.get(relation, ())).rstrip(_EDGE_PUNCTUATION)
    b = _strip_prefix(b.strip().lstrip(_COMMA + " "), _CORRELATIVE_B.get(relation, ()))
    if _length(a) < min_words or _length(b) < min_words or not _balanced(a) or not _balanced(b):
        return None
    if any(cue in a or cue in b for cue in CUE_WORDS):
        return None
    return a + "。", b


def _opening_marker(sentence: str) -> str | None:
    if not sentence.startswith(_MARKERS_LONGEST_FIRST):  # most sentences: one C-level test
        return None
    for marker in _MARKERS_LONGEST_FIRST:
        if sentence.startswith(marker):
            rest = sentence[len(marker):]
            if marker in _NEEDS_COMMA and not rest.startswith(tuple(_COMMA)):
                return None
            return marker
    return None


def find_pairs_zh(sentences: list[str], min_words: int = 3) -> Iterator[tuple[str, str, str, str]]:
    """Every ``(A, B, relation, marker)`` pair of one Chinese document's sentences, in document order (at
    most one per sentence: its first usable marker)."""
    for i, sentence in enumerate(sentences):
        marker = _opening_marker(sentence)
        if marker is not None:
            relation = _MARKER_CLASS[marker]
            rest = sentence[len(marker):]
            if relation in _SUBORDINATE:
                comma = min((p for p in (rest.find(c) for c in _COMMA) if p > 0), default=-1)
                pair = _pair(rest[:comma], rest[comma + 1:], relation, min_words) if comma > 0 else None
            else:
                pair = _pair(sentences[i - 1], rest, relation, min_words) if i > 0 else None
            if pair is not None:
                yield pair[0], pair[1], relation, marker
                continue
        match = _CLAUSE_MARKER.search(sentence)
        if match is not None:
            marker = match.group(2)
            relation = _MARKER_CLASS[marker]
            pair = _pair(sentence[: match.start()], sentence[match.end():], relation, min_words)
            if pair is not None:
                yield pair[0], pair[1], relation, marker
