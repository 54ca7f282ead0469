"""Frozen-encoder evaluation: what an encoder's sentence embeddings know, with no fine-tuning noise.

``ernie-cmtl probe PATH`` (:func:`probe`) takes a pretraining run directory (its latest checkpoint), one
``RUN_DIR/checkpoints/step_N`` or a Hugging Face BERT / ERNIE directory, all opened by
:func:`ernie_cmtl.pretrained.open_pretrained`, and reports, from the frozen encoder's mean-pooled last-layer
states (:func:`ernie_cmtl.retention.pooled_states`, the embedding the retention monitor watches):

- **zero-shot similarity**: Spearman of the cosine of the two sentences' embeddings against the gold score,
  on STS-B dev and on any TSV of scored pairs given (``pairs``);
- **linear probes**, SentEval style: single sentences as ``u``, pairs as ``[u, v, |u - v|, u * v]``;
  standardized features into scikit-learn's ``LogisticRegressionCV`` (classification; inverse regularization
  C chosen by stratified k-fold cross-validation on train, on the task's metric) or ``RidgeCV`` (STS-B; alpha
  by efficient leave-one-out), scored on the whole dev set with GLUE's metrics next to the input-blind
  baseline (:func:`downstream.metrics.baseline_metrics`). Train sets larger than ``max_train_examples`` are
  subsampled (a seeded draw, reported), so the whole probe takes minutes on two CPU cores.

English encoders get SST-2, CoLA, MRPC, RTE and STS-B; Chinese ones ChnSentiCorp and OCNLI (``language``:
``auto`` decides by the share of CJK tokens in the vocabulary). Everything is deterministic: eval mode, fixed
seeds, one thread count independent result. The results go to ``probe.json``.
"""

from __future__ import annotations

import json
import logging
import random
import re
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from tokenizers import Tokenizer
from torch import nn

from downstream.benchmarks import BENCHMARK_TASKS, Examples, canonical_task_name, read_benchmark
from downstream.metrics import baseline_metrics, task_metrics
from ernie_cmtl.config import ConfigError
from ernie_cmtl.pretrained import open_pretrained
from ernie_cmtl.retention import pooled_states, similarity_spearman
from ernie_cmtl.trainer import read_scored_pairs

log = logging.getLogger(__name__)

ENGLISH_PROBES = ("sst2", "cola", "mrpc", "rte", "stsb")
CHINESE_PROBES = ("chnsenticorp", "ocnli")
CV_SCORING = {"accuracy": "accuracy", "matthews_corr": "matthews_corrcoef"}
"""The scikit-learn scorer that picks C for a task, by the task's first GLUE metric."""
C_GRID = tuple(float(c) for c in np.logspace(-4, 1, 6))
ALPHA_GRID = tuple(float(a) for a in np.logspace(-2, 5, 15))


@dataclass
class ProbeSettings:
    """How :func:`probe` measures; the CLI's options."""

    tasks: list[str] | None = None
    """Linear-probe tasks (case-insensitive benchmark names; ``[]``: none). None: by ``language``."""
    language: Literal["auto", "en", "zh"] = "auto"
    """Which default task set: en (SST-2, CoLA, MRPC, RTE, STS-B, and STS-B zero-shot), zh (ChnSentiCorp,
    OCNLI); auto: zh when CJK characters are >= 20% of the vocabulary."""
    pairs: list[str] = field(default_factory=list)
    """More zero-shot sets: TSV files of scored sentence pairs (``sentence1``, ``sentence2`` and ``score``
    columns by header name, or the first three columns in that order)."""
    glue_dir: str = "../shared/data/glue"
    chnsenticorp_dir: str = "../shared/data/chnsenticorp"
    ocnli_dir: str = "../shared/data/ocnli"
    ocnli_train_file: str = "train.10k.json"
    max_train_examples: int = 2000
    """Per task, a seeded random subset of this many training examples (0 = all)."""
    max_dev_examples: int = 0
    """Per task and zero-shot set, a seeded random subset of this many dev examples (0 = all, the default:
    dev scores comparable with published ones; for quick checks only)."""
    max_seq_len: int = 128
    """Tokens per sentence, [CLS] and [SEP] included; longer sentences are cut."""
    batch_size: int = 64
    task_embedding_id: int = 0
    """Task-embedding row added to every input (fine-tuning's default: the first pretraining task); -1: none."""
    folds: int = 5
    """Cross-validation folds for the logistic regression's C."""
    seed: int = 0
    device: str = "cpu"
    """``cpu``, ``cuda``, ``cuda:1`` ... or ``auto`` (cuda if present)."""

    def __post_init__(self) -> None:
        if self.tasks is not None:
            try:
                self.tasks = [canonical_task_name(t) for t in self.tasks]
            except KeyError as err:
                raise ConfigError(f"probe tasks: {err.args[0]}") from None
            kinds = {t: BENCHMARK_TASKS[t].kind for t in self.tasks}
            ranking = [t for t, kind in kinds.items() if kind == "ranking"]
            if ranking:
                raise ConfigError(f"probe tasks: {', '.join(ranking)} is a ranking task (no linear probe)")
        minimums = {"max_train_examples": 0, "max_dev_examples": 0, "max_seq_len": 8, "batch_size": 1, "folds": 2}
        for key, minimum in minimums.items():
            if getattr(self, key) < minimum:
                raise ConfigError(f"probe {key}: expected an integer >= {minimum}, got {getattr(self, key)}")


