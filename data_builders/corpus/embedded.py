"""The embedded corpus: the docstrings of the running interpreter's standard library, so that the pipeline
runs without any download. Trusted text of known shape: read as it is, without the readers' cuts."""

from __future__ import annotations

import ast
import os
import re
import sysconfig
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from data_builders.corpus.readers import clean_paragraph

__all__ = ["iter_stdlib_documents", "stdlib_root"]

_STDLIB_SKIP = frozenset(
    {"test", "tests", "idlelib", "lib2to3", "site-packages", "__pycache__", "ensurepip", "turtledemo"}
)
# Subpackages that hold test suites inside otherwise useful packages (ctypes/test, unittest/test, ...).
_STDLIB_SKIP_SUBDIRS = _STDLIB_SKIP | {"idle_test"}
_DOCTEST_PROMPTS = (">>>", "...")
_STATEMENT_FIELDS = ("body", "orelse", "handlers", "finalbody", "cases")
# Below this share of letters among non-space characters a paragraph is code, a table or a signature.
_MIN_LETTER_SHARE = 0.6


def stdlib_root() -> Path:
    """Where the running interpreter's standard library lives."""
    return Path(sysconfig.get_paths()["stdlib"])


def _stdlib_units() -> list[tuple[str, list[Path]]]:
    """(module name, source files in reading order) for each public top-level module or package."""
    root = stdlib_root()
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


def iter_stdlib_documents(min_paragraph_words: int) -> Iterator[dict[str, Any]]:
    """The embedded default corpus: docstrings of the running interpreter's standard library.

    Source files under ``sysconfig.get_paths()["stdlib"]`` are parsed with :mod:`ast` (never imported). Each
    public top-level module or package is one document titled with its name; its paragraphs come from the
    module, class, function and method docstrings (a package's submodules follow in sorted order), split on
    blank lines, with doctest and code-like paragraphs removed. Unparseable files are skipped.
    """
    for name, files in _stdlib_units():
        cleaned = (clean_paragraph(paragraph, min_paragraph_words) for paragraph in _module_paragraphs(files))
        paragraphs = [paragraph for paragraph in cleaned if paragraph is not None]
        yield {"id": f"stdlib:{name}", "title": name, "paragraphs": paragraphs}
