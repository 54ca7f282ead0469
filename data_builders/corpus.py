"""Raw corpora -> a documents ``datasets.Dataset`` (id, title, paragraphs, sentences), with an account of what
was left out.

Inputs are files, directories or globs in one of four formats (plain text, JSON lines, WikiExtractor output,
a dataset saved with ``save_to_disk``); with no input, the docstrings of the running interpreter's standard
library serve as a small built-in English corpus, so the pipeline runs without any download.

Every reader yields plain ``{"id", "title", "paragraphs"}`` dicts with the same paragraph rule (inner
whitespace collapsed, fewer than ``min_paragraph_words`` words dropped); :func:`build_documents` adds the
sentence split and the stub filter, and :func:`load_documents` caches the result under a fingerprint of the
inputs.

Real corpora are dirty. Readers drop bad parts at the finest grain they can (a line that is not UTF-8 or is
binary, a malformed JSON Lines record, an unreadable ``<doc>`` header; an unterminated ``<doc>`` keeps its
text) and count each one per input and per reason in a :class:`CorpusReport`; with ``on_bad_input="error"``
the first bad part raises :class:`CorpusError` naming ``file:line`` instead. Work is bounded on any input
shape: text and WikiExtractor files are read in pieces of at most 1 MiB, a paragraph longer than
``max_paragraph_chars`` is cut at a sentence end, else a space, else at the bound, and a document longer than
``max_document_chars`` is cut into parts at paragraph boundaries (docs/DATA_QUALITY.md).
"""

from __future__ import annotations

import ast
import codecs
import glob
import hashlib
import html
import json
import os
import re
import shutil
import sys
import sysconfig
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import datasets
import pyarrow as pa

from data_builders.language import LANGUAGES, finish_document, has_cjk
from data_builders.markdown import parse_markdown, parse_text_file
from data_builders.sentences import split_sentences

__all__ = [
    "BAD_INPUT_POLICIES",
    "BUILDER_VERSION",
    "DOCUMENT_FEATURES",
    "FORMATS",
    "REASONS",
    "CorpusError",
    "CorpusReport",
    "InputAccount",
    "build_documents",
    "corpus_fingerprint",
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
]

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

FORMATS = ("auto", "text", "jsonl", "wikiextractor", "hf", "markdown", "text_file")
BAD_INPUT_POLICIES = ("skip", "error")
_WRITE_BATCH = 500  # documents per Arrow record batch
_WRITE_CHARS = 8_000_000  # ... or fewer, when their text reaches this: memory stays flat for huge documents

# Files written by `Dataset.save_to_disk` / `DatasetDict.save_to_disk` that mark a directory as one dataset.
_HF_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")
_JSONL_SUFFIXES = (".jsonl", ".json-lines", ".ndjson")
_MARKDOWN_SUFFIXES = (".md", ".markdown")
_DOC_START = re.compile(r"<doc[\s>]")
_DOC_HEADER = re.compile(r'<doc id="(\d+)" url="[^"]*" title="([^"]*)">')
# Table and template leftovers that WikiExtractor lets through ("!colspan=9 style=|Regular Season").
_MARKUP_FRAGMENTS = ("colspan", "style=", "|", "{{")
# Text and WikiExtractor files are read in pieces of at most this many bytes, so no line is ever held whole.
_PIECE_BYTES = 1 << 20
# NUL and the other C0 controls but tab, newline, vertical tab, form feed and carriage return, plus DEL.
_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f\x7f]")
_BINARY_SHARE = 0.01
# Where an over-long paragraph is preferably cut: after a sentence end (then a space) or a CJK full stop.
_CUT_AFTER_SENTENCE = re.compile(r"""[.!?]["'\u201d\u2019)\]]*\s+|[\u3002\uff01\uff1f]+""")
_CUT_AFTER_SPACE = re.compile(r"\s+")
_REPORT_FILE = "corpus_report.json"

# Documents are cut into parts of at most this many characters: the builders' batches hold 64 documents, so
# this bounds their memory whatever the input's shape (a 50 MB one-line dump; docs/DATA_QUALITY.md). Above the
# longest article of the Wikipedia sample (64,327) and the longest law of the Chinese corpus (~73,000).
MAX_DOCUMENT_CHARS = 100_000

_DEFAULTS: dict[str, Any] = {
    "format": "auto",
    "min_body_chars": 200,
    "min_paragraph_words": 6,
    "max_documents": 0,
    "on_bad_input": "skip",
    "max_paragraph_chars": 10_000,
    "max_document_chars": MAX_DOCUMENT_CHARS,
    "language": "auto",
    "min_paragraph_chars": 4,
}

Document = dict[str, Any]
Reader = Callable[..., Iterator[Document]]


class CorpusError(ValueError):
    """Unusable corpus input; the message is one line naming the file (and line) at fault."""


# ---------------------------------------------------------------------------------------------------------
# Locating files
# ---------------------------------------------------------------------------------------------------------


def _is_hf_dir(path: Path) -> bool:
    return path.is_dir() and any((path / marker).is_file() for marker in _HF_MARKERS)


def _skip_name(name: str) -> bool:
    # Data folders often carry their own documentation; it is not corpus text.
    return name.startswith(".") or name == "PROVENANCE.md" or name.startswith("README")


