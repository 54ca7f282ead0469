"""Fine-tuning's data: each task's examples read once, tokenized once, then batched by index.

Flow: a task's splits (:mod:`downstream.benchmarks` readers; ``wikiqp`` built from Wikipedia) -> optional
seeded subsets (``max_train_examples``; ``max_eval_examples`` a fixed dev subset) -> :func:`encode_examples`
with the pretrained model's tokenizer -> :class:`TaskData` (train, dev sets, the input-blind baseline). A step's
batch is :func:`collate` of the indices :class:`EpochBatches` hands out; which task a multi-task step trains is
:func:`task_order` of :func:`sampling_probabilities` (pure functions of their inputs and the seed).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer
from torch import Tensor

from downstream.benchmarks import (
    BENCHMARK_TASKS,
    BenchmarkTask,
    Examples,
    HeadKind,
    build_wiki_ranking,
    read_benchmark,
)
from downstream.config import FinetuneConfig
from downstream.metrics import baseline_metrics, combine_dev_splits
from ernie_cmtl.config import ConfigError
from ernie_cmtl.tasks import pad_sequences

DEV_SUBSET_SEED = 1234
"""Fixed, so that ``max_eval_examples`` picks the same dev examples in every run."""


@dataclass
class Encoded:
    """One split of one task as token ids. Example ``i`` owns the sequences ``starts[i]`` to
    ``starts[i + 1] - 1``: one, or (ranking) one per candidate, a query's candidates consecutive."""

    input_ids: list[list[int]]
    segment_ids: list[list[int]]
    labels: list[float]
    starts: list[int]
    """Cumulative sequence counts, ``len(labels) + 1`` entries from 0."""
    group: int = 1
    """The most sequences one example owns: a ranking task's candidates (C3: 4, wikiqp: K); 1 otherwise.
    Every batch of the task is that wide, so scores of all batches line up."""

    def __len__(self) -> int:
        return len(self.labels)


def encode_examples(tokenizer: Tokenizer, examples: Examples, task: BenchmarkTask,
                    max_seq_len: int, group: int = 0) -> Encoded:
    """Tokenize with the run's tokenizer ([CLS] a [SEP] (b [SEP]); segment ids from the tokenizer), cut to
    ``max_seq_len`` (pairs: the longer side first). Ranking examples become one (query, candidate) pair per
    candidate; ``group`` (0: the widest example here) fixes the batch width, so that train and dev agree."""
    tokenizer.enable_truncation(max_seq_len)
    if task.kind == "ranking":
        inputs: list[Any] = [(q, c) for q, cands in zip(examples.texts_a, examples.candidates, strict=True)
                             for c in cands]
        sizes = [len(cands) for cands in examples.candidates]
    elif examples.texts_b is not None:
        inputs = list(zip(examples.texts_a, examples.texts_b, strict=True))
        sizes = [1] * len(inputs)
    else:
        inputs = list(examples.texts_a)
        sizes = [1] * len(inputs)
    starts = [0]
    for size in sizes:
        starts.append(starts[-1] + size)
    encodings = tokenizer.encode_batch(inputs)
    return Encoded([e.ids for e in encodings], [e.type_ids for e in encodings], list(examples.labels), starts,
                   max(group, max(sizes, default=1)))


def collate(data: Encoded, indices: list[int], kind: HeadKind, pad_id: int, task_embedding_id: int,
            device: torch.device) -> dict[str, Tensor]:
    """Examples at ``indices`` -> padded tensors. Ranking batches hold every candidate of each query (its
    sequences consecutive) and ``choice_mask`` [queries, group]: True where a slot holds a real candidate."""
    rows = [r for i in indices for r in range(data.starts[i], data.starts[i + 1])]
    input_ids, attention_mask = pad_sequences([data.input_ids[r] for r in rows], pad_id)
    segment_ids, _ = pad_sequences([data.segment_ids[r] for r in rows], 0)
    labels = torch.tensor([data.labels[i] for i in indices],
                          dtype=torch.float32 if kind == "regression" else torch.long)
    batch = {"input_ids": input_ids, "attention_mask": attention_mask, "segment_ids": segment_ids,
             "labels": labels}
    if kind == "ranking":
        sizes = torch.tensor([data.starts[i + 1] - data.starts[i] for i in indices])
        batch["choice_mask"] = torch.arange(data.group)[None, :] < sizes[:, None]
    if task_embedding_id >= 0:
        batch["task_ids"] = torch.full((len(rows),), task_embedding_id, dtype=torch.long)
    return {k: v.to(device) for k, v in batch.items()}


class EpochBatches:
    """Endless batches of example indices: each epoch a fresh seeded permutation."""

    def __init__(self, size: int, batch_size: int, seed: int) -> None:
        self.size, self.batch_size = size, batch_size
        self.generator = torch.Generator().manual_seed(seed)
        self.order: list[int] = []

    def next(self) -> list[int]:
        """The next batch (the last one of an epoch may be short)."""
        if not self.order:
            self.order = torch.randperm(self.size, generator=self.generator).tolist()
        batch, self.order = self.order[: self.batch_size], self.order[self.batch_size:]
        return batch


