"""The six readers: one input file (or saved dataset) -> ``{"id", "title", "paragraphs"}`` documents.

Every reader has the same paragraph rule (inner whitespace collapsed, fewer than ``min_paragraph_words`` words
dropped unless the line has CJK characters), cuts over-long paragraphs and documents, and sends every bad part
through its :class:`~data_builders.corpus.account.InputAccount`. To add a format: write a reader with this
signature, add it to :data:`READERS` and its name to ``data_builders.corpus_options.Format``.
"""

from __future__ import annotations

import codecs
import html
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import datasets

from data_builders.corpus.account import InputAccount
from data_builders.corpus.decoding import (
    bom_codec,
    codec_pieces,
    cut_paragraph,
    is_binary,
    line_pieces,
    open_text,
    undecodable,
)
from data_builders.corpus_options import CorpusOptions
from data_builders.language import has_cjk
from data_builders.markdown import parse_markdown, parse_text_file

__all__ = ["READERS", "detect_format", "read_hf", "read_jsonl", "read_markdown", "read_text", "read_text_file",
           "read_wikiextractor"]

Document = dict[str, Any]
Reader = Callable[..., Iterator[Document]]

_JSONL_SUFFIXES = (".jsonl", ".json-lines", ".ndjson")
_MARKDOWN_SUFFIXES = (".md", ".markdown")
_DOC_START = re.compile(r"<doc[\s>]")
_DOC_HEADER = re.compile(r'<doc id="(\d+)" url="[^"]*" title="([^"]*)">')
# Table and template leftovers that WikiExtractor lets through ("!colspan=9 style=|Regular Season").
_MARKUP_FRAGMENTS = ("colspan", "style=", "|", "{{")
_PARAGRAPH_CHARS = CorpusOptions.max_paragraph_chars  # the defaults of a reader used on its own
_DOCUMENT_CHARS = CorpusOptions.max_document_chars
_ENCODING = CorpusOptions.encoding


def detect_format(path: Path, encoding: str = _ENCODING) -> str:
    """Guess the corpus format of one resolved input: ``hf``, ``jsonl``, ``markdown``, ``wikiextractor`` or
    ``text``. A file's first non-blank characters are read in ``encoding`` (``auto``: by its byte-order mark,
    else as ASCII, which every corpus encoding but UTF-16/32 shares)."""
    path = Path(path)
    if path.is_dir():
        return "hf"
    if path.name.lower().endswith(_JSONL_SUFFIXES):
        return "jsonl"
    if path.name.lower().endswith(_MARKDOWN_SUFFIXES):
        return "markdown"
    # The first non-blank characters decide; read in bounded chunks, as a file may be one huge line.
    with path.open("rb") as handle:
        codec = bom_codec(handle.read(4)) if encoding == "auto" else encoding
        handle.seek(0)
        # No codec: compare bytes, as every ASCII-compatible encoding allows.
        decoder = codecs.getincrementaldecoder(codec)(errors="replace") if codec else None
        while chunk := handle.read(1 << 16):
            head = decoder.decode(chunk).lstrip().encode() if decoder else chunk.lstrip()
            if head:
                return "wikiextractor" if head.startswith(b"<doc ") else "text"
    return "text"


class _Parts:
    """The paragraphs of one document, handed out in parts of about ``max_chars`` characters: a document
    that reaches the bound is closed and the rest continues as ``<id>#2``, ``<id>#3``, ..."""

    def __init__(self, doc_id: str, title: str, max_chars: int, account: InputAccount, line: int | str) -> None:
        self.id, self.title, self.max_chars = doc_id, title, max_chars
        self.account, self.line = account, line
        self.paragraphs: list[str] = []
        self.chars = 0
        self.part = 1

    def add(self, paragraph: str) -> Document | None:
        self.paragraphs.append(paragraph)
        self.chars += len(paragraph)
        return self._close() if self.chars >= self.max_chars else None

    def _close(self) -> Document:
        doc = {"id": self.id if self.part == 1 else f"{self.id}#{self.part}", "title": self.title,
               "paragraphs": self.paragraphs}
        self.paragraphs, self.chars, self.part = [], 0, self.part + 1
        return doc

    def finish(self) -> Document | None:
        """The last part (a document without paragraphs is still handed out once, to be counted as a stub)."""
        last = self._close() if self.paragraphs or self.part == 1 else None
        parts = self.part - 1
        if parts > 1:
            self.account.note_cut("documents", self.line, parts, f"a document over {self.max_chars} characters")
        return last


