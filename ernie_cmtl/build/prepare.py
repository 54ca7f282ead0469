"""The offline build as named steps: documents -> split -> tokenizer -> shared tokens -> examples -> account.

:func:`prepare_data` runs them for a run config: documents (cached by corpus fingerprint) -> train/valid
split by document -> the run's tokenizer (trained once, saved in the run directory) -> the shared
tokenization pass -> each task's examples (cached under a fingerprint of documents, tokenizer, task config and
builder version) -> the account in ``RUN_DIR/data_report.json``. It returns facts (the examples, the tasks
without any, the tokenizer) and never edits the config: :func:`ernie_cmtl.assembly.settle_run` applies them.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datasets import Dataset, disable_caching, disable_progress_bars
from tokenizers import Tokenizer

from data_builders.corpus import CorpusError, corpus_fingerprint, load_documents_with_report
from data_builders.language import segmenter_id, use_segmenter
from data_builders.tokenizer import iter_paragraphs, tokenizer_for_run, tokenizer_hash
from ernie_cmtl.build import DataBuildError
from ernie_cmtl.build.cache import cached_dataset, digest, write_json
from ernie_cmtl.build.examples import (
    BuildProgress,
    TaskJob,
    build_tasks,
    make_tasks,
    sentence_tokens_in_blocks,
)
from ernie_cmtl.build.replay import mix_examples, replay_config
from ernie_cmtl.build.shards import (
    Shard,
    built_shards,
    load_shards,
    missing_shards,
    shard_documents,
    shard_name,
)
from ernie_cmtl.config import REPLAY_TASK, RunConfig, to_plain
from ernie_cmtl.tasks import BuildContext, EmptyTaskError, PretrainTask, SpecialIds

log = logging.getLogger(__name__)


@dataclass
class PreparedData:
    """What a build returns: the facts a run is settled from (:func:`ernie_cmtl.assembly.settle_run`) and
    the examples it reads."""

    tokenizer: Tokenizer
    tasks: dict[str, PretrainTask]
    """The tasks with examples (every configured task after ``statistics_only``)."""
    train: dict[str, Dataset]
    valid: dict[str, Dataset]
    build_seconds: dict[str, float] = field(default_factory=dict)
    """Per task: seconds spent building (or loading from the cache) its train and valid examples."""
    empty_tasks: dict[str, str] = field(default_factory=dict)
    """Configured tasks this corpus gave no train or no valid examples, with the reason; not in ``tasks``."""
    report: dict[str, Any] = field(default_factory=dict)
    """The data account, as written to ``RUN_DIR/data_report.json`` (corpus, split, tasks)."""

    @property
    def vocab_size(self) -> int:
        """The tokenizer's vocabulary size (the model's embedding rows unless ``model.init_from``)."""
        return self.tokenizer.get_vocab_size()


def prepare_data(config: RunConfig, run_dir: Path, progress: bool = True, *,
                 allow_empty_tasks: bool | None = None, shard: Shard | None = None,
                 statistics_only: bool = False) -> PreparedData:
    """Everything a run reads, built or loaded from the cache, and its account in ``RUN_DIR/data_report.json``.

    Every task that can be built is; a task the corpus gives no train or no valid examples (its builder
    raised :class:`EmptyTaskError`) is reported with the reason, in ``empty_tasks``. With
    ``allow_empty_tasks`` (default: ``data.skip_empty_tasks``) such tasks are only left out of the result
    (``config`` is never edited: :func:`ernie_cmtl.assembly.settle_run` drops them from the run's tasks and
    schedule). Otherwise one :class:`DataBuildError` lists them all, as it always does when no task has
    examples. Any other exception of a builder is a bug and goes up unchanged.

    Sharded builds (docs/DISTRIBUTED.md): with ``shard=(k, n)`` only the examples of the documents of shard
    ``k`` (:func:`~ernie_cmtl.build.shards.shard_of`) are built, into ``shards/k-of-n`` beside the unsharded
    examples, and returned; the tokenizer and the tasks' corpus statistics come from the whole training
    split's statistics sample, so every shard uses the same ones. Without ``shard``, a task with no unsharded
    build but a complete set of shard builds reads them as one dataset; an incomplete set is an error naming
    the missing shards. ``statistics_only``: train the tokenizer and compute every task's statistics (run
    once before the shards), build no examples (the result has none).

    With ``preserve.replay_fraction`` (and neither ``shard`` nor ``statistics_only``), a second corpus's
    knowledge-masking examples join the run's own (:mod:`ernie_cmtl.build.replay`).
    """
    if allow_empty_tasks is None:
        allow_empty_tasks = config.data.skip_empty_tasks
    # Our own progress line per task replaces datasets' per-map and "Saving the dataset" bars.
    from datasets.utils import enable_progress_bars, is_progress_bar_enabled

    bars_were_on = is_progress_bar_enabled()
    disable_progress_bars()
    try:
        prepared = _prepare(_Build.start(config, run_dir, BuildProgress(progress), shard, statistics_only),
                            allow_empty_tasks)
        if shard is None and not statistics_only:
            replay_step(config, run_dir, prepared, progress)
        return prepared
    finally:
        if bars_were_on:
            enable_progress_bars()


def _prepare(build: _Build, allow_empty_tasks: bool) -> PreparedData:
    # Our cache (keyed on documents, tokenizer, task config and builder version) decides what is reused;
    # datasets' own map cache keys on the function alone and can return stale examples after a code change.
    disable_caching()
    docs = split_step(build, *documents_step(build))
    tokenizer = tokenizer_step(build, docs)
    tasks = make_tasks(build.config, SpecialIds.from_tokenizer(tokenizer))
    tokens = SharedTokens(build, docs, tokenizer)
    built = _Built()
    if build.statistics_only:
        statistics_step(build, docs, tasks, tokens, built)
    else:
        examples_step(build, docs, tasks, tokens, built)
    account_step(build, docs, tasks, built)
    if build.statistics_only:
        return PreparedData(tokenizer, tasks, {}, {}, build_seconds=built.seconds, empty_tasks=built.empty,
                            report=build.account)
    empty = built.empty
    if empty and (len(empty) == len(tasks) or not allow_empty_tasks):
        listed = "; ".join(f"{name} ({reason})" for name, reason in empty.items())
        how = "no task has examples: use a larger or different corpus" if len(empty) == len(tasks) else \
            "set data.skip_empty_tasks=true to train without them, or remove them from tasks and schedule.stages"
        raise DataBuildError(f"{len(empty)} of {len(tasks)} tasks get no examples from this corpus: {listed}; "
                             f"{how} (account: {build.report_path})")
    with_examples = {name: task for name, task in tasks.items() if name not in empty}
    return PreparedData(tokenizer, with_examples, built.train, built.valid, build_seconds=built.seconds,
                        empty_tasks=empty, report=build.account)


def replay_step(config: RunConfig, run_dir: Path, prepared: PreparedData, progress: bool) -> None:
    """With ``preserve.replay_fraction``: build the replay corpus's examples through this same build (its config:
    :func:`~ernie_cmtl.build.replay.replay_config`), mix them into ``prepared``'s knowledge-masking training
    examples (:func:`~ernie_cmtl.build.replay.mix_examples`), and account for it in ``data_report.json``."""
    keep = config.preserve
    if keep.replay_fraction <= 0 or REPLAY_TASK not in prepared.train:
        return
    replay_dir = run_dir / "replay"
    log.info("replay: building %s examples of %s", REPLAY_TASK, ", ".join(keep.replay_corpus))
    try:
        replay = prepare_data(replay_config(config, run_dir), replay_dir, progress).train[REPLAY_TASK]
    except (CorpusError, DataBuildError) as err:  # said of the replay corpus, not the run's
        raise DataBuildError(f"preserve.replay_corpus: {err}") from None
    own = prepared.train[REPLAY_TASK]
    prepared.train[REPLAY_TASK], added = mix_examples(own, replay, keep.replay_fraction, config.seed)
    prepared.report["replay"] = {"corpus": list(keep.replay_corpus), "task": REPLAY_TASK,
                                 "fraction": keep.replay_fraction, "own_examples": len(own),
                                 "replay_examples": len(replay), "added": added, "repeated": added > len(replay),
                                 "account": str(replay_dir / "data_report.json")}
    write_json(run_dir / "data_report.json", prepared.report)
    log.info("replay: %d examples of %d from %s joined %s's %d (%.0f%% of its training examples%s)", added,
             len(replay), ", ".join(keep.replay_corpus), REPLAY_TASK, len(own), 100 * keep.replay_fraction,
             ", the replay corpus repeated" if added > len(replay) else "")


@dataclass
class _Build:
    """What every step of one build reads: the run's config, where things go, and the account so far."""

    config: RunConfig
    run_dir: Path
    bars: BuildProgress
    shard: Shard | None
    statistics_only: bool
    cache: Path
    report_path: Path
    account: dict[str, Any]
    started: float
    """When the build started (``time.perf_counter``)."""

    @classmethod
    def start(cls, config: RunConfig, run_dir: Path, bars: BuildProgress, shard: Shard | None,
              statistics_only: bool) -> _Build:
        account: dict[str, Any] = {"corpus": None, "split": None, "tasks": {}, "empty_tasks": {}}
        if shard is not None:
            account["shard"] = list(shard)
        name = "data_report.json" if shard is None else f"data_report.shard-{shard_name(shard)}.json"
        return cls(config, run_dir, bars, shard, statistics_only, Path(config.data.cache_dir).expanduser(),
                   run_dir / name, account, time.perf_counter())

    @property
    def building_shard(self) -> bool:
        """Examples of one shard only (a ``statistics_only`` build reads the whole split)."""
        return self.shard is not None and not self.statistics_only

    def write_report(self, error: str | None = None) -> None:
        """The account so far to ``report_path`` (with ``error``: why the build stopped)."""
        write_json(self.report_path, self.account if error is None else {**self.account, "error": error})


