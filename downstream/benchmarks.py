"""Fine-tuning benchmarks: the task table and the readers of their files.

Three families, all read into the same column-wise :class:`Examples`:

- **GLUE**, all nine tasks in the layout ``download_glue_data.py`` writes (``glue_dir/<TASK>/<split>.tsv``):
  tab-separated, no quoting (a ``"`` is text, never a field delimiter), CoLA without a header row, MRPC with a
  byte-order mark, MNLI with two dev sets (``dev_matched``, ``dev_mismatched``) and a column count that differs
  between train (12) and dev (16), QQP with rows whose fields are missing (skipped and counted, as the GLUE
  baselines and ``transformers``' ``QqpProcessor`` do). Columns of the newer files are found by their header name.
- **wikiqp**, a query-passage ranking set built from Wikipedia articles (:func:`build_wiki_ranking`).
- **Chinese:** ChnSentiCorp (sentiment TSVs), OCNLI (JSON lines; the label ``-``, no annotator majority, is
  skipped and counted) and C3 (multiple-choice reading comprehension: JSON documents with questions, 2-4 choices
  each; an example is one question, its candidates the choices).

Tokenization and batching happen in :mod:`downstream.encoding`, metrics in :mod:`downstream.metrics`. Every
reader error is a one-line :class:`CorpusError` naming the file (and line).
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from data_builders.corpus import CorpusError, build_documents

HeadKind = Literal["single", "pair", "regression", "ranking"]
Column = int | str
"""A TSV column: its index, or its name in the file's header row (for files whose column count varies)."""


@dataclass(frozen=True)
class BenchmarkTask:
    """One fine-tuning task: where its data lives, how it is read, its output-layer kind and its metrics."""

    name: str
    """Canonical (lower-case) name, as given to ``--tasks``."""
    kind: HeadKind
    """MT-DNN's output layers: single-sentence / pair classification, similarity regression, ranking (one score
    per candidate, softmax over a query's candidates: wikiqp's passages, C3's choices)."""
    num_labels: int
    """Classes (1 for regression and ranking: one score per sequence)."""
    metrics: tuple[str, ...]
    """Metric names reported for each dev set; the task score is their mean (over all dev sets)."""
    data_key: str = "glue_dir"
    """The ``FinetuneConfig`` field that names the folder the task's files are under."""
    directory: str = ""
    """Sub-folder of that folder (GLUE's task folders; empty: the files are in the folder itself)."""
    reader: Literal["tsv", "ocnli", "c3", "wiki"] = "tsv"
    files: tuple[str, ...] = ("{split}.tsv",)
    """The file names of a split, ``{split}`` replaced by its name; several files are read one after the other
    (C3's written-text and dialogue halves)."""
    dev_splits: tuple[str, ...] = ("dev",)
    """The dev sets, each evaluated on its own (MNLI: matched and mismatched genres)."""
    header: bool = True
    text_a: Column = 0
    """Column of the first sentence."""
    text_b: Column | None = None
    """Column of the second sentence (pair tasks)."""
    label: Column = 1
    """Column of the label (an integer, a float score, or one of ``label_names``)."""
    label_names: tuple[str, ...] = ()
    """String labels in id order, for files that spell labels out (RTE, MNLI, QNLI, OCNLI)."""
    skip_short_rows: bool = False
    """Skip (and count) rows with fewer columns than needed instead of failing (QQP)."""

    @property
    def splits(self) -> tuple[str, ...]:
        return ("train", *self.dev_splits)


GLUE_TASKS: dict[str, BenchmarkTask] = {
    "sst2": BenchmarkTask("sst2", "single", 2, ("accuracy",), directory="SST-2", text_a=0, label=1),
    "cola": BenchmarkTask("cola", "single", 2, ("matthews_corr",), directory="CoLA", header=False, text_a=3,
                          label=1),
    "mrpc": BenchmarkTask("mrpc", "pair", 2, ("accuracy", "f1"), directory="MRPC", text_a=3, text_b=4, label=0),
    "rte": BenchmarkTask("rte", "pair", 2, ("accuracy",), directory="RTE", text_a=1, text_b=2, label=3,
                         label_names=("entailment", "not_entailment")),
    "stsb": BenchmarkTask("stsb", "regression", 1, ("pearson", "spearman"), directory="STS-B", text_a=7,
                          text_b=8, label=9),
    # label order as in GLUE's and transformers' processors, so class ids mean the same everywhere
    "mnli": BenchmarkTask("mnli", "pair", 3, ("accuracy",), directory="MNLI",
                          dev_splits=("dev_matched", "dev_mismatched"), text_a="sentence1", text_b="sentence2",
                          label="gold_label", label_names=("contradiction", "entailment", "neutral")),
    "qqp": BenchmarkTask("qqp", "pair", 2, ("accuracy", "f1"), directory="QQP", text_a="question1",
                         text_b="question2", label="is_duplicate", skip_short_rows=True),
    "qnli": BenchmarkTask("qnli", "pair", 2, ("accuracy",), directory="QNLI", text_a="question", text_b="sentence",
                          label="label", label_names=("entailment", "not_entailment")),
    "wnli": BenchmarkTask("wnli", "pair", 2, ("accuracy",), directory="WNLI", text_a="sentence1",
                          text_b="sentence2", label="label"),
}
WIKI_RANKING = BenchmarkTask("wikiqp", "ranking", 1, ("accuracy_at_1", "mrr"), data_key="ranking_corpus",
                             reader="wiki")
