"""Raw corpora -> a documents ``datasets.Dataset`` (id, title, paragraphs, sentences).

Inputs are files, directories or globs in one of four formats (plain text, JSON lines, WikiExtractor output,
a dataset saved with ``save_to_disk``); with no input, the docstrings of the running interpreter's standard
library serve as a small built-in English corpus, so the pipeline runs without any download.

Every reader yields plain ``{"id", "title", "paragraphs"}`` dicts with the same paragraph rule (inner
whitespace collapsed, fewer than ``min_paragraph_words`` words dropped); :func:`build_documents` adds the
sentence split and the stub filter, and :func:`load_documents` caches the result under a fingerprint of the
inputs.
"""

from __future__ import annotations

import ast
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
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import datasets
import pyarrow as pa

from data_builders.sentences import split_sentences

__all__ = [
    "BUILDER_VERSION",
    "DOCUMENT_FEATURES",
    "FORMATS",
    "CorpusError",
    "build_documents",
    "corpus_fingerprint",
    "detect_format",
    "iter_stdlib_documents",
    "load_documents",
    "read_hf",
    "read_jsonl",
    "read_text",
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
    }
)
"""Schema of the documents dataset; ``sentences[i]`` holds the sentences of ``paragraphs[i]``."""

FORMATS = ("auto", "text", "jsonl", "wikiextractor", "hf")
_WRITE_BATCH = 500  # documents per Arrow record batch

# Files written by `Dataset.save_to_disk` / `DatasetDict.save_to_disk` that mark a directory as one dataset.
_HF_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")
_JSONL_SUFFIXES = (".jsonl", ".json-lines", ".ndjson")
_DOC_PATTERN = re.compile(r'<doc id="(\d+)" url="[^"]*" title="([^"]*)">\n(.*?)</doc>', re.DOTALL)
# Table and template leftovers that WikiExtractor lets through ("!colspan=9 style=|Regular Season").
_MARKUP_FRAGMENTS = ("colspan", "style=", "|", "{{")

_DEFAULTS: dict[str, Any] = {
    "format": "auto",
    "min_body_chars": 200,
    "min_paragraph_words": 6,
    "max_documents": 0,
}

Document = dict[str, Any]
Reader = Callable[[Path, int], Iterator[Document]]


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


def detect_format(path: Path) -> str:
    """Guess the corpus format of one resolved input: ``hf``, ``jsonl``, ``wikiextractor`` or ``text``."""
    path = Path(path)
    if path.is_dir():
        return "hf"
    if path.name.lower().endswith(_JSONL_SUFFIXES):
        return "jsonl"
    with path.open(encoding="utf-8", errors="replace") as handle:
        for line in handle:
            if line.strip():
                return "wikiextractor" if line.lstrip().startswith("<doc ") else "text"
    return "text"


# ---------------------------------------------------------------------------------------------------------
# Readers
# ---------------------------------------------------------------------------------------------------------


def _clean_paragraphs(lines: Iterable[str], min_paragraph_words: int) -> list[str]:
    paragraphs = []
    for line in lines:
        words = line.split()
        if len(words) >= min_paragraph_words:
            paragraphs.append(" ".join(words))
    return paragraphs


