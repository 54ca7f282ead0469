"""The build: inputs -> documents with sentences, streamed to Arrow; the fingerprint and the on-disk cache."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import datasets
import pyarrow as pa

from data_builders.corpus.account import CorpusReport, InputAccount
from data_builders.corpus.embedded import iter_stdlib_documents, stdlib_root
from data_builders.corpus.readers import READERS, Document, detect_format, read_hf
from data_builders.corpus.sources import as_list, describe, resolve_corpus_files
from data_builders.corpus_options import CorpusError, CorpusOptions, corpus_options
from data_builders.language import finish_document
from data_builders.sentences import split_sentences

__all__ = ["BUILDER_VERSION", "DOCUMENT_FEATURES", "build_documents", "corpus_fingerprint", "load_documents",
           "load_documents_with_report"]

BUILDER_VERSION = 1
"""Bump when the output of :func:`build_documents` changes for the same inputs, so caches are not reused."""

DOCUMENT_FEATURES = datasets.Features(
    {
        "id": datasets.Value("string"),
        "title": datasets.Value("string"),
        "paragraphs": datasets.Sequence(datasets.Value("string")),
        "sentences": datasets.Sequence(datasets.Sequence(datasets.Value("string"))),
        "language": datasets.Value("string"),
    }
)
"""Schema of the documents dataset; ``sentences[i]`` holds the sentences of ``paragraphs[i]``; ``language`` is
``en`` or ``zh`` (``data_builders.language``)."""

_WRITE_BATCH = 500  # documents per Arrow record batch
_WRITE_CHARS = 8_000_000  # ... or fewer, when their text reaches this: memory stays flat for huge documents
_REPORT_FILE = "corpus_report.json"
_DECODING_REASONS = ("invalid_utf8", "invalid_encoding")


def _read_all(files: Sequence[Path], options: CorpusOptions,
              report: CorpusReport) -> Iterator[tuple[InputAccount, Document]]:
    limits = {"max_paragraph_chars": options.max_paragraph_chars,
              "max_document_chars": options.max_document_chars, "encoding": options.encoding}
    for file in files:
        kind = options.format
        if kind == "auto":
            try:
                kind = detect_format(file, options.encoding)
            except OSError as exc:
                report.account(file, "text").bad(None, "unreadable_input",
                                                 f"cannot read ({exc.strerror or exc})", 0)
                continue
        reader = READERS[kind]
        if reader is read_hf and not file.is_dir():
            raise CorpusError(f"{file}: format 'hf' needs a directory written by save_to_disk")
        if reader is not read_hf and file.is_dir():
            raise CorpusError(f"{file}: is a saved dataset directory; use format 'hf' or 'auto'")
        account = report.account(file, kind)
        for doc in reader(file, options.min_paragraph_words, account, **limits):
            yield account, doc


def _document_source(paths: list[str], options: CorpusOptions,
                     report: CorpusReport) -> tuple[Iterator[tuple[InputAccount, Document]], str]:
    """The (account, document) pairs to build from, and how to name the inputs in a message."""
    if paths:
        return _read_all(resolve_corpus_files(paths), options, report), describe(paths)
    # The embedded corpus is trusted text of known shape: read as it is (no cuts), counted as one input.
    report.embedded = True
    embedded = report.account(stdlib_root(), "embedded")
    source = ((embedded, doc) for doc in iter_stdlib_documents(options.min_paragraph_words))
    return source, f"the embedded standard-library corpus ({stdlib_root()})"


def _write_documents(source: Iterator[tuple[InputAccount, Document]], arrow_path: Path, options: CorpusOptions,
                     report: CorpusReport) -> tuple[int, int]:
    """Finish each document (language, sentences), drop stubs, stream the rest to ``arrow_path`` in batches,
    so memory stays flat for any corpus size. Returns (documents read, documents kept)."""
    schema = DOCUMENT_FEATURES.arrow_schema
    read = kept = buffered = 0
    rows: list[Document] = []
    with pa.OSFile(str(arrow_path), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
        for account, doc in source:
            read += 1
            account.documents += 1
            doc = finish_document(doc, language=options.language, min_paragraph_words=options.min_paragraph_words,
                                  min_paragraph_chars=options.min_paragraph_chars)
            paragraphs = doc["paragraphs"]
            if not paragraphs or sum(len(p) for p in paragraphs) < options.min_body_chars:
                account.stubs += 1
                continue
            kept += 1
            account.kept += 1
            sentences = doc["sentences"] if "sentences" in doc else [split_sentences(p) for p in paragraphs]
            rows.append({"id": doc["id"], "title": doc["title"], "paragraphs": paragraphs,
                         "sentences": sentences, "language": doc["language"]})
            buffered += sum(len(p) for p in paragraphs)
            if len(rows) == _WRITE_BATCH or buffered >= _WRITE_CHARS:
                writer.write_batch(pa.RecordBatch.from_pylist(rows, schema=schema))
                rows, buffered = [], 0
            if options.max_documents and kept >= options.max_documents:
                report.stopped_at_max_documents = True
                break
        if rows:
            writer.write_batch(pa.RecordBatch.from_pylist(rows, schema=schema))
    return read, kept


def build_documents(
    paths: Sequence[str],
    options: CorpusOptions | None = None,
    *,
    output_dir: str | Path | None = None,
    report: CorpusReport | None = None,
    **fields: Any,
) -> datasets.Dataset:
    """Read a corpus into a documents dataset with features :data:`DOCUMENT_FEATURES`.

    ``options`` (a :class:`~data_builders.corpus_options.CorpusOptions`, or the run config's ``data`` section,
    which is one; default: every default), with any of its fields replaced by keyword (``format="jsonl"``),
    says how: see each field's documentation. ``paths`` are files, directories or globs (see
    :func:`resolve_corpus_files`); empty means the embedded standard-library corpus.

    The documents are written to ``output_dir/documents.arrow`` (default: a new temporary directory) in
    batches and memory-mapped, so a corpus of any size is read in constant memory. The account of what was
    read, skipped and cut, and each file's encoding, goes into ``report`` when one is given.

    Raises :class:`CorpusError` for unusable options or input, or when no document survives: the message says
    what was read and skipped. An unknown keyword is a :class:`TypeError`.
    """
    options = corpus_options(options, **fields)
    report = report if report is not None else CorpusReport(options.on_bad_input, options.min_body_chars)
    report.on_bad_input, report.min_body_chars = options.on_bad_input, options.min_body_chars
    source, where = _document_source(as_list(paths), options, report)
    directory = Path(output_dir) if output_dir is not None else Path(tempfile.mkdtemp(prefix="ernie-cmtl-docs-"))
    directory.mkdir(parents=True, exist_ok=True)
    arrow_path = directory / "documents.arrow"
    read, kept = _write_documents(source, arrow_path, options, report)
    if not kept:
        skipped = report.skipped_summary()
        undecoded = any(reason in report.totals()["skipped"] for reason in _DECODING_REASONS)
        raise CorpusError(
            f"no usable documents in {where} (read {read} documents, 0 with >= {options.min_body_chars} body "
            f"characters in paragraphs of >= {options.min_paragraph_words} words (Chinese: >= "
            f"{options.min_paragraph_chars} CJK characters)" + (f"; skipped {skipped}" if skipped else "")
            + "; lower data.min_body_chars or check the format"
            + ("; for text that is not UTF-8 set data.encoding to its codec (gb18030, big5, cp1252, utf-16, ...)"
               if undecoded else "") + ")"
        )
    return datasets.Dataset.from_file(str(arrow_path))


def corpus_fingerprint(paths: Sequence[str], options: CorpusOptions | None = None, **fields: Any) -> str:
    """Short hex digest identifying the documents :func:`build_documents` would produce.

    It covers the resolved inputs (path, size and ``mtime_ns`` of every file, including the files inside a
    saved-dataset directory), the options (:meth:`CorpusOptions.cache_key`: every field, ``encoding`` only
    when not ``auto``) and :data:`BUILDER_VERSION`; for the embedded corpus, the Python version and
    standard-library path instead of files.
    """
    options = corpus_options(options, **fields)
    digest = hashlib.sha256()
    digest.update(f"builder={BUILDER_VERSION}\n".encode())
    digest.update(json.dumps(options.cache_key(), sort_keys=True, default=str).encode())
    paths = as_list(paths)
    if paths:
        for path in resolve_corpus_files(paths):
            members = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
            for member in members:
                stat = member.stat()
                digest.update(f"\n{member}\t{stat.st_size}\t{stat.st_mtime_ns}".encode())
    else:
        digest.update(f"\nstdlib\t{sys.version}\t{stdlib_root()}".encode())
    return digest.hexdigest()[:16]


def load_documents_with_report(paths: Sequence[str], options: CorpusOptions | None = None, *,
                               cache_dir: str | Path, **fields: Any) -> tuple[datasets.Dataset, CorpusReport]:
    """:func:`build_documents` with an on-disk cache keyed by :func:`corpus_fingerprint`, and its account.

    The dataset lives in ``<cache_dir>/documents/<fingerprint>`` with the build's :class:`CorpusReport` as
    ``corpus_report.json`` beside its files. A miss builds it, saves it to a temporary sibling directory and
    renames it into place, so readers never see a half-written cache; when another process finished first, its
    copy is used. The returned dataset is always the one loaded from the cache.
    """
    options = corpus_options(options, **fields)
    fingerprint = corpus_fingerprint(paths, options)
    target = Path(cache_dir).expanduser() / "documents" / fingerprint
    report = CorpusReport(options.on_bad_input, options.min_body_chars)
    if not target.is_dir():
        target.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{fingerprint}.", suffix=".tmp", dir=target.parent))
        try:
            documents = build_documents(paths, options, output_dir=work / "stream", report=report)
            documents.save_to_disk(str(work / "dataset"))
            (work / "dataset" / _REPORT_FILE).write_text(json.dumps(report.to_dict(), indent=1))
            del documents
            try:
                os.rename(work / "dataset", target)
            except OSError:
                if not target.is_dir():
                    raise
                # Lost the race: an identical build is already in place.
        finally:
            shutil.rmtree(work, ignore_errors=True)
    if (target / _REPORT_FILE).is_file():
        report = CorpusReport.from_dict(json.loads((target / _REPORT_FILE).read_text()))
    return datasets.load_from_disk(str(target)), report


def load_documents(paths: Sequence[str], options: CorpusOptions | None = None, *, cache_dir: str | Path,
                   **fields: Any) -> datasets.Dataset:
    """:func:`load_documents_with_report` without the report."""
    return load_documents_with_report(paths, options, cache_dir=cache_dir, **fields)[0]
