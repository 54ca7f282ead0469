"""Fine-tuning a pretrained encoder on GLUE, Chinese sets and a ranking task, the MT-DNN way (Liu et al., 2019).

Flow: a pretraining checkpoint (``RUN_DIR`` or ``RUN_DIR/checkpoints/step_N``) -> its encoder, model config
and tokenizer -> each task's train/dev examples (:mod:`downstream.benchmarks`), tokenized once -> stage 1:
multi-task fine-tuning, each step one task's batch through the encoder and that task's output layer ->
optional stage 2: a copy of the multi-task model fine-tuned on each task alone -> dev metrics
(:mod:`downstream.metrics`), written to ``results.json``.

MT-DNN's four output-layer kinds: single-sentence classification (SST-2, CoLA, ChnSentiCorp) and pair
classification (MRPC, RTE, MNLI, QQP, QNLI, WNLI, OCNLI) with cross-entropy, similarity regression (STS-B, one
output, mean squared error), and ranking (``wikiqp``: a query with K candidate passages, one relevant; ``c3``: a
question with its 2-4 answer choices). Each (query, candidate) pair gets one score and the loss is cross-entropy
of a softmax over the query's scores; a query with fewer candidates than the widest of the task has its empty
slots masked out of the softmax. Single sentences use the pooled first-token state
(``SequenceClassificationHead``). Pair inputs by default add soft-match features of their two segments
(``PairMatchingHead``; ``pair_head: cls`` turns that off). docs/FINETUNING.md explains why and what it
measured.

Sharing: ``hard`` trains one encoder for all tasks; ``soft`` gives every task its own copy of the pretrained
encoder and adds ``soft_sharing_weight * soft_sharing_penalty(copies)`` to every step's loss.

Monitoring: every record goes to ``RUN_DIR/metrics.jsonl``; with ``monitor.wandb.enabled`` (``--wandb``) the
same values also go to Weights & Biases the way pretraining logs them (:mod:`ernie_cmtl.monitor`): task-namespaced
keys (``train/<task>/loss``, ``dev/<task>/<metric>``), the resolved config as the run config, files in
``RUN_DIR/wandb/``, the mode from ``monitor.wandb.mode`` / ``WANDB_MODE``. See :class:`FinetuneMonitor`.
"""

from __future__ import annotations

import copy
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
import yaml
from tokenizers import Tokenizer
from torch import Tensor, nn
from tqdm.auto import tqdm

from data_builders.tokenizer import load_hf_tokenizer
from downstream.benchmarks import (
    BENCHMARK_TASKS,
    GLUE_TASKS,
    BenchmarkTask,
    Examples,
    HeadKind,
    build_wiki_ranking,
    canonical_task_name,
    read_benchmark,
)
from downstream.metrics import baseline_metrics, combine_dev_splits, task_metrics
from ernie_cmtl.checkpoint import CheckpointError, load_run_checkpoint
from ernie_cmtl.config import (
    ConfigError,
    ModelConfig,
    TrainConfig,
    WandbConfig,
    from_dict,
    read_raw,
    require,
    to_plain,
)
from ernie_cmtl.engine import lr_lambda, param_groups
from ernie_cmtl.hf import is_hf_model_dir, load_hf_model
from ernie_cmtl.model import Encoder, PairMatchingHead, SequenceClassificationHead
from ernie_cmtl.monitor import resolve_wandb_mode
from ernie_cmtl.tasks import pad_sequences

log = logging.getLogger(__name__)

DEV_SUBSET_SEED = 1234
"""Fixed, so that ``max_eval_examples`` picks the same dev examples in every run."""


@dataclass
class FinetuneMonitorConfig:
    """Fine-tuning's ``monitor`` section: the ``monitor.wandb`` keys of pretraining (``ernie_cmtl.config``)."""

    wandb: WandbConfig = field(default_factory=WandbConfig)
    """``enabled`` (``--wandb``), ``project`` (``--wandb-project``), ``entity``, ``mode`` (auto: WANDB_MODE,
    else online with a wandb login, else offline), ``tags``, ``name`` (default: the run directory's name).
    ``log_checkpoints`` must stay false: fine-tuning writes no checkpoints."""

    def __post_init__(self) -> None:
        require(not self.wandb.log_checkpoints, "wandb.log_checkpoints", "false (fine-tuning writes no "
                "checkpoints to upload)")


