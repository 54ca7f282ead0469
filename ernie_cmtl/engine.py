"""The training engine: forward, backward and optimizer step behind one small interface.

The interface mirrors DeepSpeed's engine (``engine(...)``, ``engine.backward(loss)``, ``engine.step()``), so the
DeepSpeed engine can stand in for :class:`TorchEngine` without the loop changing. Every loop (pretraining,
fine-tuning, the benchmarks) describes its step with an :class:`~ernie_cmtl.config.OptimConfig` and gets its
engine from :func:`build_engine`. ``engine(*inputs)`` calls the model with whatever it takes (the pretraining
model: ``(task, batch)``); ``step`` is called once per micro-batch, and the optimizer only steps at
gradient-accumulation boundaries.

Each engine owns its checkpoint files: :class:`TorchEngine` writes ``model.pt`` and ``optimizer.pt``
(:func:`read_model_state` reads the weights back); the DeepSpeed engine its own layout
(:mod:`ernie_cmtl.ds_engine`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, Protocol

import torch
from torch import Tensor, nn

from ernie_cmtl.config import DeepSpeedSection, OptimConfig
from ernie_cmtl.faults import poison_nonfinite, skip_if_nonfinite
from ernie_cmtl.optim import (  # re-exported: the optimizer's home is ernie_cmtl.optim
    AdamWImpl,
    build_optimizer,
    fused_adamw_supported,
    lr_lambda,
    make_adamw,
    param_groups,
)

log = logging.getLogger(__name__)


MODEL_FILE = "model.pt"
"""The torch engine's model state in a checkpoint directory (``torch.save`` of the state dict)."""
OPTIMIZER_FILE = "optimizer.pt"


class Engine(Protocol):
    module: nn.Module
    device: torch.device

    def __call__(self, *inputs: Any, **kwargs: Any) -> Any:
        """The model's forward on ``inputs`` (under the engine's precision)."""

    def backward(self, loss: Tensor) -> None: ...

    def step(self) -> dict[str, float | Tensor] | None:
        """Called after every micro-batch; at an accumulation boundary, steps and returns
        ``{"lr", "grad_norm", "skipped"}``, else returns None. ``grad_norm`` may be a 0-d tensor still on the
        device: reading it is a host sync, so the trainer does so only on logging steps. ``skipped``: whether the
        step was not applied because its loss or global gradient norm was not finite (a bool tensor, or a bool).
        """

    def rewind_schedule(self, steps: int) -> None:
        """Give back the learning-rate schedule positions that ``steps`` skipped steps took (if any did)."""

    def save_checkpoint(self, directory: Path) -> None:
        """Write model and optimizer state into ``directory`` (every rank calls it)."""

    def load_checkpoint(self, directory: Path, strict: bool = True, saved_world_size: int | None = None,
                        step: int = 0) -> None:
        """Restore model and optimizer state from ``directory`` (written at ``saved_world_size`` ranks)."""


