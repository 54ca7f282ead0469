"""Fine-tuning benchmarks: GLUE TSV readers, a Wikipedia query-passage ranking set, and their metrics.

Readers return plain columns (``texts_a``, ``texts_b``, ``labels``); tokenization and batching happen in
:mod:`ernie_cmtl.finetune`. The five GLUE tasks read here (SST-2, CoLA, MRPC, RTE, STS-B) keep the formats of
``download_glue_data.py``: tab-separated, no quoting, CoLA without a header row, MRPC with a byte-order mark.

Metrics follow GLUE: accuracy, binary F1 (positive class 1), Matthews correlation, Pearson and Spearman
correlation (ties get average ranks). They are implemented with NumPy, so no scikit-learn or SciPy is needed;
``tests/test_glue_metrics.py`` checks them against hand-computed values (and SciPy when installed).
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike

from data_builders.corpus import CorpusError, build_documents

HeadKind = Literal["single", "pair", "regression", "ranking"]


@dataclass(frozen=True)
class BenchmarkTask:
    """One fine-tuning task: where its data lives, its output-layer kind and its metrics."""

    name: str
    """Canonical (lower-case) name, as given to ``--tasks``."""
    kind: HeadKind
    """MT-DNN's output layers: single-sentence / pair classification, similarity regression, ranking."""
    num_labels: int
    """Classes (1 for regression and ranking: one score per sequence)."""
    metrics: tuple[str, ...]
    """Metric names reported for the dev set; the GLUE task score is their mean."""
    directory: str = ""
    """Folder under ``glue_dir`` (empty for tasks not read from GLUE TSVs)."""
    header: bool = True
    text_a: int = 0
    """Column of the first sentence."""
    text_b: int | None = None
    """Column of the second sentence (pair tasks)."""
    label: int = 1
    """Column of the label (an integer, a float score, or one of ``label_names``)."""
    label_names: tuple[str, ...] = ()
    """String labels in id order, for files that spell labels out (RTE)."""


GLUE_TASKS: dict[str, BenchmarkTask] = {
    "sst2": BenchmarkTask("sst2", "single", 2, ("accuracy",), "SST-2", text_a=0, label=1),
    "cola": BenchmarkTask("cola", "single", 2, ("matthews_corr",), "CoLA", header=False, text_a=3, label=1),
    "mrpc": BenchmarkTask("mrpc", "pair", 2, ("accuracy", "f1"), "MRPC", text_a=3, text_b=4, label=0),
    "rte": BenchmarkTask("rte", "pair", 2, ("accuracy",), "RTE", text_a=1, text_b=2, label=3,
                         label_names=("entailment", "not_entailment")),
    "stsb": BenchmarkTask("stsb", "regression", 1, ("pearson", "spearman"), "STS-B", text_a=7, text_b=8,
                          label=9),
}
WIKI_RANKING = BenchmarkTask("wikiqp", "ranking", 1, ("accuracy_at_1", "mrr"))
"""Query = article title, candidates = one paragraph of that article and paragraphs of other articles."""

BENCHMARK_TASKS: dict[str, BenchmarkTask] = {**GLUE_TASKS, WIKI_RANKING.name: WIKI_RANKING}


def canonical_task_name(name: str) -> str:
    """``"SST-2"``, ``"sst_2"``, ``"STSB"`` -> ``"sst2"``, ``"stsb"``; ``KeyError`` naming the valid ones."""
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

    def __len__(self) -> int:
        return len(self.texts_a)

    def subset(self, indices: list[int]) -> Examples:
        """The examples at ``indices``, in that order."""
        return Examples([self.texts_a[i] for i in indices],
                        None if self.texts_b is None else [self.texts_b[i] for i in indices],
                        [self.labels[i] for i in indices],
                        [self.candidates[i] for i in indices] if self.candidates else [])


# ---------------------------------------------------------------------------------------------------------
# GLUE TSV files


