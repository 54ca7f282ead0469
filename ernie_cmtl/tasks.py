"""The task plugin interface.

A pretraining task declares its name, level, number of labels and config section; it builds its examples (with
a builder from ``data_builders``), collates them into tensors (random, per-step parts such as masking happen
here, vectorized), owns its head, and defines its loss and metrics. That is the whole contract: the trainer
knows nothing else about tasks, and third-party tasks implement exactly this through the ``ernie_cmtl.tasks``
entry-point group.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from datasets import Dataset
from tokenizers import Tokenizer
from torch import Tensor, nn

from data_builders.errors import EmptyTaskError as EmptyTaskError  # re-exported: what an empty task raises
from ernie_cmtl.config import ModelConfig

Level = Literal["token", "sequence"]
IGNORE_INDEX = -100


@dataclass
class BuildContext:
    """What a task's builder may use. Builders see documents and a tokenizer, never the model."""

    tokenizer: Tokenizer
    max_seq_len: int
    seed: int
    num_proc: int
    cache_dir: Path
    """Task-private cache directory for resources derived from the training documents (e.g. lexicons)."""
    train_documents: Dataset
    """The training split's documents, for corpus-level statistics (never the validation split): its
    statistics sample (``data.statistics_documents``), the same for every shard of a sharded build."""
    work_dir: Path | None = None
    """Scratch space of this build (e.g. Arrow files of intermediate blocks), removed once the examples are
    saved; None: keep intermediates in memory."""


@dataclass(frozen=True)
class SpecialIds:
    pad: int
    cls: int
    sep: int
    mask: int
    unk: int
    vocab_size: int
    first_regular: int
    """Smallest id that is not a special token (random replacement draws from [first_regular, vocab_size))."""

    @classmethod
    def from_tokenizer(cls, tok: Tokenizer) -> SpecialIds:
        ids = {name: tok.token_to_id(f"[{name.upper()}]") for name in ("pad", "cls", "sep", "mask", "unk")}
        return cls(**ids, vocab_size=tok.get_vocab_size(), first_regular=max(ids.values()) + 1)