"""Query = article title, candidates = one paragraph of that article and paragraphs of other articles."""

CHINESE_TASKS: dict[str, BenchmarkTask] = {
    # train.tsv is "label<TAB>text_a", dev.tsv "qid<TAB>label<TAB>text_a": columns by name
    "chnsenticorp": BenchmarkTask("chnsenticorp", "single", 2, ("accuracy",), data_key="chnsenticorp_dir",
                                  text_a="text_a", label="label"),
    "ocnli": BenchmarkTask("ocnli", "pair", 3, ("accuracy",), data_key="ocnli_dir", reader="ocnli",
                           files=("{split}.json",), label_names=("entailment", "neutral", "contradiction")),
    "c3": BenchmarkTask("c3", "ranking", 1, ("accuracy",), data_key="c3_dir", reader="c3",
                        files=("c3-m-{split}.json", "c3-d-{split}.json")),
}

BENCHMARK_TASKS: dict[str, BenchmarkTask] = {**GLUE_TASKS, WIKI_RANKING.name: WIKI_RANKING, **CHINESE_TASKS}


def canonical_task_name(name: str) -> str:
    """``"SST-2"``, ``"sst_2"``, ``"STSB"``, ``"C3"`` -> ``"sst2"``, ``"stsb"``, ``"c3"``; ``KeyError`` naming
    the valid ones."""
    key = name.strip().lower().replace("-", "").replace("_", "")
    if key not in BENCHMARK_TASKS:
        raise KeyError(f"unknown fine-tuning task {name!r} (known: {', '.join(BENCHMARK_TASKS)})")
    return key


@dataclass
class Examples:
    """One split of one task, column-wise. Ranking examples list their candidates in ``candidates``."""

    texts_a: list[str]
    texts_b: list[str] | None
    labels: list[float]
    """Class ids (as numbers), similarity scores, or (ranking) the index of the positive candidate."""
    candidates: list[list[str]] = field(default_factory=list)
    skipped: int = 0
    """Rows of the files left out by rule (OCNLI's label ``-``, QQP's rows with missing fields)."""

    def __len__(self) -> int:
        return len(self.texts_a)

    def subset(self, indices: list[int]) -> Examples:
        """The examples at ``indices``, in that order (``skipped`` still counts the files' rows)."""
        return Examples([self.texts_a[i] for i in indices],
                        None if self.texts_b is None else [self.texts_b[i] for i in indices],
                        [self.labels[i] for i in indices],
                        [self.candidates[i] for i in indices] if self.candidates else [], self.skipped)


def _concat(parts: list[Examples]) -> Examples:
    first = parts[0]
    if len(parts) == 1:
        return first
    return Examples([t for p in parts for t in p.texts_a],
                    None if first.texts_b is None else [t for p in parts for t in p.texts_b or []],
                    [y for p in parts for y in p.labels], [c for p in parts for c in p.candidates],
                    sum(p.skipped for p in parts))


# ---------------------------------------------------------------------------------------------------------
# Reading a task's split


def split_files(name: str, split: str, data_dir: str | Path, files: Sequence[str] | None = None) -> list[Path]:
    """The files of ``split`` of task ``name`` under ``data_dir`` (the folder its ``data_key`` names);
    ``files`` replaces the task's file names (e.g. OCNLI's ``train.50k.json``)."""
    task = BENCHMARK_TASKS[canonical_task_name(name)]
    if split not in task.splits:
        raise CorpusError(f"{task.name} has no split {split!r} (it has: {', '.join(task.splits)})")
    directory = Path(data_dir).expanduser() / task.directory
    return [directory / pattern.format(split=split) for pattern in (files or task.files)]


