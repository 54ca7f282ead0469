"""Chinese as a first-class corpus language: detection, normalization, paragraph filter, sentences, words.

A document is Chinese (``zh``) when its CJK ideographs outnumber its Latin-script words; ``data.language``
(``auto`` | ``en`` | ``zh``) decides per document (``auto``) or for the whole corpus. English documents go
through exactly the code they always did; everything here applies to Chinese documents only:

- **normalization**: NFKC (full-width letters, digits, punctuation and the ideographic space become their
  ASCII forms: ``，`` -> ``,``, ``（`` -> ``(``, ``１`` -> ``1``), then whitespace runs collapsed. Every
  downstream rule below accepts both forms, so text that skipped normalization splits the same way;
- **paragraph filter** in characters: a line with CJK is a paragraph when it has at least
  ``min_paragraph_chars`` CJK characters or ends a sentence; lines without CJK keep the English word rule;
- **sentences**: :func:`split_sentences_zh` (``。！？；…`` and ``?!;``, closing quotes/brackets kept with their
  sentence, never a split inside “” 《》 （） 「」), and :func:`chinese_sentences`, which also strips the leading
  article number (``第十二条``) or list enumerator (``（三）``, ``二、``, ``3.``) of a paragraph, so the order of
  sentences cannot be read off their numbers;
- **words**: :func:`segment`, POS-tagged segmentation with jieba's dictionary and tag set, by ``rjieba``
  (jieba-rs, the default) or ``jieba.posseg`` (``data.zh_segmenter``; both ship their dictionary, nothing is
  downloaded), run once in the shared tokenization pass (``data_builders.segments``).
"""

from __future__ import annotations

import functools
import logging
import re
import unicodedata
from collections.abc import Callable, Sequence
from typing import Any, Literal

__all__ = [
    "CHINESE_STOPWORDS",
    "DEFAULT_SEGMENTER",
    "ENTITY_TAGS",
    "LANGUAGES",
    "SEGMENTERS",
    "active_segmenter",
    "chinese_sentences",
    "cjk_count",
    "detect_language",
    "finish_document",
    "has_cjk",
    "is_entity_tag",
    "keep_chinese_paragraph",
    "normalize_chinese",
    "segment",
    "segment_many",
    "segmented_characters",
    "segmenter_id",
    "split_sentences_zh",
    "strip_enumeration",
    "use_segmenter",
]

Language = Literal["en", "zh"]
LANGUAGES = ("auto", "en", "zh")
"""Values of ``data.language``."""

# CJK unified ideographs (basic, extension A, compatibility, extensions B-F in plane 2).
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002fa1f]")
_LATIN_WORD = re.compile(r"[A-Za-z\u00c0-\u024f]+")

ENTITY_TAGS = frozenset({"nr", "ns", "nt", "nz"})
"""jieba POS tags of named entities (person, place, organization, other proper name); their sub-tags
(``nrt``, ``nrfg``) count as ``nr``."""

CHINESE_STOPWORDS = frozenset(
    """的 了 和 与 及 或 或者 以及 并 而 在 是 为 对 由 于 以 将 把 被 从 向 给 等 其 之 也 都 就 所 这 那 该 此 各
    每 有 无 不 未 可 可以 应 应当 须 必须 能 会 要 按 按照 依 依照 根据 关于 对于 通过 经 以上 以下 以内 中 上 下 内
    外 者 本 其他 有关 个 一 着 过 又 还 即 则 如 若 但 却 使 让 到 至 自 起 后 前 时 年 月 日""".split()
)
"""Function words that never open or close a mined phrase and are no BM25 term (the Chinese counterpart of
``data_builders.knowledge.STOPWORDS``)."""


# ---------------------------------------------------------------------------------------------------------
# Detection, normalization, the paragraph filter
# ---------------------------------------------------------------------------------------------------------


def has_cjk(text: str) -> bool:
    return _CJK.search(text) is not None


def cjk_count(text: str) -> int:
    """Number of CJK ideographs in ``text``."""
    return len(_CJK.findall(text))


