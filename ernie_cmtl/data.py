"""From a run config to per-task Arrow datasets (built once, cached), and deterministic batch streams.

Build order: documents (cached by corpus fingerprint) -> train/valid split by document -> the run's tokenizer
(trained once, saved in the run directory) -> each task's examples (cached under a fingerprint of documents,
tokenizer, task config and builder version). The training loop only reads what this produces.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
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
from pretrain_tasks.base import BuildContext, PretrainTask, SpecialIds
from pretrain_tasks.registry import get_task_class

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


def prepare_data(config: RunConfig, run_dir: Path, progress: bool = True, *,
                 allow_empty_tasks: bool | None = None) -> PreparedData:
    """Everything a run reads, built or loaded from the cache, and its account in ``RUN_DIR/data_report.json``.

    Every task that can be built is; a task the corpus gives no train or no valid examples is reported with
    the reason. With ``allow_empty_tasks`` (default: ``data.skip_empty_tasks``) the run goes on without such
    tasks: they are left out of the result and out of ``config.tasks`` and ``config.schedule``. Otherwise one
    :class:`DataBuildError` lists them all, as it always does when no task has examples.
    """
    if allow_empty_tasks is None:
        allow_empty_tasks = config.data.skip_empty_tasks
    if not progress:
        disable_progress_bars()
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
    report_path = run_dir / "data_report.json"
    try:
        documents, corpus_report = load_documents_with_report(data.corpus, cache_dir=cache, **options)
        account["corpus"] = corpus_report.to_dict()
        for line in corpus_report.summary():
            log.info("%s", line)
        if account["corpus"]["skipped"]:  # worth seeing even with --quiet, a clean read is not
            log.warning("bad input skipped: %s (account: %s)", corpus_report.skipped_summary(), report_path)
        docs_key = _digest(corpus_fingerprint(data.corpus, **options), data.valid_fraction, config.seed)
        train_docs, valid_docs = split_documents(documents, data.valid_fraction, config.seed)
    except (CorpusError, DataBuildError) as err:
        _write_report(report_path, {**account, "error": str(err)})
        raise
    account["split"] = {"train_documents": len(train_docs), "valid_documents": len(valid_docs),
                        "one_document_split": len(documents) == 1}
    log.info("documents: %d train, %d valid (%.1fs)", len(train_docs), len(valid_docs),
             time.perf_counter() - started)

    tok_cfg = config.tokenizer
    # Chinese documents (data_builders.language): a BERT-Chinese tokenizer, jieba words in the shared pass.
    chinese = "language" in train_docs.column_names and "zh" in set(train_docs["language"])
    tokenizer = tokenizer_for_run(
        run_dir / "tokenizer.json", pretrained=tok_cfg.path,
        texts=iter_paragraphs(train_docs),
        cache_path=cache / "tokenizers" / f"{_digest(docs_key, to_plain(tok_cfg))}.json",
        vocab_size=tok_cfg.vocab_size, min_frequency=tok_cfg.min_frequency, lowercase=tok_cfg.lowercase,
        chinese=chinese)
    special = SpecialIds.from_tokenizer(tokenizer)
    tasks = make_tasks(config, special)

    # The shared tokenization pass, done (or loaded) at most once, and only if a task that reads it is built.
    tokens_key = _digest(docs_key, tokenizer_hash(tokenizer), *(["jieba", _jieba_version()] if chinese else []))
    tokenized: dict[str, Dataset] = {}

    def with_tokens(split: str, docs: Dataset) -> Dataset:
        if split not in tokenized:
            started = time.perf_counter()
            tokenized[split] = cached_dataset(cache / "sentence_tokens" / tokens_key / split,
                                              lambda: add_sentence_tokens(docs, tokenizer, data.num_proc))
            log.info("shared tokenization of the %s documents: %.1fs", split, time.perf_counter() - started)
        return tokenized[split]

    train, valid, seconds, empty = {}, {}, {}, {}
    for name, task in tasks.items():
        key = _digest(docs_key, tokenizer_hash(tokenizer), name, task.builder_version, to_plain(task.config),
                      data.max_seq_len)
        task_dir = cache / "examples" / name / key
        ctx = BuildContext(tokenizer=tokenizer, max_seq_len=data.max_seq_len, seed=config.seed,
                           num_proc=data.num_proc, cache_dir=task_dir,
                           # Chinese corpus statistics (phrases, frequent words) read the jieba words of the
                           # shared pass instead of segmenting the training split again.
                           train_documents=with_tokens("train", train_docs) if chinese and task.reads_sentence_tokens
                           else train_docs)
        started = time.perf_counter()
        for split, docs, out in (("train", train_docs, train), ("valid", valid_docs, valid)):
            def build(t=task, c=ctx, split=split, docs=docs) -> Dataset:
                return _build(t, with_tokens(split, docs) if t.reads_sentence_tokens else docs, c, split)

            try:
                out[name] = cached_dataset(task_dir / split, build)
            except DataBuildError as err:
                empty[name] = str(err)
                break
        seconds[name] = time.perf_counter() - started
        if name not in empty:
            zero = [split for split, ds in (("train", train[name]), ("valid", valid[name])) if len(ds) == 0]
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


def _write_report(path: Path, account: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # ranks of one run may write it at once
    tmp.write_text(json.dumps(account, indent=1))
    os.replace(tmp, path)


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