def _expand_dir(root: Path) -> list[Path]:
    if _is_hf_dir(root):
        return [root]
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        keep_dirs = []
        for name in sorted(dirnames):
            if name.startswith("."):
                continue
            if _is_hf_dir(here / name):
                # A saved dataset inside a corpus folder is one input, not a pile of arrow shards.
                found.append(here / name)
            else:
                keep_dirs.append(name)
        dirnames[:] = keep_dirs
        found.extend(here / name for name in filenames if not _skip_name(name) and (here / name).is_file())
    return found


def _describe(paths: Sequence[str]) -> str:
    shown = ", ".join(str(p) for p in paths[:3])
    return shown if len(paths) <= 3 else f"{shown} and {len(paths) - 3} more"


def _as_list(paths: Sequence[str] | str | os.PathLike[str]) -> list[str]:
    # A bare string would otherwise be iterated character by character.
    if isinstance(paths, str | os.PathLike):
        return [os.fspath(paths)]
    return [os.fspath(p) for p in paths]


def resolve_corpus_files(paths: Sequence[str]) -> list[Path]:
    """Expand files, directories and globs into a sorted, de-duplicated list of corpus inputs.

    A directory contributes its regular files recursively, skipping hidden names, ``PROVENANCE.md`` and
    ``README*``; a directory written by ``save_to_disk`` (it has ``dataset_info.json``, ``state.json`` or
    ``dataset_dict.json``) is kept whole as one entry. Glob matches are filtered the same way; a file named
    outright is always taken. Paths are absolute and symlink-resolved.

    Raises :class:`CorpusError` naming the entry when an entry matches no usable file.
    """
    paths = _as_list(paths)
    result: set[Path] = set()
    for entry in paths:
        raw = os.path.expanduser(os.fspath(entry))
        explicit = os.path.exists(raw)
        candidates = [Path(raw)] if explicit else [Path(p) for p in glob.glob(raw, recursive=True)]
        matched: list[Path] = []
        for candidate in candidates:
            if candidate.is_dir():
                matched.extend(_expand_dir(candidate))
            elif candidate.is_file() and (
                # A glob match is filtered like a directory listing; a file named outright is always taken.
                explicit or not (_skip_name(candidate.name) or _is_hf_dir(candidate.parent))
            ):
                matched.append(candidate)
        if not matched:
            what = "matches no files" if glob.has_magic(raw) else "does not exist or holds no files"
            raise CorpusError(f"corpus entry {entry!r} {what} (inputs: {_describe(paths)})")
        result.update(path.resolve() for path in matched)
    # A recursive glob can name both a saved dataset and its own split folders; the dataset covers them.
    datasets_found = {path for path in result if path.is_dir()}
    return sorted(path for path in result if not any(parent in datasets_found for parent in path.parents))


# ---------------------------------------------------------------------------------------------------------
# The account: what was read, skipped, kept and cut
# ---------------------------------------------------------------------------------------------------------

REASONS: dict[str, str] = {
    "invalid_utf8": "lines that are not valid UTF-8 (line dropped)",
    "binary": "binary or NUL-ridden lines (line dropped)",
    "malformed_jsonl": "malformed JSON Lines records (record dropped)",
    "malformed_doc_header": "unreadable <doc ...> headers (the block up to its </doc> dropped)",
    "unterminated_doc": "<doc> blocks without </doc> (text kept)",
    "outside_doc": "text outside any <doc> block (line dropped)",
    "unreadable_input": "inputs that cannot be read (input dropped)",
}
"""Why a part of the input was skipped -> what it is and what happens to it; the keys of every report."""

MAX_LOCATIONS = 5
"""How many ``file:line: reason`` locations a report keeps per input and reason."""

_ERROR_HINT = " (data.on_bad_input: skip drops and counts such parts instead)"


def _empty_entry() -> dict[str, Any]:
    return {"count": 0, "bytes": 0, "first": []}


def _add_entry(entries: dict[str, dict[str, Any]], key: str, count: int, nbytes: int, first: list[str]) -> None:
    entry = entries.setdefault(key, _empty_entry())
    entry["count"] += count
    entry["bytes"] += nbytes
    entry["first"].extend(first[: MAX_LOCATIONS - len(entry["first"])])


class InputAccount:
    """The account of one input file (or saved dataset): what its reader read, skipped and cut.

    ``bad`` is the one door every bad part goes through: under the ``skip`` policy it is counted (with its
    bytes and, for the first :data:`MAX_LOCATIONS`, its ``file:line`` and reason); under ``error`` it raises
    :class:`CorpusError` with that location, so the first bad part stops the run.
    """

    def __init__(self, path: Path, fmt: str, on_bad_input: str = "error") -> None:
        self.path = Path(path)
        self.format = fmt
        self.on_bad_input = on_bad_input
        self.bytes = 0
        self.documents = self.kept = self.stubs = 0
        self.skipped: dict[str, dict[str, Any]] = {}
        self.cut: dict[str, dict[str, Any]] = {}

    def where(self, line: int | str | None) -> str:
        """``path:line`` (``path`` alone for the whole input)."""
        return str(self.path) if line is None else f"{self.path}:{line}"

    def bad(self, line: int | str | None, reason: str, detail: str, nbytes: int) -> None:
        """One bad part: count it (policy ``skip``) or raise :class:`CorpusError` (policy ``error``)."""
        location = f"{self.where(line)}: {detail}"
        if self.on_bad_input == "error":
            raise CorpusError(location + _ERROR_HINT)
        _add_entry(self.skipped, reason, 1, nbytes, [location])

    def more_bytes(self, reason: str, nbytes: int) -> None:
        """Further bytes of a bad part already counted (the next piece of the same over-long line)."""
        self.skipped[reason]["bytes"] += nbytes

    def note_cut(self, kind: str, line: int | str | None, pieces: int, detail: str) -> None:
        """A paragraph (``kind="paragraphs"``) or document (``"documents"``) cut into ``pieces``."""
        entry = self.cut.setdefault(kind, {"count": 0, "pieces": 0, "first": []})
        entry["count"] += 1
        entry["pieces"] += pieces
        if len(entry["first"]) < MAX_LOCATIONS:
            entry["first"].append(f"{self.where(line)}: {detail}")

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "format": self.format, "bytes": self.bytes, "documents": self.documents,
                "kept": self.kept, "stubs": self.stubs, "skipped": self.skipped, "cut": self.cut}