class PretrainTask(ABC):
    """Base class of every pretraining task (built-in or plugin)."""

    name: ClassVar[str]
    level: ClassVar[Level]
    config_class: ClassVar[type]
    """A dataclass: the task's section under ``tasks.<name>`` in the run config."""
    label_summary: ClassVar[str]
    """The label count as ``ernie-cmtl tasks`` shows it ("2", "vocabulary", "9 at m=3", ...)."""
    builder_version: ClassVar[int] = 1
    """Bump when the builder's output changes, so cached examples are rebuilt."""
    reads_sentence_tokens: ClassVar[bool] = False
    """True when the builder reads sentences through ``data_builders.segments.document_sentences``: the
    documents it gets then carry the shared tokenization pass's columns, so the corpus is tokenized once for
    all such tasks rather than once per task."""

    document_local: ClassVar[bool] = False
    """True when each document's examples depend on that document alone (and on corpus statistics from
    ``ctx.train_documents``), never on which other documents are built with it. Such a task's examples are
    the same built in blocks or shards as in one pass, and ``prepare_data`` builds it in blocks of
    ``data.block_documents`` (the progress line moves per block). False (the safe default): the builder sees
    the whole split, or the whole shard of a sharded build."""

    build_cost: ClassVar[float] = 1.0
    """About how many CPU seconds per thousand Wikipedia documents the builder takes, corpus statistics
    included (docs/PERFORMANCE.md, session 11's first run): a parallel build (``data.num_proc`` > 1) starts the costliest tasks first,
    so that the workers finish together. Only the order depends on it, never the examples."""

    def __init__(self, config: Any, special: SpecialIds) -> None:
        self.config = config
        self.special = special

    @property
    @abstractmethod
    def num_labels(self) -> int:
        """Classes of the task's output (the vocabulary size for masked-LM)."""

    @abstractmethod
    def build(self, documents: Dataset, ctx: BuildContext) -> Dataset:
        """Documents -> this task's examples (Arrow columns; deterministic in ``ctx.seed``). Raise
        :class:`EmptyTaskError` when the documents give none (the task is then reported empty); any other
        exception is a bug and stops the build."""

    def prepare_statistics(self, ctx: BuildContext) -> None:
        """Compute (or load) the corpus statistics this task's builder reads from ``ctx.train_documents``
        (a lexicon, frequent words, class counts), caching them in ``ctx.cache_dir``. ``build-data
        --statistics-only`` calls it once before a sharded build, so the shards reuse one copy; ``build``
        must compute them itself when they are missing. Default: nothing."""
        return None

    @abstractmethod
    def collate(self, rows: dict[str, list], generator: torch.Generator) -> dict[str, Tensor]:
        """A batch of examples (column -> list of values) -> tensors, including ``input_ids``,
        ``attention_mask``, ``labels`` and, for token-level tasks, ``positions`` (flat indices into the
        [B * L] grid where labels live). All randomness must come from ``generator``."""

    @abstractmethod
    def make_head(self, model_config: ModelConfig, word_embeddings: nn.Embedding) -> nn.Module:
        """The task's head on top of the shared encoder."""

    def head_flops_per_token(self, model_config: ModelConfig, seq_len: int) -> float:
        """Forward FLOPs (matmuls) of this task's head per input token, which ``perf/mfu`` adds to the
        encoder's. Default: the standard heads of ``level``: token level, a linear classifier over
        ``num_labels`` at every token; sequence level, a pooler and a classifier on one token per sequence.
        A head that decodes only some tokens, or more than a classifier, says so here (knowledge masking:
        the vocabulary decoder on the masked share only)."""
        h = model_config.hidden_size
        if self.level == "token":
            return 2.0 * h * self.num_labels
        return (2.0 * h * h + 2.0 * h * self.num_labels) / max(1, seq_len)

    def loss(self, logits: Tensor, batch: dict[str, Tensor]) -> Tensor:
        """Mean cross-entropy over labelled items (override for other losses)."""
        return F.cross_entropy(logits.float(), batch["labels"], ignore_index=IGNORE_INDEX)

    def metrics(self, logits: Tensor, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """Summable statistics; ``correct``/``count`` become ``accuracy`` when reported."""
        labels = batch["labels"]
        valid = labels != IGNORE_INDEX
        correct = (logits.argmax(-1) == labels) & valid
        return {"correct": correct.sum(), "count": valid.sum()}

    def label_counts(self, examples: Dataset) -> dict[Any, int]:
        """Label histogram of built examples (``build-data`` prints it). Sequence-level tasks keep one
        ``label`` per example, token-level tasks a ``labels`` list with ``IGNORE_INDEX`` where unlabelled."""
        counts: dict[int, int] = {}
        if "label" in examples.column_names:
            for label in examples["label"]:
                counts[label] = counts.get(label, 0) + 1
        elif "labels" in examples.column_names:
            for row in examples["labels"]:
                for label in row:
                    if label != IGNORE_INDEX:
                        counts[label] = counts.get(label, 0) + 1
        return dict(sorted(counts.items()))

    def chance_loss(self) -> float:
        """Cross-entropy of a uniform guess; a task has learned something when it trains below this."""
        import math

        return math.log(self.num_labels)

    def describe(self) -> str:
        return (self.__doc__ or "").strip().splitlines()[0] if self.__doc__ else ""


def pad_sequences(seqs: list[list[int]], pad_value: int) -> tuple[Tensor, Tensor]:
    """Right-pad to the longest sequence: (values [B, L] int64, attention mask [B, L] int64)."""
    tensors = [torch.as_tensor(s, dtype=torch.long) for s in seqs]
    values = nn.utils.rnn.pad_sequence(tensors, batch_first=True, padding_value=pad_value)
    lengths = torch.tensor([len(s) for s in seqs])
    mask = (torch.arange(values.shape[1])[None, :] < lengths[:, None]).long()
    return values, mask


def collate_sequence_classification(rows: dict[str, list], pad_id: int) -> dict[str, Tensor]:
    """``input_ids`` (+ optional ``segment_ids``) and one ``label`` per example -> padded tensors."""
    input_ids, attention_mask = pad_sequences(rows["input_ids"], pad_id)
    batch = {"input_ids": input_ids, "attention_mask": attention_mask,
             "labels": torch.as_tensor(rows["label"], dtype=torch.long)}
    if "segment_ids" in rows:
        batch["segment_ids"], _ = pad_sequences(rows["segment_ids"], 0)
    return batch


def collate_token_classification(rows: dict[str, list], pad_id: int) -> dict[str, Tensor]:
    """``input_ids`` and per-token ``labels`` (``IGNORE_INDEX`` where unlabelled) -> padded tensors plus
    ``positions`` (flat indices of labelled tokens) and ``labels`` at those positions only, so the head runs
    on labelled tokens alone."""
    input_ids, attention_mask = pad_sequences(rows["input_ids"], pad_id)
    token_labels, _ = pad_sequences(rows["labels"], IGNORE_INDEX)
    flat = token_labels.reshape(-1)
    positions = (flat != IGNORE_INDEX).nonzero().squeeze(1)
    batch = {"input_ids": input_ids, "attention_mask": attention_mask, "positions": positions,
             "labels": flat[positions]}
    if "segment_ids" in rows:
        batch["segment_ids"], _ = pad_sequences(rows["segment_ids"], 0)
    return batch
