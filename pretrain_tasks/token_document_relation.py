"""Token-document relation (ERNIE 2.0): does a word of a segment also occur in another segment of its
document?"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from datasets import Dataset
from torch import Tensor, nn

from data_builders.token_document_relation import (
    build_token_document_relation,
    frequent_words,
    load_frequent_words,
    save_frequent_words,
)
from ernie_cmtl.config import ModelConfig, require
from ernie_cmtl.model import TokenClassificationHead
from ernie_cmtl.tasks import BuildContext, PretrainTask, collate_token_classification


@dataclass
class TokenDocumentRelationConfig:
    segment_tokens: int = 64
    """Token budget of a segment (without [CLS]/[SEP]; capped at data.max_seq_len - 2). Smaller segments
    give more documents with >= 2 segments, and so more examples."""
    max_doc_freq: float = 0.3
    """Words in more than this share of the training documents ("the", "of", "was") are not labelled: they
    occur in every segment, so their label says nothing about the document. 1 labels every word."""
    min_tokens: int = 8
    """Segments shorter than this are no example (they still count as "another segment")."""

    def __post_init__(self) -> None:
        require(self.segment_tokens >= 8, "segment_tokens", "an integer >= 8")
        require(0 < self.max_doc_freq <= 1, "max_doc_freq", "a number in (0, 1]")
        require(self.min_tokens >= 1, "min_tokens", "an integer >= 1")


class TokenDocumentRelationTask(PretrainTask):
    """Per-word: does this word also occur in another segment of the same document (ERNIE 2.0)?"""

    name = "token_document_relation"
    level = "token"
    reads_sentence_tokens = True
    document_local = True
    config_class = TokenDocumentRelationConfig
    label_summary = "2"
    builder_version = 1
    build_cost = 0.4

    @property
    def num_labels(self) -> int:
        return 2

    def prepare_statistics(self, ctx: BuildContext) -> None:
        self.frequent(ctx)

    def frequent(self, ctx: BuildContext) -> set[str]:
        """Words in more than ``max_doc_freq`` of ``ctx.train_documents``, counted once and cached."""
        cfg = self.config
        path = ctx.cache_dir / "frequent_words.json"
        cached = getattr(self, "_frequent", None)
        if cached is not None and cached[0] == path:
            return cached[1]
        frequent = load_frequent_words(path, cfg.max_doc_freq)
        if frequent is None:
            frequent = frequent_words(ctx.train_documents, cfg.max_doc_freq)
            ctx.cache_dir.mkdir(parents=True, exist_ok=True)
            save_frequent_words(path, frequent, cfg.max_doc_freq, len(ctx.train_documents))
        self._frequent = (path, frequent)
        return frequent

    def build(self, documents: Dataset, ctx: BuildContext) -> Dataset:
        cfg = self.config
        frequent = self.frequent(ctx)
        return build_token_document_relation(
            documents, ctx.tokenizer, frequent, segment_tokens=min(cfg.segment_tokens, ctx.max_seq_len - 2),
            min_tokens=cfg.min_tokens, num_proc=ctx.num_proc)

    def collate(self, rows: dict[str, list], generator: torch.Generator) -> dict[str, Tensor]:
        return collate_token_classification(rows, self.special.pad)

    def make_head(self, model_config: ModelConfig, word_embeddings: nn.Embedding) -> nn.Module:
        return TokenClassificationHead(model_config, self.num_labels)