class CorpusReport:
    """The account of one corpus build: inputs read, documents kept, and what was skipped or cut, by reason.

    Filled by :func:`build_documents`; :meth:`to_dict` is the JSON written as ``RUN_DIR/data_report.json``'s
    ``corpus`` section and :meth:`summary` its few printed lines.
    """

    def __init__(self, on_bad_input: str = "skip", min_body_chars: int = 0) -> None:
        self.on_bad_input = on_bad_input
        self.min_body_chars = min_body_chars
        self.inputs: list[InputAccount] = []
        self.embedded = False
        self.stopped_at_max_documents = False

    def account(self, path: Path, fmt: str) -> InputAccount:
        """A new :class:`InputAccount` for ``path``, under this report's policy."""
        account = InputAccount(path, fmt, self.on_bad_input)
        self.inputs.append(account)
        return account

    def totals(self) -> dict[str, Any]:
        """Sums over the inputs: bytes, documents, and skipped / cut entries by reason."""
        skipped: dict[str, dict[str, Any]] = {}
        cut: dict[str, dict[str, Any]] = {}
        for account in self.inputs:
            for reason, entry in account.skipped.items():
                _add_entry(skipped, reason, entry["count"], entry["bytes"], entry["first"])
            for kind, entry in account.cut.items():
                total = cut.setdefault(kind, {"count": 0, "pieces": 0, "first": []})
                total["count"] += entry["count"]
                total["pieces"] += entry["pieces"]
                total["first"].extend(entry["first"][: MAX_LOCATIONS - len(total["first"])])
        return {
            "inputs": len(self.inputs),
            "bytes": sum(a.bytes for a in self.inputs),
            "bytes_skipped": sum(e["bytes"] for e in skipped.values()),
            "documents": {"read": sum(a.documents for a in self.inputs), "kept": sum(a.kept for a in self.inputs),
                          "stubs": sum(a.stubs for a in self.inputs)},
            "skipped": {reason: skipped[reason] for reason in REASONS if reason in skipped},
            "cut": cut,
        }

    def to_dict(self) -> dict[str, Any]:
        return {"on_bad_input": self.on_bad_input, "min_body_chars": self.min_body_chars,
                "embedded_corpus": self.embedded, "stopped_at_max_documents": self.stopped_at_max_documents,
                **self.totals(), "reasons": REASONS, "files": [a.to_dict() for a in self.inputs]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CorpusReport:
        """The report :meth:`to_dict` wrote (for a cached build)."""
        report = cls(data.get("on_bad_input", "skip"), data.get("min_body_chars", 0))
        report.embedded = bool(data.get("embedded_corpus"))
        report.stopped_at_max_documents = bool(data.get("stopped_at_max_documents"))
        for item in data.get("files", []):
            account = report.account(Path(item["path"]), item["format"])
            account.bytes, account.documents = item["bytes"], item["documents"]
            account.kept, account.stubs = item["kept"], item["stubs"]
            account.skipped, account.cut = item["skipped"], item["cut"]
        return report

    def skipped_lines(self) -> list[str]:
        """One line per reason: ``invalid_utf8: 3 (1.2 kB), lines that are not ... ; first at file:line: ...``."""
        lines = []
        for reason, entry in self.totals()["skipped"].items():
            size = f" ({_size(entry['bytes'])})" if entry["bytes"] else ""
            first = f"; first at {entry['first'][0]}" if entry["first"] else ""
            lines.append(f"{reason}: {entry['count']}{size}, {REASONS[reason]}{first}")
        return lines

    def skipped_summary(self) -> str:
        """:meth:`skipped_lines` as one line (empty when nothing was skipped)."""
        return "; ".join(self.skipped_lines())

    def summary(self) -> list[str]:
        """The account in a few lines, for the console: what was read and kept, then one line per reason
        anything was skipped for, then what was cut."""
        totals = self.totals()
        docs = totals["documents"]
        source = "the embedded standard-library corpus" if self.embedded else \
            f"{totals['inputs']} input(s) of {_size(totals['bytes'])}"
        lines = [f"corpus: {source}; {docs['read']} documents read, {docs['kept']} kept, {docs['stubs']} dropped "
                 f"as stubs (< {self.min_body_chars} body characters)"
                 + ("; stopped at data.max_documents" if self.stopped_at_max_documents else "")]
        if totals["skipped"]:
            lines.append(f"skipped {_size(totals['bytes_skipped'])} of bad input "
                         f"(data.on_bad_input: {self.on_bad_input}):")
            lines.extend(f"  {line}" for line in self.skipped_lines())
        else:
            lines.append("skipped: nothing, no bad input")
        for kind, entry in totals["cut"].items():
            lines.append(f"cut: {entry['count']} over-long {kind} into {entry['pieces']} pieces; first at "
                         f"{entry['first'][0]}")
        return lines


def _size(nbytes: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if nbytes >= scale:
            return f"{nbytes / scale:.1f} {unit}"
    return f"{nbytes} B"


# ---------------------------------------------------------------------------------------------------------
# Reading lines in bounded pieces, cutting paragraphs and documents
# ---------------------------------------------------------------------------------------------------------


def detect_format(path: Path) -> str:
    """Guess the corpus format of one resolved input: ``hf``, ``jsonl``, ``wikiextractor`` or ``text``."""
    path = Path(path)
    if path.is_dir():
        return "hf"
    if path.name.lower().endswith(_JSONL_SUFFIXES):
        return "jsonl"
    if path.name.lower().endswith(_MARKDOWN_SUFFIXES):
        return "markdown"
    # The first non-blank characters decide; read in bounded chunks, as a file may be one huge line.
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 16):
            head = chunk.lstrip()
            if head:
                return "wikiextractor" if head.startswith(b"<doc ") else "text"
    return "text"


def _is_binary(text: str) -> bool:
    controls = len(_CONTROL.findall(text))
    return controls > 0 and controls >= _BINARY_SHARE * len(text)


def _cut_point(text: str, start: int, max_chars: int) -> int:
    # The last sentence end, else the last space, in the second half of the window: each cut then consumes at
    # least max_chars / 2 characters for O(max_chars) work, so cutting is linear in the text's length.
    low, high = start + max_chars // 2, start + max_chars
    for pattern in (_CUT_AFTER_SENTENCE, _CUT_AFTER_SPACE):
        last = None
        for last in pattern.finditer(text, low, high):  # noqa: B007 - only the last match is wanted
            pass
        if last is not None:
            return last.end()
    return high


def cut_paragraph(text: str, max_chars: int) -> list[str]:
    """``text`` in pieces of at most ``max_chars`` characters, cut after the last sentence end (``.``, ``!``,
    ``?`` and closing quotes before a space, or a CJK full stop) in the second half of each window, else after
    its last whitespace, else at ``max_chars``. Text no longer than ``max_chars`` is returned whole."""
    pieces, start = [], 0
    while len(text) - start > max_chars:
        cut = _cut_point(text, start, max_chars)
        pieces.append(text[start:cut])
        start = cut
    pieces.append(text[start:])
    return pieces


def _open_binary(path: Path, account: InputAccount) -> BinaryIO | None:
    try:
        handle = path.open("rb")
        account.bytes = os.fstat(handle.fileno()).st_size
        return handle
    except OSError as exc:
        account.bad(None, "unreadable_input", f"cannot read ({exc.strerror or exc})", 0)
        return None


def _decoded_lines(path: Path, account: InputAccount) -> Iterator[tuple[int, str | None, bool]]:
    """(line number, text, line complete) for each piece of at most 1 MiB of every line of ``path``.

    A piece that is not UTF-8, or is binary, is counted and comes as ``None``; a whole line of either kind is
    counted once. Line ends (``\\n``, ``\\r\\n``) are removed; the last line may lack one.
    """
    handle = _open_binary(path, account)
    if handle is None:
        return
    decoder = codecs.getincrementaldecoder("utf-8")()
    lineno, counted = 1, None  # counted: the reason this line was already counted under
    with handle:
        while chunk := handle.readline(_PIECE_BYTES):
            complete = chunk.endswith(b"\n")
            text: str | None
            try:
                # readline stops short of the limit without a newline only at the end of the file.
                text = decoder.decode(chunk, final=complete or len(chunk) < _PIECE_BYTES)
            except UnicodeDecodeError as exc:
                decoder.reset()
                text, reason = None, "invalid_utf8"
                detail = f"not UTF-8 text ({exc.reason} at byte {exc.start + 1} of the line piece)"
            else:
                reason, detail = "binary", "binary data (NUL or control characters)"
                if complete:
                    text = text[:-2] if text.endswith("\r\n") else text[:-1]
                if _is_binary(text):
                    text = None
            if text is None:
                if counted == reason:
                    account.more_bytes(reason, len(chunk))
                else:
                    account.bad(lineno, reason, detail, len(chunk))
                    counted = reason
            yield lineno, text, complete
            if complete:
                lineno, counted = lineno + 1, None


def _line_pieces(path: Path, account: InputAccount, max_chars: int) -> Iterator[tuple[int, str, bool]]:
    """(line number, piece, whole line) for the lines of ``path``: a line of at most ``max_chars`` characters
    is one piece (``whole``), a longer one is cut as :func:`cut_paragraph` does, streaming, so neither memory
    nor time depends on the longest line. Dropped pieces (see :func:`_decoded_lines`) do not appear."""
    carry, pieces = "", 0
    for lineno, text, complete in _decoded_lines(path, account):
        if text is None and carry:  # text on both sides of a dropped piece is not joined up
            yield lineno, carry, False
            carry, pieces = "", pieces + 1
        if text is not None:
            buffer = carry + text if carry else text
            start = 0
            while len(buffer) - start > max_chars:
                cut = _cut_point(buffer, start, max_chars)
                yield lineno, buffer[start:cut], False
                pieces, start = pieces + 1, cut
            carry = buffer[start:]
        if complete:
            if pieces:
                if carry:
                    yield lineno, carry, False
                account.note_cut("paragraphs", lineno, pieces + bool(carry),
                                 f"a line over {max_chars} characters")
            elif text is not None:
                yield lineno, carry, True
            carry, pieces = "", 0
    if carry or pieces:  # a last line without its newline
        yield lineno, carry, not pieces
        if pieces:
            account.note_cut("paragraphs", lineno, pieces + 1, f"a line over {max_chars} characters")


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


def _clean(line: str, min_paragraph_words: int) -> str | None:
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
        if _is_binary(text_line):
            account.bad(line, "binary", "binary data (NUL or control characters) in the text", len(text_line))
            continue
        pieces = cut_paragraph(text_line, max_chars)
        if len(pieces) > 1:
            account.note_cut("paragraphs", line, len(pieces), f"a line over {max_chars} characters")
        for piece in pieces:
            paragraph = _clean(piece, min_paragraph_words)
            if paragraph is not None:
                yield paragraph


def _limits(account: InputAccount | None, path: Path, fmt: str) -> InputAccount:
    # Called without an account (a reader used on its own), the first bad part raises: the strict default.
    return account if account is not None else InputAccount(path, fmt, "error")


# ---------------------------------------------------------------------------------------------------------
# Readers
# ---------------------------------------------------------------------------------------------------------


def read_text(path: Path, min_paragraph_words: int, account: InputAccount | None = None, *,
              max_paragraph_chars: int = 10_000, max_document_chars: int = MAX_DOCUMENT_CHARS) -> Iterator[Document]:
    """Plain text: documents separated by blank lines, one paragraph per line, no titles.

    Lines end at ``\\n`` (or ``\\r\\n``). A line that is not UTF-8, or is binary, is dropped (see
    :class:`InputAccount`); without an ``account`` it raises :class:`CorpusError` instead.
    """
    path = Path(path)
    account = _limits(account, path, "text")
    index = 0
    doc: _Parts | None = None
    for lineno, piece, whole in _line_pieces(path, account, max_paragraph_chars):
        if whole and not piece.strip():
            if doc is not None:
                last = doc.finish()
                if last is not None:
                    yield last
                doc, index = None, index + 1
            continue
        if doc is None:
            doc = _Parts(f"{path.name}:{index}", "", max_document_chars, account, lineno)
        paragraph = _clean(piece, min_paragraph_words)
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


def read_jsonl(path: Path, min_paragraph_words: int, account: InputAccount | None = None, *,
               max_paragraph_chars: int = 10_000, max_document_chars: int = MAX_DOCUMENT_CHARS) -> Iterator[Document]:
    """JSON lines: one object per line with ``text`` (required) and optional ``title`` and ``id``.

    Paragraphs are the non-empty lines of ``text``. Blank lines are skipped; a line that is not UTF-8 or not
    a JSON object with a string ``text`` (and string or integer ``title`` / ``id``) is a malformed record:
    dropped and counted, or, without an ``account``, raised as :class:`CorpusError` ``path:line: reason``.
    A record is parsed whole, so memory follows the longest record.
    """
    path = Path(path)
    account = _limits(account, path, "jsonl")
    handle = _open_binary(path, account)
    if handle is None:
        return
    index = 0
    with handle:
        for lineno, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                account.bad(lineno, "invalid_utf8", f"not UTF-8 text ({exc.reason} at byte {exc.start + 1})",
                            len(raw))
                continue
            if not line.strip():
                continue
            record, problem = _parse_record(line)
            doc_id = title = None
            if record is not None:
                doc_id, problem = _optional_str(record.get("id"), "id")
            if record is not None and problem is None:
                title, problem = _optional_str(record.get("title"), "title")
            if problem is not None or record is None:
                account.bad(lineno, "malformed_jsonl", problem or "malformed record", len(raw))
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
                       max_paragraph_chars: int = 10_000,
                       max_document_chars: int = MAX_DOCUMENT_CHARS) -> Iterator[Document]:
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

    for lineno, piece, whole in _line_pieces(path, account, max_paragraph_chars):
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
            paragraph = _clean(line, min_paragraph_words)
            if paragraph is not None and (part := doc.add(paragraph)) is not None:
                yield part
    if doc is not None and (last := unterminated()) is not None:
        yield last
    close_broken()


