"""Discourse-relation examples: sentence pairs joined by an explicit discourse marker, marker removed.

Two patterns yield a pair ``(A, B)`` and the relation class of the marker:

- **sentence-initial marker**: sentence ``S_i`` opens with a marker of :data:`DISCOURSE_MARKERS` followed by a
  comma ("However, the ..."). ``A`` is the sentence before it in the same document (the previous sentence of
  the same paragraph, or the last sentence of the previous paragraph), ``B`` is ``S_i`` without the marker and
  its comma, first letter re-capitalized. The comma is required for every marker, not only single-word ones:
  without it "Later he moved", "Also known as", "In addition to X, ..." or "As a result of the war, ..." are
  not sentence connectives.
- **reason**: a sentence "A, because B" / "A because B" (not "because of", not "not because") gives ``A``
  (with a final period, so that it ends like every other ``A``) and ``B`` (re-capitalized, so that it starts
  like every other ``B``). A hedging adverb right before "because" ("partly because", "mainly because")
  belongs to the because-clause and is dropped with the marker rather than left at the end of ``A`` as a cue.

Each example is ``[CLS] A [SEP] B [SEP]`` with segment ids 0/1 and ``label`` = the class's position in
:data:`DISCOURSE_MARKERS`; ``marker`` (the lowercased marker removed) and ``doc_id`` are kept for inspection
and tests, the model never sees them. Pairs where either side is shorter than ``min_words`` words, and pairs
whose ``B`` starts with a marker word of any class ("However, in addition, ...", "However, instead of ..."),
are skipped.

Chinese documents (``language`` ``zh``) are paired by :func:`data_builders.discourse_relation_zh.find_pairs_zh`
with Chinese connectives (classes contrast, result, elaboration, addition, temporal, reason and the
Chinese-only condition), the connective removed the same way.
"""

from __future__ import annotations

import itertools
import random
import re
from collections.abc import Iterable, Iterator

from datasets import Dataset
from tokenizers import Tokenizer

from data_builders.discourse_relation_zh import find_pairs_zh
from data_builders.errors import EmptyTaskError
from data_builders.segments import batch_rows, map_fingerprint

DISCOURSE_MARKERS: dict[str, tuple[str, ...]] = {
    "contrast": ("however", "in contrast", "by contrast", "nevertheless", "nonetheless", "on the other hand",
                 "conversely", "instead"),
    "result": ("as a result", "therefore", "consequently", "thus", "hence", "accordingly", "as a consequence"),
    "elaboration": ("for example", "for instance", "in particular", "specifically", "in fact", "indeed"),
    "addition": ("in addition", "moreover", "furthermore", "additionally", "also", "besides"),
    "temporal": ("meanwhile", "afterwards", "subsequently", "later", "eventually", "finally",
                 "at the same time", "in the meantime", "previously"),
    "reason": ("because",),
}
"""Relation class -> its markers, in label order (label id = position of the class). "reason" is the only
intra-sentence marker ("A because B"); all others are matched at the start of a sentence, before a comma."""

RELATIONS: tuple[str, ...] = tuple(DISCOURSE_MARKERS)
REASON = RELATIONS.index("reason")
ALL_RELATIONS: tuple[str, ...] = (*RELATIONS, "condition")
"""Every relation class of either language, in label order: English ones first (their ids never move), then
``condition``, which only Chinese text gives (如果/假如/只要; ``data_builders.discourse_relation_zh``)."""

_MARKER_CLASS = {marker: RELATIONS.index(cls) for cls, markers in DISCOURSE_MARKERS.items()
                 for marker in markers if cls != "reason"}
# Longest first, so a marker that is a prefix of another can never shadow it.
_INITIAL = re.compile(
    r"(?P<marker>" + "|".join(r"\s+".join(map(re.escape, m.split()))
                              for m in sorted(_MARKER_CLASS, key=len, reverse=True))
    + r"),\s+(?P<rest>\S.*)",
    re.IGNORECASE | re.DOTALL,
)
# Any marker opening B, with or without a comma ("Instead of being reprimanded, ..." after "However,"), would
# hand the model a marker word where the removed one stood.
_OPENING_MARKER = re.compile(
    r"(?:" + "|".join(r"\s+".join(map(re.escape, m.split()))
                      for ms in DISCOURSE_MARKERS.values() for m in sorted(ms, key=len, reverse=True)) + r")\b",
    re.IGNORECASE,
)
_HEDGES = ("partly", "mainly", "largely", "mostly", "only", "just", "simply", "primarily", "probably",
           "possibly", "perhaps", "presumably", "apparently", "precisely", "especially", "particularly",
           "solely", "in part", "not")