def read_glue(glue_dir: str | Path, name: str, split: Literal["train", "dev"]) -> Examples:
    """Read ``glue_dir/<TASK>/<split>.tsv`` of GLUE task ``name``.

    Raises :class:`CorpusError` (one line, naming the file and line) for a missing file, a row with too few
    columns or an unreadable label."""
    task = GLUE_TASKS[canonical_task_name(name)]
    path = Path(glue_dir).expanduser() / task.directory / f"{split}.tsv"
    if not path.is_file():
        raise CorpusError(f"GLUE file not found: {path}")
    lines = path.read_text(encoding="utf-8-sig").split("\n")  # not splitlines: text may hold \x0b, \x85 ...
    needed = 1 + max(c for c in (task.text_a, task.text_b, task.label) if c is not None)
    texts_a: list[str] = []
    texts_b: list[str] = []
    labels: list[float] = []
    for number, line in enumerate(lines, start=1):
        line = line.rstrip("\r")
        if not line or (task.header and number == 1):
            continue
        cells = line.split("\t")
        if len(cells) < needed:
            raise CorpusError(f"{path}:{number}: expected >= {needed} tab-separated columns, "
                              f"got {len(cells)}")
        raw = cells[task.label].strip()
        try:
            if task.label_names:
                label = float(task.label_names.index(raw))
            else:
                label = float(raw) if task.kind == "regression" else float(int(raw))
        except ValueError:
            expected = f"one of {', '.join(task.label_names)}" if task.label_names else "a number"
            raise CorpusError(f"{path}:{number}: label {raw!r} is not {expected}") from None
        texts_a.append(cells[task.text_a])
        if task.text_b is not None:
            texts_b.append(cells[task.text_b])
        labels.append(label)
    if not labels:
        raise CorpusError(f"{path}: no examples")
    return Examples(texts_a, texts_b if task.text_b is not None else None, labels)


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


# ---------------------------------------------------------------------------------------------------------
# Metrics


def accuracy(predictions: ArrayLike, labels: ArrayLike) -> float:
    """Share of exact matches."""
    p, y = np.asarray(predictions), np.asarray(labels)
    return float((p == y).mean())


def f1_binary(predictions: ArrayLike, labels: ArrayLike, positive: int = 1) -> float:
    """F1 of the ``positive`` class: 2 TP / (2 TP + FP + FN); 0 when there is no positive at all."""
    p, y = np.asarray(predictions) == positive, np.asarray(labels) == positive
    tp, fp, fn = int((p & y).sum()), int((p & ~y).sum()), int((~p & y).sum())
    return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0


def matthews_corrcoef(predictions: ArrayLike, labels: ArrayLike) -> float:
    """Matthews correlation (multi-class form of Gorodkin 2004, which is the phi coefficient for two
    classes); 0 when predictions or labels are constant, as scikit-learn returns."""
    p, y = np.asarray(predictions), np.asarray(labels)
    classes = np.union1d(p, y)
    predicted = np.array([(p == c).sum() for c in classes], dtype=np.float64)
    true = np.array([(y == c).sum() for c in classes], dtype=np.float64)
    samples, correct = float(len(y)), float((p == y).sum())
    numerator = correct * samples - float(predicted @ true)
    denominator = np.sqrt((samples**2 - float(predicted @ predicted)) * (samples**2 - float(true @ true)))
    return float(numerator / denominator) if denominator > 0 else 0.0


def pearson(predictions: ArrayLike, labels: ArrayLike) -> float:
    """Pearson correlation; 0 when either side is constant (undefined there; a constant predictor is the
    mean-prediction baseline, which this makes comparable)."""
    x, y = np.asarray(predictions, dtype=np.float64), np.asarray(labels, dtype=np.float64)
    if np.ptp(x) == 0 or np.ptp(y) == 0:  # exactly; x - x.mean() of a constant can be 1e-16, not 0
        return 0.0
    x, y = x - x.mean(), y - y.mean()
    return float(np.clip((x @ y) / np.sqrt((x @ x) * (y @ y)), -1.0, 1.0))


