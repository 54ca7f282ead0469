"""Sharded builds (docs/DISTRIBUTED.md): which documents a shard holds, and which shard builds are done.

A shard's examples go to ``<task cache>/shards/<k>-of-<n>`` beside the unsharded examples; a later run that
finds a complete set reads the ``n`` shards as one dataset.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from datasets import Dataset, concatenate_datasets, load_from_disk

Shard = tuple[int, int]
"""``(k, n)``: the k-th (0-based) of n disjoint parts of the corpus, split by document id."""


def parse_shard(text: str) -> Shard:
    """``"K/N"`` -> ``(K, N)`` with 0 <= K < N; a ``ValueError`` naming the expected form otherwise."""
    try:
        k_text, n_text = text.split("/")
        k, n = int(k_text), int(n_text)
    except ValueError:
        raise ValueError(f"--shard must be K/N (e.g. 0/4), got {text!r}") from None
    if n < 1 or not 0 <= k < n:
        raise ValueError(f"--shard K/N needs 0 <= K < N, got {text!r}")
    return k, n


def shard_of(doc_id: str, n: int) -> int:
    """The shard (0..n-1) of a document: a hash of its id alone, so a document's shard depends on nothing
    else (not the seed, not the other documents) and the held-out split is the same whatever ``n`` is."""
    return int.from_bytes(hashlib.sha1(f"shard:{doc_id}".encode()).digest()[:8], "big") % n


def shard_documents(documents: Dataset, shard: Shard) -> Dataset:
    """The documents of ``shard`` (in their corpus order)."""
    k, n = shard
    if n == 1:
        return documents
    return documents.select([i for i, doc_id in enumerate(documents["id"]) if shard_of(doc_id, n) == k])


def shard_name(shard: Shard) -> str:
    """``(k, n)`` -> ``"k-of-n"``: the folder of a shard's build."""
    return f"{shard[0]}-of-{shard[1]}"


def _shard_sets(task_dir: Path) -> dict[int, dict[int, Path]]:
    """The finished shard builds in ``task_dir/shards``: n -> {k: its directory}, with an entry (maybe empty)
    for every n that has any ``k-of-n`` directory. A shard is finished when it has its train and valid
    examples (or its ``empty.json``)."""
    sets: dict[int, dict[int, Path]] = {}
    root = task_dir / "shards"
    for path in root.iterdir() if root.is_dir() else ():
        k_text, _, n_text = path.name.partition("-of-")
        if k_text.isdigit() and n_text.isdigit():
            done = sets.setdefault(int(n_text), {})
            if (path / "empty.json").is_file() or ((path / "train").is_dir() and (path / "valid").is_dir()):
                done[int(k_text)] = path
    return sets


def built_shards(task_dir: Path) -> tuple[int, list[Path]] | None:
    """The newest complete set of shard builds in ``task_dir/shards`` as (n, shard dirs in order), or None."""
    sets = _shard_sets(task_dir)
    complete = [(max(p.stat().st_mtime for p in parts.values()), n) for n, parts in sets.items()
                if n and len(parts) == n]
    if not complete:
        return None
    n = max(complete)[1]
    return n, [sets[n][k] for k in range(n)]


def missing_shards(task_dir: Path) -> str | None:
    """A description of incomplete shard sets in ``task_dir/shards`` ("1, 3 of 4"), or None."""
    parts = [f"{', '.join(str(k) for k in range(n) if k not in done)} of {n}"
             for n, done in sorted(_shard_sets(task_dir).items()) if len(done) < n]
    return "; ".join(parts) or None


def load_shards(paths: list[Path]) -> tuple[Dataset, Dataset] | str:
    """The shards' train and valid examples, concatenated (memory-mapped Arrow files side by side); or the
    reason when no shard has examples."""
    train, valid, reasons = [], [], []
    for path in paths:
        if (path / "empty.json").is_file():
            reasons.append(json.loads((path / "empty.json").read_text())["reason"])
            continue
        train.append(load_from_disk(str(path / "train")))
        valid.append(load_from_disk(str(path / "valid")))
    if not train:
        return f"no shard has examples: {reasons[0]}"
    return concatenate_datasets(train), concatenate_datasets(valid)