@dataclass
class _Documents:
    """The split step's result: the corpus's documents by split, and the statistics sample."""

    key: str
    """Cache key of the documents and their split (corpus fingerprint, valid fraction, seed)."""
    all_train: Dataset
    all_valid: Dataset
    train: Dataset
    """The documents this build turns into examples: all of ``all_train``, or one shard's."""
    valid: Dataset
    stats: Dataset
    """Corpus statistics (tokenizer, lexicons, frequent words, class counts) read this bounded, evenly spaced
    sample of the whole training split: the same for every shard, bounded on any corpus."""
    stats_key: list[Any]
    chinese: bool
    """Chinese documents (data_builders.language): a BERT-Chinese tokenizer, jieba words in the shared pass."""
    segmenter: list[str]
    """The Chinese segmenter's name and version, in every key of what it segmented ([] for other corpora)."""


@dataclass
class _Built:
    """Per task, what the build gave: examples, seconds, or why there are none."""

    train: dict[str, Dataset] = field(default_factory=dict)
    valid: dict[str, Dataset] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    empty: dict[str, str] = field(default_factory=dict)


def documents_step(build: _Build) -> tuple[Dataset, str]:
    """The corpus's documents (cached by corpus fingerprint) and their cache key; the corpus account."""
    data, config = build.config.data, build.config
    options = data.corpus_options()  # the data section's corpus fields (data_builders.corpus_options)
    try:
        documents, corpus_report = load_documents_with_report(data.corpus, options, cache_dir=build.cache)
        build.account["corpus"] = corpus_report.to_dict()
        for line in corpus_report.summary():
            log.info("%s", line)
        if build.account["corpus"]["skipped"]:  # worth seeing even with --quiet, a clean read is not
            log.warning("bad input skipped: %s (account: %s)", corpus_report.skipped_summary(), build.report_path)
        return documents, digest(corpus_fingerprint(data.corpus, options), data.valid_fraction, config.seed)
    except CorpusError as err:
        build.write_report(str(err))
        raise