@dataclass
class FinetuneConfig:
    """Everything a fine-tuning run reads; ``configs/finetune_glue.yaml`` spells out these defaults."""

    tasks: list[str] = field(default_factory=lambda: ["sst2", "cola", "mrpc", "rte", "stsb"])
    """Tasks (case-insensitive): GLUE's sst2, cola, mrpc, rte, stsb, mnli, qqp, qnli, wnli; wikiqp; the Chinese
    chnsenticorp, ocnli, c3. ``--tasks`` overrides."""
    glue_dir: str = "../shared/data/glue"
    """The GLUE folder (SST-2/, CoLA/, MRPC/, RTE/, STS-B/, MNLI/, QQP/, QNLI/, WNLI/, each with train.tsv and
    dev.tsv; MNLI with dev_matched.tsv and dev_mismatched.tsv), relative to the working directory. Only the
    folders of the tasks run need to exist."""
    chnsenticorp_dir: str = "../shared/data/chnsenticorp"
    """ChnSentiCorp's folder (train.tsv, dev.tsv as released by LUGE / PaddleNLP)."""
    ocnli_dir: str = "../shared/data/ocnli"
    """OCNLI's folder (the CLUE release's JSON-lines files: ``ocnli_train_file`` and dev.json)."""
    ocnli_train_file: str = "train.10k.json"
    """OCNLI's training file in ``ocnli_dir``: train.50k.json is the full set, train.10k.json / train.3k.json
    the release's subsets (all are validated on the same dev.json)."""
    c3_dir: str = "../shared/data/c3"
    """C3's folder (c3-m-train.json, c3-d-train.json, c3-m-dev.json, c3-d-dev.json: written texts and
    dialogues, read together)."""
    ranking_corpus: list[str] = field(
        default_factory=lambda: ["../shared/data/wikipedia-en-2018-sample/valid"])
    """Wikipedia files the ``wikiqp`` ranking task is built from (queries = titles, passages = paragraphs; one
    held-out paragraph per article is the dev set)."""
    ranking_candidates: int = 4
    """K: passages per ``wikiqp`` query (one relevant, K - 1 from other articles). C3 has its own 2-4 choices."""
    run_dir: str = "runs/finetune"
    """Where ``config.yaml``, ``metrics.jsonl``, ``train.log`` and ``results.json`` go."""
    seed: int = 0
    max_seq_len: int = 128
    """Tokens per sequence (pairs: both segments together), special tokens included; longer input is cut."""
    batch_size: int = 32
    """Sequences per step (ranking: ``batch_size // ranking_candidates`` queries, each with its candidates)."""
    eval_batch_size: int = 128
    lr: float = 2e-4
    """Peak learning rate. BERT-base takes 2e-5..5e-5; the small flavours here learn faster at ~1e-4..5e-4."""
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    """Share of each stage's steps spent warming up linearly; then linear decay to 0."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this (0 = off)."""
    max_steps: int = 1000
    """Steps of stage 1, multi-task fine-tuning (each step trains one task's batch)."""
    per_task_steps: int = 0
    """Steps of stage 2 per task: a copy of the multi-task model fine-tuned on that task alone (0 = off)."""
    sampling: Literal["proportional", "uniform", "temperature"] = "proportional"
    """Which task a stage-1 step trains: probability ~ train size (MT-DNN), equal, or ~ size^(1/temperature)."""
    temperature: float = 2.0
    """For ``sampling: temperature``: 1 = proportional, larger flattens toward uniform."""
    task_embedding_id: int = 0
    """Task-embedding row added to every fine-tuning input (0: the first pretraining task, knowledge masking
    in the default runs; see the checkpoint's trainer_state.json ``task_ids``); -1: none."""
    pair_head: Literal["match", "cls"] = "match"
    """Output layer of the tasks whose input is a pair of segments (all but SST-2, CoLA and ChnSentiCorp; C3's
    pairs are (question and document, choice)). ``match``: the
    pooled [CLS] state plus kernel-pooled soft-match features of the two segments' tokens
    (``model.PairMatchingHead``); ``cls``: the pooled [CLS] state alone (``SequenceClassificationHead``, as
    single-sentence tasks)."""
    sharing: Literal["hard", "soft"] = "hard"
    """hard: one encoder for all tasks. soft: one encoder copy per task, tied by ``soft_sharing_weight``."""
    soft_sharing_weight: float = 1e-3
    """Weight of ``soft_sharing_penalty`` (sum over tasks of ||theta_t - mean theta||^2) in the loss."""
    max_train_examples: int = 0
    """Per task, train on a seeded random subset of this many examples (0 = all)."""
    max_eval_examples: int = 0
    """Per task, evaluate on a fixed subset of this many dev examples (0 = the whole dev set)."""
    eval_every: int = 0
    """Also evaluate every N stage-1 steps (0 = only at the end of each stage)."""
    log_every: int = 50
    device: str = "auto"
    """``auto`` (cuda if present, else cpu), ``cpu``, ``cuda``, ``cuda:1`` ..."""
    monitor: FinetuneMonitorConfig = field(default_factory=FinetuneMonitorConfig)
    """Weights & Biases logging of the train losses and dev metrics (``monitor.wandb.*``; off by default)."""

    def __post_init__(self) -> None:
        require(bool(self.tasks), "tasks", "at least one task name")
        canonical = []
        for i, name in enumerate(self.tasks):
            try:
                canonical.append(canonical_task_name(name))
            except KeyError as err:
                raise ConfigError(f"tasks[{i}]: {err.args[0]}") from None
        require(len(set(canonical)) == len(canonical), "tasks", "distinct task names")
        self.tasks = canonical
        require(self.ranking_candidates >= 2, "ranking_candidates", "an integer >= 2")
        require(8 <= self.max_seq_len <= 4096, "max_seq_len", "an integer in [8, 4096]")
        for key in ("batch_size", "eval_batch_size", "max_steps", "log_every"):
            require(getattr(self, key) >= 1, key, "an integer >= 1")
        for key in ("per_task_steps", "max_train_examples", "max_eval_examples", "eval_every"):
            require(getattr(self, key) >= 0, key, "an integer >= 0")
        require(self.lr > 0, "lr", "a number > 0")
        require(self.weight_decay >= 0, "weight_decay", "a number >= 0")
        require(0.0 <= self.warmup_ratio < 1.0, "warmup_ratio", "a number in [0, 1)")
        require(self.grad_clip >= 0, "grad_clip", "a number >= 0")
        require(self.temperature > 0, "temperature", "a number > 0")
        require(self.task_embedding_id >= -1, "task_embedding_id", "-1 (none) or a task-embedding row >= 0")
        require(self.soft_sharing_weight >= 0, "soft_sharing_weight", "a number >= 0")