def average_ranks(values: ArrayLike) -> np.ndarray:
    """1-based ranks; tied values share the mean of their ranks (as ``scipy.stats.rankdata``)."""
    v = np.asarray(values, dtype=np.float64)
    order = np.argsort(v, kind="stable")
    sorted_v = v[order]
    starts = np.flatnonzero(np.r_[True, sorted_v[1:] != sorted_v[:-1]])
    ends = np.r_[starts[1:], len(v)]  # each run of ties is [start, end) in sorted order
    ranks = np.empty(len(v), dtype=np.float64)
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)
    return ranks


def spearman(predictions: ArrayLike, labels: ArrayLike) -> float:
    """Spearman rank correlation: Pearson of the average ranks."""
    return pearson(average_ranks(predictions), average_ranks(labels))


def ranking_metrics(scores: ArrayLike, positive: ArrayLike) -> dict[str, float]:
    """``scores`` [queries, candidates], ``positive`` [queries] (index of the relevant candidate) ->
    accuracy@1 and mean reciprocal rank. Ties count against the positive (a candidate scored equal to it
    ranks above it), so constant scores earn no credit."""
    s = np.asarray(scores, dtype=np.float64)
    idx = np.asarray(positive, dtype=np.int64)
    positive_scores = s[np.arange(len(idx)), idx]
    higher_or_tied = (s >= positive_scores[:, None]).sum(axis=1) - 1  # other candidates at or above it
    rank = 1 + higher_or_tied
    return {"accuracy_at_1": float((rank == 1).mean()), "mrr": float((1.0 / rank).mean())}


def task_metrics(name: str, predictions: ArrayLike, labels: ArrayLike) -> dict[str, float]:
    """The dev metrics of task ``name``: class ids, scores or (ranking) the [queries, candidates] score
    matrix against the labels. Adds ``score``, the mean of the task's metrics (how GLUE averages MRPC's
    and STS-B's two numbers)."""
    task = BENCHMARK_TASKS[canonical_task_name(name)]
    if task.kind == "ranking":
        values = ranking_metrics(predictions, labels)
    else:
        functions = {"accuracy": accuracy, "f1": f1_binary, "matthews_corr": matthews_corrcoef,
                     "pearson": pearson, "spearman": spearman}
        values = {metric: functions[metric](predictions, labels) for metric in task.metrics}
    values["score"] = float(np.mean([values[m] for m in task.metrics]))
    return values


def baseline_metrics(name: str, train_labels: ArrayLike, dev_labels: ArrayLike,
                     num_candidates: int = 0) -> dict[str, float]:
    """What a model that ignores its input scores on dev: the train set's majority class (classification),
    the train mean (regression: correlations 0), or a random ranking (expected accuracy@1 = 1/K, MRR =
    H_K / K for K candidates)."""
    task = BENCHMARK_TASKS[canonical_task_name(name)]
    dev = np.asarray(dev_labels)
    if task.kind == "ranking":
        k = num_candidates
        mrr = float(sum(1.0 / r for r in range(1, k + 1)) / k)
        return {"accuracy_at_1": 1.0 / k, "mrr": mrr, "score": (1.0 / k + mrr) / 2}
    if task.kind == "regression":
        constant = np.full(len(dev), float(np.mean(np.asarray(train_labels, dtype=np.float64))))
    else:
        values, counts = np.unique(np.asarray(train_labels), return_counts=True)
        constant = np.full(len(dev), values[np.argmax(counts)])
    return task_metrics(name, constant, dev)


__all__ = ["BenchmarkTask", "Examples", "GLUE_TASKS", "WIKI_RANKING", "BENCHMARK_TASKS",
           "canonical_task_name", "read_glue", "build_wiki_ranking", "accuracy", "f1_binary",
           "matthews_corrcoef", "pearson", "average_ranks", "spearman", "ranking_metrics", "task_metrics",
           "baseline_metrics"]
