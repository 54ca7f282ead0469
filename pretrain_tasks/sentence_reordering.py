"""Sentence reordering (ERNIE 2.0): recover the original order of a shuffled, cut-up paragraph."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from datasets import Dataset
from torch import Tensor, nn

from data_builders.sentence_reordering import MAX_SEGMENTS, build_sentence_reordering, num_reordering_classes
from ernie_cmtl.config import ModelConfig, require
from ernie_cmtl.model import SequenceClassificationHead
from ernie_cmtl.tasks import BuildContext, PretrainTask, collate_sequence_classification


@dataclass
class SentenceReorderingConfig:
    max_segments: int = 3
    """m: each paragraph is cut into n segments, n uniform in 1..m; the head has 1! + ... + m! classes
    (9 for m = 3, 33 for m = 4, 153 for m = 5)."""

    def __post_init__(self) -> None:
        require(1 <= self.max_segments <= MAX_SEGMENTS, "max_segments", f"an integer in [1, {MAX_SEGMENTS}]")


def segment_count_baseline_loss(max_segments: int) -> float:
    """Cross-entropy of a model that only counts the [SEP]s (knows n, guesses the order uniformly), with n
    uniform in 1..m: mean of ln(n!). Below this, the model has learned something about order itself."""
    return sum(math.log(math.factorial(n)) for n in range(1, max_segments + 1)) / max_segments


class SentenceReorderingTask(PretrainTask):
    """Which permutation shuffled the 1..m segments of a paragraph (ERNIE 2.0 sentence reordering)."""

    name = "sentence_reordering"
    level = "sequence"
    reads_sentence_tokens = True
    document_local = True
    config_class = SentenceReorderingConfig
    label_summary = "9 at m=3 (1!+...+m!)"
    builder_version = 1
    build_cost = 0.1

    @property
    def num_labels(self) -> int:
        return num_reordering_classes(self.config.max_segments)

    def build(self, documents: Dataset, ctx: BuildContext) -> Dataset:
        return build_sentence_reordering(documents, ctx.tokenizer, max_seq_len=ctx.max_seq_len,
                                         max_segments=self.config.max_segments, seed=ctx.seed,
                                         num_proc=ctx.num_proc)

    def collate(self, rows: dict[str, list], generator: torch.Generator) -> dict[str, Tensor]:
        return collate_sequence_classification(rows, self.special.pad)

    def make_head(self, model_config: ModelConfig, word_embeddings: nn.Embedding) -> nn.Module:
        return SequenceClassificationHead(model_config, self.num_labels)

    def baseline_loss(self) -> float:
        """See :func:`segment_count_baseline_loss`."""
        return segment_count_baseline_loss(self.config.max_segments)
