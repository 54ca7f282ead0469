"""Forked worker pools for the build, and the one module global they need.

A pool's workers are forked after everything they read is ready in the parent (tokenizer, lexicons,
memory-mapped documents): the function they run is put in :data:`_FORKED` just before the fork, so it is
inherited with all it closes over instead of being pickled; only its arguments and results travel.
(``datasets.map(num_proc=N)`` instead pickles the function with its arguments into a new pool per call:
slower than one process on small corpora, docs/PERFORMANCE.md.)
"""

from __future__ import annotations

import gc
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from functools import partial
from multiprocessing.pool import AsyncResult
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset, concatenate_datasets, load_from_disk

from ernie_cmtl.tasks import EmptyTaskError

_FORKED: Callable[[Any], Any] | None = None
"""What the workers of the pool being started run (set just before the fork, cleared after the pool)."""


def _run_forked(arg: Any) -> Any:
    assert _FORKED is not None, "a forked worker runs only inside forked_workers()"
    return _FORKED(arg)


def _worker_start() -> None:
    import datasets.fingerprint

    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one thread per worker (and no fork warning)
    torch.set_num_threads(1)
    # With caching off, datasets names its temporary map results by a random fingerprint: the forked workers
    # inherit the parent's generator, would draw the same names into the same temporary folder and overwrite
    # each other's files. Each worker draws its own.
    datasets.fingerprint.fingerprint_rng.seed()


def fork_available() -> bool:
    """Whether this platform can fork worker processes (the parallel build needs it)."""
    import multiprocessing

    return "fork" in multiprocessing.get_all_start_methods()


class ForkedWorkers:
    """The workers of :func:`forked_workers`: each call runs the pool's function on one pickled argument."""

    def __init__(self, pool: Any) -> None:
        self._pool = pool

    def imap(self, args: Iterable[Any]) -> Iterator[Any]:
        """The function over ``args``, results in order as they come."""
        return self._pool.imap(_run_forked, args)

    def submit(self, arg: Any) -> AsyncResult:
        """The function on ``arg``, asynchronously (a worker's exception is raised by ``.get()``)."""
        return self._pool.apply_async(_run_forked, (arg,))


@contextmanager
def forked_workers(function: Callable[[Any], Any], workers: int) -> Iterator[ForkedWorkers]:
    """A pool of ``workers`` processes forked now, each running ``function`` (inherited, not pickled)."""
    import multiprocessing

    from datasets.fingerprint import get_temporary_cache_files_directory

    global _FORKED
    # the workers' temporary map results go to the parent's folder, removed when the parent exits (a worker
    # that made its own would leave it behind: pool workers end without running exit handlers)
    get_temporary_cache_files_directory()
    _FORKED = function
    gc.freeze()  # the workers' garbage collections then skip (and so do not copy) the parent's objects
    try:
        with multiprocessing.get_context("fork").Pool(workers, initializer=_worker_start) as pool:
            yield ForkedWorkers(pool)
    finally:
        gc.unfreeze()
        _FORKED = None


def _in_blocks(docs: Dataset, size: int) -> list[Dataset]:
    if len(docs) <= size:
        return [docs]
    return [docs.select(range(start, min(start + size, len(docs)))) for start in range(0, len(docs), size)]


def _save_block(function: Callable[[Dataset, int], Dataset], documents: Dataset,
                job: tuple[int, int, str]) -> tuple[int, str | None, str | None]:
    """One block in a worker: (documents done, saved examples or None, why the block is empty or None)."""
    start, end, out = job
    try:
        examples = function(documents.select(range(start, end)), 1)
    except EmptyTaskError as err:
        return end - start, None, str(err)
    examples.save_to_disk(out, **({"num_shards": 1} if len(examples) == 0 else {}))
    return end - start, out, None


def _forked_blocks(function: Callable[[Dataset, int], Dataset], documents: Dataset, block: int, num_proc: int,
                   work_dir: Path) -> Iterator[tuple[int, str | None, str | None]]:
    """:func:`map_in_blocks`' worker pool: (documents done, saved block or None, error or None) in order."""
    size = max(1, min(block, -(-len(documents) // (4 * num_proc))))
    jobs = [(start, min(start + size, len(documents)), str(work_dir / f"block-{i:06d}"))
            for i, start in enumerate(range(0, len(documents), size))]
    work_dir.mkdir(parents=True, exist_ok=True)
    with forked_workers(partial(_save_block, function, documents), num_proc) as workers:
        yield from workers.imap(jobs)


def map_in_blocks(function: Callable[[Dataset, int], Dataset], documents: Dataset, block: int, num_proc: int,
                  work_dir: Path | None, bar: Any = None) -> Dataset:
    """``function(part, workers)`` over contiguous blocks of ``documents``, the results concatenated in
    document order: the same rows as one call for a per-document ``function``. A block whose documents give
    no examples (:class:`EmptyTaskError`) is skipped; the error is raised only when every block fails.

    With ``num_proc`` > 1 (and ``fork``): one pool of that many forked workers (:func:`forked_workers`);
    each runs ``function(part, 1)`` on blocks of at most ``block`` documents (about four per worker, so the
    workers finish together) and saves them as Arrow files under ``work_dir``, read back memory-mapped.
    Otherwise blocks of ``block * num_proc`` documents in this process, ``function(part, num_proc)`` (where
    ``fork`` is missing, the builders' own ``datasets.map`` workers)."""
    parts: list[Dataset] = []
    first_error: str | None = None
    if num_proc > 1 and len(documents) > 1 and fork_available():
        assert work_dir is not None, "a parallel build needs a scratch folder"
        for done, path, error in _forked_blocks(function, documents, block, num_proc, work_dir):
            if path is not None:
                parts.append(load_from_disk(path))
            first_error = first_error or error
            if bar is not None:
                bar.update(done)
    else:
        for part in _in_blocks(documents, block * num_proc):
            try:
                parts.append(function(part, num_proc))
            except EmptyTaskError as err:
                first_error = first_error or str(err)
            if bar is not None:
                bar.update(len(part))
    if not parts:
        raise EmptyTaskError(first_error or "no documents")
    return concatenate_datasets(parts) if len(parts) > 1 else parts[0]
