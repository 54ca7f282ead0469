"""Punctuation restoration: punctuation marks are removed from the input; for every remaining word the model
predicts which mark (if any) followed it.

A real self-supervised signal about sentence and clause structure (it is also a downstream task for speech
transcripts), derived from raw text with no annotation. Token level, 5 labels: 0 none, 1 comma, 2 period,
3 question mark, 4 other clause mark (; : !). Built only on ernie-cmtl's public plugin API.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from datasets import Dataset
from tokenizers import Tokenizer
from torch import Tensor, nn

from data_builders.segments import pack_sentences, tokenize_sentences
from ernie_cmtl.config import ModelConfig, require
from ernie_cmtl.model import TokenClassificationHead
from ernie_cmtl.tasks import IGNORE_INDEX, BuildContext, PretrainTask, collate_token_classification

MARKS = {",": 1, ".": 2, "?": 3, ";": 4, ":": 4, "!": 4}
LABEL_NAMES = ["none", "comma", "period", "question", "other"]


@dataclass
class PunctuationConfig:
    min_tokens: int = 8
    """Drop segments with fewer tokens than this (after the marks are removed)."""

    def __post_init__(self) -> None:
        require(self.min_tokens >= 1, "min_tokens", "an integer >= 1")


def punctuation_batch(batch: dict[str, list], *, tokenizer: Tokenizer, max_seq_len: int,
                      min_tokens: int) -> dict[str, list]:
    """Documents -> examples: marks dropped from the ids, the following mark as the label of each word."""
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    out: dict[str, list] = {"input_ids": [], "labels": []}
    for paragraphs in batch["sentences"]:
        sentences = tokenize_sentences(tokenizer, [s for p in paragraphs for s in p])
        stripped = []
        for sentence in sentences:
            ids, labels = [], []
            for (start, end), word in zip(sentence.word_spans, sentence.words, strict=True):
                if word in MARKS:
                    if labels:
                        labels[-1][1] = MARKS[word]  # the mark that followed the previous word
                    continue
                labels.append([len(ids), 0])  # [position of the word's first token, label]
                ids.extend(sentence.ids[start:end])
            token_labels = [IGNORE_INDEX] * len(ids)
            for position, label in labels:
                token_labels[position] = label
            stripped.append((ids, token_labels))
        for start, end in pack_sentences([len(ids) for ids, _ in stripped], max_seq_len - 2):
            ids = [i for s in stripped[start:end] for i in s[0]][: max_seq_len - 2]
            labels = [x for s in stripped[start:end] for x in s[1]][: max_seq_len - 2]
            if len(ids) >= min_tokens:
                out["input_ids"].append([cls_id, *ids, sep_id])
                out["labels"].append([IGNORE_INDEX, *labels, IGNORE_INDEX])
    return out


class PunctuationRestorationTask(PretrainTask):
    """Predict the punctuation mark removed after each word (none, comma, period, question, other)."""

    name = "punctuation_restoration"
    level = "token"
    config_class = PunctuationConfig
    label_summary = "5"

    @property
    def num_labels(self) -> int:
        return len(LABEL_NAMES)

    def build(self, documents: Dataset, ctx: BuildContext) -> Dataset:
        return documents.map(
            punctuation_batch, batched=True, batch_size=64, remove_columns=documents.column_names,
            num_proc=ctx.num_proc if ctx.num_proc > 1 else None, desc=self.name,
            fn_kwargs={"tokenizer": ctx.tokenizer, "max_seq_len": ctx.max_seq_len,
                       "min_tokens": self.config.min_tokens})

    def collate(self, rows: dict[str, list], generator: torch.Generator) -> dict[str, Tensor]:
        return collate_token_classification(rows, self.special.pad)

    def make_head(self, model_config: ModelConfig, word_embeddings: nn.Embedding) -> nn.Module:
        return TokenClassificationHead(model_config, self.num_labels)
