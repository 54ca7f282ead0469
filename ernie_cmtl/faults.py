"""Faults that end long runs, handled: a stop signal, non-finite steps, a checkpoint that cannot be written.

- :class:`StopSignals` turns SIGTERM / SIGUSR1 / SIGINT (``train.stop_signals``) into a request the training
  loop reads at the next step boundary: it finishes the step, writes and verifies a checkpoint and returns
  (the CLI exits with code 3). Under DeepSpeed the ranks agree on the stop with one small all-reduce per step
  (:func:`agree_any`), so every rank stops after the same step.
- :class:`NonFiniteGuard` accounts for steps the engine skipped because their loss or global gradient norm was
  not finite. The engines decide on the device (:func:`poison_nonfinite`, :func:`skip_if_nonfinite`); the
  guard reads the flags when the losses are read (logging steps, checkpoints), counts them per task and stops
  the run (:class:`NonFiniteStepsError`) after ``train.max_bad_steps`` in a row.
- :class:`CheckpointWriteError`: a checkpoint write failed (a full disk, an I/O error, a permission lost);
  the message names the directory and its free space (:func:`write_failure`).
"""

from __future__ import annotations

import logging
import shutil
import signal
import threading
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import torch
from torch import Tensor

log = logging.getLogger(__name__)

STOP_SIGNAL_NAMES = ("SIGTERM", "SIGUSR1", "SIGUSR2", "SIGINT", "SIGHUP")
"""Signals ``train.stop_signals`` may name."""


# -- graceful stop ------------------------------------------------------------------------------------------
class StopSignals:
    """While active (a context manager), the named signals request a stop instead of ending the process.

    The handler only records the signal; the loop polls :attr:`requested` between steps. Further signals while
    the run stops (during the final checkpoint, say) are counted and otherwise ignored, so they cannot cut the
    checkpoint short; a second SIGINT is the exception: it raises ``KeyboardInterrupt`` as Ctrl-C always did
    (the checkpoint being staged is then discarded and the previous one stays the resume point). Handlers are
    installed only in the main thread (Python delivers signals there); elsewhere the signals keep their
    previous behaviour."""

    def __init__(self, names: list[str] | tuple[str, ...]) -> None:
        self.names = list(names)
        self.received: str | None = None
        self.count = 0
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.received is not None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        self.count += 1
        if self.received is None:
            self.received = name
        elif name == "SIGINT":
            raise KeyboardInterrupt

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for name in self.names:
                signum = getattr(signal, name)
                self._previous[signum] = signal.signal(signum, self._handle)
        elif self.names:
            log.warning("not in the main thread: %s keep their default behaviour (no graceful stop)",
                        ", ".join(self.names))
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous.clear()


def stop_group() -> Any:
    """The process group the per-step stop flag is reduced over: the default group where it is gloo (CPU
    ranks), else a gloo group beside it, so the flag is a host tensor and reducing it never waits for the
    GPU stream. Its timeout is the default group's: a rank whose peer died fails, it does not block forever.
    Call on every rank (creating a group is collective)."""
    import torch.distributed as dist

    return None if dist.get_backend() == "gloo" else dist.new_group(backend="gloo")


def agree_any(flag: bool, world_size: int, group: Any = None) -> bool:
    """True on every rank when ``flag`` is true on any rank (one 1-element all-reduce; no-op in one process)."""
    if world_size == 1:
        return flag
    import torch.distributed as dist

    tensor = torch.tensor([int(flag)], dtype=torch.int32)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX, group=group)
    return bool(tensor.item())


# -- non-finite steps ---------------------------------------------------------------------------------------
def poison_nonfinite(loss: Tensor) -> Tensor:
    """``loss`` unchanged when finite; otherwise a loss whose gradients are all NaN, so that a non-finite loss
    makes the global gradient norm non-finite (the one criterion the optimizer step checks; under DeepSpeed
    it is all-reduced, so every rank skips the same step). On the device, no host sync; a finite loss's
    gradients stay bit-identical (multiplied by exactly 1.0)."""
    finite = torch.isfinite(loss.detach())
    return loss * torch.where(finite, 1.0, float("nan")).to(loss.dtype)


def skip_if_nonfinite(optimizer: torch.optim.Optimizer, grad_norm: Tensor) -> Tensor:
    """Step ``optimizer`` unless ``grad_norm`` is not finite; returns the skip flag (a bool tensor).

    Fused AdamW takes the flag on the device (``found_inf``, as ``torch.amp.GradScaler`` passes it): the kernel
    leaves parameters, moments and step counts untouched when it is set, with no host sync. Other optimizers
    (the foreach / for-loop AdamW, which only CPU runs pick) read the flag on the host."""
    skipped = ~torch.isfinite(grad_norm.detach())
    if optimizer.defaults.get("fused"):
        optimizer.found_inf = skipped.float()  # type: ignore[attr-defined]
        try:
            optimizer.step()
        finally:
            del optimizer.found_inf  # type: ignore[attr-defined]
    elif not bool(skipped):
        optimizer.step()
    return skipped


class NonFiniteStepsError(RuntimeError):
    """``train.max_bad_steps`` steps in a row had a non-finite loss or gradient norm (all were skipped)."""