def read_benchmark(name: str, split: str, data_dir: str | Path, files: Sequence[str] | None = None) -> Examples:
    """Read ``split`` (``train`` or one of the task's ``dev_splits``) of a file-based task from ``data_dir``.

    Raises :class:`CorpusError` (one line, naming the file and line) for a missing file, a malformed row or an
    unreadable label."""
    task = BENCHMARK_TASKS[canonical_task_name(name)]
    if task.reader == "wiki":
        raise CorpusError(f"{task.name} is built from a corpus by build_wiki_ranking, not read from files")
    paths = split_files(task.name, split, data_dir, files)
    for path in paths:
        if not path.is_file():
            family = "GLUE" if task.name in GLUE_TASKS else task.name
            raise CorpusError(f"{family} file not found: {path} ({task.name} {split})")
    reader = {"tsv": _read_tsv, "ocnli": _read_ocnli, "c3": _read_c3}[task.reader]
    examples = _concat([reader(task, path) for path in paths])
    if not len(examples):
        raise CorpusError(f"{', '.join(map(str, paths))}: no examples")
    return examples


def read_glue(glue_dir: str | Path, name: str, split: str) -> Examples:
    """Read ``glue_dir/<TASK>/<split>.tsv`` of GLUE task ``name`` (``split``: ``train``, ``dev``; MNLI:
    ``dev_matched``, ``dev_mismatched``). See :func:`read_benchmark`."""
    task = BENCHMARK_TASKS[canonical_task_name(name)]
    if task.name not in GLUE_TASKS:
        raise KeyError(f"{task.name} is not a GLUE task (GLUE: {', '.join(GLUE_TASKS)})")
    return read_benchmark(task.name, split, glue_dir)


def _parse_label(task: BenchmarkTask, raw: str, where: str) -> float:
    try:
        if task.label_names:
            return float(task.label_names.index(raw))
        return float(raw) if task.kind == "regression" else float(int(raw))
    except ValueError:
        expected = f"one of {', '.join(task.label_names)}" if task.label_names else "a number"
        raise CorpusError(f"{where}: label {raw!r} is not {expected}") from None


def _read_tsv(task: BenchmarkTask, path: Path) -> Examples:
    lines = path.read_text(encoding="utf-8-sig").split("\n")  # not splitlines: text may hold \x0b, \x85 ...
    header = lines[0].rstrip("\r").split("\t") if task.header else []

    def index(column: Column) -> int:
        if isinstance(column, int):
            return column
        if column not in header:
            raise CorpusError(f"{path}:1: header has no column {column!r} (it has: {', '.join(header)})")
        return header.index(column)

    text_a, label = index(task.text_a), index(task.label)
    text_b = None if task.text_b is None else index(task.text_b)
    needed = 1 + max(c for c in (text_a, text_b, label) if c is not None)
    texts_a: list[str] = []
    texts_b: list[str] = []
    labels: list[float] = []
    skipped = 0
    for number, line in enumerate(lines, start=1):
        line = line.rstrip("\r")
        if not line or (task.header and number == 1):
            continue
        cells = line.split("\t")
        if len(cells) < needed:
            if task.skip_short_rows:
                skipped += 1
                continue
            raise CorpusError(f"{path}:{number}: expected >= {needed} tab-separated columns, got {len(cells)}")
        labels.append(_parse_label(task, cells[label].strip(), f"{path}:{number}"))
        texts_a.append(cells[text_a])
        if text_b is not None:
            texts_b.append(cells[text_b])
    return Examples(texts_a, texts_b if text_b is not None else None, labels, skipped=skipped)


