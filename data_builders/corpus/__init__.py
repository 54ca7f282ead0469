"""Raw corpora -> a documents ``datasets.Dataset`` (id, title, paragraphs, sentences, language), with an account
of what was read and left out.

Inputs are files, directories or globs in one of six formats (plain text, JSON Lines, WikiExtractor output,
a dataset saved with ``save_to_disk``, Markdown and plain text one document per file), in any text encoding
(UTF-8, UTF-16/32 by byte-order mark, others detected or named: ``data.encoding``); with no input, the
docstrings of the running interpreter's standard library serve as a small built-in English corpus, so the
pipeline runs without any download.

Every reader yields plain ``{"id", "title", "paragraphs"}`` dicts with the same paragraph rule (inner
whitespace collapsed, fewer than ``min_paragraph_words`` words dropped); :func:`build_documents` adds the
language, the sentence split and the stub filter, and :func:`load_documents` caches the result under a
fingerprint of the inputs and options.

Real corpora are dirty. Readers drop bad parts at the finest grain they can (a line that cannot be decoded or
is binary, a malformed JSON Lines record, an unreadable ``<doc>`` header; an unterminated ``<doc>`` keeps its
text) and count each one per input and per reason in a :class:`CorpusReport`; with ``on_bad_input="error"``
the first bad part raises :class:`CorpusError` naming ``file:line`` instead. Work is bounded on any input
shape: text and WikiExtractor files are read in pieces of at most 1 MiB, a paragraph longer than
``max_paragraph_chars`` is cut at a sentence end, else a space, else at the bound, and a document longer than
``max_document_chars`` is cut into parts at paragraph boundaries (docs/DATA_QUALITY.md).

The rooms of the package:

- ``data_builders.corpus_options`` (a leaf beside the package): :class:`CorpusOptions`, the one set of
  options, defaults and checks, which the run config's ``data`` section extends; :class:`CorpusError`.
- ``sources``: paths, directories and globs -> the sorted inputs.
- ``decoding``: each file's encoding, lines in bounded pieces, over-long lines cut.
- ``readers``: the six readers and the format guess. ``embedded``: the standard-library corpus.
- ``account``: :class:`InputAccount` per input and the :class:`CorpusReport` of a build.
- ``build``: :func:`build_documents` (to Arrow), :func:`corpus_fingerprint`, the cache.
"""

from __future__ import annotations

from data_builders.corpus.account import MAX_LOCATIONS, REASONS, CorpusReport, InputAccount
from data_builders.corpus.build import (
    BUILDER_VERSION,
    DOCUMENT_FEATURES,
    build_documents,
    corpus_fingerprint,
    load_documents,
    load_documents_with_report,
)
from data_builders.corpus.decoding import cut_paragraph, sniff_encoding
from data_builders.corpus.embedded import iter_stdlib_documents
from data_builders.corpus.readers import (
    detect_format,
    read_hf,
    read_jsonl,
    read_markdown,
    read_text,
    read_text_file,
    read_wikiextractor,
)
from data_builders.corpus.sources import resolve_corpus_files
from data_builders.corpus_options import (
    BAD_INPUT_POLICIES,
    FORMATS,
    MAX_DOCUMENT_CHARS,
    CorpusError,
    CorpusOptionError,
    CorpusOptions,
    corpus_options,
)

__all__ = [
    "BAD_INPUT_POLICIES",
    "BUILDER_VERSION",
    "DOCUMENT_FEATURES",
    "FORMATS",
    "MAX_DOCUMENT_CHARS",
    "MAX_LOCATIONS",
    "REASONS",
    "CorpusError",
    "CorpusOptionError",
    "CorpusOptions",
    "CorpusReport",
    "InputAccount",
    "build_documents",
    "corpus_fingerprint",
    "corpus_options",
    "cut_paragraph",
    "detect_format",
    "iter_stdlib_documents",
    "load_documents",
    "load_documents_with_report",
    "read_hf",
    "read_jsonl",
    "read_markdown",
    "read_text",
    "read_text_file",
    "read_wikiextractor",
    "resolve_corpus_files",
    "sniff_encoding",
]