def read_hf(path: Path, min_paragraph_words: int, account: InputAccount | None = None, *,
            max_paragraph_chars: int = 10_000, max_document_chars: int = MAX_DOCUMENT_CHARS) -> Iterator[Document]:
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
            cleaned = _clean(piece, min_paragraph_words)
            if cleaned is not None and (part := doc.add(cleaned)) is not None:
                yield part
    if (last := doc.finish()) is not None:
        yield last


def read_markdown(path: Path, min_paragraph_words: int, account: InputAccount | None = None, *,
                  max_paragraph_chars: int = 10_000, max_document_chars: int = MAX_DOCUMENT_CHARS) -> Iterator[Document]:
    """Markdown, one document per file (``data_builders.markdown.parse_markdown``): the title from the first
    ``#`` heading (else line 1); headings, HTML comments, front matter, code and tables kept out."""
    path = Path(path)
    account = _limits(account, path, "markdown")
    text = "\n".join(piece for _, piece, _ in _line_pieces(path, account, max_paragraph_chars))
    title, paragraphs = parse_markdown(text)
    yield from _file_document(path, title, paragraphs, min_paragraph_words, account, max_paragraph_chars,
                              max_document_chars)


def read_text_file(path: Path, min_paragraph_words: int, account: InputAccount | None = None, *,
                   max_paragraph_chars: int = 10_000, max_document_chars: int = MAX_DOCUMENT_CHARS) -> Iterator[Document]:
    """Plain text, one document per file: the first non-empty line is the title, every other line a
    paragraph."""
    path = Path(path)
    account = _limits(account, path, "text_file")
    text = "\n".join(piece for _, piece, _ in _line_pieces(path, account, max_paragraph_chars))
    title, paragraphs = parse_text_file(text)
    yield from _file_document(path, title, paragraphs, min_paragraph_words, account, max_paragraph_chars,
                              max_document_chars)