def load_finetune_config(path: str | Path | None = None,
                         overrides: list[str] | None = None) -> FinetuneConfig:
    """Read a fine-tuning config from YAML (defaults when ``path`` is None) plus ``KEY=VALUE`` overrides."""
    return from_dict(FinetuneConfig, read_raw(path, overrides))


# ---------------------------------------------------------------------------------------------------------
# The pretrained checkpoint


@dataclass
class Pretrained:
    """What fine-tuning takes from a pretraining run."""

    checkpoint: Path
    model_config: ModelConfig
    tokenizer: Tokenizer
    encoder_state: dict[str, Tensor]
    """The ``encoder.*`` entries of the checkpoint's model state, prefix removed."""
    task_ids: dict[str, int]
    """Pretraining task -> task-embedding row (empty when the checkpoint does not record them)."""

    def encoder(self) -> Encoder:
        """A fresh encoder holding the pretrained weights."""
        encoder = Encoder(self.model_config)
        encoder.load_state_dict(self.encoder_state)
        return encoder


def load_pretrained(path: str | Path) -> Pretrained:
    """Load a pretraining run directory (its latest checkpoint), one ``checkpoints/step_N`` directory, or a
    Hugging Face BERT / ERNIE model directory (``config.json`` + weights + tokenizer files, read by
    :func:`ernie_cmtl.hf.load_hf_model`), so that a public model's baseline goes through the same code.

    A run: ``RUN_DIR/config.yaml`` (its ``model`` section), ``RUN_DIR/tokenizer.json`` and the checkpoint's
    weights (``weights_only=True``). Raises :class:`CheckpointError` / ``HFCheckpointError`` naming what is
    missing."""
    path = Path(path).expanduser()
    if is_hf_model_dir(path):
        return _hf_pretrained(path)
    run = load_run_checkpoint(path)
    pretrained = Pretrained(run.checkpoint, run.model_config, run.tokenizer, run.encoder_state, run.task_ids)
    try:
        pretrained.encoder()
    except RuntimeError as err:
        raise CheckpointError(f"{run.checkpoint}: weights do not fit {run.run_dir / 'config.yaml'}'s model section: "
                              f"{str(err).splitlines()[0]}") from None
    return pretrained