def detect_language(paragraphs: Sequence[str]) -> Language:
    """``zh`` when the CJK ideographs of ``paragraphs`` outnumber their Latin-script words, else ``en``.

    Ideographs are compared with words, not letters: one ideograph carries about what one English word does,
    so a Chinese text full of English terms ("使用Python训练模型") is still Chinese, and an English article
    quoting a few Chinese names ("Beijing (北京)") is still English."""
    ideographs = 0
    for paragraph in paragraphs:
        ideographs += cjk_count(paragraph)
    if not ideographs:  # the common English case: one regex search per paragraph, no word count
        return "en"
    words = sum(len(_LATIN_WORD.findall(paragraph)) for paragraph in paragraphs)
    return "zh" if ideographs > words else "en"


def normalize_chinese(text: str) -> str:
    """NFKC (full-width forms and the ideographic space to ASCII, compatibility ideographs to unified ones),
    then whitespace runs collapsed to one space."""
    return " ".join(unicodedata.normalize("NFKC", text).split())


_SENTENCE_END = re.compile(r"(?:[。！？；…!?;｡]|\.{3,})[”’」』）)】\]》〉〕\"']*$")


def keep_chinese_paragraph(paragraph: str, min_paragraph_chars: int, min_paragraph_words: int) -> bool:
    """The paragraph filter of Chinese documents, in characters: a line with CJK is a paragraph when it has
    ``min_paragraph_chars`` CJK characters or ends a sentence ("删去。"); a line without CJK (an English
    abstract) keeps the English rule of ``min_paragraph_words`` words."""
    if not has_cjk(paragraph):
        return len(paragraph.split()) >= min_paragraph_words
    return cjk_count(paragraph) >= min_paragraph_chars or _SENTENCE_END.search(paragraph) is not None


def finish_document(doc: dict[str, Any], *, language: str, min_paragraph_words: int,
                    min_paragraph_chars: int) -> dict[str, Any]:
    """Decide a read document's language and apply that language's paragraph rules.

    ``doc["paragraphs"]`` are whitespace-collapsed lines that passed the reader's filter, which keeps every
    line with CJK besides those of ``min_paragraph_words`` words (the English rule). An English document
    gets the English rule alone, so its paragraphs are exactly what they were before languages existed; a
    Chinese one is normalized (:func:`normalize_chinese`) and filtered in characters
    (:func:`keep_chinese_paragraph`), and also gets its ``sentences`` (:func:`chinese_sentences`; English
    documents leave them to the caller). Returns a new dict with ``language`` set.
    """
    paragraphs = doc["paragraphs"]
    lang = detect_language(paragraphs) if language == "auto" else language
    if lang == "en":
        kept = [p for p in paragraphs if len(p.split()) >= min_paragraph_words]
        return {**doc, "language": "en", "paragraphs": kept}
    kept, sentences = [], []
    for paragraph in paragraphs:
        paragraph = normalize_chinese(paragraph)
        if not keep_chinese_paragraph(paragraph, min_paragraph_chars, min_paragraph_words):
            continue
        split = chinese_sentences(paragraph)
        if split:  # a bare article number ("第十条") has no sentence left once the number is stripped
            kept.append(paragraph)
            sentences.append(split)
    return {**doc, "language": "zh", "title": normalize_chinese(doc.get("title") or ""), "paragraphs": kept,
            "sentences": sentences}


# ---------------------------------------------------------------------------------------------------------
# Sentences
# ---------------------------------------------------------------------------------------------------------

# A run of terminal punctuation (an ASCII ellipsis is 3+ dots) and the closing quotes/brackets after it.
_TERMINAL_RUN = re.compile(r"(?:[。！？；…!?;｡]|\.{3,})+[”’」』）)】\]》〉〕\"']*")
_STRONG = frozenset("。！？!?｡")
_PAIRS = {"“": "”", "‘": "’", "「": "」", "『": "』", "（": "）", "(": ")", "【": "】", "[": "]", "《": "》",
          "〈": "〉", "〔": "〕"}
_CLOSING = {close: open_ for open_, close in _PAIRS.items()}
_BRACKETS = re.compile("[" + re.escape("".join(_PAIRS) + "".join(_CLOSING) + '"') + "]")
# After a terminal run, these continue the sentence ("为了……，制定本法").
_CONTINUERS = frozenset("，,、：:")