_READERS: dict[str, Reader] = {
    "text": read_text,
    "jsonl": read_jsonl,
    "wikiextractor": read_wikiextractor,
    "hf": read_hf,
    "markdown": read_markdown,
    "text_file": read_text_file,
}


# ---------------------------------------------------------------------------------------------------------
# The embedded corpus: standard-library docstrings
# ---------------------------------------------------------------------------------------------------------

_STDLIB_SKIP = frozenset(
    {"test", "tests", "idlelib", "lib2to3", "site-packages", "__pycache__", "ensurepip", "turtledemo"}
)
# Subpackages that hold test suites inside otherwise useful packages (ctypes/test, unittest/test, ...).
_STDLIB_SKIP_SUBDIRS = _STDLIB_SKIP | {"idle_test"}
_DOCTEST_PROMPTS = (">>>", "...")
_STATEMENT_FIELDS = ("body", "orelse", "handlers", "finalbody", "cases")
# Below this share of letters among non-space characters a paragraph is code, a table or a signature.
_MIN_LETTER_SHARE = 0.6


def _stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def _stdlib_units() -> list[tuple[str, list[Path]]]:
    """(module name, source files in reading order) for each public top-level module or package."""
    root = _stdlib_root()
    units: list[tuple[str, list[Path]]] = []
    for entry in sorted(root.iterdir(), key=lambda p: p.name):
        name = entry.name[:-3] if entry.name.endswith(".py") and entry.is_file() else entry.name
        if name.startswith("_") or name in _STDLIB_SKIP or not name.isidentifier():
            continue
        if entry.is_file() and entry.suffix == ".py":
            units.append((name, [entry]))
        elif entry.is_dir() and (entry / "__init__.py").is_file():
            units.append((name, [entry / "__init__.py", *_package_modules(entry)]))
    return units


