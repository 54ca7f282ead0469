"""From a run config to per-task Arrow datasets (built once, cached), and deterministic batch streams.

Build order: documents (cached by corpus fingerprint) -> train/valid split by document -> the run's tokenizer
(trained once, saved in the run directory) -> each task's examples (cached under a fingerprint of documents,
tokenizer, task config and builder version). The training loop only reads what this produces.
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset, disable_caching, disable_progress_bars, load_from_disk
from tokenizers import Tokenizer

from data_builders.corpus import CorpusError, corpus_fingerprint, load_documents_with_report
from data_builders.segments import add_sentence_tokens
from data_builders.tokenizer import iter_paragraphs, tokenizer_for_run, tokenizer_hash
from ernie_cmtl.config import RunConfig, ScheduleConfig, to_plain
from ernie_cmtl.registry import get_task_class
from ernie_cmtl.tasks import BuildContext, PretrainTask, SpecialIds

log = logging.getLogger(__name__)


@dataclass
class PreparedData:
    tokenizer: Tokenizer
    tasks: dict[str, PretrainTask]
    train: dict[str, Dataset]
    valid: dict[str, Dataset]
    build_seconds: dict[str, float] = field(default_factory=dict)
    """Per task: seconds spent building (or loading from the cache) its train and valid examples."""
    empty_tasks: dict[str, str] = field(default_factory=dict)
    """Configured tasks this corpus gave no train or no valid examples, with the reason; not in ``tasks``."""
    report: dict[str, Any] = field(default_factory=dict)
    """The data account, as written to ``RUN_DIR/data_report.json`` (corpus, split, tasks)."""


def _digest(*parts: object) -> str:
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def cached_dataset(path: Path, build: Callable[[], Dataset]) -> Dataset:
    """Load ``path`` if it was built before; else build and save atomically (temp dir, then rename)."""
    if path.is_dir():
        return load_from_disk(str(path))
    dataset = build()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}-"))
    try:
        # An empty dataset saved in 0 shards cannot be loaded back (datasets raises IndexError): keep one.
        dataset.save_to_disk(str(tmp), **({"num_shards": 1} if len(dataset) == 0 else {}))
        os.rename(tmp, path)
    except OSError:
        if not path.is_dir():  # another process did not win the race: a real error
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return load_from_disk(str(path))


def split_documents(documents: Dataset, valid_fraction: float, seed: int) -> tuple[Dataset, Dataset]:
    """Deterministic split by document id (hash of seed and id), so adding documents never moves others.

    Tiny corpora: with no document drawn for validation, the last one is held out; a corpus of one document
    holds out its last ``valid_fraction`` of paragraphs (at least one) as document ``<id>#valid``. One
    document of one paragraph cannot be split: :class:`DataBuildError` says how much text is needed.
    """
    if len(documents) == 1:
        return _split_one_document(documents, valid_fraction)

    def is_valid(doc_id: str) -> bool:
        digest = hashlib.sha1(f"{seed}:{doc_id}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64 < valid_fraction

    flags = [is_valid(i) for i in documents["id"]]
    valid_idx = [i for i, f in enumerate(flags) if f]
    train_idx = [i for i, f in enumerate(flags) if not f]
    if not valid_idx and len(train_idx) > 1:  # tiny corpora: still hold one document out
        valid_idx, train_idx = train_idx[-1:], train_idx[:-1]
    return documents.select(train_idx), documents.select(valid_idx)


def _split_one_document(documents: Dataset, valid_fraction: float) -> tuple[Dataset, Dataset]:
    doc = documents[0]
    n = len(doc["paragraphs"])
    if n < 2:
        raise DataBuildError(f"the corpus gives 1 usable document of {n} paragraph ({len(doc['paragraphs'][0])} "
                             "characters): a held-out split needs at least 2 documents, or one document of at "
                             "least 2 paragraphs (data.min_body_chars and data.min_paragraph_words decide what "
                             "counts)")
    held = max(1, round(n * valid_fraction))

    def part(doc_id: str, rows: slice) -> Dataset:
        return Dataset.from_list([{**doc, "id": doc_id, "paragraphs": doc["paragraphs"][rows],
                                   "sentences": doc["sentences"][rows]}], features=documents.features)

    log.warning("the corpus is one document: its last %d of %d paragraphs are held out for validation", held, n)
    return part(doc["id"], slice(0, n - held)), part(f"{doc['id']}#valid", slice(n - held, n))


def without_tasks(schedule: ScheduleConfig, names: set[str]) -> ScheduleConfig:
    """``schedule`` with the tasks ``names`` removed from its stages (a stage left empty goes),
    ``always_include`` and ``explicit_steps``."""
    stages = []
    for stage in schedule.stages:
        kept = [t for t in ([stage] if isinstance(stage, str) else stage) if t not in names]
        if kept:
            stages.append(kept[0] if isinstance(stage, str) else kept)
    return replace(schedule, stages=stages,
                   always_include=[t for t in schedule.always_include if t not in names],
                   explicit_steps=[{t: n for t, n in s.items() if t not in names} for s in schedule.explicit_steps])


def make_tasks(config: RunConfig, special: SpecialIds) -> dict[str, PretrainTask]:
    return {name: get_task_class(name)(section, special) for name, section in config.tasks.items()}


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


def statistics_sample(documents: Dataset, limit: int) -> Dataset:
    """At most ``limit`` documents, evenly spaced (all of them when there are no more): the documents corpus
    statistics are computed on (``data.statistics_documents``)."""
    if len(documents) <= limit:
        return documents
    step = len(documents) / limit
    return documents.select(sorted({int(i * step) for i in range(limit)}))


def _shard_name(shard: Shard) -> str:
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


def _load_shards(paths: list[Path]) -> tuple[Dataset, Dataset] | str:
    """The shards' train and valid examples, concatenated (memory-mapped Arrow files side by side); or the
    reason when no shard has examples."""
    from datasets import concatenate_datasets

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


class BuildProgress:
    """One progress line per task (documents/s and an ETA) in place of ``datasets``' per-map bars."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def bar(self, name: str, total: int, position: int | None = None) -> Any:
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=f"{name:<24}", unit=" docs", disable=not self.enabled, dynamic_ncols=True,
                    leave=True, mininterval=1.0, position=position)


