"""Where a corpus is: files, directories and globs resolved into the sorted list of inputs a build reads."""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from pathlib import Path

from data_builders.corpus_options import CorpusError

__all__ = ["as_list", "describe", "resolve_corpus_files"]

# Files written by `Dataset.save_to_disk` / `DatasetDict.save_to_disk` that mark a directory as one dataset.
_HF_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")


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


def describe(paths: Sequence[str]) -> str:
    """The first three entries of ``paths`` and how many more, for messages."""
    shown = ", ".join(str(p) for p in paths[:3])
    return shown if len(paths) <= 3 else f"{shown} and {len(paths) - 3} more"


def as_list(paths: Sequence[str] | str | os.PathLike[str]) -> list[str]:
    """``paths`` as a list of strings (a bare string would otherwise be iterated character by character)."""
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
    paths = as_list(paths)
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
            raise CorpusError(f"corpus entry {entry!r} {what} (inputs: {describe(paths)})")
        result.update(path.resolve() for path in matched)
    # A recursive glob can name both a saved dataset and its own split folders; the dataset covers them.
    datasets_found = {path for path in result if path.is_dir()}
    return sorted(path for path in result if not any(parent in datasets_found for parent in path.parents))