def _package_modules(package: Path) -> list[Path]:
    modules: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(package):
        here = Path(dirpath)
        # Only descend into real subpackages; skip test suites and private helpers.
        dirnames[:] = sorted(
            d
            for d in dirnames
            if d not in _STDLIB_SKIP_SUBDIRS
            and not d.startswith(("_", "."))
            and (here / d / "__init__.py").is_file()
        )
        for filename in sorted(filenames):
            if not filename.endswith(".py") or filename.startswith("_"):
                continue
            modules.append(here / filename)
        if here != package and (here / "__init__.py").is_file():
            modules.append(here / "__init__.py")
    return sorted(modules, key=lambda p: p.relative_to(package).parts)


def _docstrings(tree: ast.Module) -> Iterator[str]:
    # Pre-order walk in source order: module, then each class/function followed by its methods. Only
    # statement lists are followed (definitions can hide under if/try/with), never expressions: visiting
    # every expression node made the walk the dominant cost of the whole corpus.
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            doc = ast.get_docstring(node, clean=True)
            if doc:
                yield doc
        children: list[ast.AST] = []
        for field in _STATEMENT_FIELDS:
            value = getattr(node, field, None)
            if isinstance(value, list):
                children.extend(child for child in value if isinstance(child, ast.AST))
        stack.extend(reversed(children))


def _prose_paragraphs(docstring: str) -> Iterator[str]:
    for block in re.split(r"\n\s*\n", docstring):
        lines = [line.strip() for line in block.splitlines() if line.strip()]
        if not lines or any(line.startswith(_DOCTEST_PROMPTS) for line in lines):
            continue
        paragraph = " ".join(lines)
        visible = len(paragraph) - paragraph.count(" ")
        letters = sum(map(str.isalpha, paragraph))
        if visible and letters / visible >= _MIN_LETTER_SHARE:
            yield paragraph


def _module_paragraphs(files: Sequence[Path]) -> list[str]:
    paragraphs: list[str] = []
    seen: set[str] = set()
    for file in files:
        try:
            tree = ast.parse(file.read_bytes(), filename=str(file))
        except (SyntaxError, UnicodeDecodeError, ValueError, OSError):
            continue
        for doc in _docstrings(tree):
            for paragraph in _prose_paragraphs(doc):
                # Overloads and platform variants repeat docstrings; duplicates would only skew the corpus.
                if paragraph not in seen:
                    seen.add(paragraph)
                    paragraphs.append(paragraph)
    return paragraphs


