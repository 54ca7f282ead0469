"""What the training loop reads every step: batches of a task's built examples as a pure function of
(seed, task, batch number), and the seeds derived from integers.

The offline build that produces those examples lives in :mod:`ernie_cmtl.build`; nothing here builds or
writes data.
"""

from __future__ import annotations

import hashlib

import torch
from datasets import Dataset


class TaskStream:
    """Batches of one task's dataset as a pure function of (seed, task, batch number).

    Epoch ``e`` visits the examples in the permutation drawn from ``(seed, task_index, e)``; batch ``k``
    takes positions ``[k * B, (k + 1) * B)`` of the concatenated epochs. A resumed run only needs ``k``.
    Under data parallelism, rank ``r`` of ``w`` takes the ``r``-th slice of the global batch.

    ``length_group_window`` > 1 groups by length, as HF's ``group_by_length`` does: window ``j`` (the
    positions of global batches ``[j * W, (j + 1) * W)``) is sorted by example length and cut into ``W``
    global batches, so a batch pads to little beyond its own lengths. The windows' batches then run in an
    order drawn from ``(seed, task_index, j)`` and each batch's rows are shuffled the same way, so neither the
    batch's place in the window nor an example's row says anything about its length (or its label). Every
    example is still seen once per epoch (up to the window that straddles two epochs), and a batch is still
    a function of (seed, task, batch number) only: resume and rank agreement hold as without grouping.
    """

    def __init__(self, dataset: Dataset, batch_size: int, seed: int, task_index: int,
                 rank: int = 0, world_size: int = 1, length_group_window: int = 0) -> None:
        if len(dataset) == 0:
            raise ValueError("cannot stream an empty dataset")
        if length_group_window < 0:
            raise ValueError(f"length_group_window must be >= 0, got {length_group_window}")
        self.dataset = dataset
        self.batch_size = batch_size
        self.seed = seed
        self.task_index = task_index
        self.rank, self.world_size = rank, world_size
        self.window = length_group_window if length_group_window > 1 else 0
        self._epoch, self._perm = -1, torch.empty(0, dtype=torch.long)
        self._lengths = example_lengths(dataset) if self.window else None
        self._window_index, self._window_batches = -1, torch.empty(0, dtype=torch.long)

    def _permutation(self, epoch: int) -> torch.Tensor:
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(hash_seed(self.seed, self.task_index, epoch))
            self._epoch, self._perm = epoch, torch.randperm(len(self.dataset), generator=g)
        return self._perm

    def _examples_at(self, start: int, stop: int) -> torch.Tensor:
        """The example indices at stream positions ``[start, stop)`` (across epoch boundaries)."""
        n, parts = len(self.dataset), []
        while start < stop:
            epoch, offset = divmod(start, n)
            take = min(stop - start, n - offset)
            parts.append(self._permutation(epoch)[offset:offset + take])
            start += take
        return torch.cat(parts)

    def _grouped_batches(self, window_index: int) -> torch.Tensor:
        """[W, global batch] example indices of one length-grouped window."""
        if window_index != self._window_index:
            global_batch = self.batch_size * self.world_size
            start = window_index * self.window * global_batch
            examples = self._examples_at(start, start + self.window * global_batch)
            # a stable sort of examples in random order: ties between equal lengths stay in random order
            by_length = examples[torch.sort(self._lengths[examples], stable=True).indices]
            batches = by_length.view(self.window, global_batch)
            g = torch.Generator().manual_seed(hash_seed(self.seed, self.task_index, window_index, GROUPING_SALT))
            batches = batches[torch.randperm(self.window, generator=g)]
            rows = torch.argsort(torch.rand(self.window, global_batch, generator=g), dim=1)
            self._window_index, self._window_batches = window_index, torch.gather(batches, 1, rows)
        return self._window_batches

    def indices(self, batch_number: int) -> list[int]:
        """The dataset indices of this rank's share of global batch ``batch_number``."""
        if self.window:
            window_index, slot = divmod(batch_number, self.window)
            row = self._grouped_batches(window_index)[slot]
            return row[self.rank * self.batch_size:(self.rank + 1) * self.batch_size].tolist()
        n, global_batch = len(self.dataset), self.batch_size * self.world_size
        start = batch_number * global_batch + self.rank * self.batch_size
        out = []
        for position in range(start, start + self.batch_size):
            out.append(int(self._permutation(position // n)[position % n]))
        return out

    def rows(self, batch_number: int) -> dict[str, list]:
        return self.dataset[self.indices(batch_number)]


GROUPING_SALT = 7_919
"""Keeps the length-grouping draws (batch order, rows) apart from the epoch permutations' seeds."""


def example_lengths(dataset: Dataset, column: str = "input_ids") -> torch.Tensor:
    """[N] int64: the length of every example's ``column`` list, read from Arrow without decoding it."""
    import pyarrow.compute as pc

    if column not in dataset.column_names:
        raise ValueError(f"length grouping needs a '{column}' column; the dataset has {dataset.column_names}")
    lengths = pc.list_value_length(dataset.with_format("arrow")[column])
    return torch.from_numpy(lengths.to_numpy().astype("int64"))


def hash_seed(*parts: int) -> int:
    """A 63-bit seed from integers (stable across processes and Python versions, unlike ``hash``)."""
    return int.from_bytes(hashlib.sha1(repr(parts).encode()).digest()[:8], "big") >> 1
