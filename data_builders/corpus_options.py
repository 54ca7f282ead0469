"""The corpus options: one typed set of fields, defaults and checks, declared here and nowhere else.

:class:`CorpusOptions` is what :func:`data_builders.corpus.build_documents` reads a corpus with, and the run
config's ``data`` section *is* one (``ernie_cmtl.config.DataConfig`` extends it with the fields of the
example build), so the YAML keys ``data.format``, ``data.encoding``, ... are these field names.

A leaf: standard library only, outside the ``data_builders.corpus`` package, so that the run config imports
it without loading the corpus readers, ``datasets`` or ``pyarrow``.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "BAD_INPUT_POLICIES",
    "FORMATS",
    "MAX_DOCUMENT_CHARS",
    "CorpusError",
    "CorpusOptionError",
    "CorpusOptions",
    "corpus_options",
]

Format = Literal["auto", "text", "jsonl", "wikiextractor", "hf", "markdown", "text_file"]
FORMATS: tuple[str, ...] = typing.get_args(Format)
"""Values of ``data.format``: ``auto`` and the six readers' names."""
BadInputPolicy = Literal["skip", "error"]
BAD_INPUT_POLICIES: tuple[str, ...] = typing.get_args(BadInputPolicy)
CorpusLanguage = Literal["auto", "en", "zh"]
"""Values of ``data.language`` (``data_builders.language.LANGUAGES``; a test keeps the two equal)."""

# Documents are cut into parts of at most this many characters: the builders' batches hold 64 documents, so
# this bounds their memory whatever the input's shape (a 50 MB one-line dump; docs/DATA_QUALITY.md). Above the
# longest article of the Wikipedia sample (64,327) and the longest law of the Chinese corpus (~73,000).
MAX_DOCUMENT_CHARS = 100_000


class CorpusError(ValueError):
    """Unusable corpus input; the message is one line naming the file (and line) at fault."""


class CorpusOptionError(CorpusError):
    """A corpus option out of range: ``data.<key>: expected <what>``, the run config's one-line form."""

    def __init__(self, key: str, expected: str) -> None:
        super().__init__(f"data.{key}: expected {expected}")
        self.key = key