def iter_stdlib_documents(min_paragraph_words: int) -> Iterator[Document]:
    """The embedded default corpus: docstrings of the running interpreter's standard library.

    Source files under ``sysconfig.get_paths()["stdlib"]`` are parsed with :mod:`ast` (never imported). Each
    public top-level module or package is one document titled with its name; its paragraphs come from the
    module, class, function and method docstrings (a package's submodules follow in sorted order), split on
    blank lines, with doctest and code-like paragraphs removed. Unparseable files are skipped.
    """
    for name, files in _stdlib_units():
        cleaned = (_clean(paragraph, min_paragraph_words) for paragraph in _module_paragraphs(files))
        paragraphs = [paragraph for paragraph in cleaned if paragraph is not None]
        yield {"id": f"stdlib:{name}", "title": name, "paragraphs": paragraphs}


# ---------------------------------------------------------------------------------------------------------
# Building, fingerprinting, caching
# ---------------------------------------------------------------------------------------------------------


def _read_all(files: Sequence[Path], fmt: str, min_paragraph_words: int, report: CorpusReport,
              limits: dict[str, int]) -> Iterator[tuple[InputAccount, Document]]:
    for file in files:
        kind = fmt
        if fmt == "auto":
            try:
                kind = detect_format(file)
            except OSError as exc:
                report.account(file, "text").bad(None, "unreadable_input",
                                                 f"cannot read ({exc.strerror or exc})", 0)
                continue
        reader = _READERS[kind]
        if reader is read_hf and not file.is_dir():
            raise CorpusError(f"{file}: format 'hf' needs a directory written by save_to_disk")
        if reader is not read_hf and file.is_dir():
            raise CorpusError(f"{file}: is a saved dataset directory; use format 'hf' or 'auto'")
        account = report.account(file, kind)
        for doc in reader(file, min_paragraph_words, account, **limits):
            yield account, doc


def _check_options(fmt: str, min_body_chars: int, min_paragraph_words: int, max_documents: int,
                   on_bad_input: str, max_paragraph_chars: int, max_document_chars: int,
                   language: str = "auto", min_paragraph_chars: int = 4) -> None:
    if fmt not in FORMATS:
        raise CorpusError(f"unknown corpus format {fmt!r}; expected one of {', '.join(FORMATS)}")
    if language not in LANGUAGES or min_paragraph_chars < 1:
        raise CorpusError(f"invalid corpus options: need language in {', '.join(LANGUAGES)} (got {language!r}) "
                          f"and min_paragraph_chars >= 1 (got {min_paragraph_chars})")
    if on_bad_input not in BAD_INPUT_POLICIES:
        raise CorpusError(f"unknown on_bad_input {on_bad_input!r}; expected one of {', '.join(BAD_INPUT_POLICIES)}")
    if min_body_chars < 0 or min_paragraph_words < 1 or max_documents < 0:
        raise CorpusError(
            "invalid corpus options: need min_body_chars >= 0, min_paragraph_words >= 1, max_documents >= 0"
        )
    if max_paragraph_chars < 100 or max_document_chars < max_paragraph_chars:
        raise CorpusError("invalid corpus options: need max_paragraph_chars >= 100 and max_document_chars >= "
                          "max_paragraph_chars")