def clean_paragraph(line: str, min_paragraph_words: int) -> str | None:
    """``line`` with its whitespace collapsed, or None when it is too short to be a paragraph."""
    words = line.split()
    # A line with CJK characters passes whatever its word count: Chinese has no spaces, so its length is
    # judged in characters once the document's language is known (data_builders.language.finish_document).
    if len(words) >= min_paragraph_words or (words and has_cjk(line)):
        return " ".join(words)
    return None


def _text_paragraphs(text: str, min_paragraph_words: int, max_chars: int, account: InputAccount,
                     line: int | str) -> Iterator[str]:
    """The paragraphs of an in-memory text (a JSON Lines record, a dataset row): its non-empty lines, binary
    lines dropped, over-long ones cut."""
    for text_line in text.splitlines():
        if is_binary(text_line):
            account.bad(line, "binary", "binary data (NUL or control characters) in the text", len(text_line))
            continue
        pieces = cut_paragraph(text_line, max_chars)
        if len(pieces) > 1:
            account.note_cut("paragraphs", line, len(pieces), f"a line over {max_chars} characters")
        for piece in pieces:
            paragraph = clean_paragraph(piece, min_paragraph_words)
            if paragraph is not None:
                yield paragraph


def _limits(account: InputAccount | None, path: Path, fmt: str) -> InputAccount:
    # Called without an account (a reader used on its own), the first bad part raises: the strict default.
    return account if account is not None else InputAccount(path, fmt, "error")


# ---------------------------------------------------------------------------------------------------------
# Readers
# ---------------------------------------------------------------------------------------------------------


def read_text(path: Path, min_paragraph_words: int, account: InputAccount | None = None, *,
              max_paragraph_chars: int = _PARAGRAPH_CHARS, max_document_chars: int = _DOCUMENT_CHARS,
              encoding: str = _ENCODING) -> Iterator[Document]:
    """Plain text: documents separated by blank lines, one paragraph per line, no titles.

    Lines end at ``\\n`` (or ``\\r\\n``). A line that is not UTF-8, or is binary, is dropped (see
    :class:`InputAccount`); without an ``account`` it raises :class:`CorpusError` instead.
    """
    path = Path(path)
    account = _limits(account, path, "text")
    index = 0
    doc: _Parts | None = None
    for lineno, piece, whole in line_pieces(path, account, max_paragraph_chars, encoding):
        if whole and not piece.strip():
            if doc is not None:
                last = doc.finish()
                if last is not None:
                    yield last
                doc, index = None, index + 1
            continue
        if doc is None:
            doc = _Parts(f"{path.name}:{index}", "", max_document_chars, account, lineno)
        paragraph = clean_paragraph(piece, min_paragraph_words)
        if paragraph is not None and (part := doc.add(paragraph)) is not None:
            yield part
    if doc is not None and (last := doc.finish()) is not None:
        yield last


def _optional_str(value: Any, field: str) -> tuple[str | None, str | None]:
    if value is None:
        return None, None
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None, f'"{field}" must be a string, got {type(value).__name__}'
    return str(value), None


def _parse_record(line: str) -> tuple[dict[str, Any] | None, str | None]:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        return None, f"not valid JSON ({exc.msg}: column {exc.colno})"
    if not isinstance(record, dict):
        return None, f"expected a JSON object, got {type(record).__name__}"
    if "text" not in record:
        return None, 'missing required field "text"'
    if not isinstance(record["text"], str):
        return None, f'"text" must be a string, got {type(record["text"]).__name__}'
    return record, None