def split_step(build: _Build, documents: Dataset, key: str) -> _Documents:
    """Train/valid split by document (then the shard's documents), the statistics sample; the split account."""
    data, shard = build.config.data, build.shard
    try:
        all_train, all_valid = split_documents(documents, data.valid_fraction, build.config.seed)
    except DataBuildError as err:
        build.write_report(str(err))
        raise
    train, valid = all_train, all_valid
    if build.building_shard:
        assert shard is not None
        train, valid = shard_documents(all_train, shard), shard_documents(all_valid, shard)
    build.account["split"] = {"train_documents": len(train), "valid_documents": len(valid),
                              "one_document_split": len(documents) == 1}
    if shard is not None:
        build.account["split"].update(corpus_train_documents=len(all_train), corpus_valid_documents=len(all_valid))
    log.info("documents: %d train, %d valid%s (%.1fs)", len(train), len(valid),
             f" in shard {shard[0]}/{shard[1]}" if shard is not None else "", time.perf_counter() - build.started)
    stats = statistics_sample(all_train, data.statistics_documents)
    chinese = "language" in all_train.column_names and "zh" in set(stats["language"])
    return _Documents(key, all_train, all_valid, train, valid, stats,
                      [] if len(stats) == len(all_train) else ["statistics", data.statistics_documents], chinese,
                      segmenter_id(data.zh_segmenter) if chinese else [])


