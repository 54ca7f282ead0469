"""What an encoder still knows of its source: representation drift and zero-shot sentence similarity.

Sentence embeddings are the attention-mask-weighted mean of the last layer's states (mean pooling, as
sentence-transformers' models are used). From them:

- **drift** between a source encoder and the current one on the same held-out sequences: the mean cosine of
  their pooled states (row by row) and linear CKA (Kornblith et al., 2019) of the two [N, H] matrices; 1 and 1
  when nothing moved;
- **zero-shot similarity** on scored sentence pairs (STS-B's layout): the Spearman correlation between the
  cosine of the two sentences' embeddings and the gold score.

Everything here is a function of tensors and token ids; no file is read. :class:`RetentionProbe` keeps the
source's pooled states (computed once, so no frozen copy of the source stays in memory) and measures an encoder
against them: what the trainer logs as ``retention/*`` at every evaluation of a run with ``model.init_from``.
:mod:`downstream.probe` uses :func:`pooled_states` for its features, so both measure the same embedding.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

# ---------------------------------------------------------------------------------------------------------
# Embeddings


def mean_pool(states: Tensor, attention_mask: Tensor) -> Tensor:
    """[B, L, H] states and a [B, L] 0/1 mask -> [B, H] mean over the real (mask 1) positions, in float32."""
    mask = attention_mask.to(torch.float32).unsqueeze(-1)
    summed = (states.to(torch.float32) * mask).sum(dim=1)
    return summed / mask.sum(dim=1).clamp(min=1.0)


@torch.no_grad()
def pooled_states(encoder: nn.Module, sequences: Sequence[Sequence[int]],
                  segments: Sequence[Sequence[int]] | None = None, *, batch_size: int = 64,
                  task_id: int | None = 0, pad_id: int = 0,
                  pool: Callable[[Tensor, Tensor], Tensor] | None = None) -> Tensor:
    """Mean-pooled last-layer states of token-id ``sequences`` -> [N, H] float32 on the CPU, in input order
    (``pool``: another pooling of a batch's ([B, L, H] states, [B, L] mask) into [B, D] rows).

    The encoder runs in eval mode (no dropout, so no random numbers are drawn; its mode is restored) on its own
    device and dtype. Batches hold sequences of similar length (sorted), so little is padded; padding never
    reaches the result (masked out of attention and of the mean). ``task_id``: the task-embedding row added to
    every position (None: none)."""
    if not sequences:
        raise ValueError("pooled_states: no sequences")
    device = next(encoder.parameters()).device
    order = sorted(range(len(sequences)), key=lambda i: -len(sequences[i]))
    out: Tensor | None = None
    was_training = encoder.training
    encoder.eval()
    try:
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            length = max(len(sequences[i]) for i in rows)
            ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
            seg = torch.zeros((len(rows), length), dtype=torch.long)
            mask = torch.zeros((len(rows), length), dtype=torch.long)
            for r, i in enumerate(rows):
                n = len(sequences[i])
                ids[r, :n] = torch.as_tensor(sequences[i], dtype=torch.long)
                mask[r, :n] = 1
                if segments is not None:
                    seg[r, :n] = torch.as_tensor(segments[i], dtype=torch.long)
            task = None if task_id is None else torch.full((len(rows),), task_id, dtype=torch.long)
            ids, seg, mask = ids.to(device), seg.to(device), mask.to(device)
            states = encoder(ids, mask, seg, None if task is None else task.to(device))
            pooled = (pool or mean_pool)(states, mask).float().cpu()
            if out is None:
                out = torch.empty(len(sequences), pooled.shape[1])
            out[rows] = pooled
    finally:
        encoder.train(was_training)
    assert out is not None
    return out


# ---------------------------------------------------------------------------------------------------------
# Drift and similarity: pure functions of [N, H] matrices


def row_cosines(a: Tensor, b: Tensor) -> Tensor:
    """Cosine of each row of ``a`` with the same row of ``b`` ([N, H], [N, H] -> [N], float64)."""
    a, b = a.to(torch.float64), b.to(torch.float64)
    return (a * b).sum(dim=1) / (a.norm(dim=1) * b.norm(dim=1)).clamp(min=1e-12)


def mean_cosine(source: Tensor, current: Tensor) -> float:
    """Mean row cosine of two [N, H] embedding matrices of the same inputs: 1 when every embedding kept its
    direction."""
    return float(row_cosines(source, current).mean())


def linear_cka(x: Tensor, y: Tensor) -> float:
    """Linear centered kernel alignment of [N, Hx] and [N, Hy] representations of the same N inputs:
    ``||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F)`` with column-centered Xc, Yc (Kornblith et al., 2019).
    1 for representations equal up to rotation and scale; invariant to both, so it sees a change of the
    geometry, not of the basis."""
    if x.shape[0] != y.shape[0] or x.shape[0] < 2:
        raise ValueError(f"linear_cka: expected the same N >= 2 rows, got {x.shape[0]} and {y.shape[0]}")
    x = x.to(torch.float64)
    y = y.to(torch.float64)
    x = x - x.mean(dim=0, keepdim=True)
    y = y - y.mean(dim=0, keepdim=True)
    cross = (y.T @ x).norm() ** 2
    denominator = (x.T @ x).norm() * (y.T @ y).norm()
    return float(cross / denominator) if denominator > 0 else 0.0


def average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing the mean of their positions (the ranks Spearman's correlation uses)."""
    values = np.asarray(values, dtype=np.float64)
    order = np.argsort(values, kind="mergesort")
    _, first, counts = np.unique(values[order], return_index=True, return_counts=True)
    sorted_ranks = np.repeat(first + (counts + 1) / 2.0, counts)
    ranks = np.empty(len(values))
    ranks[order] = sorted_ranks
    return ranks