def _jsonl_lines(path: Path, account: InputAccount, encoding: str) -> Iterator[tuple[int, str, int]]:
    """(line number, line, its bytes) for the decodable lines of a JSON Lines file, each whole; the others
    are counted (``invalid_utf8`` or ``invalid_encoding``)."""
    opened = open_text(path, account, encoding)
    if opened is None:
        return
    handle, codec = opened
    with handle:
        if codec == "utf-8":
            for lineno, raw in enumerate(handle, start=1):
                try:
                    yield lineno, raw.decode("utf-8"), len(raw)
                except UnicodeDecodeError as exc:
                    account.bad(lineno, "invalid_utf8", f"not UTF-8 text ({exc.reason} at byte {exc.start + 1})",
                                len(raw))
            return
        for lineno, (line, complete) in enumerate(codec_pieces(handle, codec, None), start=1):
            nbytes = len(line.encode(codec, errors="replace")) + complete  # re-encoded: about the bytes read
            if undecodable(line):
                account.bad(lineno, "invalid_encoding", f"not {codec} text (bytes {codec} cannot decode)", nbytes)
            else:
                yield lineno, line, nbytes


def read_jsonl(path: Path, min_paragraph_words: int, account: InputAccount | None = None, *,
               max_paragraph_chars: int = _PARAGRAPH_CHARS, max_document_chars: int = _DOCUMENT_CHARS,
              encoding: str = _ENCODING) -> Iterator[Document]:
    """JSON lines: one object per line with ``text`` (required) and optional ``title`` and ``id``.

    Paragraphs are the non-empty lines of ``text``. Blank lines are skipped; a line that cannot be decoded or
    is not a JSON object with a string ``text`` (and string or integer ``title`` / ``id``) is a malformed record:
    dropped and counted, or, without an ``account``, raised as :class:`CorpusError` ``path:line: reason``.
    A record is parsed whole, so memory follows the longest record.
    """
    path = Path(path)
    account = _limits(account, path, "jsonl")
    index = 0
    for lineno, line, nbytes in _jsonl_lines(path, account, encoding):
        if not line.strip():
            continue
        record, problem = _parse_record(line)
        doc_id = title = None
        if record is not None:
            doc_id, problem = _optional_str(record.get("id"), "id")
        if record is not None and problem is None:
            title, problem = _optional_str(record.get("title"), "title")
        if problem is not None or record is None:
            account.bad(lineno, "malformed_jsonl", problem or "malformed record", nbytes)
            continue
        doc = _Parts(doc_id if doc_id is not None else f"{path.name}:{index}", title or "",
                     max_document_chars, account, lineno)
        for paragraph in _text_paragraphs(record["text"], min_paragraph_words, max_paragraph_chars,
                                          account, lineno):
            if (part := doc.add(paragraph)) is not None:
                yield part
        if (last := doc.finish()) is not None:
            yield last
        index += 1


def _looks_like_markup(line: str) -> bool:
    return line.lstrip().startswith("!") or any(fragment in line for fragment in _MARKUP_FRAGMENTS)