def tokenizer_step(build: _Build, docs: _Documents) -> Tokenizer:
    """The run's tokenizer: ``tokenizer.path``, or trained once on the statistics sample (cached by documents
    and tokenizer config) and saved as ``RUN_DIR/tokenizer.json``."""
    tok_cfg, data = build.config.tokenizer, build.config.data
    if docs.chinese:
        use_segmenter(data.zh_segmenter)
    tok_key = {k: v for k, v in to_plain(tok_cfg).items()  # unseeded tokenizers keep their keys from before
               if k != "chinese_seed_characters" or (docs.chinese and v > 0)}
    tokenizer_cache = build.cache / "tokenizers" / f"{digest(docs.key, tok_key, *docs.stats_key)}.json"
    run_tokenizer = build.run_dir / "tokenizer.json"
    if build.building_shard and not tok_cfg.path and not tokenizer_cache.is_file() and not run_tokenizer.is_file():
        # WordPiece training is not deterministic (ties between equally frequent pairs break differently from
        # run to run), so shards that each trained one would not share token ids: one is trained, first.
        assert build.shard is not None
        raise DataBuildError(f"shard {build.shard[0]}/{build.shard[1]}: no tokenizer yet for this corpus: run "
                             f"`ernie-cmtl build-data --statistics-only` once first (same config and "
                             f"data.cache_dir), or set tokenizer.path (looked for {tokenizer_cache} and "
                             f"{run_tokenizer})")
    return tokenizer_for_run(
        run_tokenizer, pretrained=tok_cfg.path,
        texts=iter_paragraphs(docs.stats),
        cache_path=tokenizer_cache,
        vocab_size=tok_cfg.vocab_size, min_frequency=tok_cfg.min_frequency, lowercase=tok_cfg.lowercase,
        chinese=docs.chinese, chinese_seed_characters=tok_cfg.chinese_seed_characters)