def _in_blocks(docs: Dataset, size: int) -> list[Dataset]:
    if len(docs) <= size:
        return [docs]
    return [docs.select(range(start, min(start + size, len(docs)))) for start in range(0, len(docs), size)]


# What the forked workers of ``map_in_blocks`` run: set in the parent just before the fork, so the workers
# inherit the function, its documents and every statistic it closes over instead of receiving them pickled.
_FORKED: tuple[Callable[[Dataset, int], Dataset], Dataset] | None = None


def _forked_block(job: tuple[int, int, str]) -> tuple[int, str | None, str | None]:
    """One block in a worker: (documents done, saved examples or None, the builder's error or None)."""
    assert _FORKED is not None
    function, documents = _FORKED
    start, end, out = job
    try:
        examples = function(documents.select(range(start, end)), 1)
    except DataBuildError as err:
        return end - start, None, str(err)
    examples.save_to_disk(out, **({"num_shards": 1} if len(examples) == 0 else {}))
    return end - start, out, None


def _worker_start() -> None:
    import datasets.fingerprint

    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one thread per worker (and no fork warning)
    torch.set_num_threads(1)
    # With caching off, datasets names its temporary map results by a random fingerprint: the forked workers
    # inherit the parent's generator, would draw the same names into the same temporary folder and overwrite
    # each other's files. Each worker draws its own.
    datasets.fingerprint.fingerprint_rng.seed()


def fork_available() -> bool:
    import multiprocessing

    return "fork" in multiprocessing.get_all_start_methods()


def map_in_blocks(function: Callable[[Dataset, int], Dataset], documents: Dataset, block: int, num_proc: int,
                  work_dir: Path | None, bar: Any = None) -> Dataset:
    """``function(part, workers)`` over contiguous blocks of ``documents``, the results concatenated in
    document order: the same rows as one call for a per-document ``function``. A block whose documents give
    no examples (:class:`DataBuildError`) is skipped; the error is raised only when every block fails.

    With ``num_proc`` > 1 (and ``fork``): one pool of that many forked workers, forked after everything
    ``function`` reads is ready (tokenizer, lexicon), so nothing is pickled but block bounds and result
    paths; each worker runs ``function(part, 1)`` on blocks of at most ``block`` documents (about four per
    worker, so the workers finish together) and saves them as Arrow files under ``work_dir``, read back
    memory-mapped. (``datasets.map(num_proc=N)`` instead pickles the function with its arguments into a new
    pool per call: slower than one process on small corpora, docs/PERFORMANCE.md.) Otherwise blocks of
    ``block * num_proc`` documents in this process, ``function(part, num_proc)`` (where ``fork`` is missing,
    the builders' own ``datasets.map`` workers)."""
    from datasets import concatenate_datasets

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
            except DataBuildError as err:
                first_error = first_error or str(err)
            if bar is not None:
                bar.update(len(part))
    if not parts:
        raise DataBuildError(first_error or "no documents")
    return concatenate_datasets(parts) if len(parts) > 1 else parts[0]


