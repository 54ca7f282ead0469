"""Sentence distance (ERNIE 2.0): adjacent, same document, or another document?"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from datasets import Dataset
from torch import Tensor, nn

from data_builders.sentence_distance import build_sentence_distance
from ernie_cmtl.config import ModelConfig, require
from ernie_cmtl.model import SequenceClassificationHead
from ernie_cmtl.tasks import BuildContext, PretrainTask, collate_sequence_classification


@dataclass
class SentenceDistanceConfig:
    pairs_per_document: int = 6
    """Pairs drawn per document (fewer where the document cannot give that many distinct pairs); labels are
    dealt cyclically 0, 1, 2 from a random start."""
    balance: bool = True
    """Every document gives the same number of pairs of each label (documents with < 3 sentences give none).
    Off: a document's share of a label it cannot fill goes to the next label, so short documents add label-0
    and label-2 pairs and one-sentence documents label-2 pairs only."""

    def __post_init__(self) -> None:
        require(self.pairs_per_document >= 1, "pairs_per_document", "an integer >= 1")
        require(isinstance(self.balance, bool), "balance", "true or false")


class SentenceDistanceTask(PretrainTask):
    """Is sentence B right after A (0), elsewhere in A's document (1), or from another document (2)?"""

    name = "sentence_distance"
    level = "sequence"
    config_class = SentenceDistanceConfig
    label_summary = "3"
    builder_version = 1
    build_cost = 0.27
    reads_sentence_tokens = True  # its pairs' token ids come from the shared pass (the same ids)

    @property
    def num_labels(self) -> int:
        return 3

    def build(self, documents: Dataset, ctx: BuildContext) -> Dataset:
        cfg = self.config
        return build_sentence_distance(documents, ctx.tokenizer, max_seq_len=ctx.max_seq_len,
                                       pairs_per_document=cfg.pairs_per_document, balance=cfg.balance,
                                       seed=ctx.seed, num_proc=ctx.num_proc)

    def collate(self, rows: dict[str, list], generator: torch.Generator) -> dict[str, Tensor]:
        return collate_sequence_classification(rows, self.special.pad)

    def make_head(self, model_config: ModelConfig, word_embeddings: nn.Embedding) -> nn.Module:
        return SequenceClassificationHead(model_config, self.num_labels)