def build_documents(
    paths: Sequence[str],
    *,
    format: str = "auto",  # mirrors the data.format config key
    min_body_chars: int = 200,
    min_paragraph_words: int = 6,
    max_documents: int = 0,
    on_bad_input: str = "skip",
    max_paragraph_chars: int = 10_000,
    max_document_chars: int = MAX_DOCUMENT_CHARS,
    language: str = "auto",
    min_paragraph_chars: int = 4,
    output_dir: str | Path | None = None,
    report: CorpusReport | None = None,
) -> datasets.Dataset:
    """Read a corpus into a documents dataset with features :data:`DOCUMENT_FEATURES`.

    The documents are written to ``output_dir/documents.arrow`` (default: a new temporary directory) in
    batches and memory-mapped, so a corpus of any size is read in constant memory.

    ``paths`` are files, directories or globs (see :func:`resolve_corpus_files`); empty means the embedded
    standard-library corpus. ``format="auto"`` picks a reader per file, any other format applies to all files.
    Documents whose kept paragraphs total fewer than ``min_body_chars`` characters (and documents with no
    paragraph at all) are dropped as stubs; ``max_documents > 0`` keeps the first N survivors in input order.

    Bad input (see :data:`REASONS`) is dropped and counted with ``on_bad_input="skip"`` and raises
    :class:`CorpusError` naming ``file:line`` with ``"error"``. Paragraphs over ``max_paragraph_chars`` and
    documents over ``max_document_chars`` are cut (:func:`cut_paragraph`; documents at paragraph boundaries,
    the parts named ``<id>#2``, ...). The account of all this goes into ``report`` when one is given.

    ``language`` (``auto``, ``en``, ``zh``) decides each document's language and so its paragraph rule and
    sentence splitter (:func:`data_builders.language.finish_document`): Chinese paragraphs are normalized and
    need ``min_paragraph_chars`` CJK characters instead of ``min_paragraph_words`` words.

    Raises :class:`CorpusError` for unusable options or input, or when no document survives: the message says
    what was read and skipped.
    """
    _check_options(format, min_body_chars, min_paragraph_words, max_documents, on_bad_input,
                   max_paragraph_chars, max_document_chars, language, min_paragraph_chars)
    report = report if report is not None else CorpusReport(on_bad_input, min_body_chars)
    report.on_bad_input, report.min_body_chars = on_bad_input, min_body_chars
    paths = _as_list(paths)
    source: Iterator[tuple[InputAccount, Document]]
    if paths:
        limits = {"max_paragraph_chars": max_paragraph_chars, "max_document_chars": max_document_chars}
        source = _read_all(resolve_corpus_files(paths), format, min_paragraph_words, report, limits)
        where = _describe(paths)
    else:
        # The embedded corpus is trusted text of known shape: read as it is (no cuts), counted as one input.
        report.embedded = True
        embedded = report.account(_stdlib_root(), "embedded")
        source = ((embedded, doc) for doc in iter_stdlib_documents(min_paragraph_words))
        where = f"the embedded standard-library corpus ({_stdlib_root()})"

    # Streamed to an Arrow file in batches and memory-mapped back, so memory stays flat for any corpus size.
    directory = Path(output_dir) if output_dir is not None else Path(tempfile.mkdtemp(prefix="ernie-cmtl-docs-"))
    directory.mkdir(parents=True, exist_ok=True)
    arrow_path = directory / "documents.arrow"
    schema = DOCUMENT_FEATURES.arrow_schema
    read = kept = 0
    rows: list[Document] = []
    buffered = 0
    with pa.OSFile(str(arrow_path), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
        for account, doc in source:
            read += 1
            account.documents += 1
            doc = finish_document(doc, language=language, min_paragraph_words=min_paragraph_words,
                                  min_paragraph_chars=min_paragraph_chars)
            paragraphs = doc["paragraphs"]
            if not paragraphs or sum(len(p) for p in paragraphs) < min_body_chars:
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
            if max_documents and kept >= max_documents:
                report.stopped_at_max_documents = True
                break
        if rows:
            writer.write_batch(pa.RecordBatch.from_pylist(rows, schema=schema))
    if not kept:
        skipped = report.skipped_summary()
        raise CorpusError(
            f"no usable documents in {where} (read {read} documents, 0 with >= {min_body_chars} body characters "
            f"in paragraphs of >= {min_paragraph_words} words (Chinese: >= {min_paragraph_chars} CJK characters)"
            + (f"; skipped {skipped}" if skipped else "")
            + "; lower data.min_body_chars or check the format)"
        )
    return datasets.Dataset.from_file(str(arrow_path))


def _normalized_options(options: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(options) - set(_DEFAULTS))
    if unknown:
        raise TypeError(f"unknown corpus option(s): {', '.join(unknown)}; expected {', '.join(_DEFAULTS)}")
    return {**_DEFAULTS, **options}


def corpus_fingerprint(paths: Sequence[str], **options: Any) -> str:
    """Short hex digest identifying the documents :func:`build_documents` would produce.

    It covers the resolved inputs (path, size and ``mtime_ns`` of every file, including the files inside a
    saved-dataset directory), the build options (defaults filled in) and :data:`BUILDER_VERSION`; for the
    embedded corpus, the Python version and standard-library path instead of files.
    """
    digest = hashlib.sha256()
    digest.update(f"builder={BUILDER_VERSION}\n".encode())
    digest.update(json.dumps(_normalized_options(options), sort_keys=True, default=str).encode())
    paths = _as_list(paths)
    if paths:
        for path in resolve_corpus_files(paths):
            members = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
            for member in members:
                stat = member.stat()
                digest.update(f"\n{member}\t{stat.st_size}\t{stat.st_mtime_ns}".encode())
    else:
        digest.update(f"\nstdlib\t{sys.version}\t{_stdlib_root()}".encode())
    return digest.hexdigest()[:16]


def load_documents_with_report(paths: Sequence[str], *, cache_dir: str | Path,
                               **options: Any) -> tuple[datasets.Dataset, CorpusReport]:
    """:func:`build_documents` with an on-disk cache keyed by :func:`corpus_fingerprint`, and its account.

    The dataset lives in ``<cache_dir>/documents/<fingerprint>`` with the build's :class:`CorpusReport` as
    ``corpus_report.json`` beside its files. A miss builds it, saves it to a temporary sibling directory and
    renames it into place, so readers never see a half-written cache; when another process finished first, its
    copy is used. The returned dataset is always the one loaded from the cache.
    """
    options = _normalized_options(options)
    fingerprint = corpus_fingerprint(paths, **options)
    target = Path(cache_dir).expanduser() / "documents" / fingerprint
    report = CorpusReport(options["on_bad_input"], options["min_body_chars"])
    if not target.is_dir():
        target.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{fingerprint}.", suffix=".tmp", dir=target.parent))
        try:
            documents = build_documents(paths, **options, output_dir=work / "stream", report=report)
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


def load_documents(paths: Sequence[str], *, cache_dir: str | Path, **options: Any) -> datasets.Dataset:
    """:func:`load_documents_with_report` without the report."""
    return load_documents_with_report(paths, cache_dir=cache_dir, **options)[0]