def _bracket_depth(text: str) -> list[int] | None:
    """depth[i] = number of matched bracket/quote pairs (open, close) with open < i <= close, i.e. whether a
    cut before character i would fall inside them; None when the text has no matched pair. Unmatched
    openers and closers (a stray “ or an apostrophe ’) protect nothing."""
    stack: list[tuple[str, int]] = []
    pairs: list[tuple[int, int]] = []
    for match in _BRACKETS.finditer(text):
        char, position = match.group(), match.start()
        if char == '"':  # ASCII double quotes open and close alike
            if stack and stack[-1][0] == '"':
                pairs.append((stack.pop()[1], position))
            else:
                stack.append((char, position))
        elif char in _PAIRS:
            stack.append((char, position))
        else:
            opener = _CLOSING[char]
            for depth in range(len(stack) - 1, -1, -1):
                if stack[depth][0] == opener:
                    pairs.append((stack[depth][1], position))
                    del stack[depth:]  # openers left open inside the pair are unmatched
                    break
    if not pairs:
        return None
    depth = [0] * (len(text) + 2)
    for open_, close in pairs:
        depth[open_ + 1] += 1
        depth[close + 1] -= 1
    for i in range(1, len(depth)):
        depth[i] += depth[i - 1]
    return depth


def split_sentences_zh(text: str) -> list[str]:
    """Split Chinese ``text`` into sentences.

    A sentence ends after a run of ``。！？；…`` (or ``?!;``, an ASCII ``...``) together with the closing
    quotes and brackets that follow it (“他说：“走吧。”” keeps its ”). No split falls inside a matched pair of
    “” ‘’ 「」 『』 （） () 【】 《》 〈〉: punctuation inside one ends a sentence only when it is a full stop (。！？)
    directly followed by the closers of every pair it sits in. A run followed by ``，、：`` (``为了……，``)
    continues the sentence. Periods are never boundaries (decimals, ``3.5``, abbreviations in Latin text).

    Returns the stripped, non-empty sentences in order; text without a boundary yields itself.
    """
    depth = None
    computed = False
    sentences: list[str] = []
    start, n = 0, len(text)
    for match in _TERMINAL_RUN.finditer(text):
        end = match.end()
        follow = end
        while follow < n and text[follow].isspace():
            follow += 1
        if follow < n and text[follow] in _CONTINUERS:
            continue
        if not computed:
            depth, computed = _bracket_depth(text), True
        if depth is not None:
            if depth[end] > 0:  # the cut itself would fall inside a pair
                continue
            if depth[match.start()] > 0 and not _STRONG.intersection(match.group()):
                continue  # "“如权利要求……所述”一类": an ellipsis or semicolon inside quotes ends nothing
        piece = text[start:end].strip()
        if piece:
            sentences.append(piece)
        start = end
    tail = text[start:].strip()
    if tail:
        sentences.append(tail)
    return sentences


_NUMERAL = "零〇一二三四五六七八九十百千万两"
_ENUMERATION = re.compile(
    rf"^(?:第[{_NUMERAL}\d]+条(?:之[{_NUMERAL}]+)?"  # article number: 第十二条, 第一百零一条之一
    rf"|[(（][{_NUMERAL}\d]{{1,4}}[)）]"  # list item: (三), （3）
    rf"|[{_NUMERAL}]{{1,4}}、"  # list item: 二、
    r"|\d{1,3}[.．、](?!\d))"  # list item: 3. but not 3.5
    r"[\s:：]*"
)


def strip_enumeration(sentence: str) -> str:
    """``sentence`` without its leading article number or list enumerator (at most two: "第五条 (一)")."""
    for _ in range(2):
        match = _ENUMERATION.match(sentence)
        if match is None or match.end() == 0:
            break
        sentence = sentence[match.end():]
    return sentence.strip()


def chinese_sentences(paragraph: str) -> list[str]:
    """The sentences of one Chinese paragraph (:func:`split_sentences_zh`), its leading article number or
    list enumerator stripped (:func:`strip_enumeration`): numbered articles would otherwise give away the
    order of sentences (reordering) and their distance."""
    sentences = split_sentences_zh(paragraph)
    if sentences:
        sentences[0] = strip_enumeration(sentences[0])
        if not sentences[0]:
            sentences = sentences[1:]
    return sentences


