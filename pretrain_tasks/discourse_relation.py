"""Discourse relation (ERNIE 2.0): which relation joined two sentences, once the discourse marker is removed."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field

import torch
from datasets import Dataset
from torch import Tensor, nn

from data_builders.discourse_relation import (
    ALL_RELATIONS,
    RELATIONS,
    build_discourse_relation,
    relation_counts,
)
from ernie_cmtl.config import ModelConfig, require
from ernie_cmtl.model import SequenceClassificationHead
from ernie_cmtl.tasks import BuildContext, EmptyTaskError, PretrainTask, collate_sequence_classification

log = logging.getLogger(__name__)


@dataclass
class DiscourseRelationConfig:
    min_class_examples: int = 50
    """Relation classes with fewer pairs than this in the training documents are dropped (with a warning
    naming them and their counts): a handful of examples cannot be learned, only memorized. Counted on the
    training split for both splits, so train and valid always have the same classes."""
    max_class_share: float = 0.5
    """Largest share of the examples one class may have; larger classes are subsampled (deterministically)
    so that a frequent marker ("however") does not dominate. 1 disables the cap."""
    min_words: int = 3
    """Both sentences of a pair need at least this many words (in Chinese, two characters count as one)."""
    classes: list[str] = field(default_factory=lambda: list(RELATIONS))
    """The relation classes built. Label ids are fixed per class (their position in ``ALL_RELATIONS``:
    contrast, result, elaboration, addition, temporal, reason, condition), so the head has as many outputs
    as the highest id needs. ``condition`` (如果/假如/只要) exists in Chinese text only: Chinese configs add it."""

    def __post_init__(self) -> None:
        unknown = [c for c in self.classes if c not in ALL_RELATIONS]
        require(bool(self.classes) and not unknown and len(set(self.classes)) == len(self.classes), "classes",
                f"a non-empty list of distinct relation classes among {', '.join(ALL_RELATIONS)}"
                + (f" (unknown: {', '.join(unknown)})" if unknown else ""))
        require(self.min_class_examples >= 1, "min_class_examples", "an integer >= 1")
        require(0 < self.max_class_share <= 1, "max_class_share", "a number in (0, 1]")
        require(self.min_words >= 1, "min_words", "an integer >= 1")


class DiscourseRelationTask(PretrainTask):
    """Relation of a sentence pair whose discourse marker was removed (contrast, result, reason, ...).

    Classes and markers: ``data_builders.discourse_relation.DISCOURSE_MARKERS``."""

    name = "discourse_relation"
    level = "sequence"
    config_class = DiscourseRelationConfig
    label_summary = str(len(RELATIONS))
    builder_version = 1
    build_cost = 0.12

    @property
    def num_labels(self) -> int:
        # The full inventory, even when rare classes are dropped: the head is built before any data is, and
        # label ids stay those of ALL_RELATIONS whichever classes a corpus happens to have.
        return 1 + max(ALL_RELATIONS.index(name) for name in self.config.classes)

    def kept_relations(self, ctx: BuildContext) -> list[int]:
        """Label ids of the classes with >= ``min_class_examples`` pairs in the training documents (the
        counts are cached in the task's cache directory, so both splits agree without a second count)."""
        counts_path = ctx.cache_dir / "relation_counts.json"
        if counts_path.is_file():
            counts = json.loads(counts_path.read_text())
        else:
            train = ctx.train_documents
            languages = (train.select_columns(["language"])[:]["language"]
                         if "language" in train.column_names else None)
            documents = (doc for batch in train.select_columns(["sentences"]).iter(batch_size=256)
                         for doc in batch["sentences"])  # batches, not row by row
            counts = relation_counts(documents, self.config.min_words, languages)
            ctx.cache_dir.mkdir(parents=True, exist_ok=True)
            tmp = counts_path.with_name(f".{counts_path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(counts))
            tmp.replace(counts_path)
        minimum = self.config.min_class_examples
        dropped = {name: counts.get(name, 0) for name in self.config.classes if counts.get(name, 0) < minimum}
        if dropped:
            log.warning("discourse_relation: dropping classes with fewer than %d examples in the training "
                        "documents: %s", minimum, ", ".join(f"{k} ({v})" for k, v in dropped.items()))
        kept = sorted(ALL_RELATIONS.index(name) for name in self.config.classes if name not in dropped)
        if not kept:
            raise EmptyTaskError(f"task discourse_relation needs relation classes with >= {minimum} examples "
                             f"(tasks.discourse_relation.min_class_examples); found counts {counts} in "
                             f"{len(ctx.train_documents)} training documents")
        return kept

    def prepare_statistics(self, ctx: BuildContext) -> None:
        self.kept_relations(ctx)

    def build(self, documents: Dataset, ctx: BuildContext) -> Dataset:
        return build_discourse_relation(
            documents, ctx.tokenizer, labels=self.kept_relations(ctx), max_seq_len=ctx.max_seq_len,
            seed=ctx.seed, max_class_share=self.config.max_class_share, min_words=self.config.min_words,
            num_proc=ctx.num_proc)

    def collate(self, rows: dict[str, list], generator: torch.Generator) -> dict[str, Tensor]:
        return collate_sequence_classification(rows, self.special.pad)

    def make_head(self, model_config: ModelConfig, word_embeddings: nn.Embedding) -> nn.Module:
        return SequenceClassificationHead(model_config, self.num_labels)