@dataclass
class CorpusOptions:
    """How a corpus is read into documents. Every field is a ``data.<field>`` key of the run config."""

    format: Format = "auto"
    """Corpus format; ``auto`` decides per file (``<doc`` header, ``.jsonl``, ``.md``, HF dataset dir, else
    text). ``markdown`` and ``text_file`` read one document per file (title: the first ``#`` heading, or the
    first line; see ``data_builders.markdown``)."""
    encoding: str = "auto"
    """Text encoding of the corpus files. auto: UTF-8 (with or without a byte-order mark), UTF-16/32 by their
    byte-order mark, and for a file whose non-ASCII lines are mostly not UTF-8, the encoding
    ``charset-normalizer`` detects on its first MiB (GB18030, Big5, cp1252, ...); each file's encoding is in
    the corpus report. Any Python codec name (``gb18030``, ``big5``, ``cp1252``, ``utf-16``) reads every file
    with that codec, as given. Lines still undecodable are skipped and counted (``data.on_bad_input``)."""
    language: CorpusLanguage = "auto"
    """Corpus language. auto: per document, Chinese when its CJK characters outnumber its Latin words; en / zh:
    every document. Chinese documents are NFKC-normalized, filtered in characters, split at 。！？； and
    segmented with jieba for the word-level tasks (``data_builders.language``; capitalization needs en)."""
    min_body_chars: int = 200
    """Documents whose body (paragraphs kept) is shorter than this are dropped as stubs."""
    min_paragraph_words: int = 6
    """Shorter lines are section headings or debris, not paragraphs (lines without CJK characters)."""
    min_paragraph_chars: int = 4
    """Chinese documents: lines with CJK characters and fewer of them than this are labels or debris, unless
    they end a sentence ("删去。")."""
    max_documents: int = 0
    """Use at most this many documents (0 = all); handy for smoke runs."""
    on_bad_input: BadInputPolicy = "skip"
    """skip: drop bad parts of the corpus (a line that cannot be decoded or is binary, a malformed JSON Lines
    record, an unreadable ``<doc>`` header; an unterminated ``<doc>`` keeps its text), count them per file and
    reason in ``RUN_DIR/data_report.json``; error: the first bad part stops the run, naming ``file:line``."""
    max_paragraph_chars: int = 10_000
    """Longer paragraphs (lines) are cut at a sentence end, else a space, else at this bound, before
    tokenization, so work stays linear on any input shape (docs/DATA_QUALITY.md)."""
    max_document_chars: int = MAX_DOCUMENT_CHARS
    """Longer documents are cut into parts (``<id>#2``, ...) at paragraph boundaries, so no batch of the
    builders grows with the longest input."""

    def __post_init__(self) -> None:
        self.check_corpus_options()

    def check_corpus_options(self) -> None:
        """Raise :class:`CorpusOptionError` (one line naming ``data.<key>``) for a value out of range."""
        _require(self.min_body_chars >= 0, "min_body_chars", "an integer >= 0")
        _require(self.min_paragraph_words >= 1, "min_paragraph_words", "an integer >= 1")
        _require(self.min_paragraph_chars >= 1, "min_paragraph_chars", "an integer >= 1")
        _require(self.max_documents >= 0, "max_documents", "an integer >= 0")
        _require(self.max_paragraph_chars >= 100, "max_paragraph_chars", "an integer >= 100")
        _require(self.max_document_chars >= self.max_paragraph_chars, "max_document_chars",
                 "an integer >= data.max_paragraph_chars")
        for key, values in (("format", FORMATS), ("language", typing.get_args(CorpusLanguage)),
                            ("on_bad_input", BAD_INPUT_POLICIES)):
            value = getattr(self, key)
            _require(value in values, key, f"one of {', '.join(map(repr, values))}, got {value!r}")
        _require(self.encoding == "auto" or _is_text_codec(self.encoding), "encoding",
                 f"'auto' or a Python text codec name (utf-8, gb18030, big5, cp1252, utf-16, ...), "
                 f"got {self.encoding!r}")

    def corpus_options(self) -> CorpusOptions:
        """These options alone (a ``DataConfig`` carries more fields)."""
        return CorpusOptions(**{f.name: getattr(self, f.name) for f in dataclasses.fields(CorpusOptions)})

    def cache_key(self) -> dict[str, Any]:
        """The options as the corpus fingerprint hashes them. ``encoding`` appears only when it is not the
        default ``auto``, so the fingerprints (and caches) of builds from before the option stay valid."""
        key = {f.name: getattr(self, f.name) for f in dataclasses.fields(CorpusOptions)}
        if key["encoding"] == "auto":
            del key["encoding"]
        return key


def corpus_options(options: CorpusOptions | None = None, **fields: Any) -> CorpusOptions:
    """``options`` (its corpus options only; default: every default) with ``fields`` replaced and checked.

    Raises :class:`TypeError` naming an unknown field and :class:`CorpusOptionError` for a bad value."""
    names = [f.name for f in dataclasses.fields(CorpusOptions)]
    unknown = sorted(set(fields) - set(names))
    if unknown:
        raise TypeError(f"unknown corpus option(s): {', '.join(unknown)}; expected {', '.join(names)}")
    base = options.corpus_options() if options is not None else CorpusOptions()
    return dataclasses.replace(base, **fields) if fields else base


def _require(condition: bool, key: str, expected: str) -> None:
    if not condition:
        raise CorpusOptionError(key, expected)


def _is_text_codec(name: Any) -> bool:
    if not isinstance(name, str):
        return False
    try:
        # Not b"": decoding nothing skips the codec lookup. Refuses unknown names and codecs that are not
        # bytes-to-text (base64, zlib, rot13, ...).
        b"\n".decode(name)
    except LookupError:
        return False
    except UnicodeDecodeError:  # a real codec that wants more than one byte (utf-16)
        return True
    return True
