"""IR relevance (ERNIE 2.0): how relevant a passage is to a query: strong, weak (retrieved) or irrelevant."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from datasets import Dataset
from torch import Tensor, nn

from data_builders.ir_relevance import LABELS, build_ir_relevance
from ernie_cmtl.config import ModelConfig, require
from ernie_cmtl.model import SequenceClassificationHead
from ernie_cmtl.tasks import BuildContext, PretrainTask, collate_sequence_classification


@dataclass
class IRRelevanceConfig:
    weak_top_k: int = 5
    """The weak passage is drawn among this many best BM25 hits from other documents (1 = always the top
    hit, the hardest weak passage)."""
    passage_words: int = 64
    """Passages are a paragraph's first N words (then cut to fit ``data.max_seq_len`` in tokens)."""
    min_passage_words: int = 12
    """Shorter paragraphs are not passages (headings and list debris would make length a cue)."""
    pseudo_query_terms: int = 4
    """Query length, in words, for documents without a title (their top TF-IDF words)."""
    max_query_tokens: int = 24
    """Queries (titles) are cut to this many tokens."""
    block_documents: int = 10_000
    """Retrieval works per block of this many documents (of the split, or of the shard in a sharded build):
    the weak passage is a BM25 hit among the other documents of the query's block, the irrelevant one a
    passage of another document of the block, and memory is bounded by the block, not the corpus."""

    def __post_init__(self) -> None:
        require(self.weak_top_k >= 1, "weak_top_k", "an integer >= 1")
        require(self.passage_words >= 1, "passage_words", "an integer >= 1")
        require(self.min_passage_words >= 1, "min_passage_words", "an integer >= 1")
        require(self.pseudo_query_terms >= 1, "pseudo_query_terms", "an integer >= 1")
        require(self.max_query_tokens >= 1, "max_query_tokens", "an integer >= 1")
        require(self.block_documents >= 2, "block_documents", "an integer >= 2")


class IRRelevanceTask(PretrainTask):
    """Query (title) and passage: strong (same document), weak (BM25 hit of another document), irrelevant."""

    name = "ir_relevance"
    level = "sequence"
    # Chinese passages are cut in jieba words, read from the shared tokenization pass (English documents
    # ignore those columns: their examples are the same with or without them).
    reads_sentence_tokens = True
    config_class = IRRelevanceConfig
    label_summary = str(len(LABELS))
    builder_version = 1
    build_cost = 0.55

    @property
    def num_labels(self) -> int:
        return len(LABELS)

    def build(self, documents: Dataset, ctx: BuildContext) -> Dataset:
        cfg = self.config
        return build_ir_relevance(
            documents, ctx.tokenizer, max_seq_len=ctx.max_seq_len, seed=ctx.seed, weak_top_k=cfg.weak_top_k,
            passage_words=cfg.passage_words, min_passage_words=cfg.min_passage_words,
            pseudo_query_terms=cfg.pseudo_query_terms,
            max_query_tokens=min(cfg.max_query_tokens, (ctx.max_seq_len - 3) // 2),
            block_documents=cfg.block_documents, work_dir=ctx.work_dir)

    def collate(self, rows: dict[str, list], generator: torch.Generator) -> dict[str, Tensor]:
        return collate_sequence_classification(rows, self.special.pad)

    def make_head(self, model_config: ModelConfig, word_embeddings: nn.Embedding) -> nn.Module:
        return SequenceClassificationHead(model_config, self.num_labels)