def _hf_pretrained(directory: Path) -> Pretrained:
    """A Hugging Face model directory as fine-tuning's starting point: its encoder, tokenizer and (ERNIE
    exports of ours) task ids; task embeddings zero unless the checkpoint has them."""
    hf = load_hf_model(directory)
    rows = hf.task_embeddings.shape[0] if hf.task_embeddings is not None else 1
    model_config = ModelConfig(init_from=str(directory), num_task_embeddings=rows, **hf.sizes)
    task_ids = dict((hf.config.get("ernie_cmtl") or {}).get("task_ids", {}))
    return Pretrained(directory, model_config, load_hf_tokenizer(directory), hf.encoder_state_for(rows), task_ids)


# ---------------------------------------------------------------------------------------------------------
# Data: examples -> token ids, once; batches by index


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


# ---------------------------------------------------------------------------------------------------------
# Model: encoder(s) + one output layer per task


class FinetuneModel(nn.Module):
    """One encoder per task name and one output layer per task. Hard sharing maps every task to the same
    encoder module (its parameters are counted and optimized once); soft sharing maps each to its own copy."""

    def __init__(self, encoders: dict[str, Encoder], heads: dict[str, nn.Module],
                 kinds: dict[str, HeadKind]) -> None:
        super().__init__()
        self.encoders = nn.ModuleDict(encoders)
        self.heads = nn.ModuleDict(heads)
        self.kinds = dict(kinds)

    @classmethod
    def build(cls, encoder: Encoder, tasks: list[BenchmarkTask], sharing: str,
              pair_head: str = "match") -> FinetuneModel:
        """Fresh output layers on ``encoder`` (soft sharing: a deep copy of it per task). Tasks whose input is
        a pair of segments get a :class:`PairMatchingHead` when ``pair_head == "match"``."""
        cfg = encoder.config
        encoders = {t.name: encoder if sharing == "hard" else copy.deepcopy(encoder) for t in tasks}
        heads = {t.name: PairMatchingHead(cfg, t.num_labels) if t.kind != "single" and pair_head == "match"
                 else SequenceClassificationHead(cfg, t.num_labels) for t in tasks}
        return cls(encoders, heads, {t.name: t.kind for t in tasks})

    def distinct_encoders(self) -> list[Encoder]:
        """The encoder modules, each once (one under hard sharing)."""
        return list({id(e): e for e in self.encoders.values()}.values())

    def single_task(self, task: str) -> FinetuneModel:
        """A deep copy holding only ``task``'s encoder and output layer (for per-task fine-tuning)."""
        return FinetuneModel({task: copy.deepcopy(self.encoders[task])},
                             {task: copy.deepcopy(self.heads[task])}, {task: self.kinds[task]})

    def forward(self, task: str, batch: dict[str, Tensor]) -> Tensor:
        """Class logits [B, C]; regression scores [B]; ranking scores [queries, candidates] (``-inf`` in the
        slots ``batch["choice_mask"]`` marks absent)."""
        encoder, head = self.encoders[task], self.heads[task]
        hidden = encoder(batch["input_ids"], batch["attention_mask"], batch.get("segment_ids"),
                         batch.get("task_ids"))
        if isinstance(head, PairMatchingHead):
            with torch.no_grad():  # the head reads its match features without gradient
                words = encoder.embeddings.word(batch["input_ids"])
            logits = head(hidden, words, batch["attention_mask"], batch["segment_ids"])
        else:
            logits = head(hidden)
        if self.kinds[task] == "regression":
            return logits.squeeze(-1)
        if self.kinds[task] == "ranking":
            scores = logits.squeeze(-1)
            mask = batch.get("choice_mask")
            if mask is None:  # every query has the same number of candidates
                return scores.view(batch["labels"].shape[0], -1)
            # absent choices score -inf: no probability in the softmax, ranked below every real choice
            return scores.new_full(mask.shape, float("-inf")).masked_scatter(mask, scores)
        return logits