def resolve_device(name: str) -> torch.device:
    """``auto`` (cuda if present, else cpu), or a torch device name (``cpu``, ``cuda``, ``cuda:1``, ...)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class TorchEngine:
    """Single-process PyTorch engine: AdamW, warmup + decay, clipping, accumulation, bf16 autocast.

    ``adamw`` picks the optimizer implementation (see :func:`make_adamw`; benchmarks compare them). With
    ``compile`` the forward runs through ``torch.compile`` (dynamic shapes: batches differ in length);
    ``module`` stays the plain model, so checkpoints keep their parameter names."""

    def __init__(self, model: nn.Module, cfg: OptimConfig, device: torch.device,
                 adamw: AdamWImpl = "auto", compile: bool = False,
                 encoder_lr_scale: Callable[[int], float] | None = None) -> None:
        self.module = model.to(device)
        self.device = device
        self.cfg = cfg
        self.optimizer, self.scheduler, self.adamw_impl = build_optimizer(model, cfg, adamw, encoder_lr_scale)
        self.micro_steps = 0
        self.forward = torch.compile(self.module, dynamic=True) if compile else self.module
        log.info("AdamW: %s implementation%s", self.adamw_impl, ", torch.compile on" if compile else "")

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.cfg.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def __call__(self, *inputs: Any, **kwargs: Any) -> Any:
        with self.autocast():
            return self.forward(*inputs, **kwargs)

    def backward(self, loss: Tensor) -> None:
        (poison_nonfinite(loss) / self.cfg.grad_accum_steps).backward()

    def step(self) -> dict[str, float | Tensor] | None:
        self.micro_steps += 1
        if self.micro_steps % self.cfg.grad_accum_steps:
            return None
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        if self.cfg.grad_clip > 0:
            grad_norm = torch.nn.utils.clip_grad_norm_(params, self.cfg.grad_clip)
        else:
            grad_norm = torch.linalg.vector_norm(
                torch.stack([p.grad.norm() for p in params if p.grad is not None]))
        lr = self.scheduler.get_last_lr()[0]
        skipped = skip_if_nonfinite(self.optimizer, grad_norm)  # decided on the device (ernie_cmtl.faults)
        self.scheduler.step()  # a skipped step's position is given back later: rewind_schedule
        self.optimizer.zero_grad(set_to_none=True)
        # tensors: no host sync here
        return {"lr": lr, "grad_norm": grad_norm.detach(), "skipped": skipped}

    def rewind_schedule(self, steps: int) -> None:
        """Give back ``steps`` learning-rate schedule positions taken by skipped (non-finite) steps."""
        if steps:
            self.scheduler.last_epoch -= steps + 1
            self.scheduler.step()

    def save_checkpoint(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        torch.save(self.module.state_dict(), directory / MODEL_FILE)
        torch.save({"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                    "micro_steps": self.micro_steps}, directory / OPTIMIZER_FILE)

    def load_checkpoint(self, directory: Path, strict: bool = True, saved_world_size: int | None = None,
                        step: int = 0) -> None:
        """``strict=False`` (a changed plan): new heads start fresh and the optimizer state is not restored."""
        from ernie_cmtl.checkpoint import CheckpointError, load_tensors

        if not (directory / MODEL_FILE).is_file():
            raise CheckpointError(f"{directory} holds no {MODEL_FILE} (was it written by the DeepSpeed engine? "
                                  "then resume with train.engine=deepspeed)")
        missing, unexpected = self.module.load_state_dict(load_tensors(directory / MODEL_FILE, self.device),
                                                          strict=strict)
        if missing or unexpected:
            log.warning("checkpoint/model mismatch: new %s, dropped %s", missing, unexpected)
            return
        state = load_tensors(directory / OPTIMIZER_FILE, self.device)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.micro_steps = int(state["micro_steps"])


def read_model_state(checkpoint: Path) -> dict[str, Tensor] | None:
    """The model state dict in a checkpoint the torch engine wrote, or None when ``checkpoint`` holds none."""
    from ernie_cmtl.checkpoint import load_tensors

    path = checkpoint / MODEL_FILE
    return load_tensors(path) if path.is_file() else None


def build_engine(model: nn.Module, optim: OptimConfig, *, engine: Literal["torch", "deepspeed"] = "torch",
                 device: str = "auto", compile: bool = False, deepspeed: DeepSpeedSection | None = None,
                 micro_batch_size: int = 1, world_size: int = 1,
                 encoder_lr_scale: Callable[[int], float] | None = None) -> Engine:
    """The engine a loop steps through: :class:`TorchEngine` on ``device`` (``auto``: see
    :func:`resolve_device`), or the DeepSpeed engine (the process group must be started,
    :func:`ernie_cmtl.ds_engine.init_distributed`; it places the model itself). ``micro_batch_size`` and
    ``world_size`` are DeepSpeed's batch accounting; ``compile`` applies to the torch engine;
    ``encoder_lr_scale``: see :func:`ernie_cmtl.optim.build_optimizer`."""
    if engine == "deepspeed":
        from ernie_cmtl.ds_engine import DeepSpeedEngine

        return DeepSpeedEngine(model, optim, world_size, deepspeed or DeepSpeedSection(), micro_batch_size,
                               encoder_lr_scale=encoder_lr_scale)
    return TorchEngine(model, optim, resolve_device(device), compile=compile, encoder_lr_scale=encoder_lr_scale)


__all__ = ["MODEL_FILE", "OPTIMIZER_FILE", "AdamWImpl", "Engine", "TorchEngine", "build_engine", "build_optimizer",
           "fused_adamw_supported", "lr_lambda", "make_adamw", "param_groups", "read_model_state", "resolve_device"]