def spearman(a: np.ndarray | Tensor, b: np.ndarray | Tensor) -> float:
    """Spearman's rank correlation (Pearson of average ranks); 0 when either side is constant."""
    ra = average_ranks(np.asarray(a, dtype=np.float64))
    rb = average_ranks(np.asarray(b, dtype=np.float64))
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denominator = np.sqrt((ra * ra).sum() * (rb * rb).sum())
    return float((ra * rb).sum() / denominator) if denominator > 0 else 0.0


def similarity_spearman(first: Tensor, second: Tensor, scores: Sequence[float] | Tensor) -> float:
    """Zero-shot similarity: Spearman of the cosine of each pair's two embeddings against its gold score."""
    return spearman(row_cosines(first, second).numpy(), np.asarray(scores, dtype=np.float64))


# ---------------------------------------------------------------------------------------------------------
# The monitor's measurement


@dataclass
class ScoredPairs:
    """Sentence pairs with a similarity score, tokenized: ``first[i]`` and ``second[i]`` are token ids."""

    first: list[list[int]]
    second: list[list[int]]
    scores: list[float]

    def __post_init__(self) -> None:
        if not (len(self.first) == len(self.second) == len(self.scores)) or len(self.scores) < 2:
            raise ValueError(f"scored pairs: expected >= 2 pairs with two sentences and a score each, got "
                             f"{len(self.first)}, {len(self.second)}, {len(self.scores)}")


@dataclass
class RetentionProbe:
    """The source encoder's pooled states on fixed held-out sequences (and its zero-shot similarity on a pair
    set), computed once; :meth:`measure` compares any later encoder with them."""

    held_out: list[list[int]]
    held_out_segments: list[list[int]] | None
    source_states: Tensor
    """[N, H] float32: the source's pooled states of ``held_out``."""
    pairs: ScoredPairs | None = None
    source_similarity: float | None = None
    task_id: int | None = 0
    batch_size: int = 64

    @classmethod
    def from_source(cls, source: nn.Module, held_out: list[list[int]], held_out_segments: list[list[int]] | None,
                    pairs: ScoredPairs | None = None, *, task_id: int | None = 0,
                    batch_size: int = 64) -> RetentionProbe:
        """Run ``source`` once over the held-out sequences (and the pairs); the source may be dropped after."""
        probe = cls(held_out, held_out_segments, torch.empty(0), pairs, None, task_id, batch_size)
        probe.source_states = probe._states(source)
        if pairs is not None:
            probe.source_similarity = probe._similarity(source)
        return probe

    def _states(self, encoder: nn.Module) -> Tensor:
        return pooled_states(encoder, self.held_out, self.held_out_segments, batch_size=self.batch_size,
                             task_id=self.task_id)

    def _similarity(self, encoder: nn.Module) -> float:
        assert self.pairs is not None
        sentences = self.pairs.first + self.pairs.second
        states = pooled_states(encoder, sentences, batch_size=self.batch_size, task_id=self.task_id)
        n = len(self.pairs.first)
        return similarity_spearman(states[:n], states[n:], self.pairs.scores)

    def measure(self, encoder: nn.Module) -> dict[str, float]:
        """``drift_cosine``, ``drift_cka`` and, with a pair set, ``similarity_spearman`` (the encoder's) and
        ``similarity_change`` (encoder's minus the source's)."""
        states = self._states(encoder)
        values = {"drift_cosine": mean_cosine(self.source_states, states),
                  "drift_cka": linear_cka(self.source_states, states)}
        if self.pairs is not None and self.source_similarity is not None:
            similarity = self._similarity(encoder)
            values["similarity_spearman"] = similarity
            values["similarity_change"] = similarity - self.source_similarity
        return values


__all__ = ["mean_pool", "pooled_states", "row_cosines", "mean_cosine", "linear_cka", "average_ranks",
           "spearman", "similarity_spearman", "ScoredPairs", "RetentionProbe"]