@dataclass
class SkippedStep:
    step: int
    """The step's number as logged (1-based)."""
    task: str
    batches: tuple[int, int]
    """First and last index, in the task's batch stream, of the step's micro-batches."""


@dataclass
class NonFiniteGuard:
    """Counts the steps the engine skipped, per task, and stops the run after ``max_bad_steps`` in a row.

    ``record`` keeps each step's skip flag as the engine returned it (a device tensor, or a bool); ``read``
    reads all kept flags at once (the trainer calls it where it reads the losses anyway) and returns the
    skipped steps. ``pending_rewind``: skipped steps whose learning-rate schedule position the engine still has
    to give back; the trainer hands them over at steps that are multiples of ``train.log_every``, so the
    learning rate of every step is a function of the step numbers alone, whether or not a run was stopped
    and resumed in between (see docs/DATA_QUALITY.md)."""

    max_bad_steps: int
    skipped: dict[str, int] = field(default_factory=dict)
    """Skipped steps per task, over the whole run (checkpointed)."""
    in_a_row: int = 0
    pending_rewind: int = 0
    _unread: list[tuple[SkippedStep, Tensor | bool]] = field(default_factory=list)

    def record(self, step: int, task: str, batches: tuple[int, int], flag: Tensor | bool) -> None:
        self._unread.append((SkippedStep(step, task, batches), flag))

    def read(self) -> list[SkippedStep]:
        """Read the recorded flags; log and count the skipped steps. Raises :class:`NonFiniteStepsError` when
        ``max_bad_steps`` skipped steps follow one another."""
        if not self._unread:
            return []
        flags = [f for _, f in self._unread]
        tensors = [f.reshape(()) for f in flags if isinstance(f, Tensor)]
        on_device = iter(torch.stack(tensors).tolist() if tensors else [])  # one transfer for all of them
        values = [bool(next(on_device)) if isinstance(f, Tensor) else bool(f) for f in flags]
        unread, self._unread = self._unread, []
        found = []
        for (info, _), bad in zip(unread, values, strict=True):
            if not bad:
                self.in_a_row = 0
                continue
            found.append(info)
            self.in_a_row += 1
            self.pending_rewind += 1
            self.skipped[info.task] = self.skipped.get(info.task, 0) + 1
            log.warning("step %d (task %s, batches %d-%d of its stream): non-finite loss or gradient norm; "
                        "skipped (weights, optimizer state and learning-rate schedule untouched); %d in a row, "
                        "%d skipped for %s so far", info.step, info.task, *info.batches, self.in_a_row,
                        self.skipped[info.task], info.task)
            if self.in_a_row >= self.max_bad_steps:
                raise NonFiniteStepsError(
                    f"stopped at step {info.step} (task {info.task}, batches {info.batches[0]}-{info.batches[1]} "
                    f"of its stream): {self.in_a_row} steps in a row had a non-finite loss or gradient norm "
                    f"(train.max_bad_steps={self.max_bad_steps}); none reached the weights. Resume from the "
                    "last checkpoint with a lower train.lr (or more warmup, or fp32), or inspect that batch")
        return found

    def take_rewind(self) -> int:
        """The schedule positions to give back now (and forget)."""
        n, self.pending_rewind = self.pending_rewind, 0
        return n

    def state_dict(self) -> dict[str, Any]:
        return {"skipped": dict(self.skipped), "in_a_row": self.in_a_row, "pending_rewind": self.pending_rewind}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.skipped = dict(state.get("skipped", {}))
        self.in_a_row = int(state.get("in_a_row", 0))
        self.pending_rewind = int(state.get("pending_rewind", 0))


# -- checkpoint write failures ------------------------------------------------------------------------------
class CheckpointWriteError(OSError):
    """A checkpoint could not be written; the previous one is untouched (see :func:`write_failure`)."""


def free_space(path: Path) -> str:
    """Free space on the filesystem holding ``path`` (its nearest existing parent), human-readable."""
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        free = shutil.disk_usage(probe).free
    except OSError:
        return "unknown free space"
    if free < 1024:
        return f"{free} B free"
    for unit in ("KB", "MB", "GB", "TB"):
        free /= 1024
        if free < 1024 or unit == "TB":
            break
    return f"{free:.1f} {unit} free"


def write_failure(root: Path, step: int, err: BaseException, previous: Path | None) -> CheckpointWriteError:
    """The one-line error for a checkpoint of ``step`` that could not be written under ``root``."""
    reason = f"{err.strerror} ({err.filename})" if isinstance(err, OSError) and err.strerror else str(err)
    from ernie_cmtl.checkpoint import verify_checkpoint

    broken = verify_checkpoint(previous) if previous is not None else None
    if previous is None:
        kept = "no earlier checkpoint exists"
    elif broken is None:
        kept = f"the previous checkpoint {previous} is intact and verified; --resume continues from it"
    else:
        kept = f"the previous checkpoint {previous} does not verify either ({broken})"
    return CheckpointWriteError(f"cannot write the checkpoint of step {step} in {root}: {reason}; "
                                f"{free_space(root)} there; {kept}")