@contextmanager
def _fork_pool(workers: int) -> Iterator[Any]:
    """A pool of ``workers`` forked processes (:func:`_worker_start`) for :func:`map_in_blocks` and
    :func:`build_tasks`: what they run is set in a module global just before, so it is inherited, not pickled."""
    import multiprocessing

    from datasets.fingerprint import get_temporary_cache_files_directory

    # the workers' temporary map results go to the parent's folder, removed when the parent exits (a worker
    # that made its own would leave it behind: pool workers end without running exit handlers)
    get_temporary_cache_files_directory()
    gc.freeze()  # the workers' garbage collections then skip (and so do not copy) the parent's objects
    try:
        with multiprocessing.get_context("fork").Pool(workers, initializer=_worker_start) as pool:
            yield pool
    finally:
        gc.unfreeze()


def _forked_blocks(function: Callable[[Dataset, int], Dataset], documents: Dataset, block: int, num_proc: int,
                   work_dir: Path) -> Iterator[tuple[int, str | None, str | None]]:
    """:func:`map_in_blocks`' worker pool: (documents done, saved block or None, error or None) in order."""
    global _FORKED
    size = max(1, min(block, -(-len(documents) // (4 * num_proc))))
    jobs = [(start, min(start + size, len(documents)), str(work_dir / f"block-{i:06d}"))
            for i, start in enumerate(range(0, len(documents), size))]
    work_dir.mkdir(parents=True, exist_ok=True)
    _FORKED = (function, documents)
    try:
        with _fork_pool(num_proc) as pool:
            yield from pool.imap(_forked_block, jobs)
    finally:
        _FORKED = None


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
        out = _build(task, documents, ctx, split)
        if bar is not None:
            bar.update(len(documents))
        return out
    task.prepare_statistics(ctx)  # here, once: forked workers inherit them
    work_dir = ctx.work_dir / f"{split}-blocks" if ctx.work_dir is not None else None
    return map_in_blocks(lambda part, workers: _build(task, part, replace(ctx, num_proc=workers), split),
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
    (``job.ctx.num_proc`` workers for a document-local task) and :func:`cached_dataset`."""
    started, cpu_started = time.perf_counter(), time.process_time()
    examples: dict[str, Dataset] = {}
    error = None
    try:
        for split, docs in job.splits:
            def build(split: str = split, docs: Dataset = docs) -> Dataset:
                return build_in_blocks(job.task, docs, job.ctx, split, block, bar)

            try:
                examples[split] = build() if job.out is None else cached_dataset(job.out / split, build)
            except DataBuildError as err:
                if not (job.empty_valid_ok and split == "valid" and "train" in examples):
                    raise
                log.warning("task %s: this shard has no held-out examples (%s)", job.name, err)
                empty = examples["train"].select([])
                examples[split] = empty if job.out is None else cached_dataset(job.out / split, lambda e=empty: e)
    except DataBuildError as err:
        error = str(err)
    finally:
        if job.ctx.work_dir is not None:
            shutil.rmtree(job.ctx.work_dir, ignore_errors=True)
    return TaskResult(examples if error is None else {}, error, time.perf_counter() - started,
                      time.process_time() - cpu_started)


# What the forked workers of ``build_tasks`` run: the jobs, the block size and the progress queue, set just
# before the fork so the workers inherit tasks, tokenizer and memory-mapped documents instead of a pickle.
_TASK_JOBS: tuple[list[TaskJob], int, Any] | None = None


class _QueueBar:
    """A worker's stand-in for its task's progress bar: documents done go to the parent, which draws it."""

    def __init__(self, queue: Any, index: int) -> None:
        self.queue, self.index = queue, index

    def update(self, n: int) -> None:
        self.queue.put((self.index, n))


def _forked_task(index: int) -> tuple[int, str | None, float, float]:
    assert _TASK_JOBS is not None
    jobs, block, queue = _TASK_JOBS
    job = jobs[index]
    result = build_task(replace(job, ctx=replace(job.ctx, num_proc=1)), block, _QueueBar(queue, index))
    return index, result.error, result.seconds, result.cpu_seconds


def build_tasks(jobs: list[TaskJob], block: int, num_proc: int, bars: BuildProgress | None = None) -> list[TaskResult]:
    """Every job's examples (:func:`build_task`), one progress line per task (documents/s, ETA).

    With ``num_proc`` > 1, two or more jobs and ``fork``: a pool of ``min(num_proc, jobs)`` forked workers,
    each building whole tasks (statistics included, which one process would compute serially), the costliest
    first (``PretrainTask.build_cost``), saving them to ``job.out``; the parent reads them back
    memory-mapped. The examples are the same as in one process: every builder is deterministic in its seed.
    More workers than tasks cannot help here: past that, build in shards (docs/DISTRIBUTED.md). Otherwise
    one after another in this process (a single task's document-local blocks still in ``num_proc`` workers)."""
    global _TASK_JOBS
    bars = bars or BuildProgress(False)
    todo = [i for i, job in enumerate(jobs) if not job.built]
    totals = [sum(len(docs) for _, docs in job.splits) for job in jobs]
    results: dict[int, TaskResult] = {}
    if num_proc > 1 and len(todo) > 1 and fork_available():
        import multiprocessing

        assert all(jobs[i].out is not None for i in todo), "a parallel build saves its examples"
        queue = multiprocessing.get_context("fork").SimpleQueue()
        lines = {i: bars.bar(jobs[i].name, totals[i], position=p) for p, i in enumerate(todo)}

        def drain() -> None:  # the workers' documents done, onto their tasks' lines
            while not queue.empty():
                i, n = queue.get()
                lines[i].update(n)

        order = sorted(todo, key=lambda i: -type(jobs[i].task).build_cost * totals[i])
        _TASK_JOBS = (jobs, block, queue)
        try:
            with _fork_pool(min(num_proc, len(todo))) as pool:
                waiting = [pool.apply_async(_forked_task, (i,)) for i in order]
                while waiting:
                    drain()
                    ready = [r for r in waiting if r.ready()]
                    for r in ready:
                        i, error, seconds, cpu_seconds = r.get()  # a worker's bug is raised here
                        examples = {} if error is not None else \
                            {split: load_from_disk(str(jobs[i].out / split)) for split, _ in jobs[i].splits}
                        results[i] = TaskResult(examples, error, seconds, cpu_seconds)
                    waiting = [r for r in waiting if r not in ready]
                    if not ready:
                        time.sleep(0.05)
                drain()
        finally:
            _TASK_JOBS = None
            for line in lines.values():
                line.close()
    for i, job in enumerate(jobs):
        if i not in results:
            bar = bars.bar(job.name, totals[i] if i in todo else 0)
            results[i] = build_task(job, block, bar)
            bar.close()
    return [results[i] for i in range(len(jobs))]


def prepare_data(config: RunConfig, run_dir: Path, progress: bool = True, *,
                 allow_empty_tasks: bool | None = None, shard: Shard | None = None,
                 statistics_only: bool = False) -> PreparedData:
    """Everything a run reads, built or loaded from the cache, and its account in ``RUN_DIR/data_report.json``.

    Every task that can be built is; a task the corpus gives no train or no valid examples is reported with
    the reason. With ``allow_empty_tasks`` (default: ``data.skip_empty_tasks``) the run goes on without such
    tasks: they are left out of the result and out of ``config.tasks`` and ``config.schedule``. Otherwise one
    :class:`DataBuildError` lists them all, as it always does when no task has examples.

    Sharded builds (docs/DISTRIBUTED.md): with ``shard=(k, n)`` only the examples of the documents of shard
    ``k`` (:func:`shard_of`) are built, into ``shards/k-of-n`` beside the unsharded examples, and returned;
    the tokenizer and the tasks' corpus statistics come from the whole training split's statistics sample,
    so every shard uses the same ones. Without ``shard``, a task with no unsharded build but a complete set
    of shard builds reads them as one dataset; an incomplete set is an error naming the missing shards.
    ``statistics_only``: train the tokenizer and compute every task's statistics (run once before the
    shards), build no examples (the result has none).
    """
    if allow_empty_tasks is None:
        allow_empty_tasks = config.data.skip_empty_tasks
    # Our own progress line per task replaces datasets' per-map and "Saving the dataset" bars.
    from datasets.utils import enable_progress_bars, is_progress_bar_enabled

    bars_were_on = is_progress_bar_enabled()
    disable_progress_bars()
    try:
        return _prepare_data(config, run_dir, BuildProgress(progress), allow_empty_tasks, shard, statistics_only)
    finally:
        if bars_were_on:
            enable_progress_bars()


def _prepare_data(config: RunConfig, run_dir: Path, bars: BuildProgress, allow_empty_tasks: bool,
                  shard: Shard | None, statistics_only: bool) -> PreparedData:
    # Our cache (keyed on documents, tokenizer, task config and builder version) decides what is reused;
    # datasets' own map cache keys on the function alone and can return stale examples after a code change.
    disable_caching()
    data = config.data
    cache = Path(data.cache_dir).expanduser()
    options = {"format": data.format, "min_body_chars": data.min_body_chars,
               "min_paragraph_words": data.min_paragraph_words, "max_documents": data.max_documents,
               "on_bad_input": data.on_bad_input, "max_paragraph_chars": data.max_paragraph_chars,
               "max_document_chars": data.max_document_chars, "language": data.language,
               "min_paragraph_chars": data.min_paragraph_chars}
    started = time.perf_counter()
    account: dict[str, Any] = {"corpus": None, "split": None, "tasks": {}, "empty_tasks": {}}
    if shard is not None:
        account["shard"] = list(shard)
    report_path = run_dir / ("data_report.json" if shard is None else f"data_report.shard-{_shard_name(shard)}.json")
    try:
        documents, corpus_report = load_documents_with_report(data.corpus, cache_dir=cache, **options)
        account["corpus"] = corpus_report.to_dict()
        for line in corpus_report.summary():
            log.info("%s", line)
        if account["corpus"]["skipped"]:  # worth seeing even with --quiet, a clean read is not
            log.warning("bad input skipped: %s (account: %s)", corpus_report.skipped_summary(), report_path)
        docs_key = _digest(corpus_fingerprint(data.corpus, **options), data.valid_fraction, config.seed)
        all_train, all_valid = split_documents(documents, data.valid_fraction, config.seed)
    except (CorpusError, DataBuildError) as err:
        _write_report(report_path, {**account, "error": str(err)})
        raise
    if shard is None or statistics_only:
        train_docs, valid_docs = all_train, all_valid
    else:
        train_docs, valid_docs = shard_documents(all_train, shard), shard_documents(all_valid, shard)
    account["split"] = {"train_documents": len(train_docs), "valid_documents": len(valid_docs),
                        "one_document_split": len(documents) == 1}
    if shard is not None:
        account["split"].update(corpus_train_documents=len(all_train), corpus_valid_documents=len(all_valid))
    log.info("documents: %d train, %d valid%s (%.1fs)", len(train_docs), len(valid_docs),
             f" in shard {shard[0]}/{shard[1]}" if shard is not None else "", time.perf_counter() - started)

    # Corpus statistics (tokenizer, lexicons, frequent words, class counts) read a bounded, evenly spaced
    # sample of the whole training split: the same for every shard, bounded on any corpus.
    stats_docs = statistics_sample(all_train, data.statistics_documents)
    stats_key = [] if len(stats_docs) == len(all_train) else ["statistics", data.statistics_documents]
    tok_cfg = config.tokenizer
    # Chinese documents (data_builders.language): a BERT-Chinese tokenizer, jieba words in the shared pass.
    chinese = "language" in all_train.column_names and "zh" in set(stats_docs["language"])
    tokenizer_cache = cache / "tokenizers" / f"{_digest(docs_key, to_plain(tok_cfg), *stats_key)}.json"
    if shard is not None and not statistics_only and not tok_cfg.path and not tokenizer_cache.is_file() \
            and not (run_dir / "tokenizer.json").is_file():
        # WordPiece training is not deterministic (ties between equally frequent pairs break differently from
        # run to run), so shards that each trained one would not share token ids: one is trained, first.
        raise DataBuildError(f"shard {shard[0]}/{shard[1]}: no tokenizer yet for this corpus: run `ernie-cmtl "
                             f"build-data --statistics-only` once first (same config and data.cache_dir), or set "
                             f"tokenizer.path (looked for {tokenizer_cache} and {run_dir / 'tokenizer.json'})")
    tokenizer = tokenizer_for_run(
        run_dir / "tokenizer.json", pretrained=tok_cfg.path,
        texts=iter_paragraphs(stats_docs),
        cache_path=tokenizer_cache,
        vocab_size=tok_cfg.vocab_size, min_frequency=tok_cfg.min_frequency, lowercase=tok_cfg.lowercase,
        chinese=chinese)
    special = SpecialIds.from_tokenizer(tokenizer)
    tasks = make_tasks(config, special)

    # The shared tokenization pass, done (or loaded) at most once, and only if a task that reads it is built.
    tokens_key = _digest(docs_key, tokenizer_hash(tokenizer), *(["jieba", _jieba_version()] if chinese else []))
    tokens_root = cache / "sentence_tokens" / tokens_key
    if shard is not None and not statistics_only:
        tokens_root = tokens_root / "shards" / _shard_name(shard)
    tokenized: dict[str, Dataset] = {}

    def with_tokens(split: str, docs: Dataset, root: Path = tokens_root) -> Dataset:
        if str(root / split) not in tokenized:
            started = time.perf_counter()

            def tokenize() -> Dataset:
                bar = bars.bar(f"tokenize ({split})", len(docs))
                out = sentence_tokens_in_blocks(docs, tokenizer, data.block_documents, data.num_proc,
                                                scratch / split, bar)
                bar.close()
                return out

            scratch = root / ".work" / f"{socket.gethostname()}-{os.getpid()}"
            tokenized[str(root / split)] = cached_dataset(root / split, tokenize)
            shutil.rmtree(scratch, ignore_errors=True)
            log.info("shared tokenization of the %s documents: %.1fs", split, time.perf_counter() - started)
        return tokenized[str(root / split)]

    def statistics_documents(task: PretrainTask) -> Dataset:
        # Chinese corpus statistics (phrases, frequent words) read the jieba words of the shared pass instead
        # of segmenting the training split again: the unsharded train split's pass when the sample is all of it.
        if not (chinese and task.reads_sentence_tokens):
            return stats_docs
        whole = len(stats_docs) == len(all_train)
        return with_tokens("train" if whole else f"statistics-{len(stats_docs)}", stats_docs,
                           cache / "sentence_tokens" / tokens_key)

    train, valid, seconds, empty = {}, {}, {}, {}
    jobs: list[TaskJob] = []
    for name, task in tasks.items():
        key = _digest(docs_key, tokenizer_hash(tokenizer), name, task.builder_version, to_plain(task.config),
                      data.max_seq_len, *stats_key)
        task_dir = cache / "examples" / name / key
        out_dir = task_dir if shard is None or statistics_only else task_dir / "shards" / _shard_name(shard)
        work_dir = task_dir / ".work" / f"{socket.gethostname()}-{os.getpid()}"
        ctx = BuildContext(tokenizer=tokenizer, max_seq_len=data.max_seq_len, seed=config.seed,
                           num_proc=data.num_proc, cache_dir=task_dir, train_documents=statistics_documents(task),
                           work_dir=work_dir)
        started = time.perf_counter()
        if statistics_only:
            try:
                task.prepare_statistics(ctx)
            except ValueError as err:
                empty[name] = str(err)
            seconds[name] = time.perf_counter() - started
            log.info("task %s: corpus statistics ready (%.1fs)", name, seconds[name])
            continue
        if shard is None and not (task_dir / "train").is_dir():
            sharded = built_shards(task_dir)
            if sharded is not None:
                loaded = _load_shards(sharded[1])
                if isinstance(loaded, str):
                    empty[name] = loaded
                else:
                    train[name], valid[name] = loaded
                    log.info("task %s: read %d shard builds", name, sharded[0])
            elif (missing := missing_shards(task_dir)) is not None:
                _write_report(report_path, {**account, "error": f"{name}: shards {missing} not built"})
                raise DataBuildError(f"task {name}: a sharded build is incomplete: shards {missing} are not built "
                                     f"(run `ernie-cmtl build-data --shard K/N` for each, or remove "
                                     f"{task_dir / 'shards'} to build in one process)")
        seconds[name] = time.perf_counter() - started
        if name not in train and name not in empty:
            jobs.append(TaskJob(name, task, ctx, [("train", train_docs), ("valid", valid_docs)], out_dir,
                                empty_valid_ok=shard is not None))
    if any(job.task.reads_sentence_tokens and not job.built for job in jobs):  # its own lines, before the tasks'
        tokens = [("train", with_tokens("train", train_docs)), ("valid", with_tokens("valid", valid_docs))]
        for job in jobs:
            if job.task.reads_sentence_tokens:
                job.splits = tokens
    for job, result in zip(jobs, build_tasks(jobs, data.block_documents, data.num_proc, bars), strict=True):
        name = job.name
        seconds[name] += result.seconds
        if result.error is not None:
            empty[name] = result.error
            if shard is not None:  # the shard set stays complete: this one has none
                _write_json(job.out / "empty.json", {"reason": result.error})
        else:
            train[name], valid[name] = result.examples["train"], result.examples["valid"]
    for name in tasks:
        if statistics_only:
            account["tasks"][name] = {"seconds": round(seconds[name], 3), "empty": empty.get(name)}
            continue
        if name not in empty:
            zero = [split for split, ds in (("train", train[name]), ("valid", valid[name])) if len(ds) == 0
                    and (shard is None or split == "train")]  # the shards' held-out examples add up later
            if zero:
                empty[name] = (f"0 {' and '.join(zero)} examples from {len(train_docs)} train / "
                               f"{len(valid_docs)} valid documents")
        account["tasks"][name] = {"train": len(train[name]) if name in train else 0,
                                  "valid": len(valid[name]) if name in valid else 0,
                                  "seconds": round(seconds[name], 3), "empty": empty.get(name)}
        if name in empty:
            log.warning("task %s: no examples from this corpus: %s", name, empty[name])
            train.pop(name, None)
            valid.pop(name, None)
        else:
            log.info("task %s: %d train / %d valid examples (%.1fs)", name, len(train[name]),
                     len(valid[name]), seconds[name])
    account["empty_tasks"] = empty
    _write_report(report_path, account)
    if statistics_only:
        return PreparedData(tokenizer, tasks, {}, {}, build_seconds=seconds, empty_tasks=empty, report=account)
    if empty and (len(empty) == len(tasks) or not allow_empty_tasks):
        listed = "; ".join(f"{name} ({reason})" for name, reason in empty.items())
        how = "no task has examples: use a larger or different corpus" if len(empty) == len(tasks) else \
            "set data.skip_empty_tasks=true to train without them, or remove them from tasks and schedule.stages"
        raise DataBuildError(f"{len(empty)} of {len(tasks)} tasks get no examples from this corpus: {listed}; "
                             f"{how} (account: {report_path})")
    if empty:
        config.tasks = {name: section for name, section in config.tasks.items() if name not in empty}
        config.schedule = without_tasks(config.schedule, set(empty))
        tasks = {name: task for name, task in tasks.items() if name not in empty}
    return PreparedData(tokenizer, tasks, train, valid, build_seconds=seconds, empty_tasks=empty, report=account)


def _write_json(path: Path, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(value, indent=1))
    os.replace(tmp, path)


def _write_report(path: Path, account: dict[str, Any]) -> None:
    _write_json(path, account)  # ranks of one run may write it at once: a temporary file per process


def _jieba_version() -> str:
    from importlib.metadata import version

    return version("jieba")


class DataBuildError(ValueError):
    """A task cannot be built from this corpus (too small, wrong kind of text, ...): one line saying why."""


def _build(task: PretrainTask, documents: Dataset, ctx: BuildContext, split: str) -> Dataset:
    try:
        return task.build(documents, ctx)
    except ValueError as err:  # builders say why a corpus cannot give a task examples
        raise DataBuildError(f"{split} split: {err}") from None


class TaskStream:
    """Batches of one task's dataset as a pure function of (seed, task, batch number).

    Epoch ``e`` visits the examples in the permutation drawn from ``(seed, task_index, e)``; batch ``k``
    takes positions ``[k * B, (k + 1) * B)`` of the concatenated epochs. A resumed run only needs ``k``.
    Under data parallelism, rank ``r`` of ``w`` takes the ``r``-th slice of the global batch.

    ``length_group_window`` > 1 groups by length, as HF's ``group_by_length`` does: window ``j`` (the
    positions of global batches ``[j * W, (j + 1) * W)``) is sorted by example length and cut into ``W``
    global batches, so a batch pads to little beyond its own lengths. The windows' batches then run in an
    order drawn from ``(seed, task_index, j)`` and each batch's rows are shuffled the same way, so neither the
    batch's place in the window nor an example's row says anything about its length (or its label). Every
    example is still seen once per epoch (up to the window that straddles two epochs), and a batch is still
    a function of (seed, task, batch number) only: resume and rank agreement hold as without grouping.
    """

    def __init__(self, dataset: Dataset, batch_size: int, seed: int, task_index: int,
                 rank: int = 0, world_size: int = 1, length_group_window: int = 0) -> None:
        if len(dataset) == 0:
            raise ValueError("cannot stream an empty dataset")
        if length_group_window < 0:
            raise ValueError(f"length_group_window must be >= 0, got {length_group_window}")
        self.dataset = dataset
        self.batch_size = batch_size
        self.seed = seed
        self.task_index = task_index
        self.rank, self.world_size = rank, world_size
        self.window = length_group_window if length_group_window > 1 else 0
        self._epoch, self._perm = -1, torch.empty(0, dtype=torch.long)
        self._lengths = example_lengths(dataset) if self.window else None
        self._window_index, self._window_batches = -1, torch.empty(0, dtype=torch.long)

    def _permutation(self, epoch: int) -> torch.Tensor:
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(hash_seed(self.seed, self.task_index, epoch))
            self._epoch, self._perm = epoch, torch.randperm(len(self.dataset), generator=g)
        return self._perm

    def _examples_at(self, start: int, stop: int) -> torch.Tensor:
        """The example indices at stream positions ``[start, stop)`` (across epoch boundaries)."""
        n, parts = len(self.dataset), []
        while start < stop:
            epoch, offset = divmod(start, n)
            take = min(stop - start, n - offset)
            parts.append(self._permutation(epoch)[offset:offset + take])
            start += take
        return torch.cat(parts)

    def _grouped_batches(self, window_index: int) -> torch.Tensor:
        """[W, global batch] example indices of one length-grouped window."""
        if window_index != self._window_index:
            global_batch = self.batch_size * self.world_size
            start = window_index * self.window * global_batch
            examples = self._examples_at(start, start + self.window * global_batch)
            # a stable sort of examples in random order: ties between equal lengths stay in random order
            by_length = examples[torch.sort(self._lengths[examples], stable=True).indices]
            batches = by_length.view(self.window, global_batch)
            g = torch.Generator().manual_seed(hash_seed(self.seed, self.task_index, window_index, GROUPING_SALT))
            batches = batches[torch.randperm(self.window, generator=g)]
            rows = torch.argsort(torch.rand(self.window, global_batch, generator=g), dim=1)
            self._window_index, self._window_batches = window_index, torch.gather(batches, 1, rows)
        return self._window_batches

    def indices(self, batch_number: int) -> list[int]:
        """The dataset indices of this rank's share of global batch ``batch_number``."""
        if self.window:
            window_index, slot = divmod(batch_number, self.window)
            row = self._grouped_batches(window_index)[slot]
            return row[self.rank * self.batch_size:(self.rank + 1) * self.batch_size].tolist()
        n, global_batch = len(self.dataset), self.batch_size * self.world_size
        start = batch_number * global_batch + self.rank * self.batch_size
        out = []
        for position in range(start, start + self.batch_size):
            out.append(int(self._permutation(position // n)[position % n]))
        return out

    def rows(self, batch_number: int) -> dict[str, list]:
        return self.dataset[self.indices(batch_number)]


GROUPING_SALT = 7_919
"""Keeps the length-grouping draws (batch order, rows) apart from the epoch permutations' seeds."""


def example_lengths(dataset: Dataset, column: str = "input_ids") -> torch.Tensor:
    """[N] int64: the length of every example's ``column`` list, read from Arrow without decoding it."""
    import pyarrow.compute as pc

    if column not in dataset.column_names:
        raise ValueError(f"length grouping needs a '{column}' column; the dataset has {dataset.column_names}")
    lengths = pc.list_value_length(dataset.with_format("arrow")[column])
    return torch.from_numpy(lengths.to_numpy().astype("int64"))


def hash_seed(*parts: int) -> int:
    """A 63-bit seed from integers (stable across processes and Python versions, unlike ``hash``)."""
    return int.from_bytes(hashlib.sha1(repr(parts).encode()).digest()[:8], "big") >> 1
