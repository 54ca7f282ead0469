"""One task's examples from its documents: the task jobs of a build, run in this process or in a pool of
forked workers (:mod:`ernie_cmtl.build.parallel`), each split saved to the cache."""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from datasets import Dataset, load_from_disk
from tokenizers import Tokenizer

from data_builders.segments import add_sentence_tokens
from ernie_cmtl.build.cache import cached_dataset
from ernie_cmtl.build.parallel import fork_available, forked_workers, map_in_blocks
from ernie_cmtl.config import RunConfig
from ernie_cmtl.registry import get_task_class
from ernie_cmtl.tasks import BuildContext, EmptyTaskError, PretrainTask, SpecialIds

log = logging.getLogger(__name__)


def make_tasks(config: RunConfig, special: SpecialIds) -> dict[str, PretrainTask]:
    """The run's task plugins, one per ``tasks.<name>`` section."""
    return {name: get_task_class(name)(section, special) for name, section in config.tasks.items()}


class BuildProgress:
    """One progress line per task (documents/s and an ETA) in place of ``datasets``' per-map bars."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def bar(self, name: str, total: int, position: int | None = None) -> Any:
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=f"{name:<24}", unit=" docs", disable=not self.enabled, dynamic_ncols=True,
                    leave=True, mininterval=1.0, position=position)


def build_split(task: PretrainTask, documents: Dataset, ctx: BuildContext, split: str) -> Dataset:
    """``task.build``; a corpus that gives the split no examples raises :class:`EmptyTaskError` naming the
    split. Any other exception is a bug and goes up unchanged."""
    try:
        return task.build(documents, ctx)
    except EmptyTaskError as err:
        raise EmptyTaskError(f"{split} split: {err}") from None


def sentence_tokens_in_blocks(documents: Dataset, tokenizer: Tokenizer, block: int, num_proc: int,
                              work_dir: Path | None, bar: Any = None) -> Dataset:
    """The shared tokenization pass (``add_sentence_tokens``) over ``documents``, in blocks and workers as
    :func:`map_in_blocks` runs them."""
    return map_in_blocks(lambda part, workers: add_sentence_tokens(part, tokenizer, workers), documents, block,
                         num_proc, work_dir, bar)


def build_in_blocks(task: PretrainTask, documents: Dataset, ctx: BuildContext, split: str, block: int,
                    bar: Any = None) -> Dataset:
    """``task.build`` over ``documents``: for a document-local task through :func:`map_in_blocks` (in blocks,
    in ``ctx.num_proc`` forked workers, after its corpus statistics are ready in this process: the same rows
    as one call), else in one call (``ctx.num_proc`` then goes to the builder's ``datasets.map``)."""
    if not task.document_local:
        out = build_split(task, documents, ctx, split)
        if bar is not None:
            bar.update(len(documents))
        return out
    task.prepare_statistics(ctx)  # here, once: forked workers inherit them
    work_dir = ctx.work_dir / f"{split}-blocks" if ctx.work_dir is not None else None
    return map_in_blocks(lambda part, workers: build_split(task, part, replace(ctx, num_proc=workers), split),
                         documents, block, ctx.num_proc, work_dir, bar)


@dataclass
class TaskJob:
    """One task's build: its corpus statistics, then each split's examples, saved to ``out / split`` (loaded
    from there when built before); ``out`` None keeps them in memory (one process only)."""

    name: str
    task: PretrainTask
    ctx: BuildContext
    splits: list[tuple[str, Dataset]]
    out: Path | None
    empty_valid_ok: bool = False
    """A split ``valid`` that gives no examples is saved empty instead of failing the task (a shard's few
    held-out documents: the shards' held-out examples add up later)."""

    @property
    def built(self) -> bool:
        """Every split is saved in ``out`` already (by an earlier run): nothing to build."""
        return self.out is not None and all((self.out / split).is_dir() for split, _ in self.splits)


@dataclass
class TaskResult:
    examples: dict[str, Dataset]
    error: str | None
    """Why the corpus gives this task no examples (the task is then empty), or None."""
    seconds: float
    cpu_seconds: float
    """CPU seconds of the process that built it (in a worker: that worker's)."""


def build_task(job: TaskJob, block: int, bar: Any = None) -> TaskResult:
    """``job`` in this process: corpus statistics, then each split through :func:`build_in_blocks`
    (``job.ctx.num_proc`` workers for a document-local task) and :func:`cached_dataset`. Only
    :class:`EmptyTaskError` makes the task empty; any other exception goes up."""
    started, cpu_started = time.perf_counter(), time.process_time()
    examples: dict[str, Dataset] = {}
    error = None
    try:
        for split, docs in job.splits:
            def build(split: str = split, docs: Dataset = docs) -> Dataset:
                return build_in_blocks(job.task, docs, job.ctx, split, block, bar)

            try:
                examples[split] = build() if job.out is None else cached_dataset(job.out / split, build)
            except EmptyTaskError as err:
                if not (job.empty_valid_ok and split == "valid" and "train" in examples):
                    raise
                log.warning("task %s: this shard has no held-out examples (%s)", job.name, err)
                empty = examples["train"].select([])
                examples[split] = empty if job.out is None else cached_dataset(job.out / split, lambda e=empty: e)
    except EmptyTaskError as err:
        error = str(err)
    finally:
        if job.ctx.work_dir is not None:
            shutil.rmtree(job.ctx.work_dir, ignore_errors=True)
    return TaskResult(examples if error is None else {}, error, time.perf_counter() - started,
                      time.process_time() - cpu_started)


class _QueueBar:
    """A worker's stand-in for its task's progress bar: documents done go to the parent, which draws it."""

    def __init__(self, queue: Any, index: int) -> None:
        self.queue, self.index = queue, index

    def update(self, n: int) -> None:
        self.queue.put((self.index, n))


def _forked_task(jobs: list[TaskJob], block: int, queue: Any, index: int) -> tuple[int, str | None, float, float]:
    """One whole task in a worker (its document-local blocks in this worker too): what the parent needs to
    read its saved examples back."""
    job = jobs[index]
    result = build_task(replace(job, ctx=replace(job.ctx, num_proc=1)), block, _QueueBar(queue, index))
    return index, result.error, result.seconds, result.cpu_seconds


def _build_in_pool(jobs: list[TaskJob], todo: list[int], totals: list[int], block: int, workers: int,
                   bars: BuildProgress) -> dict[int, TaskResult]:
    """The jobs ``todo`` in a pool of forked workers, costliest first; each worker's documents done drawn on
    its task's line here."""
    import multiprocessing
    from functools import partial

    assert all(jobs[i].out is not None for i in todo), "a parallel build saves its examples"
    queue = multiprocessing.get_context("fork").SimpleQueue()
    lines = {i: bars.bar(jobs[i].name, totals[i], position=p) for p, i in enumerate(todo)}

    def drain() -> None:  # the workers' documents done, onto their tasks' lines
        while not queue.empty():
            i, n = queue.get()
            lines[i].update(n)

    order = sorted(todo, key=lambda i: -type(jobs[i].task).build_cost * totals[i])
    results: dict[int, TaskResult] = {}
    try:
        with forked_workers(partial(_forked_task, jobs, block, queue), workers) as pool:
            waiting = [pool.submit(i) for i in order]
            while waiting:
                drain()
                ready = [r for r in waiting if r.ready()]
                for r in ready:
                    i, error, seconds, cpu_seconds = r.get()  # a worker's bug is raised here
                    out = jobs[i].out
                    assert out is not None
                    examples = {} if error is not None else \
                        {split: load_from_disk(str(out / split)) for split, _ in jobs[i].splits}
                    results[i] = TaskResult(examples, error, seconds, cpu_seconds)
                waiting = [r for r in waiting if r not in ready]
                if not ready:
                    time.sleep(0.05)
            drain()
    finally:
        for line in lines.values():
            line.close()
    return results


def build_tasks(jobs: list[TaskJob], block: int, num_proc: int, bars: BuildProgress | None = None) -> list[TaskResult]:
    """Every job's examples (:func:`build_task`), one progress line per task (documents/s, ETA).

    With ``num_proc`` > 1, two or more jobs and ``fork``: a pool of ``min(num_proc, jobs)`` forked workers,
    each building whole tasks (statistics included, which one process would compute serially), the costliest
    first (``PretrainTask.build_cost``), saving them to ``job.out``; the parent reads them back
    memory-mapped. The examples are the same as in one process: every builder is deterministic in its seed.
    More workers than tasks cannot help here: past that, build in shards (docs/DISTRIBUTED.md). Otherwise
    one after another in this process (a single task's document-local blocks still in ``num_proc`` workers)."""
    bars = bars or BuildProgress(False)
    todo = [i for i, job in enumerate(jobs) if not job.built]
    totals = [sum(len(docs) for _, docs in job.splits) for job in jobs]
    results: dict[int, TaskResult] = {}
    if num_proc > 1 and len(todo) > 1 and fork_available():
        results = _build_in_pool(jobs, todo, totals, block, min(num_proc, len(todo)), bars)
    for i, job in enumerate(jobs):
        if i not in results:
            bar = bars.bar(job.name, totals[i] if i in todo else 0)
            results[i] = build_task(job, block, bar)
            bar.close()
    return [results[i] for i in range(len(jobs))]