class SharedTokens:
    """The shared tokenization pass (sentences' token ids; Chinese words), done or loaded from the cache at
    most once per split, and only when a task that reads it (``reads_sentence_tokens``) is built."""

    def __init__(self, build: _Build, docs: _Documents, tokenizer: Tokenizer) -> None:
        self.build, self.docs, self.tokenizer = build, docs, tokenizer
        self.whole_root = build.cache / "sentence_tokens" / digest(docs.key, tokenizer_hash(tokenizer),
                                                                   *docs.segmenter)
        self.root = self.whole_root
        if build.building_shard:
            assert build.shard is not None
            self.root = self.whole_root / "shards" / shard_name(build.shard)
        self._done: dict[str, Dataset] = {}

    def of(self, split: str, documents: Dataset, root: Path | None = None) -> Dataset:
        """``documents`` (split ``split``) with the pass's columns, cached under ``root / split``."""
        root = root or self.root
        if str(root / split) not in self._done:
            started = time.perf_counter()
            data, bars = self.build.config.data, self.build.bars
            scratch = root / ".work" / f"{socket.gethostname()}-{os.getpid()}"

            def tokenize() -> Dataset:
                bar = bars.bar(f"tokenize ({split})", len(documents))
                out = sentence_tokens_in_blocks(documents, self.tokenizer, data.block_documents, data.num_proc,
                                                scratch / split, bar)
                bar.close()
                return out

            self._done[str(root / split)] = cached_dataset(root / split, tokenize)
            shutil.rmtree(scratch, ignore_errors=True)
            log.info("shared tokenization of the %s documents: %.1fs", split, time.perf_counter() - started)
        return self._done[str(root / split)]

    def statistics_documents(self, task: PretrainTask) -> Dataset:
        """What ``task``'s corpus statistics read. Chinese statistics (phrases, frequent words) read the jieba
        words of the shared pass instead of segmenting the training split again: the unsharded train split's
        pass when the sample is all of it."""
        docs = self.docs
        if not (docs.chinese and task.reads_sentence_tokens):
            return docs.stats
        whole = len(docs.stats) == len(docs.all_train)
        return self.of("train" if whole else f"statistics-{len(docs.stats)}", docs.stats, self.whole_root)


def _task_context(build: _Build, docs: _Documents, name: str, task: PretrainTask,
                  tokens: SharedTokens) -> BuildContext:
    """``task``'s build context; its cache folder is keyed on documents, tokenizer, task config and builder."""
    data = build.config.data
    key = digest(docs.key, tokenizer_hash(tokens.tokenizer), name, task.builder_version, to_plain(task.config),
                 data.max_seq_len, *docs.stats_key,
                 *(docs.segmenter if data.zh_segmenter != "jieba" else []))  # jieba builds: keys from before
    task_dir = build.cache / "examples" / name / key
    return BuildContext(tokenizer=tokens.tokenizer, max_seq_len=data.max_seq_len, seed=build.config.seed,
                        num_proc=data.num_proc, cache_dir=task_dir, train_documents=tokens.statistics_documents(task),
                        work_dir=task_dir / ".work" / f"{socket.gethostname()}-{os.getpid()}")


def statistics_step(build: _Build, docs: _Documents, tasks: dict[str, PretrainTask], tokens: SharedTokens,
                    built: _Built) -> None:
    """``--statistics-only``: every task's corpus statistics (cached in its folder), no examples."""
    for name, task in tasks.items():
        ctx = _task_context(build, docs, name, task, tokens)
        started = time.perf_counter()
        try:
            task.prepare_statistics(ctx)
        except EmptyTaskError as err:
            built.empty[name] = str(err)
        built.seconds[name] = time.perf_counter() - started
        log.info("task %s: corpus statistics ready (%.1fs)", name, built.seconds[name])


def _read_shard_builds(build: _Build, name: str, task_dir: Path, built: _Built) -> None:
    """An unsharded build's task with no examples of its own: its complete set of shard builds, if any."""
    sharded = built_shards(task_dir)
    if sharded is not None:
        loaded = load_shards(sharded[1])
        if isinstance(loaded, str):
            built.empty[name] = loaded
        else:
            built.train[name], built.valid[name] = loaded
            log.info("task %s: read %d shard builds", name, sharded[0])
    elif (missing := missing_shards(task_dir)) is not None:
        build.write_report(f"{name}: shards {missing} not built")
        raise DataBuildError(f"task {name}: a sharded build is incomplete: shards {missing} are not built "
                             f"(run `ernie-cmtl build-data --shard K/N` for each, or remove "
                             f"{task_dir / 'shards'} to build in one process)")