def _read_ocnli(task: BenchmarkTask, path: Path) -> Examples:
    premises: list[str] = []
    hypotheses: list[str] = []
    labels: list[float] = []
    skipped = 0
    for number, line in enumerate(path.read_text(encoding="utf-8").split("\n"), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise CorpusError(f"{path}:{number}: not a JSON object (OCNLI files hold one per line)") from None
        if not isinstance(row, dict):
            raise CorpusError(f"{path}:{number}: not a JSON object (OCNLI files hold one per line)")
        for key in ("sentence1", "sentence2", "label"):
            if not isinstance(row.get(key), str):
                raise CorpusError(f"{path}:{number}: no string field {key!r} (an unlabeled test file?)")
        if row["label"] == "-":  # no majority among the annotators: no gold label, left out as in SNLI/MNLI
            skipped += 1
            continue
        labels.append(_parse_label(task, row["label"], f"{path}:{number}"))
        premises.append(row["sentence1"])
        hypotheses.append(row["sentence2"])
    return Examples(premises, hypotheses, labels, skipped=skipped)


def _read_c3(task: BenchmarkTask, path: Path) -> Examples:
    """One example per question: text A = the question, then the document (question first, so that cutting an
    over-long input to ``max_seq_len`` loses the end of the document, never the question); candidates = its
    choices (duplicates dropped, so that the answer has one index)."""
    try:
        documents: Any = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise CorpusError(f"{path}: not valid JSON (line {err.lineno})") from None
    if not isinstance(documents, list):
        raise CorpusError(f"{path}: expected a list of [paragraphs, questions, id] documents")
    texts: list[str] = []
    choices: list[list[str]] = []
    labels: list[float] = []
    for number, document in enumerate(documents):
        where = f"{path}: document {number}"
        if not (isinstance(document, list) and len(document) >= 2 and isinstance(document[0], list)
                and isinstance(document[1], list)):
            raise CorpusError(f"{where}: expected [paragraphs, questions, id]")
        context = "\n".join(str(p) for p in document[0])
        for q, item in enumerate(document[1]):
            if not isinstance(item, dict) or not {"question", "choice", "answer"} <= set(item):
                raise CorpusError(f"{where}, question {q}: expected question, choice and answer fields")
            options = list(dict.fromkeys(str(c) for c in item["choice"]))
            if len(options) < 2 or item["answer"] not in options:
                raise CorpusError(f"{where}, question {q}: the answer must be one of >= 2 distinct choices")
            texts.append(f"{item['question']}\n{context}")
            choices.append(options)
            labels.append(float(options.index(item["answer"])))
    return Examples(texts, None, labels, choices)


# ---------------------------------------------------------------------------------------------------------
# Wikipedia query-passage ranking


def build_wiki_ranking(corpus: list[str], num_candidates: int, split: Literal["train", "dev"],
                       max_per_article: int = 0) -> Examples:
    """Query-passage ranking examples from a Wikipedia corpus (e.g. the sample's ``valid`` shards).

    A query is an article's title; its positive is one of the article's paragraphs, its ``num_candidates - 1``
    negatives are paragraphs of other articles (paragraphs found in several articles are left out). Every
    article with two or more paragraphs holds one paragraph out (a fixed draw, independent of any run seed):
    the dev queries rank these held-out paragraphs, with negatives drawn among the other articles' held-out
    paragraphs, so no dev passage is seen in training; train queries use the remaining paragraphs
    (``max_per_article`` per article, 0 = all). The queries are thus known at dev time and the passages new:
    in-domain passage ranking. The positive sits at a random index (``labels``), so a model that scores all
    candidates alike cannot look right.
    """
    documents = build_documents(corpus)
    titles: list[str] = documents["title"]
    articles_with = Counter(p for paragraphs in documents["paragraphs"] for p in set(paragraphs))
    held_out: dict[int, str] = {}
    kept: list[list[str]] = []
    draw = random.Random(20180101)
    for article, all_paragraphs in enumerate(documents["paragraphs"]):
        # boilerplate shared by several articles ("A round-robin tournament determined ...") is nobody's
        paragraphs = list(dict.fromkeys(p for p in all_paragraphs if articles_with[p] == 1))
        if len(paragraphs) >= 2:
            held_out[article] = paragraphs.pop(draw.randrange(len(paragraphs)))
        kept.append(paragraphs)
    if split == "dev":
        pool = {a: [p] for a, p in held_out.items()}
    else:
        pool = {a: ps for a, ps in enumerate(kept) if ps}
    articles = sorted(pool)
    if len(articles) < num_candidates:
        raise CorpusError(f"{', '.join(corpus)}: {len(articles)} articles with {split} paragraphs, fewer "
                          f"than {num_candidates} candidates per query")
    rng = random.Random(7 if split == "dev" else 11)
    queries: list[str] = []
    candidate_lists: list[list[str]] = []
    labels: list[float] = []
    for article in articles:
        positives = pool[article]
        if max_per_article:
            positives = rng.sample(positives, min(max_per_article, len(positives)))
        for positive in positives:
            others = rng.sample(articles, num_candidates)
            candidates = [rng.choice(pool[a]) for a in others if a != article][: num_candidates - 1]
            slot = rng.randrange(num_candidates)
            candidates.insert(slot, positive)
            queries.append(titles[article])
            candidate_lists.append(candidates)
            labels.append(float(slot))
    return Examples(queries, None, labels, candidate_lists)


__all__ = ["HeadKind", "BenchmarkTask", "Examples", "GLUE_TASKS", "WIKI_RANKING", "CHINESE_TASKS",
           "BENCHMARK_TASKS", "canonical_task_name", "split_files", "read_benchmark", "read_glue",
           "build_wiki_ranking"]