_REASON = re.compile(
    r"(?P<a>.*?[^\s,]),?\s+(?:(?P<hedge>" + "|".join(h.replace(" ", r"\s+") for h in _HEDGES)
    + r")\s+)?because\s+(?!of\b)(?P<b>\S.*)",
    re.DOTALL,
)
_PAIRS = (("(", ")"), ("[", "]"), ("\u201c", "\u201d"))
# "He said that because it rained, they left": the because-clause sits inside a clause of its own, so "A"
# would end in a dangling function word.
_DANGLING = frozenset({"that", "and", "but", "or", "which", "who", "whom", "as", "so", "is", "was", "are",
                       "were", "be", "the", "a", "an", "of", "to", "in", "it", "this", "if", "when"})


def _capitalize(text: str) -> str:
    return text[:1].upper() + text[1:]


def _balanced(text: str) -> bool:
    # A "because" inside brackets or quotes would cut them in two: "X (because Y) Z." is not "X" / "Y) Z."
    return all(text.count(o) == text.count(c) for o, c in _PAIRS) and text.count('"') % 2 == 0


def _word_count(text: str) -> int:
    return len(text.split())


def find_pairs(sentences: list[str], min_words: int = 3) -> Iterator[tuple[str, str, int, str]]:
    """Every ``(A, B, label, marker)`` pair of one document's sentences (in document order)."""
    for i, sentence in enumerate(sentences):
        match = _INITIAL.match(sentence) if i > 0 else None
        if match:
            rest = match.group("rest")
            if (not _OPENING_MARKER.match(rest) and _word_count(rest) >= min_words
                    and _word_count(sentences[i - 1]) >= min_words):
                marker = " ".join(match.group("marker").lower().split())
                yield sentences[i - 1], _capitalize(rest), _MARKER_CLASS[marker], marker
        reason = _REASON.match(sentence) if "because" in sentence else None  # the regex needs the word
        if reason and reason.group("hedge") != "not":
            a, b = reason.group("a").rstrip(" ,;:-"), reason.group("b")
            if (_word_count(a) >= min_words and _word_count(b) >= min_words and _balanced(a)
                    and a.split()[-1].lower() not in _DANGLING and not _OPENING_MARKER.match(b)):
                yield a + ".", _capitalize(b), REASON, "because"


def _flat(paragraphs: list[list[str]]) -> list[str]:
    return [s for p in paragraphs for s in p]


def document_pairs(paragraphs: list[list[str]], language: str, min_words: int
                   ) -> Iterator[tuple[str, str, int, str]]:
    """``(A, B, label, marker)`` pairs of one document (label ids index :data:`ALL_RELATIONS`): English
    markers for an English document, Chinese connectives (:func:`find_pairs_zh`) for a Chinese one."""
    if language != "zh":
        yield from find_pairs(_flat(paragraphs), min_words)
        return
    for a, b, relation, marker in find_pairs_zh(_flat(paragraphs), min_words):
        yield a, b, ALL_RELATIONS.index(relation), marker


def relation_counts(documents: Iterable[list[list[str]]], min_words: int = 3,
                    languages: Iterable[str] | None = None) -> dict[str, int]:
    """Pairs per relation class (every name of :data:`ALL_RELATIONS`) over documents given as their
    ``sentences`` column, with their ``language`` column (None: all English). A regex pass only, no
    tokenization: cheap enough to run over the whole training split to decide which classes to keep."""
    counts = dict.fromkeys(ALL_RELATIONS, 0)
    languages = languages if languages is not None else itertools.repeat("en")
    for paragraphs, language in zip(documents, languages, strict=False):
        for _, _, label, _ in document_pairs(paragraphs, language, min_words):
            counts[ALL_RELATIONS[label]] += 1
    return counts


def _fit(a: list[int], b: list[int], budget: int) -> tuple[list[int], list[int]]:
    """Truncate the longer side first; ``A`` keeps its end and ``B`` its start, the words next to the
    (removed) marker, where the relation is expressed."""
    if len(a) + len(b) <= budget:
        return a, b
    half = budget // 2
    if len(a) > budget - half and len(b) > half:
        keep_a, keep_b = budget - half, half
    elif len(a) > len(b):
        keep_a, keep_b = budget - len(b), len(b)
    else:
        keep_a, keep_b = len(a), budget - len(a)
    return a[len(a) - keep_a:], b[:keep_b]