def task_loss(kind: HeadKind, logits: Tensor, labels: Tensor) -> Tensor:
    """Cross-entropy over classes (classification) or over a query's candidates (ranking); MSE for
    regression."""
    if kind == "regression":
        return F.mse_loss(logits.float(), labels)
    return F.cross_entropy(logits.float(), labels)


def soft_sharing_penalty(encoders: list[nn.Module]) -> Tensor:
    """Soft parameter sharing's tie between per-task encoder copies: sum over copies t and parameters of
    ||theta_t - mean_t theta_t||^2 (the squared distance of each copy to their mean; with two copies, half
    their squared distance). Zero for identical copies or a single encoder."""
    named = [dict(e.named_parameters()) for e in encoders]
    first = next(iter(named[0].values()))
    if len(named) < 2:
        return first.new_zeros(())
    total = first.new_zeros((), dtype=torch.float32)
    for name in named[0]:
        stacked = torch.stack([params[name] for params in named]).float()
        offsets = stacked - stacked[0]  # exact zeros for identical copies (a float mean of them is not exact)
        total = total + (offsets - offsets.mean(0)).pow(2).sum()
    return total


# ---------------------------------------------------------------------------------------------------------
# Training and evaluation


@dataclass
class TaskData:
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


def _examples_per_batch(data: TaskData, config: FinetuneConfig) -> int:
    return max(1, config.batch_size // data.train.group)


@torch.no_grad()
def evaluate(model: FinetuneModel, data: dict[str, TaskData], config: FinetuneConfig, pad_id: int,
             device: torch.device) -> dict[str, dict[str, float]]:
    """Dev metrics of every task ``model`` has an output layer for."""
    was_training = model.training
    model.eval()
    results = {}
    for name in model.heads:
        task = data[name]
        per_split = {}
        for split, dev in task.devs.items():
            outputs = []
            step = max(1, config.eval_batch_size // dev.group)
            for start in range(0, len(dev), step):
                indices = list(range(start, min(start + step, len(dev))))
                batch = collate(dev, indices, task.spec.kind, pad_id, config.task_embedding_id, device)
                logits = model(name, batch).float()
                outputs.append(logits.argmax(-1) if task.spec.kind in ("single", "pair") else logits)
            per_split[split] = task_metrics(name, torch.cat(outputs).cpu().numpy(), dev.labels)
        results[name] = {k: round(v, 6) for k, v in combine_dev_splits(name, per_split).items()}
    model.train(was_training)
    return results


class FinetuneMonitor:
    """Appends a fine-tuning run's records to ``RUN_DIR/metrics.jsonl`` and, with ``monitor.wandb.enabled``,
    to a new wandb run (fine-tuning does not resume) in ``RUN_DIR/wandb/`` whose config is the
    resolved fine-tuning config. wandb keys follow pretraining's: ``train/<task>/loss`` (soft sharing also
    ``train/<task>/total_loss``), ``train/lr``, ``stage`` and ``task`` per logged step; ``dev/<task>/<metric>``
    (and ``score``) per evaluation; ``glue_score``, ``baseline/<task>/<metric>`` in the run summary. Stage steps
    restart at 1 in ``metrics.jsonl``; the wandb step runs on across stages (:meth:`end_stage`), as wandb
    needs. Mode ``disabled`` never imports wandb."""

    def __init__(self, run_dir: Path, cfg: WandbConfig, run_config: dict[str, Any]) -> None:
        self.path = run_dir / "metrics.jsonl"
        self.offset = 0
        """Steps of the stages already finished: the wandb step of a record is ``offset + step``."""
        self.run = None
        mode = resolve_wandb_mode(cfg)
        if mode != "disabled":
            import wandb

            self.run = wandb.init(project=cfg.project, entity=cfg.entity, mode=mode,
                                  name=cfg.name or run_dir.name, tags=cfg.tags, dir=str(run_dir),
                                  config=run_config, reinit="create_new")
            log.info("wandb run %s (%s), files in %s", self.run.id, mode, run_dir / "wandb")

    def record(self, record: dict[str, Any]) -> None:
        """One record: a logged training step (``loss``, ``lr``, ...) or, with ``"split": "dev"``, one task's
        dev metrics."""
        _append(self.path, record)
        if self.run is None:
            return
        task = record["task"]
        if record.get("split") == "dev":
            values = {f"dev/{task}/{key}": value for key, value in record.items()
                      if key not in ("stage", "step", "split", "task") and isinstance(value, int | float)}
        else:
            values = {f"train/{task}/loss": record["loss"], "train/lr": record["lr"], "stage": record["stage"],
                      "task": task}
            if "total_loss" in record:
                values[f"train/{task}/total_loss"] = record["total_loss"]
        self.run.log(values, step=self.offset + record["step"])

    def end_stage(self, steps: int) -> None:
        """A stage of ``steps`` steps is over: the next stage's steps follow it on the wandb step axis."""
        self.offset += steps

    def summary(self, values: dict[str, Any]) -> None:
        """Values of the whole run (wandb's run summary; nothing in ``metrics.jsonl``)."""
        if self.run is not None:
            self.run.summary.update(values)

    def close(self) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None


def train_stage(model: FinetuneModel, data: dict[str, TaskData], order: list[str], config: FinetuneConfig,
                pad_id: int, device: torch.device, *, stage: str, metrics_path: Path | None = None,
                progress: bool = False, monitor: FinetuneMonitor | None = None) -> list[tuple[int, str, float]]:
    """Run ``len(order)`` optimizer steps (step i trains task ``order[i]``) with a fresh AdamW and linear
    warmup/decay; returns (step, task, loss) per step. Soft sharing adds the weighted penalty every step.
    Records (every ``log_every`` steps, mid-stage evaluations) go to ``monitor`` if given, else appended to
    ``metrics_path`` if given."""
    if monitor is not None:
        emit: Callable[[dict[str, Any]], None] | None = monitor.record
    else:
        emit = (lambda record: _append(metrics_path, record)) if metrics_path is not None else None
    schedule = TrainConfig(max_steps=len(order), warmup_steps=int(config.warmup_ratio * len(order)),
                           lr=config.lr, lr_decay="linear")
    optimizer = torch.optim.AdamW(param_groups(model, config.weight_decay), lr=config.lr, betas=(0.9, 0.999),
                                  eps=1e-6)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(schedule))
    batches = {name: EpochBatches(len(data[name].train), _examples_per_batch(data[name], config),
                                  config.seed * 1000 + i)
               for i, name in enumerate(data) if name in model.heads}
    soft = len(model.distinct_encoders()) > 1 and config.soft_sharing_weight > 0
    params = [p for group in optimizer.param_groups for p in group["params"]]
    losses: list[tuple[int, str, float]] = []
    model.train()
    bar = tqdm(total=len(order), disable=not progress, dynamic_ncols=True, desc=stage)
    for step, name in enumerate(order, start=1):
        task = data[name]
        batch = collate(task.train, batches[name].next(), task.spec.kind, pad_id, config.task_embedding_id,
                        device)
        loss = task_loss(task.spec.kind, model(name, batch), batch["labels"])
        total = loss
        if soft:
            total = total + config.soft_sharing_weight * soft_sharing_penalty(model.distinct_encoders())
        total.backward()
        if config.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
        lr = scheduler.get_last_lr()[0]
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append((step, name, float(loss.detach())))
        bar.update(1)
        if emit is not None and (step % config.log_every == 0 or step == len(order)):
            record = {"stage": stage, "step": step, "task": name, "loss": round(losses[-1][2], 6), "lr": lr}
            if soft:
                record["total_loss"] = round(float(total.detach()), 6)
            emit(record)
            bar.set_postfix(task=name, loss=f"{losses[-1][2]:.3f}")
        mid_stage_eval = config.eval_every and step % config.eval_every == 0 and step < len(order)
        if emit is not None and mid_stage_eval:
            for task_name, values in evaluate(model, data, config, pad_id, device).items():
                emit({"stage": stage, "step": step, "split": "dev", "task": task_name, **values})
    bar.close()
    return losses


def _append(path: Path, record: dict[str, Any]) -> None:
    with path.open("a") as fh:
        fh.write(json.dumps(record) + "\n")


def _resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def finetune(checkpoint: str | Path, tasks: list[str] | str | None = None,
             config: FinetuneConfig | None = None, *, progress: bool = False) -> dict[str, Any]:
    """Fine-tune a pretrained checkpoint on ``tasks`` (default ``config.tasks``; names case-insensitive,
    a comma-separated string is accepted) and return the results, also written to ``RUN_DIR/results.json``:
    ``dev`` (final dev metrics per task), ``multitask`` (after stage 1), ``per_task`` (after stage 2, when
    ``per_task_steps`` > 0), ``baseline`` (a model that ignores its input), ``glue_score`` (mean of the GLUE
    tasks' scores), example counts (``skipped_examples``: rows the readers left out by rule), steps and
    timing."""
    config = config or FinetuneConfig()
    if tasks is not None:
        names = [t for t in tasks.split(",") if t.strip()] if isinstance(tasks, str) else list(tasks)
        config = from_dict(FinetuneConfig, {**to_plain(config), "tasks": names})
    started = time.perf_counter()
    pretrained = load_pretrained(checkpoint)
    model_cfg = pretrained.model_config
    require(config.task_embedding_id < model_cfg.num_task_embeddings, "task_embedding_id",
            f"-1 or a row < {model_cfg.num_task_embeddings} (the checkpoint's model.num_task_embeddings; its "
            f"pretraining tasks use {pretrained.task_ids})")
    require(config.max_seq_len <= model_cfg.max_position, "max_seq_len",
            f"an integer <= {model_cfg.max_position} (the checkpoint's model.max_position)")
    run_dir = Path(config.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(to_plain(config), sort_keys=False))
    (run_dir / "metrics.jsonl").write_text("")

    data = {name: load_task_data(name, config, pretrained.tokenizer) for name in config.tasks}
    log.info("fine-tuning %s on %s", pretrained.checkpoint,
             ", ".join(f"{n} ({len(d.train)} train / {' + '.join(str(len(v)) for v in d.devs.values())} dev)"
                       for n, d in data.items()))
    for name, d in data.items():
        if d.skipped:
            log.info("%s: rows left out by the reader: %s", name, d.skipped)
    # the wandb run starts once the data are read: a missing data folder leaves no empty run behind
    monitor = FinetuneMonitor(run_dir, config.monitor.wandb,
                              {**to_plain(config), "checkpoint": str(pretrained.checkpoint)})
    try:
        return _train_and_evaluate(pretrained, data, config, run_dir, monitor, started, progress)
    finally:
        monitor.close()


def _train_and_evaluate(pretrained: Pretrained, data: dict[str, TaskData], config: FinetuneConfig,
                        run_dir: Path, monitor: FinetuneMonitor, started: float,
                        progress: bool) -> dict[str, Any]:
    device = _resolve_device(config.device)
    pad_id = pretrained.tokenizer.token_to_id("[PAD]")
    torch.manual_seed(config.seed)
    model = FinetuneModel.build(pretrained.encoder(), [d.spec for d in data.values()], config.sharing,
                                config.pair_head)
    model.to(device)
    probabilities = sampling_probabilities({n: len(d.train) for n, d in data.items()}, config.sampling,
                                           config.temperature)
    order = task_order(probabilities, config.max_steps, config.seed)
    losses = train_stage(model, data, order, config, pad_id, device, stage="multitask", monitor=monitor,
                         progress=progress)
    multitask = evaluate(model, data, config, pad_id, device)
    for name, values in multitask.items():
        monitor.record({"stage": "multitask", "step": config.max_steps, "split": "dev", "task": name, **values})
        log.info("multi-task dev %s: %s", name, values)
    monitor.end_stage(config.max_steps)

    results: dict[str, Any] = {"checkpoint": str(pretrained.checkpoint), "tasks": config.tasks,
                               "sharing": config.sharing, "task_probabilities": probabilities,
                               "train_examples": {n: len(d.train) for n, d in data.items()},
                               "dev_examples": {n: d.dev_size for n, d in data.items()},
                               "skipped_examples": {n: d.skipped for n, d in data.items() if d.skipped},
                               "baseline": {n: d.baseline for n, d in data.items()},
                               "multitask": multitask,
                               "steps": {"multitask": config.max_steps, "per_task": config.per_task_steps},
                               "train_loss": {n: _mean_tail([loss for _, t, loss in losses if t == n])
                                              for n in data}}
    final = multitask
    if config.per_task_steps:
        per_task = {}
        for name in config.tasks:
            single = model.single_task(name)
            train_stage(single, data, [name] * config.per_task_steps, config, pad_id, device,
                        stage=f"per_task:{name}", monitor=monitor, progress=progress)
            per_task.update(evaluate(single, data, config, pad_id, device))
            monitor.record({"stage": f"per_task:{name}", "step": config.per_task_steps, "split": "dev",
                            "task": name, **per_task[name]})
            monitor.end_stage(config.per_task_steps)
            log.info("per-task dev %s: %s", name, per_task[name])
            del single
        results["per_task"] = per_task
        final = per_task
    results["dev"] = final
    glue = [final[n]["score"] for n in config.tasks if n in GLUE_TASKS]
    if glue:
        results["glue_score"] = round(sum(glue) / len(glue), 6)
    results["seconds"] = round(time.perf_counter() - started, 1)
    summary = {f"baseline/{n}/{k}": v for n, values in results["baseline"].items() for k, v in values.items()}
    monitor.summary({**summary, **({"glue_score": results["glue_score"]} if glue else {})})
    (run_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    return results


def _mean_tail(values: list[float], tail: int = 20) -> float | None:
    """Mean of the last ``tail`` training losses of a task (None if it never trained)."""
    return round(sum(values[-tail:]) / len(values[-tail:]), 6) if values else None


__all__ = ["FinetuneConfig", "FinetuneMonitorConfig", "FinetuneMonitor", "load_finetune_config", "Pretrained", "load_pretrained", "Encoded",
           "encode_examples", "collate", "EpochBatches", "sampling_probabilities", "task_order",
           "FinetuneModel", "task_loss", "soft_sharing_penalty", "TaskData", "read_task_splits",
           "load_task_data", "evaluate",
           "train_stage", "finetune"]
