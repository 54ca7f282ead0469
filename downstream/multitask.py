"""Fine-tuning's model: the pretrained encoder(s) and one output layer per task, MT-DNN's four kinds.

Single-sentence classification (SST-2, CoLA, ChnSentiCorp) and pair classification (MRPC, RTE, MNLI, QQP, QNLI,
WNLI, OCNLI) with cross-entropy, similarity regression (STS-B, one output, mean squared error), and ranking
(``wikiqp``, C3: one score per (query, candidate) pair, cross-entropy of a softmax over the query's scores; a
query with fewer candidates than the widest of the task has its empty slots masked out). Single sentences use
the pooled first-token state (``SequenceClassificationHead``); pair inputs by default add soft-match features
of their two segments (``PairMatchingHead``; ``pair_head: cls`` turns that off).

Sharing: ``hard`` maps every task to one encoder; ``soft`` gives every task its own copy, tied by
:func:`soft_sharing_penalty`. The model's forward is ``model(task, batch)``, the shape the engine calls.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from downstream.benchmarks import BenchmarkTask, HeadKind
from ernie_cmtl.model import Encoder, PairMatchingHead, SequenceClassificationHead


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