def discourse_relation_batch(batch: dict[str, list], *, tokenizer: Tokenizer, labels: frozenset[int],
                             max_seq_len: int, seed: int, min_words: int) -> dict[str, list]:
    """``datasets.map`` function: a batch of documents -> a batch of (not yet subsampled) examples."""
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    pairs, out = [], {"input_ids": [], "segment_ids": [], "label": [], "marker": [], "doc_id": [],
                      "sort_key": []}
    languages = batch["language"] if "language" in batch else ["en"] * len(batch["id"])
    for doc_id, paragraphs, language in zip(batch["id"], batch["sentences"], languages, strict=True):
        rng = random.Random(f"{seed}:discourse_relation:{doc_id}")
        for a, b, label, marker in document_pairs(paragraphs, language, min_words):
            if label in labels:
                pairs.append((a, b))
                out["label"].append(label)
                out["marker"].append(marker)
                out["doc_id"].append(doc_id)
                out["sort_key"].append(rng.random())
    if not pairs:
        return out
    encodings = tokenizer.encode_batch([t for pair in pairs for t in pair], add_special_tokens=False)
    for k in range(len(pairs)):
        a, b = _fit(encodings[2 * k].ids, encodings[2 * k + 1].ids, max_seq_len - 3)
        out["input_ids"].append([cls_id, *a, sep_id, *b, sep_id])
        out["segment_ids"].append([0] * (len(a) + 2) + [1] * (len(b) + 1))
    return out


def class_caps(counts: dict[int, int], max_share: float) -> dict[int, int]:
    """The number of examples to keep per class so that no class exceeds ``max_share`` of the total.

    All over-large classes are cut to one common size ``L``, the largest with ``L <= max_share * total``
    after the cut; when that is unreachable (``max_share`` below 1 / number of classes) classes are cut to
    the smallest class's size, i.e. balanced.
    """
    if not counts or max_share >= 1:
        return dict(counts)
    level, floor = max(counts.values()), min(counts.values())
    while level > floor and level > max_share * sum(min(n, level) for n in counts.values()):
        level -= 1
    return {label: min(n, level) for label, n in counts.items()}


def build_discourse_relation(documents: Dataset, tokenizer: Tokenizer, *, labels: Iterable[int],
                             max_seq_len: int, seed: int, max_class_share: float = 0.5, min_words: int = 3,
                             num_proc: int = 1) -> Dataset:
    """Documents -> discourse-relation examples of the classes in ``labels`` (see the module docstring).

    Classes larger than ``max_class_share`` of the examples are subsampled (:func:`class_caps`), keeping the
    examples with the smallest per-document random keys, so the choice does not depend on batching.

    Raises :class:`EmptyTaskError` when the documents hold no usable pair.
    """
    labels = frozenset(labels)
    wanted = [c for c in ("id", "sentences", "language") if c in documents.column_names]
    documents = documents.select_columns(wanted) if len(wanted) < len(documents.column_names) else documents
    examples = documents.map(
        discourse_relation_batch,
        batched=True,
        new_fingerprint=map_fingerprint(),
        batch_size=batch_rows(documents, 256),
        remove_columns=documents.column_names,
        num_proc=num_proc if num_proc > 1 else None,
        # datasets fingerprints the map function, not the module constants it reads (the marker inventory);
        # reuse of built examples is the task cache's job, keyed on the builder version.
        load_from_cache_file=False,
        fn_kwargs={"tokenizer": tokenizer, "labels": labels, "max_seq_len": max_seq_len, "seed": seed,
                   "min_words": min_words},
        desc="discourse_relation",
    )
    if len(examples) == 0:
        names = ", ".join(ALL_RELATIONS[i] for i in sorted(labels))
        raise EmptyTaskError(f"task discourse_relation needs sentence pairs joined by a discourse marker "
                         f"({names}); found 0 in {len(documents)} documents")
    columns = examples.select_columns(["label", "sort_key"])[:]  # as lists: not row by row
    label_column, keys = columns["label"], columns["sort_key"]
    by_label: dict[int, list[int]] = {}
    for row, label in enumerate(label_column):
        by_label.setdefault(label, []).append(row)
    caps = class_caps({label: len(rows) for label, rows in by_label.items()}, max_class_share)
    keep: list[int] = []
    for label, rows in by_label.items():
        keep.extend(sorted(rows, key=lambda r: (keys[r], r))[: caps[label]])
    if len(keep) < len(examples):
        examples = examples.select(sorted(keep))
    return examples.remove_columns("sort_key")
