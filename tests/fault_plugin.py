"""A test-only task plugin that injects faults: sentence distance whose loss is NaN at chosen steps and which
sends a signal to its own process during a chosen step.

The faults are chosen by the test through ``ERNIE_CMTL_TEST_FAULTS`` (JSON), read only by this plugin, which
only the fault tests register (:func:`install`): the product has no switch for them. A step is recognized by
the seed the trainer gives its collate generator (``hash_seed(seed, step - 1, micro, rank)``), so the same
steps fail in an uninterrupted, a resumed and a distributed run.

``{"seed": 0, "nan_at": [3, 4], "nan_ranks": [0], "signal_at": 5, "signal": "SIGTERM", "signal_rank": 0,
"signal_again_at": 0, "accum": 1}``
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import torch
from torch import Tensor

from ernie_cmtl.data import hash_seed
from pretrain_tasks.sentence_distance import SentenceDistanceTask

ENV = "ERNIE_CMTL_TEST_FAULTS"
TASK = "fault_probe"


def _faults() -> dict:
    return json.loads(os.environ.get(ENV, "{}"))


def _step_of(seed: int, faults: dict, rank: int) -> int | None:
    """The (1-based) training step whose collate seed is ``seed``, among the steps the faults name."""
    steps = {*faults.get("nan_at", []), faults.get("signal_at", 0)} - {0}
    for step in steps:
        for micro in range(faults.get("accum", 1)):
            if seed == hash_seed(faults.get("seed", 0), step - 1, micro, rank):
                return step
    return None


class FaultProbeTask(SentenceDistanceTask):
    """Sentence distance with injected faults (tests only)."""

    name = TASK

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._poison_next = False

    def collate(self, rows: dict[str, list], generator: torch.Generator) -> dict[str, Tensor]:
        faults = _faults()
        rank = int(os.environ.get("RANK", "0"))
        step = _step_of(generator.initial_seed(), faults, rank)
        if step is not None and step in faults.get("nan_at", []) and rank in faults.get("nan_ranks", [0]):
            self._poison_next = True
        if step is not None and step == faults.get("signal_at") and rank == faults.get("signal_rank", 0):
            os.kill(os.getpid(), getattr(signal, faults.get("signal", "SIGTERM")))
        return super().collate(rows, generator)

    def loss(self, logits: Tensor, batch: dict[str, Tensor]) -> Tensor:
        loss = super().loss(logits, batch)
        if self._poison_next:  # the loss of the batch collated last, as a bad batch or an overflow gives
            self._poison_next = False
            return loss + float("nan")
        return loss


def install(directory: Path) -> Path:
    """Register the plugin through the ``ernie_cmtl.tasks`` entry-point group from ``directory`` (a
    ``*.dist-info`` beside a copy of this module); put ``directory`` on the path to use it."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "fault_plugin.py").write_text(Path(__file__).read_text())
    dist = directory / "ernie_cmtl_fault_plugin-0.1.dist-info"
    dist.mkdir(exist_ok=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: ernie-cmtl-fault-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[ernie_cmtl.tasks]\n{TASK} = fault_plugin:FaultProbeTask\n")
    return directory