def read_wikiextractor(path: Path, min_paragraph_words: int, account: InputAccount | None = None, *,
                       max_paragraph_chars: int = _PARAGRAPH_CHARS,
                       max_document_chars: int = _DOCUMENT_CHARS, encoding: str = _ENCODING) -> Iterator[Document]:
    """WikiExtractor output (``<doc id=.. url=.. title=..>`` blocks, one paragraph per line, ``</doc>``).

    HTML entities are unescaped, the first body line is dropped when it repeats the title, and section
    headings, table/template debris and other short lines are dropped. A ``<doc>`` cut off before its
    ``</doc>`` (by the next ``<doc`` header or the end of the file) keeps its text and is counted as
    ``unterminated_doc``; an unreadable ``<doc`` header drops its block up to the next ``</doc>``; text outside
    any block is dropped. Without an ``account`` each of these raises :class:`CorpusError` naming the line.
    """
    path = Path(path)
    account = _limits(account, path, "wikiextractor")
    doc: _Parts | None = None
    header_line = 0
    title_pending = False
    broken: list[int] | None = None  # [line, bytes] of a block whose header could not be read

    def unterminated() -> Document | None:
        account.bad(header_line, "unterminated_doc",
                    "malformed WikiExtractor file: <doc without a matching </doc> (its text is kept)", 0)
        return doc.finish() if doc is not None else None

    def close_broken() -> None:
        if broken is not None:
            account.bad(broken[0], "malformed_doc_header",
                        "malformed WikiExtractor file: unreadable <doc header", broken[1])

    for lineno, piece, whole in line_pieces(path, account, max_paragraph_chars, encoding):
        if whole and _DOC_START.match(piece):
            if doc is not None and (last := unterminated()) is not None:
                yield last
            close_broken()
            doc, broken = None, None
            header = _DOC_HEADER.fullmatch(piece)
            if header is None:
                broken = [lineno, len(piece.encode()) + 1]
                continue
            title = html.unescape(header.group(2)).strip()
            doc = _Parts(header.group(1), title, max_document_chars, account, lineno)
            header_line, title_pending = lineno, True
            continue
        if whole and piece.strip() == "</doc>":
            if doc is not None:
                if (last := doc.finish()) is not None:
                    yield last
            elif broken is not None:
                broken[1] += len(piece) + 1
                close_broken()
            else:
                account.bad(lineno, "outside_doc", "</doc> outside any <doc> block", len(piece) + 1)
            doc, broken = None, None
            continue
        if doc is None:
            if broken is not None:
                broken[1] += len(piece.encode()) + 1
            elif piece.strip():
                account.bad(lineno, "outside_doc", "text outside any <doc> block", len(piece.encode()) + 1)
            continue
        # An escaped newline (&#10;) becomes a line break, as it would in the extracted file.
        for line in html.unescape(piece).split("\n"):
            if title_pending:
                title_pending = False
                if line.strip() == doc.title:
                    continue
            if _looks_like_markup(line):
                continue
            paragraph = clean_paragraph(line, min_paragraph_words)
            if paragraph is not None and (part := doc.add(paragraph)) is not None:
                yield part
    if doc is not None and (last := unterminated()) is not None:
        yield last
    close_broken()


def read_hf(path: Path, min_paragraph_words: int, account: InputAccount | None = None, *,
            max_paragraph_chars: int = _PARAGRAPH_CHARS, max_document_chars: int = _DOCUMENT_CHARS,
              encoding: str = _ENCODING) -> Iterator[Document]:
    """A dataset saved with ``save_to_disk``: string column ``text``, optional ``title`` and ``id``.

    For a ``DatasetDict`` the ``train`` split is read. Paragraphs are the non-empty lines of ``text``. A
    dataset that cannot be loaded or lacks a string ``text`` column is an unreadable input (dropped and
    counted, or raised without an ``account``).
    """
    path = Path(path)
    account = _limits(account, path, "hf")
    account.bytes = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    try:
        loaded = datasets.load_from_disk(str(path))
    except Exception as exc:  # datasets raises assorted types for unreadable folders
        account.bad(None, "unreadable_input", f"cannot load saved dataset ({type(exc).__name__}: {exc})", 0)
        return
    if isinstance(loaded, datasets.DatasetDict):
        if "train" not in loaded:
            account.bad(None, "unreadable_input",
                        f"saved DatasetDict has no 'train' split (splits: {', '.join(loaded)})", 0)
            return
        loaded = loaded["train"]
    features = loaded.features
    string_types = ("string", "large_string")

    def problem(column: str, required: bool) -> str | None:
        if column not in features:
            return f"saved dataset has no 'text' column (columns: {', '.join(features)})" if required else None
        feature = features[column]
        if not isinstance(feature, datasets.Value) or (
            feature.dtype not in string_types and not (column == "id" and "int" in feature.dtype)
        ):
            return f"column {column!r} must hold strings, found {feature}"
        return None

    for column, required in (("text", True), ("title", False), ("id", False)):
        if (reason := problem(column, required)) is not None:
            account.bad(None, "unreadable_input", reason, 0)
            return
    columns = ["text"] + [c for c in ("title", "id") if c in features]
    index = 0
    for batch in loaded.select_columns(columns).iter(batch_size=1000):
        for row in range(len(batch["text"])):
            text = batch["text"][row] or ""
            title = batch["title"][row] if "title" in batch else None
            doc_id = batch["id"][row] if "id" in batch else None
            doc = _Parts(str(doc_id) if doc_id is not None else f"{path.name}:{index}", title or "",
                         max_document_chars, account, f"row {index}")
            for paragraph in _text_paragraphs(text, min_paragraph_words, max_paragraph_chars, account,
                                              f"row {index}"):
                if (part := doc.add(paragraph)) is not None:
                    yield part
            if (last := doc.finish()) is not None:
                yield last
            index += 1