# ---------------------------------------------------------------------------------------------------------
# Words
# ---------------------------------------------------------------------------------------------------------


SEGMENTERS = ("rjieba", "jieba")
"""Values of ``data.zh_segmenter``: ``rjieba`` (jieba-rs, the same dictionary and HMM in Rust) or ``jieba``
(``jieba.posseg``, pure Python). Both tag with jieba's POS set; see docs/PERFORMANCE.md for their agreement."""

DEFAULT_SEGMENTER = "rjieba"


@functools.cache
def _tagger(name: str) -> Callable[[str], list[tuple[str, str]]]:
    """The ``text -> [(word, tag), ...]`` function of segmenter ``name``, loaded once per process."""
    if name == "jieba":
        import jieba
        import jieba.posseg

        jieba.setLogLevel(logging.WARNING)  # its dictionary-loading chatter is not ours to print
        jieba.initialize()
        cut = jieba.posseg.cut
        return lambda text: [(pair.word, pair.flag) for pair in cut(text)]
    if name == "rjieba":
        import rjieba

        return rjieba.Jieba().tag  # HMM on, as jieba.posseg's default
    raise ValueError(f"unknown Chinese segmenter {name!r}: one of {', '.join(SEGMENTERS)}")


def segmenter_id(name: str) -> list[str]:
    """What identifies segmenter ``name`` in a cache fingerprint: its package name and version (the words and
    tags a cache holds change with either)."""
    from importlib.metadata import version

    if name not in SEGMENTERS:
        raise ValueError(f"unknown Chinese segmenter {name!r}: one of {', '.join(SEGMENTERS)}")
    return [name, version(name)]


_ACTIVE = [DEFAULT_SEGMENTER]
_SEGMENTED = [0]


def segmented_characters() -> int:
    """Characters this process has segmented so far (:func:`segment`, :func:`segment_many`): what a build's
    segmentation costs in passes over the corpus (the shared pass is one; titles add a little)."""
    return _SEGMENTED[0]


def use_segmenter(name: str) -> None:
    """Make ``name`` the segmenter :func:`segment` uses when none is named (the run's ``data.zh_segmenter``,
    set once by the build before any document is segmented; forked workers inherit it)."""
    _tagger(name)  # fails at once on an unknown name, and loads the dictionary before any fork
    _ACTIVE[0] = name


def active_segmenter() -> str:
    """The segmenter :func:`segment` uses when none is named (:func:`use_segmenter`)."""
    return _ACTIVE[0]


def segment(text: str, segmenter: str | None = None) -> list[tuple[str, str]]:
    """POS-tagged segmentation of ``text`` by ``segmenter`` (:data:`SEGMENTERS`; None: :func:`active_segmenter`),
    HMM on for words outside the dictionary: ``(word, tag)`` pairs whose words concatenate back to ``text``,
    spaces and punctuation included (tag ``x``)."""
    _SEGMENTED[0] += len(text)
    return _tagger(segmenter or _ACTIVE[0])(text)


def segment_many(texts: Sequence[str], segmenter: str | None = None) -> list[list[tuple[str, str]]]:
    """:func:`segment` of each of ``texts``, in order."""
    tag = _tagger(segmenter or _ACTIVE[0])
    _SEGMENTED[0] += sum(map(len, texts))
    return [tag(text) for text in texts]


def is_entity_tag(tag: str) -> bool:
    """Whether a jieba POS tag marks a named entity (:data:`ENTITY_TAGS`, sub-tags included)."""
    return tag[:2] in ENTITY_TAGS


def tagged_spans(pairs: list[tuple[str, str]]) -> dict[tuple[int, int], str]:
    """(word, tag) pairs of one text -> {(start, end) character span: tag} of its non-blank words: two
    segmentations of the same text agree on a word where they share its span."""
    spans, position = {}, 0
    for word, tag in pairs:
        if word.strip():
            spans[(position, position + len(word))] = tag
        position += len(word)
    return spans