def examples_step(build: _Build, docs: _Documents, tasks: dict[str, PretrainTask], tokens: SharedTokens,
                  built: _Built) -> None:
    """Every task's examples: read from complete shard builds, else built (or loaded from the cache) in
    :func:`build_tasks`, after the shared tokenization pass when a task to build reads it."""
    shard = build.shard
    jobs: list[TaskJob] = []
    for name, task in tasks.items():
        ctx = _task_context(build, docs, name, task, tokens)
        started = time.perf_counter()
        if shard is None and not (ctx.cache_dir / "train").is_dir():
            _read_shard_builds(build, name, ctx.cache_dir, built)
        built.seconds[name] = time.perf_counter() - started
        if name not in built.train and name not in built.empty:
            out = ctx.cache_dir if shard is None else ctx.cache_dir / "shards" / shard_name(shard)
            jobs.append(TaskJob(name, task, ctx, [("train", docs.train), ("valid", docs.valid)], out,
                                empty_valid_ok=shard is not None))
    if any(job.task.reads_sentence_tokens and not job.built for job in jobs):  # its own lines, before the tasks'
        splits = [("train", tokens.of("train", docs.train)), ("valid", tokens.of("valid", docs.valid))]
        for job in jobs:
            if job.task.reads_sentence_tokens:
                job.splits = splits
    data = build.config.data
    for job, result in zip(jobs, build_tasks(jobs, data.block_documents, data.num_proc, build.bars), strict=True):
        built.seconds[job.name] += result.seconds
        if result.error is not None:
            built.empty[job.name] = result.error
            if shard is not None:  # the shard set stays complete: this one has none
                assert job.out is not None
                write_json(job.out / "empty.json", {"reason": result.error})
        else:
            built.train[job.name], built.valid[job.name] = result.examples["train"], result.examples["valid"]


def account_step(build: _Build, docs: _Documents, tasks: dict[str, PretrainTask], built: _Built) -> None:
    """Each task's line in the account (examples, seconds, why empty), the log, ``RUN_DIR/data_report.json``.
    A task with 0 train (or, unsharded, 0 valid) examples is empty too; an empty task's examples are dropped."""
    tasks_account, empty = build.account["tasks"], built.empty
    for name in tasks:
        seconds = built.seconds[name]
        if build.statistics_only:
            tasks_account[name] = {"seconds": round(seconds, 3), "empty": empty.get(name)}
            continue
        if name not in empty:
            zero = [split for split, ds in (("train", built.train[name]), ("valid", built.valid[name]))
                    if len(ds) == 0 and (build.shard is None or split == "train")]  # shards' valid adds up later
            if zero:
                empty[name] = (f"0 {' and '.join(zero)} examples from {len(docs.train)} train / "
                               f"{len(docs.valid)} valid documents")
        tasks_account[name] = {"train": len(built.train[name]) if name in built.train else 0,
                               "valid": len(built.valid[name]) if name in built.valid else 0,
                               "seconds": round(seconds, 3), "empty": empty.get(name)}
        if name in empty:
            log.warning("task %s: no examples from this corpus: %s", name, empty[name])
            built.train.pop(name, None)
            built.valid.pop(name, None)
        else:
            log.info("task %s: %d train / %d valid examples (%.1fs)", name, len(built.train[name]),
                     len(built.valid[name]), seconds)
    build.account["empty_tasks"] = empty
    build.write_report()


# -- the split ------------------------------------------------------------------------------------------------


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


def statistics_sample(documents: Dataset, limit: int) -> Dataset:
    """At most ``limit`` documents, evenly spaced (all of them when there are no more): the documents corpus
    statistics are computed on (``data.statistics_documents``)."""
    if len(documents) <= limit:
        return documents
    step = len(documents) / limit
    return documents.select(sorted({int(i * step) for i in range(limit)}))
