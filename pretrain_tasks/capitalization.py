"""Capitalization prediction (ERNIE 2.0): from uncased input, tell which words were capitalized."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from datasets import Dataset
from torch import Tensor, nn

from data_builders.capitalization import build_capitalization
from ernie_cmtl.config import ModelConfig, require
from ernie_cmtl.model import TokenClassificationHead
from ernie_cmtl.tasks import BuildContext, PretrainTask, collate_token_classification


@dataclass
class CapitalizationConfig:
    scheme: Literal["binary", "three_way"] = "binary"
    """``binary``: 0 lower, 1 capitalized (first letter uppercase). ``three_way`` adds 2 all-caps (two or more
    letters, all uppercase: "NATO"), which ``binary`` counts as capitalized."""
    sentence_initial: bool = True
    """Label the first cased word of every sentence too. Its capital mostly follows from its position; false
    keeps the task to names, titles and acronyms."""
    min_tokens: int = 8
    """Drop segments shorter than this."""

    def __post_init__(self) -> None:
        require(self.scheme in ("binary", "three_way"), "scheme", "one of 'binary', 'three_way'")
        require(self.min_tokens >= 1, "min_tokens", "an integer >= 1")


class CapitalizationTask(PretrainTask):
    """Per-word capitalization of the original text, predicted from uncased input (ERNIE 2.0)."""

    name = "capitalization"
    level = "token"
    reads_sentence_tokens = True
    document_local = True
    config_class = CapitalizationConfig
    label_summary = "2 (3 with scheme three_way)"
    builder_version = 1
    build_cost = 0.12

    @property
    def num_labels(self) -> int:
        return 3 if self.config.scheme == "three_way" else 2

    def build(self, documents: Dataset, ctx: BuildContext) -> Dataset:
        cfg = self.config
        return build_capitalization(documents, ctx.tokenizer, max_seq_len=ctx.max_seq_len, scheme=cfg.scheme,
                                    sentence_initial=cfg.sentence_initial, min_tokens=cfg.min_tokens,
                                    num_proc=ctx.num_proc)

    def collate(self, rows: dict[str, list], generator: torch.Generator) -> dict[str, Tensor]:
        return collate_token_classification(rows, self.special.pad)

    def make_head(self, model_config: ModelConfig, word_embeddings: nn.Embedding) -> nn.Module:
        return TokenClassificationHead(model_config, self.num_labels)
