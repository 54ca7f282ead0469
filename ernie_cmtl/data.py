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
from dataclasses import dataclass, field
from pathlib import Path

import torch
from datasets import Dataset, disable_caching, disable_progress_bars, load_from_disk
from tokenizers import Tokenizer

from data_builders.corpus import corpus_fingerprint, load_documents
from data_builders.segments import add_sentence_tokens
from data_builders.tokenizer import iter_paragraphs, tokenizer_for_run, tokenizer_hash
from ernie_cmtl.config import RunConfig, to_plain
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
        dataset.save_to_disk(str(tmp))
        os.rename(tmp, path)
    except OSError:
        if not path.is_dir():  # another process did not win the race: a real error
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return load_from_disk(str(path))


def split_documents(documents: Dataset, valid_fraction: float, seed: int) -> tuple[Dataset, Dataset]:
    """Deterministic split by document id (hash of seed and id), so adding documents never moves others."""
    def is_valid(doc_id: str) -> bool:
        digest = hashlib.sha1(f"{seed}:{doc_id}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64 < valid_fraction

    flags = [is_valid(i) for i in documents["id"]]
    valid_idx = [i for i, f in enumerate(flags) if f]
    train_idx = [i for i, f in enumerate(flags) if not f]
    if not valid_idx and len(train_idx) > 1:  # tiny corpora: still hold one document out
        valid_idx, train_idx = train_idx[-1:], train_idx[:-1]
    return documents.select(train_idx), documents.select(valid_idx)


def make_tasks(config: RunConfig, special: SpecialIds) -> dict[str, PretrainTask]:
    return {name: get_task_class(name)(section, special) for name, section in config.tasks.items()}


def prepare_data(config: RunConfig, run_dir: Path, progress: bool = True) -> PreparedData:
    """Everything a run reads, built or loaded from the cache."""
    if not progress:
        disable_progress_bars()
    # Our cache (keyed on documents, tokenizer, task config and builder version) decides what is reused;
    # datasets' own map cache keys on the function alone and can return stale examples after a code change.
    disable_caching()
    data = config.data
    cache = Path(data.cache_dir).expanduser()
    options = {"format": data.format, "min_body_chars": data.min_body_chars,
               "min_paragraph_words": data.min_paragraph_words, "max_documents": data.max_documents}
    started = time.perf_counter()
    documents = load_documents(data.corpus, cache_dir=cache, **options)
    docs_key = _digest(corpus_fingerprint(data.corpus, **options), data.valid_fraction, config.seed)
    train_docs, valid_docs = split_documents(documents, data.valid_fraction, config.seed)
    log.info("documents: %d train, %d valid (%.1fs)", len(train_docs), len(valid_docs),
             time.perf_counter() - started)

    tok_cfg = config.tokenizer
    tokenizer = tokenizer_for_run(
        run_dir / "tokenizer.json", pretrained=tok_cfg.path,
        texts=iter_paragraphs(train_docs),
        cache_path=cache / "tokenizers" / f"{_digest(docs_key, to_plain(tok_cfg))}.json",
        vocab_size=tok_cfg.vocab_size, min_frequency=tok_cfg.min_frequency, lowercase=tok_cfg.lowercase)
    special = SpecialIds.from_tokenizer(tokenizer)
    tasks = make_tasks(config, special)

    # The shared tokenization pass, done (or loaded) at most once, and only if a task that reads it is built.
    tokens_key = _digest(docs_key, tokenizer_hash(tokenizer))
    tokenized: dict[str, Dataset] = {}

    def with_tokens(split: str, docs: Dataset) -> Dataset:
        if split not in tokenized:
            started = time.perf_counter()
            tokenized[split] = cached_dataset(cache / "sentence_tokens" / tokens_key / split,
                                              lambda: add_sentence_tokens(docs, tokenizer, data.num_proc))
            log.info("shared tokenization of the %s documents: %.1fs", split, time.perf_counter() - started)
        return tokenized[split]

    train, valid, seconds = {}, {}, {}
    for name, task in tasks.items():
        key = _digest(docs_key, tokenizer_hash(tokenizer), name, task.builder_version, to_plain(task.config),
                      data.max_seq_len)
        task_dir = cache / "examples" / name / key
        ctx = BuildContext(tokenizer=tokenizer, max_seq_len=data.max_seq_len, seed=config.seed,
                           num_proc=data.num_proc, cache_dir=task_dir, train_documents=train_docs)
        started = time.perf_counter()
        for split, docs, out in (("train", train_docs, train), ("valid", valid_docs, valid)):
            def build(t=task, c=ctx, split=split, docs=docs) -> Dataset:
                return _build(t, with_tokens(split, docs) if t.reads_sentence_tokens else docs, c, split)

            out[name] = cached_dataset(task_dir / split, build)
        seconds[name] = time.perf_counter() - started
        log.info("task %s: %d train / %d valid examples (%.1fs)", name, len(train[name]), len(valid[name]),
                 seconds[name])
        for split, ds in (("train", train[name]), ("valid", valid[name])):
            if len(ds) == 0:
                raise DataBuildError(f"task {name} built 0 {split} examples from the corpus "
                                     f"({len(train_docs if split == 'train' else valid_docs)} documents)")
    return PreparedData(tokenizer, tasks, train, valid, seconds)


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
    """

    def __init__(self, dataset: Dataset, batch_size: int, seed: int, task_index: int,
                 rank: int = 0, world_size: int = 1) -> None:
        if len(dataset) == 0:
            raise ValueError("cannot stream an empty dataset")
        self.dataset = dataset
        self.batch_size = batch_size
        self.seed = seed
        self.task_index = task_index
        self.rank, self.world_size = rank, world_size
        self._epoch, self._perm = -1, torch.empty(0, dtype=torch.long)

    def _permutation(self, epoch: int) -> torch.Tensor:
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(hash_seed(self.seed, self.task_index, epoch))
            self._epoch, self._perm = epoch, torch.randperm(len(self.dataset), generator=g)
        return self._perm

    def indices(self, batch_number: int) -> list[int]:
        n, global_batch = len(self.dataset), self.batch_size * self.world_size
        start = batch_number * global_batch + self.rank * self.batch_size
        out = []
        for position in range(start, start + self.batch_size):
            out.append(int(self._permutation(position // n)[position % n]))
        return out

    def rows(self, batch_number: int) -> dict[str, list]:
        return self.dataset[self.indices(batch_number)]


def hash_seed(*parts: int) -> int:
    """A 63-bit seed from integers (stable across processes and Python versions, unlike ``hash``)."""
    return int.from_bytes(hashlib.sha1(repr(parts).encode()).digest()[:8], "big") >> 1
