"""Rule-based English sentence splitting (no model, no downloads).

The splitter finds candidate boundaries with one regular expression (terminal punctuation, optional closing
quotes/brackets, whitespace) and then judges each candidate by looking only at the token before it and the
first character/word after it. Work is proportional to the number of candidates, not to the number of
characters, so it keeps up with tens of megabytes of text.
"""

from __future__ import annotations

import re

__all__ = ["ABBREVIATIONS", "SENTENCE_FINAL_ABBREVIATIONS", "split_sentences"]

ABBREVIATIONS: frozenset[str] = frozenset(
    {
        # Titles and ranks: they precede a name, so a capital letter after them never starts a sentence.
        "Mr.", "Mrs.", "Ms.", "Dr.", "Prof.", "Sr.", "Jr.", "St.", "Mt.", "Gen.", "Col.", "Lt.", "Capt.",
        "Sgt.", "Rev.", "Hon.", "Gov.", "Sen.", "Rep.", "Adm.", "Maj.", "Brig.", "Cpl.", "Pvt.", "Fr.",
        "Messrs.", "Mme.", "Mlle.", "Ft.",
        # Company suffixes.
        "Inc.", "Ltd.", "Co.", "Corp.", "Bros.",
        # Latin and scholarly shorthand.
        "vs.", "v.", "etc.", "e.g.", "i.e.", "cf.", "al.", "approx.", "c.", "ca.", "fl.", "viz.",
        "No.", "Nos.", "Nr.", "Vol.", "pp.", "p.", "Fig.", "Op.", "b.", "d.",
        # Taxonomic ranks, frequent in species articles ("Microtis media subsp. Densiflora").
        "subsp.", "ssp.", "sp.", "spp.", "var.",
        # Months (May has no abbreviation).
        "Jan.", "Feb.", "Mar.", "Apr.", "Jun.", "Jul.", "Aug.", "Sep.", "Sept.", "Oct.", "Nov.", "Dec.",
        # Dotted short forms.
        "U.S.", "U.K.", "a.m.", "p.m.",
    }
)  # fmt: skip
"""Tokens (with their final period) after which the splitter does not break."""

SENTENCE_FINAL_ABBREVIATIONS: frozenset[str] = frozenset(
    {"Jr.", "Sr.", "Inc.", "Ltd.", "Co.", "Corp.", "Bros.", "etc.", "U.S.", "U.K.", "a.m.", "p.m."}
)
"""Abbreviations that often end a sentence ("... Bill France Jr. In August ..."): for these, and for single
capital initials and dotted acronyms, a following sentence-opening function word ("The", "He", "In")
still marks a boundary."""

# Function words that start sentences but almost never follow an initial or title inside a name.
# "A" is left out on purpose: "A. A. Milne" and "Serie A. A ..." cannot be told apart cheaply.
_SENTENCE_OPENERS: frozenset[str] = frozenset(
    {
        "The", "This", "These", "That", "Those", "It", "Its", "He", "She", "They", "We", "His", "Her",
        "Their", "Our", "There", "In", "On", "At", "After", "Before", "During", "However", "When", "While",
        "Since", "Although", "Following", "From", "By", "For", "With", "As", "An", "Both", "Some", "Many",
        "Most", "Other", "Several", "Later", "Today", "Also", "Then", "Despite", "Upon",
        "Subsequently", "Meanwhile", "Initially", "Currently", "Eventually", "Finally", "Thereafter",
    }
)  # fmt: skip

# Terminal punctuation run, optional closers, then whitespace; group 1 is the first character after it.
_CANDIDATE = re.compile(r"""[.!?]+["'\u201d\u2019)\]]*(?=\s+(\S))""")
_OPENERS_CHARS = "\"'\u201c\u2018(["
_DOTTED_ACRONYM = re.compile(r"(?:[A-Za-z]\.)+[A-Za-z]")
_WORD = re.compile(r"[A-Za-z]+")
_LIST_MARKER = re.compile(r"[0-9]{1,3}|[IVXivx]{1,5}|[A-Za-z]")
# The abbreviation check only needs the token right before the period; abbreviations are short, so a
# bounded look-behind window avoids scanning back over long tokens.
_LOOKBEHIND = 24


def _can_start_sentence(char: str) -> bool:
    return char.isupper() or char.isdigit() or char in _OPENERS_CHARS


def _next_word_opens_sentence(text: str, start: int) -> bool:
    match = _WORD.match(text, start)
    if match is None or match.group() not in _SENTENCE_OPENERS:
        return False
    # "He." or "In." would itself be an initial-like token, not a sentence opener.
    end = match.end()
    return end >= len(text) or text[end] != "."


def _is_boundary(text: str, sentence_start: int, punct_start: int, punct: str, next_start: int) -> bool:
    if not _can_start_sentence(text[next_start]):
        # Covers "e.g. the", "etc. and" and a mid-sentence ellipsis followed by lowercase.
        return False
    if punct == "." and _LIST_MARKER.fullmatch(text, sentence_start, punct_start):
        # "1. The pair ..." or "iv. Then ...": an enumeration marker, not a one-word sentence.
        return False
    if punct != ".":
        # "?", "!", "?!" and an ellipsis before a capital all end the sentence.
        return True
    window = text[max(0, punct_start - _LOOKBEHIND) : punct_start]
    if not window or window[-1].isspace():
        return True
    token = window.rsplit(None, 1)[-1].lstrip(_OPENERS_CHARS)
    if not token:
        return True
    abbreviation = token + "."
    if abbreviation in ABBREVIATIONS:
        if abbreviation in SENTENCE_FINAL_ABBREVIATIONS:
            return _next_word_opens_sentence(text, next_start)
        return False
    if (len(token) == 1 and token.isupper()) or _DOTTED_ACRONYM.fullmatch(token):
        # Initials ("J. R. R. Tolkien") and acronyms ("U.S.A.") usually continue; "World War I. The" does not.
        return _next_word_opens_sentence(text, next_start)
    return True


def split_sentences(text: str) -> list[str]:
    """Split English ``text`` into sentences with punctuation rules.

    A boundary is placed after ``.``, ``!`` or ``?`` (a run of them, plus any closing quotes or brackets)
    when whitespace follows and the next character is an uppercase letter, a digit or an opening
    quote/bracket. Periods after known abbreviations (:data:`ABBREVIATIONS`), single capital initials and
    dotted acronyms do not break, unless the next word is a sentence-opening function word and the token
    can also end a sentence (``Jr.``, ``Inc.``, ``U.S.``, initials). Decimals never qualify because no
    whitespace follows their period.

    Returns the stripped, non-empty sentences in order; text without final punctuation yields itself.
    """
    sentences: list[str] = []
    start = 0
    for match in _CANDIDATE.finditer(text):
        next_start = match.start(1)
        if _is_boundary(text, start, match.start(), match.group(0).rstrip("\"'\u201d\u2019)]"), next_start):
            piece = text[start : match.end()].strip()
            if piece:
                sentences.append(piece)
            start = next_start
    tail = text[start:].strip()
    if tail:
        sentences.append(tail)
    return sentences