def _read_utf8(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise CorpusError(
            f"{path}:{line}: not UTF-8 text ({exc.reason}); pass text, JSON lines or WikiExtractor files"
        ) from None
    except OSError as exc:
        raise CorpusError(f"{path}: cannot read ({exc.strerror or exc})") from None


def read_text(path: Path, min_paragraph_words: int) -> Iterator[Document]:
    """Plain text: documents separated by blank lines, one paragraph per line, no titles."""
    path = Path(path)
    index = 0
    block: list[str] = []
    for line in _read_utf8(path).splitlines():
        if line.strip():
            block.append(line)
            continue
        if block:
            yield {
                "id": f"{path.name}:{index}",
                "title": "",
                "paragraphs": _clean_paragraphs(block, min_paragraph_words),
            }
            index += 1
            block = []
    if block:
        yield {
            "id": f"{path.name}:{index}",
            "title": "",
            "paragraphs": _clean_paragraphs(block, min_paragraph_words),
        }


def _optional_str(value: Any, field: str, where: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise CorpusError(f'{where}: "{field}" must be a string, got {type(value).__name__}')
    return str(value)


def read_jsonl(path: Path, min_paragraph_words: int) -> Iterator[Document]:
    """JSON lines: one object per line with ``text`` (required) and optional ``title`` and ``id``.

    Paragraphs are the non-empty lines of ``text``. Blank lines are skipped; a line that is not a JSON object
    with a string ``text`` raises :class:`CorpusError` as ``path:line: reason``.
    """
    path = Path(path)
    index = 0
    for lineno, line in enumerate(_read_utf8(path).splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise CorpusError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(record, dict):
            raise CorpusError(f"{where}: expected a JSON object, got {type(record).__name__}")
        if "text" not in record:
            raise CorpusError(f'{where}: missing required field "text"')
        text = record["text"]
        if not isinstance(text, str):
            raise CorpusError(f'{where}: "text" must be a string, got {type(text).__name__}')
        doc_id = _optional_str(record.get("id"), "id", where)
        title = _optional_str(record.get("title"), "title", where)
        yield {
            "id": doc_id if doc_id is not None else f"{path.name}:{index}",
            "title": title or "",
            "paragraphs": _clean_paragraphs(text.splitlines(), min_paragraph_words),
        }
        index += 1


def _looks_like_markup(line: str) -> bool:
    return line.lstrip().startswith("!") or any(fragment in line for fragment in _MARKUP_FRAGMENTS)


def read_wikiextractor(path: Path, min_paragraph_words: int) -> Iterator[Document]:
    """WikiExtractor output (``<doc id=.. url=.. title=..>`` blocks, one paragraph per line).

    HTML entities are unescaped, the first body line is dropped when it repeats the title, and section
    headings, table/template debris and other short lines are dropped. A ``<doc`` without its ``</doc>``
    raises :class:`CorpusError` naming the file and line.
    """
    path = Path(path)
    text = _read_utf8(path)

    def fail(offset: int, reason: str) -> CorpusError:
        return CorpusError(f"{path}:{text.count(chr(10), 0, offset) + 1}: {reason}")

    position = 0
    for match in _DOC_PATTERN.finditer(text):
        # Anything doc-like between two matches is a header the pattern could not pair with a </doc>.
        stray = text.find("<doc", position, match.start())
        if stray != -1:
            raise fail(
                stray, "malformed WikiExtractor file: <doc without a matching </doc> or unreadable header"
            )
        body = match.group(3)
        nested = body.find("<doc ")
        if nested != -1:
            raise fail(
                match.start(3) + nested, "malformed WikiExtractor file: <doc inside an unterminated <doc>"
            )
        position = match.end()
        title = html.unescape(match.group(2)).strip()
        lines = html.unescape(body).split("\n")
        if lines and lines[0].strip() == title:
            lines = lines[1:]
        lines = [line for line in lines if not _looks_like_markup(line)]
        yield {
            "id": match.group(1),
            "title": title,
            "paragraphs": _clean_paragraphs(lines, min_paragraph_words),
        }
    stray = text.find("<doc", position)
    if stray != -1:
        raise fail(stray, "malformed WikiExtractor file: <doc without a matching </doc>")


def read_hf(path: Path, min_paragraph_words: int) -> Iterator[Document]:
    """A dataset saved with ``save_to_disk``: string column ``text``, optional ``title`` and ``id``.

    For a ``DatasetDict`` the ``train`` split is read. Paragraphs are the non-empty lines of ``text``.
    """
    path = Path(path)
    try:
        loaded = datasets.load_from_disk(str(path))
    except Exception as exc:  # datasets raises assorted types for unreadable folders
        raise CorpusError(f"{path}: cannot load saved dataset ({type(exc).__name__}: {exc})") from None
    if isinstance(loaded, datasets.DatasetDict):
        if "train" not in loaded:
            raise CorpusError(f"{path}: saved DatasetDict has no 'train' split (splits: {', '.join(loaded)})")
        loaded = loaded["train"]
    features = loaded.features
    string_types = ("string", "large_string")

    def check(column: str, required: bool) -> bool:
        if column not in features:
            if required:
                raise CorpusError(
                    f"{path}: saved dataset has no 'text' column (columns: {', '.join(features)})"
                )
            return False
        feature = features[column]
        if not isinstance(feature, datasets.Value) or (
            feature.dtype not in string_types and not (column == "id" and "int" in feature.dtype)
        ):
            raise CorpusError(f"{path}: column {column!r} must hold strings, found {feature}")
        return True

    check("text", required=True)
    columns = ["text"] + [c for c in ("title", "id") if check(c, required=False)]
    index = 0
    for batch in loaded.select_columns(columns).iter(batch_size=1000):
        for row in range(len(batch["text"])):
            text = batch["text"][row] or ""
            title = batch["title"][row] if "title" in batch else None
            doc_id = batch["id"][row] if "id" in batch else None
            yield {
                "id": str(doc_id) if doc_id is not None else f"{path.name}:{index}",
                "title": title or "",
                "paragraphs": _clean_paragraphs(text.splitlines(), min_paragraph_words),
            }
            index += 1


_READERS: dict[str, Reader] = {
    "text": read_text,
    "jsonl": read_jsonl,
    "wikiextractor": read_wikiextractor,
    "hf": read_hf,
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
        paragraphs = _clean_paragraphs(_module_paragraphs(files), min_paragraph_words)
        yield {"id": f"stdlib:{name}", "title": name, "paragraphs": paragraphs}


# ---------------------------------------------------------------------------------------------------------
# Building, fingerprinting, caching
# ---------------------------------------------------------------------------------------------------------


def _read_all(files: Sequence[Path], fmt: str, min_paragraph_words: int) -> Iterator[Document]:
    for file in files:
        reader = _READERS[detect_format(file) if fmt == "auto" else fmt]
        if reader is read_hf and not file.is_dir():
            raise CorpusError(f"{file}: format 'hf' needs a directory written by save_to_disk")
        if reader is not read_hf and file.is_dir():
            raise CorpusError(f"{file}: is a saved dataset directory; use format 'hf' or 'auto'")
        yield from reader(file, min_paragraph_words)


def build_documents(
    paths: Sequence[str],
    *,
    format: str = "auto",  # mirrors the data.format config key
    min_body_chars: int = 200,
    min_paragraph_words: int = 6,
    max_documents: int = 0,
    output_dir: str | Path | None = None,
) -> datasets.Dataset:
    """Read a corpus into a documents dataset with features :data:`DOCUMENT_FEATURES`.

    The documents are written to ``output_dir/documents.arrow`` (default: a new temporary directory) in
    batches and memory-mapped, so a corpus of any size is read in constant memory.

    ``paths`` are files, directories or globs (see :func:`resolve_corpus_files`); empty means the embedded
    standard-library corpus. ``format="auto"`` picks a reader per file, any other format applies to all files.
    Documents whose kept paragraphs total fewer than ``min_body_chars`` characters (and documents with no
    paragraph at all) are dropped as stubs; ``max_documents > 0`` keeps the first N survivors in input order.

    Raises :class:`CorpusError` for unreadable input or when no document survives the filter.
    """
    if format not in FORMATS:
        raise CorpusError(f"unknown corpus format {format!r}; expected one of {', '.join(FORMATS)}")
    if min_body_chars < 0 or min_paragraph_words < 1 or max_documents < 0:
        raise CorpusError(
            "invalid corpus options: need min_body_chars >= 0, min_paragraph_words >= 1, max_documents >= 0"
        )
    paths = _as_list(paths)
    if paths:
        source = _read_all(resolve_corpus_files(paths), format, min_paragraph_words)
        where = _describe(paths)
    else:
        source = iter_stdlib_documents(min_paragraph_words)
        where = f"the embedded standard-library corpus ({_stdlib_root()})"

    # Streamed to an Arrow file in batches and memory-mapped back, so memory stays flat for any corpus size.
    directory = Path(output_dir) if output_dir is not None else Path(tempfile.mkdtemp(prefix="ernie-cmtl-docs-"))
    directory.mkdir(parents=True, exist_ok=True)
    arrow_path = directory / "documents.arrow"
    schema = DOCUMENT_FEATURES.arrow_schema
    read = kept = 0
    rows: list[Document] = []
    with pa.OSFile(str(arrow_path), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
        for doc in source:
            read += 1
            paragraphs = doc["paragraphs"]
            if not paragraphs or sum(len(p) for p in paragraphs) < min_body_chars:
                continue
            kept += 1
            rows.append({"id": doc["id"], "title": doc["title"], "paragraphs": paragraphs,
                         "sentences": [split_sentences(p) for p in paragraphs]})
            if len(rows) == _WRITE_BATCH:
                writer.write_batch(pa.RecordBatch.from_pylist(rows, schema=schema))
                rows = []
            if max_documents and kept >= max_documents:
                break
        if rows:
            writer.write_batch(pa.RecordBatch.from_pylist(rows, schema=schema))
    if not kept:
        raise CorpusError(
            f"no usable documents in {where} (read {read} documents, 0 with >= {min_body_chars} body characters "
            f"in paragraphs of >= {min_paragraph_words} words; lower data.min_body_chars or check the format)"
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


def load_documents(paths: Sequence[str], *, cache_dir: str | Path, **options: Any) -> datasets.Dataset:
    """:func:`build_documents` with an on-disk cache keyed by :func:`corpus_fingerprint`.

    The dataset lives in ``<cache_dir>/documents/<fingerprint>``. A miss builds it, saves it to a temporary
    sibling directory and renames it into place, so readers never see a half-written cache; when another
    process finished first, its copy is used. The returned dataset is always the one loaded from the cache.
    """
    options = _normalized_options(options)
    fingerprint = corpus_fingerprint(paths, **options)
    target = Path(cache_dir).expanduser() / "documents" / fingerprint
    if not target.is_dir():
        target.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{fingerprint}.", suffix=".tmp", dir=target.parent))
        try:
            documents = build_documents(paths, **options, output_dir=work / "stream")
            documents.save_to_disk(str(work / "dataset"))
            del documents
            try:
                os.rename(work / "dataset", target)
            except OSError:
                if not target.is_dir():
                    raise
                # Lost the race: an identical build is already in place.
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return datasets.load_from_disk(str(target))
