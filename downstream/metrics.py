"""Dev metrics of the fine-tuning benchmarks, and what an input-blind model scores on them.

GLUE's metrics: accuracy, binary F1 (positive class 1), Matthews correlation, Pearson and Spearman correlation
(ties get average ranks); ranking's accuracy@1 and mean reciprocal rank (ties count against the positive), of
which C3's multiple-choice accuracy is the first. Implemented with NumPy, so no scikit-learn or SciPy is needed;
``tests/test_glue_metrics.py`` checks them against hand-computed values (and SciPy / scikit-learn when
installed). A task's ``score`` is the mean of its metrics (GLUE's convention for MRPC, QQP, STS-B), and over its
dev sets for MNLI (matched and mismatched).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from downstream.benchmarks import BENCHMARK_TASKS, canonical_task_name


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
    ranks above it), so constant scores earn no credit. Slots of absent candidates (a question with fewer
    choices than the widest one) hold ``-inf`` and so rank below every real one."""
    s = np.asarray(scores, dtype=np.float64)
    idx = np.asarray(positive, dtype=np.int64)
    positive_scores = s[np.arange(len(idx)), idx]
    higher_or_tied = (s >= positive_scores[:, None]).sum(axis=1) - 1  # other candidates at or above it
    rank = 1 + higher_or_tied
    return {"accuracy_at_1": float((rank == 1).mean()), "mrr": float((1.0 / rank).mean())}


def task_metrics(name: str, predictions: ArrayLike, labels: ArrayLike) -> dict[str, float]:
    """The metrics of task ``name`` on one dev set: class ids, scores or (ranking) the [queries, candidates]
    score matrix against the labels. Adds ``score``, the mean of the task's metrics (how GLUE averages MRPC's
    and STS-B's two numbers)."""
    task = BENCHMARK_TASKS[canonical_task_name(name)]
    if task.kind == "ranking":
        ranked = ranking_metrics(predictions, labels)
        ranked["accuracy"] = ranked["accuracy_at_1"]  # multiple choice (C3): the top-scored choice is the answer
        values = {metric: ranked[metric] for metric in task.metrics}
    else:
        functions = {"accuracy": accuracy, "f1": f1_binary, "matthews_corr": matthews_corrcoef,
                     "pearson": pearson, "spearman": spearman}
        values = {metric: functions[metric](predictions, labels) for metric in task.metrics}
    values["score"] = float(np.mean([values[m] for m in task.metrics]))
    return values


def combine_dev_splits(name: str, per_split: dict[str, dict[str, float]]) -> dict[str, float]:
    """One task's metrics over its dev sets. A single dev set: its metrics unchanged. Several (MNLI): each
    metric suffixed by its set (``dev_matched`` -> ``accuracy_matched``), ``score`` the mean of the sets'
    scores, as GLUE averages MNLI-m and MNLI-mm."""
    if len(per_split) == 1:
        return dict(next(iter(per_split.values())))
    task = BENCHMARK_TASKS[canonical_task_name(name)]
    combined = {f"{metric}_{split.removeprefix('dev_')}": values[metric]
                for split, values in per_split.items() for metric in task.metrics}
    combined["score"] = float(np.mean([values["score"] for values in per_split.values()]))
    return combined


def baseline_metrics(name: str, train_labels: ArrayLike, dev_labels: ArrayLike,
                     num_candidates: int = 0) -> dict[str, float]:
    """What a model that ignores its input scores on one dev set: the train set's majority class
    (classification; multiple choice: the train set's most frequent answer position), the train mean
    (regression: correlations 0), or a random ranking of ``num_candidates`` candidates (expected
    accuracy@1 = 1/K, MRR = H_K / K)."""
    task = BENCHMARK_TASKS[canonical_task_name(name)]
    dev = np.asarray(dev_labels)
    if task.kind == "ranking" and num_candidates:
        k = num_candidates
        mrr = float(sum(1.0 / r for r in range(1, k + 1)) / k)
        return {"accuracy_at_1": 1.0 / k, "mrr": mrr, "score": (1.0 / k + mrr) / 2}
    if task.kind == "regression":
        constant = np.full(len(dev), float(np.mean(np.asarray(train_labels, dtype=np.float64))))
    else:
        values, counts = np.unique(np.asarray(train_labels), return_counts=True)
        constant = np.full(len(dev), values[np.argmax(counts)])
    if task.kind == "ranking":  # a fixed answer position: right wherever the answer sits there
        if task.metrics != ("accuracy",):
            raise ValueError(f"{task.name}: the random-ranking baseline needs num_candidates")
        hit = accuracy(constant, dev)
        return {"accuracy": hit, "score": hit}
    return task_metrics(name, constant, dev)


__all__ = ["accuracy", "f1_binary", "matthews_corrcoef", "pearson", "average_ranks", "spearman",
           "ranking_metrics", "task_metrics", "combine_dev_splits", "baseline_metrics"]