def _file_document(path: Path, title: str, paragraphs: list[str], min_paragraph_words: int,
                   account: InputAccount, max_paragraph_chars: int, max_document_chars: int) -> Iterator[Document]:
    # One document per file, named by its folder and file name: stable across machines (the split hashes ids)
    # and distinct for same-named files in different folders.
    doc = _Parts(f"{path.parent.name}/{path.name}", title, max_document_chars, account, 1)
    for paragraph in paragraphs:
        for piece in cut_paragraph(paragraph, max_paragraph_chars):
            cleaned = clean_paragraph(piece, min_paragraph_words)
            if cleaned is not None and (part := doc.add(cleaned)) is not None:
                yield part
    if (last := doc.finish()) is not None:
        yield last


def read_markdown(path: Path, min_paragraph_words: int, account: InputAccount | None = None, *,
                  max_paragraph_chars: int = _PARAGRAPH_CHARS, max_document_chars: int = _DOCUMENT_CHARS,
                  encoding: str = _ENCODING) -> Iterator[Document]:
    """Markdown, one document per file (``data_builders.markdown.parse_markdown``): the title from the first
    ``#`` heading (else line 1); headings, HTML comments, front matter, code and tables kept out."""
    yield from _whole_file(path, "markdown", parse_markdown, min_paragraph_words, account, max_paragraph_chars,
                           max_document_chars, encoding)


def read_text_file(path: Path, min_paragraph_words: int, account: InputAccount | None = None, *,
                   max_paragraph_chars: int = _PARAGRAPH_CHARS, max_document_chars: int = _DOCUMENT_CHARS,
                   encoding: str = _ENCODING) -> Iterator[Document]:
    """Plain text, one document per file: the first non-empty line is the title, every other line a
    paragraph."""
    yield from _whole_file(path, "text_file", parse_text_file, min_paragraph_words, account, max_paragraph_chars,
                           max_document_chars, encoding)


def _whole_file(path: Path, fmt: str, parse, min_paragraph_words: int, account: InputAccount | None,
                max_paragraph_chars: int, max_document_chars: int, encoding: str) -> Iterator[Document]:
    """One document of a whole file: its decoded lines joined, ``parse`` -> (title, paragraphs)."""
    path = Path(path)
    account = _limits(account, path, fmt)
    text = "\n".join(piece for _, piece, _ in line_pieces(path, account, max_paragraph_chars, encoding))
    title, paragraphs = parse(text)
    yield from _file_document(path, title, paragraphs, min_paragraph_words, account, max_paragraph_chars,
                              max_document_chars)


READERS: dict[str, Reader] = {
    "text": read_text,
    "jsonl": read_jsonl,
    "wikiextractor": read_wikiextractor,
    "hf": read_hf,
    "markdown": read_markdown,
    "text_file": read_text_file,
}