def sampling_probabilities(sizes: dict[str, int], sampling: str,
                           temperature: float = 1.0) -> dict[str, float]:
    """Probability that a multi-task step trains each task: ~ size (``proportional``, MT-DNN's epoch over all
    tasks' batches), equal (``uniform``) or ~ size^(1/temperature) (``temperature``)."""
    if sampling == "uniform":
        weights = dict.fromkeys(sizes, 1.0)
    elif sampling == "proportional":
        weights = {k: float(v) for k, v in sizes.items()}
    elif sampling == "temperature":
        weights = {k: float(v) ** (1.0 / temperature) for k, v in sizes.items()}
    else:
        raise ValueError(f"unknown sampling {sampling!r}")
    total = sum(weights.values())
    return {k: w / total for k, w in weights.items()}


def task_order(probabilities: dict[str, float], steps: int, seed: int) -> list[str]:
    """The task each of ``steps`` steps trains: seeded independent draws (a pure function of its inputs)."""
    names = list(probabilities)
    weights = torch.tensor([probabilities[n] for n in names], dtype=torch.float64)
    draws = torch.multinomial(weights, steps, replacement=True, generator=torch.Generator().manual_seed(seed))
    return [names[i] for i in draws.tolist()]




@dataclass
class TaskData:
    """One task, read and tokenized: what the loop trains on and evaluates."""

    spec: BenchmarkTask
    train: Encoded
    devs: dict[str, Encoded]
    """Each dev set by split name (``dev``; MNLI: ``dev_matched``, ``dev_mismatched``)."""
    baseline: dict[str, float]
    skipped: dict[str, int] = field(default_factory=dict)
    """Rows the readers left out by rule, per split (OCNLI's label ``-``, QQP's short rows); empty if none."""

    @property
    def dev_size(self) -> int:
        return sum(len(dev) for dev in self.devs.values())


def _subset(examples: Examples, limit: int, seed: int, keep_order: bool) -> Examples:
    if not limit or limit >= len(examples):
        return examples
    picked = torch.randperm(len(examples), generator=torch.Generator().manual_seed(seed))[:limit].tolist()
    return examples.subset(sorted(picked) if keep_order else picked)


_DATA_DIR_HINTS = {
    "glue_dir": "the GLUE task folders SST-2/, CoLA/, MRPC/, RTE/, STS-B/, MNLI/, QQP/, QNLI/, WNLI/",
    "chnsenticorp_dir": "ChnSentiCorp's train.tsv and dev.tsv",
    "ocnli_dir": "OCNLI's train.*.json and dev.json",
    "c3_dir": "C3's c3-{m,d}-{train,dev}.json",
}


def read_task_splits(name: str, config: FinetuneConfig) -> dict[str, Examples]:
    """Every split of one task (``train`` first, then its dev sets), whole, from where ``config`` says."""
    spec = BENCHMARK_TASKS[name]
    if spec.reader == "wiki":
        return {split: build_wiki_ranking(config.ranking_corpus, config.ranking_candidates, split)
                for split in ("train", "dev")}
    data_dir = Path(getattr(config, spec.data_key)).expanduser()
    if not data_dir.is_dir():
        raise ConfigError(f"{spec.data_key}: directory not found: {data_dir.resolve()} (expected "
                          f"{_DATA_DIR_HINTS[spec.data_key]}; set it with --set {spec.data_key}=PATH)")
    splits = {}
    for split in spec.splits:
        files = [config.ocnli_train_file] if name == "ocnli" and split == "train" else None
        splits[split] = read_benchmark(name, split, data_dir, files)
    return splits


def load_task_data(name: str, config: FinetuneConfig, tokenizer: Tokenizer) -> TaskData:
    """Read, subset and tokenize one task's train split and dev sets; the baseline is computed from the
    whole train set on the (subset) dev sets."""
    spec = BENCHMARK_TASKS[name]
    splits = read_task_splits(name, config)
    train = splits.pop("train")
    devs = {split: _subset(dev, config.max_eval_examples, DEV_SUBSET_SEED, keep_order=True)
            for split, dev in splits.items()}
    candidates = config.ranking_candidates if spec.reader == "wiki" else 0
    baseline = combine_dev_splits(name, {split: baseline_metrics(name, train.labels, dev.labels, candidates)
                                         for split, dev in devs.items()})
    skipped = {split: examples.skipped for split, examples in {"train": train, **splits}.items()
               if examples.skipped}
    train = _subset(train, config.max_train_examples, config.seed, keep_order=False)
    group = max((len(c) for examples in (train, *devs.values()) for c in examples.candidates), default=1)
    return TaskData(spec, encode_examples(tokenizer, train, spec, config.max_seq_len, group),
                    {split: encode_examples(tokenizer, dev, spec, config.max_seq_len, group)
                     for split, dev in devs.items()}, baseline, skipped)


def examples_per_batch(data: TaskData, batch_size: int) -> int:
    """Examples in one of the task's training batches: ``batch_size`` sequences (ranking: queries, each with
    all its candidates)."""
    return max(1, batch_size // data.train.group)