class SentenceEncoder:
    """A frozen encoder as a sentence-to-embedding function, each distinct sentence encoded once."""

    def __init__(self, encoder: nn.Module, tokenizer: Tokenizer, settings: ProbeSettings) -> None:
        self.encoder = encoder
        self.tokenizer = tokenizer
        self.settings = settings
        self.cache: dict[str, torch.Tensor] = {}
        self.seconds = 0.0
        tokenizer.enable_truncation(settings.max_seq_len)

    def __call__(self, sentences: Sequence[str]) -> torch.Tensor:
        """[N, H] float32 mean-pooled embeddings of ``sentences``."""
        new = list(dict.fromkeys(s for s in sentences if s not in self.cache))
        if new:
            start = time.perf_counter()
            ids = [e.ids for e in self.tokenizer.encode_batch(new)]
            task = self.settings.task_embedding_id
            states = pooled_states(self.encoder, ids, batch_size=self.settings.batch_size,
                                   task_id=None if task < 0 else task)
            self.cache.update(zip(new, states, strict=True))
            self.seconds += time.perf_counter() - start
        return torch.stack([self.cache[s] for s in sentences])


def pair_features(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """SentEval's pair features: ``[u, v, |u - v|, u * v]``."""
    return np.concatenate([u, v, np.abs(u - v), u * v], axis=1)


def features(embed: Callable[[Sequence[str]], torch.Tensor], examples: Examples) -> np.ndarray:
    """One row per example: the sentence embedding, or a pair's :func:`pair_features`; float64."""
    u = embed(examples.texts_a).numpy().astype(np.float64)
    if examples.texts_b is None:
        return u
    return pair_features(u, embed(examples.texts_b).numpy().astype(np.float64))


def subsample(examples: Examples, limit: int, seed: int) -> Examples:
    """A seeded random ``limit`` examples (in file order), or all when there are no more than that."""
    if not limit or len(examples) <= limit:
        return examples
    return examples.subset(sorted(random.Random(seed).sample(range(len(examples)), limit)))


def fit_linear_probe(name: str, train_x: np.ndarray, train_y: np.ndarray, folds: int, seed: int) -> Any:
    """Standardize, then ridge (regression) or logistic regression (classes) with the regularization chosen
    by cross-validation on the training set alone."""
    from sklearn.linear_model import LogisticRegressionCV, RidgeCV
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    task = BENCHMARK_TASKS[name]
    if task.kind == "regression":
        model = RidgeCV(alphas=ALPHA_GRID)
    else:
        smallest = int(np.bincount(train_y.astype(np.int64)).min())
        cv = StratifiedKFold(max(2, min(folds, smallest)), shuffle=True, random_state=seed)
        model = LogisticRegressionCV(Cs=list(C_GRID), cv=cv, scoring=CV_SCORING[task.metrics[0]],
                                     max_iter=1000, random_state=seed)
    with warnings.catch_warnings():  # scikit-learn's notices of its own API changes (l1_ratios, attributes)
        warnings.simplefilter("ignore", FutureWarning)
        return make_pipeline(StandardScaler(), model).fit(train_x, train_y)


def chosen_regularization(pipeline: Any) -> dict[str, float]:
    """The C or alpha cross-validation chose (for probe.json)."""
    model = pipeline[-1]
    if hasattr(model, "alpha_"):
        return {"alpha": float(model.alpha_)}
    return {"C": float(np.ravel(model.C_)[0])}


def linear_probe(name: str, embed: Callable[[Sequence[str]], torch.Tensor], settings: ProbeSettings
                 ) -> dict[str, Any]:
    """One task: features of a (subsampled) train set and the whole dev set, a cross-validated linear model,
    its dev metrics and the input-blind baseline's."""
    task = BENCHMARK_TASKS[name]
    directory, files = _task_source(name, settings)
    train_all = read_benchmark(name, "train", directory, files)
    train = subsample(train_all, settings.max_train_examples, settings.seed)
    dev = subsample(read_benchmark(name, task.dev_splits[0], directory), settings.max_dev_examples,
                    settings.seed)
    train_y = np.asarray(train.labels)
    dev_y = np.asarray(dev.labels)
    if task.kind != "regression" and len(np.unique(train_y)) < 2:
        raise ConfigError(f"{name}: the {len(train)} training examples drawn hold one class; raise "
                          "max_train_examples")
    train_x, dev_x = features(embed, train), features(embed, dev)
    start = time.perf_counter()
    model = fit_linear_probe(name, train_x, train_y, settings.folds, settings.seed)
    predictions = model.predict(dev_x)
    return {"metrics": task_metrics(name, predictions, dev_y),
            "baseline": baseline_metrics(name, train_y, dev_y),
            "train_examples": len(train), "train_available": len(train_all), "dev_examples": len(dev),
            "features": int(model[-1].n_features_in_), **chosen_regularization(model),
            "fit_seconds": round(time.perf_counter() - start, 2)}


def _task_source(name: str, settings: ProbeSettings) -> tuple[str, list[str] | None]:
    key = BENCHMARK_TASKS[name].data_key
    directory = {"glue_dir": settings.glue_dir, "chnsenticorp_dir": settings.chnsenticorp_dir,
                 "ocnli_dir": settings.ocnli_dir}.get(key)
    if directory is None:
        raise ConfigError(f"{name}: no linear probe for data from {key}")
    files = [settings.ocnli_train_file] if name == "ocnli" else None
    return directory, files


def zero_shot(path: str | Path, embed: Callable[[Sequence[str]], torch.Tensor], limit: int = 0,
              seed: int = 0) -> dict[str, Any]:
    """Spearman of the cosine of each pair's embeddings against its score, over the whole file (or a seeded
    random ``limit`` pairs)."""
    first, second, scores = read_scored_pairs(path)
    if limit and len(scores) > limit:
        keep = sorted(random.Random(seed).sample(range(len(scores)), limit))
        first, second, scores = ([values[i] for i in keep] for values in (first, second, scores))
    return {"spearman": similarity_spearman(embed(first), embed(second), scores), "pairs": len(scores)}


def resolve_language(tokenizer: Tokenizer, language: str) -> str:
    """``auto``: ``zh`` when CJK characters are >= 20% of the vocabulary (Chinese BERT ~70%, English ~2%)."""
    if language != "auto":
        return language
    vocabulary = tokenizer.get_vocab()
    cjk = sum(1 for token in vocabulary if re.search(r"[\u4e00-\u9fff]", token))
    return "zh" if cjk >= 0.2 * max(1, len(vocabulary)) else "en"


def probe_encoder(encoder: nn.Module, tokenizer: Tokenizer, settings: ProbeSettings | None = None,
                  progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Probe a frozen ``encoder`` (any module called as ``encoder(ids, mask, segments, task_ids)`` -> states)
    with its ``tokenizer``; returns what :func:`probe` writes to ``probe.json``, minus the checkpoint."""
    settings = settings or ProbeSettings()
    say = progress or (lambda message: None)
    language = resolve_language(tokenizer, settings.language)
    tasks = settings.tasks if settings.tasks is not None else \
        list(CHINESE_PROBES if language == "zh" else ENGLISH_PROBES)
    embed = SentenceEncoder(encoder, tokenizer, settings)
    start = time.perf_counter()
    result: dict[str, Any] = {"language": language, "settings": asdict(settings), "zero_shot": {},
                              "probes": {}}
    sets = ([("stsb_dev", str(Path(settings.glue_dir) / "STS-B" / "dev.tsv"))] if language == "en" else [])
    sets += [(Path(p).stem if Path(p).stem not in dict(sets) else str(p), str(p)) for p in settings.pairs]
    for name, path in sets:
        say(f"zero-shot similarity: {name}")
        result["zero_shot"][name] = {**zero_shot(path, embed, settings.max_dev_examples, settings.seed),
                                     "file": path}
    for name in tasks:
        say(f"linear probe: {name}")
        result["probes"][name] = linear_probe(name, embed, settings)
    scores = [values["metrics"]["score"] for values in result["probes"].values()]
    result["probe_average"] = float(np.mean(scores)) if scores else None
    result["baseline_average"] = (float(np.mean([v["baseline"]["score"] for v in result["probes"].values()]))
                                  if scores else None)
    result["seconds"] = {"encode": round(embed.seconds, 2), "total": round(time.perf_counter() - start, 2),
                         "sentences": len(embed.cache)}
    return result


def probe(checkpoint: str | Path, settings: ProbeSettings | None = None, out: str | Path | None = None,
          progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Probe the encoder of ``checkpoint`` (a run directory, one ``checkpoints/step_N``, or a Hugging Face
    model directory) and write the results to ``out`` (default: ``CHECKPOINT/probe.json``); returns them."""
    settings = settings or ProbeSettings()
    pretrained = open_pretrained(checkpoint)
    device = settings.device if settings.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    encoder = pretrained.encoder().to(torch.device(device))
    if settings.task_embedding_id >= pretrained.model_config.num_task_embeddings:
        raise ConfigError(f"probe task_embedding_id: {settings.task_embedding_id} is not a row of the "
                          f"{pretrained.model_config.num_task_embeddings}-row task-embedding table")
    with torch.inference_mode():
        result = probe_encoder(encoder, pretrained.tokenizer, settings, progress)
    result = {"checkpoint": str(pretrained.checkpoint), "task_ids": pretrained.task_ids, **result}
    path = Path(out) if out is not None else Path(checkpoint) / "probe.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    result["written_to"] = str(path)
    return result


def format_table(result: dict[str, Any]) -> str:
    """The probe as one plain-text table, metrics in percent: zero-shot rows, then one row per task (its GLUE
    metrics, the input-blind baseline's same metrics, the train examples used); the average row averages the
    task scores (GLUE's mean of a task's metrics)."""
    rows = [("set", "metric", "score", "baseline", "train")]
    for name, values in result["zero_shot"].items():
        rows.append((f"{name} (zero-shot)", "spearman", f"{100 * values['spearman']:.2f}", "0.00",
                     f"- ({values['pairs']} pairs)"))
    for name, values in result["probes"].items():
        metrics = values["metrics"]
        shown = "/".join(k for k in metrics if k != "score")
        score = "/".join(f"{100 * metrics[k]:.2f}" for k in metrics if k != "score")
        baseline = "/".join(f"{100 * values['baseline'][k]:.2f}" for k in metrics if k != "score")
        rows.append((name, shown, score, baseline, f"{values['train_examples']}/{values['train_available']}"))
    if result.get("probe_average") is not None:
        rows.append(("probe average", "score", f"{100 * result['probe_average']:.2f}",
                     f"{100 * result['baseline_average']:.2f}", ""))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
             for row in rows]
    return "\n".join([lines[0], "-" * len(lines[0]), *lines[1:]])


__all__ = ["ENGLISH_PROBES", "CHINESE_PROBES", "ProbeSettings", "SentenceEncoder", "pair_features", "features",
           "subsample", "fit_linear_probe", "linear_probe", "zero_shot", "resolve_language", "probe_encoder",
           "probe", "format_table"]
