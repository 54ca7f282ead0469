"""DeepSpeed as the training engine: the same small interface as :class:`ernie_cmtl.engine.TorchEngine`.

The DeepSpeed JSON (``train.deepspeed.config``, e.g. ``configs/ds/zero2.json``) chooses ZeRO stage, offload and
communication settings; the fields our config owns are written over it (micro batch, accumulation, clipping,
precision), so one value can never disagree with the other. The optimizer is ours (``torch.optim.AdamW`` through
:func:`ernie_cmtl.optim.build_optimizer`: fused where torch has the kernel; no extension to compile) and so is
the learning-rate schedule; DeepSpeed wraps both.

Its checkpoints are DeepSpeed's layout (``mp_rank_00_model_states.pt``, ZeRO shards, its recovery scripts),
read with ``weights_only=True`` and the few DeepSpeed classes they hold allow-listed here
(:func:`allow_deepspeed_checkpoint_globals`); :func:`read_model_state` reads the weights outside the trainer.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ernie_cmtl.config import DeepSpeedSection, OptimConfig
from ernie_cmtl.faults import poison_nonfinite
from ernie_cmtl.optim import build_optimizer

log = logging.getLogger(__name__)

MODEL_STATES_FILE = "mp_rank_00_model_states.pt"
"""DeepSpeed's module state (ZeRO 0-2: the whole model; written by rank 0)."""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def init_distributed() -> tuple[int, int]:
    """Start the process group once per process (gloo on CPU, nccl on GPUs); returns (rank, world size).
    A single process without a launcher gets the environment DeepSpeed expects (else it looks for MPI)."""
    import deepspeed
    import torch.distributed as dist

    if not dist.is_initialized():
        os.environ.setdefault("RANK", "0")
        os.environ.setdefault("WORLD_SIZE", "1")
        os.environ.setdefault("LOCAL_RANK", "0")
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(_free_port()))
        deepspeed.init_distributed(verbose=False)
    return dist.get_rank(), dist.get_world_size()


SHM_BUFFER_DIR = Path("/dev/shm")


def remove_shm_buffers(rank: int) -> None:
    """Unlink ``rank``'s shared-memory file of DeepSpeed's CPU all-reduce (its ``deepspeed_shm_comm`` op),
    ``deepspeed_allreduce_buffer_{uid}_{MASTER_ADDR}_{MASTER_PORT}_{rank}`` (69 MB), once its process group is
    done: DeepSpeed never does, and in RAM-backed /dev/shm every multi-process run left them behind (17 GB after
    a day of tests here). The other ranks opened it at initialization; their mappings outlive the name."""
    addr, port = os.environ.get("MASTER_ADDR"), os.environ.get("MASTER_PORT")
    if addr is None or port is None:
        return
    (SHM_BUFFER_DIR / f"deepspeed_allreduce_buffer_{os.getuid()}_{addr}_{port}_{rank}").unlink(missing_ok=True)


def build_ds_config(optim: OptimConfig, section: DeepSpeedSection, micro_batch_size: int,
                    world_size: int) -> dict[str, Any]:
    """The DeepSpeed JSON named in ``section``, with our fields written over it (conflicts are logged)."""
    path = Path(section.config)
    if not path.is_file():
        raise FileNotFoundError(f"deepspeed.config: {path} not found")
    ds = json.loads(path.read_text())
    ds = _deep_update(ds, copy.deepcopy(section.overrides))
    ours = {
        "train_micro_batch_size_per_gpu": micro_batch_size,
        "gradient_accumulation_steps": optim.grad_accum_steps,
        "train_batch_size": micro_batch_size * optim.grad_accum_steps * world_size,
        "gradient_clipping": optim.grad_clip,
    }
    for key, value in ours.items():
        if key in ds and ds[key] != value:
            log.warning("DeepSpeed config %s: %s=%s replaced by the run config's %s", path, key, ds[key], value)
        ds[key] = value
    ds["bf16"] = {**ds.get("bf16", {}), "enabled": optim.precision == "bf16"}
    ds["fp16"] = {**ds.get("fp16", {}), "enabled": optim.precision == "fp16"}
    if optim.precision == "bf16":  # skip steps with a non-finite gradient norm (ernie_cmtl.faults)
        ds["bf16"]["check_grad_overflow"] = True
    ds.setdefault("steps_per_print", 10**9)  # our progress bar and metrics report progress
    ds["zero_allow_untested_optimizer"] = True
    return ds


def _deep_update(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    for key, value in update.items():
        base[key] = _deep_update(base.get(key, {}), value) if isinstance(value, dict) else value
    return base


def _safe_checkpoint_engine(config):
    """DeepSpeed's checkpoint engine, but reading with ``weights_only=True``: its files hold tensors and plain
    containers, plus a few DeepSpeed classes allow-listed here by name; nothing else is unpickled."""
    from deepspeed.runtime.checkpoint_engine.torch_checkpoint_engine import TorchCheckpointEngine

    class SafeTorchCheckpointEngine(TorchCheckpointEngine):
        def load(self, path: str, map_location=None):
            return torch.load(path, map_location=map_location, weights_only=True)

    return SafeTorchCheckpointEngine(config)


def allow_deepspeed_checkpoint_globals() -> None:
    """The DeepSpeed objects its checkpoints contain that ``weights_only`` loading must accept."""
    from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    torch.serialization.add_safe_globals([LossScaler, DynamicLossScaler, ZeroStageEnum, fragment_address])


class DeepSpeedEngine:
    """``deepspeed.initialize`` behind the engine interface (:class:`ernie_cmtl.engine.Engine`).
    ``section``: the DeepSpeed JSON and its overrides; ``micro_batch_size``: sequences per forward pass."""

    def __init__(self, model: nn.Module, cfg: OptimConfig, world_size: int,
                 section: DeepSpeedSection | None = None, micro_batch_size: int = 1,
                 encoder_lr_scale: Callable[[int], float] | None = None) -> None:
        import deepspeed

        self.cfg = cfg
        self.ds_config = build_ds_config(cfg, section or DeepSpeedSection(), micro_batch_size, world_size)
        # the implementation is chosen for the device the parameters will be on (DeepSpeed moves them there)
        optimizer, scheduler, self.adamw_impl = build_optimizer(model, cfg, encoder_lr_scale=encoder_lr_scale)
        log.info("AdamW: %s implementation (DeepSpeed engine)", self.adamw_impl)
        self.engine, self.optimizer, _, self.scheduler = deepspeed.initialize(
            model=model, optimizer=optimizer, lr_scheduler=scheduler, config=self.ds_config)
        allow_deepspeed_checkpoint_globals()
        self.engine.checkpoint_engine = _safe_checkpoint_engine(self.engine._config)
        self.module = self.engine.module
        self.device = self.engine.device

    def __call__(self, *inputs: Any, **kwargs: Any) -> Any:
        return self.engine(*inputs, **kwargs)

    def backward(self, loss: Tensor) -> None:
        # DeepSpeed divides by the accumulation steps itself; a non-finite loss makes the gradients NaN, so
        # the global (all-reduced) norm decides the skip on every rank alike
        self.engine.backward(poison_nonfinite(loss))

    @property
    def skips_nonfinite_itself(self) -> bool:
        """ZeRO 1-3 and the bf16/fp16 optimizers skip a step whose global gradient norm is not finite (optimizer
        and schedule untouched; ``check_grad_overflow`` is forced on for bf16); plain ZeRO 0 in fp32 does not,
        so we hand our fused AdamW the flag (``found_inf``) and give the schedule position back ourselves."""
        return self.engine.zero_optimization_stage() > 0 or self.cfg.precision != "fp32"

    def step(self) -> dict[str, Any] | None:
        boundary = self.engine.is_gradient_accumulation_boundary()
        lr = self.scheduler.get_last_lr()[0]
        skipped: Tensor | bool | None = None
        if boundary and not self.skips_nonfinite_itself:  # gradients are all-reduced by now (backward)
            grads = [p.grad for p in self.module.parameters() if p.grad is not None]
            skipped = ~torch.isfinite(torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads))))
            self.optimizer.found_inf = skipped.float()
        try:
            self.engine.step()
        finally:
            self.optimizer.__dict__.pop("found_inf", None)
        if not boundary:
            return None
        norm = self.engine.get_global_grad_norm()
        if skipped is None:
            skipped = not self.engine.was_step_applied()
        return {"lr": lr, "grad_norm": float(norm) if norm is not None else float("nan"), "skipped": skipped}

    def rewind_schedule(self, steps: int) -> None:
        """Give back schedule positions of skipped steps (only where DeepSpeed advanced it: ZeRO 0, fp32)."""
        if steps and not self.skips_nonfinite_itself:
            self.scheduler.last_epoch -= steps + 1
            self.scheduler.step()

    def save_checkpoint(self, directory: Path) -> None:
        """Every rank calls this; DeepSpeed writes ``directory`` (its ZeRO shards included)."""
        self.engine.save_checkpoint(str(directory.parent), tag=directory.name, save_latest=False)
        # DeepSpeed drops its recovery scripts (zero_to_fp32.py, ...) beside the tag directory; keep each
        # checkpoint self-contained by moving them into it (rank 0 writes them, synchronously, above)
        if self.engine.global_rank == 0:
            for script in directory.parent.glob("zero_to_*.py"):
                script.replace(directory / script.name)

    def load_checkpoint(self, directory: Path, strict: bool = True, saved_world_size: int | None = None,
                        step: int = 0) -> None:
        """Restore from ``directory``. At another world size DeepSpeed cannot re-partition ZeRO optimizer
        state, so then only the weights are loaded: AdamW's moments restart from zero and the learning-rate
        schedule is set to ``step`` (the warning in the trainer says so)."""
        import torch.distributed as dist

        if saved_world_size is not None and saved_world_size != dist.get_world_size():
            path, _ = self.engine.load_checkpoint(
                str(directory.parent), tag=directory.name, load_module_strict=strict, load_module_only=True,
                load_optimizer_states=False, load_lr_scheduler_states=False)
            self.scheduler.last_epoch = step - 1
            self.scheduler.step()
        else:
            path, _ = self.engine.load_checkpoint(str(directory.parent), tag=directory.name,
                                                  load_module_strict=strict)
        if path is None:
            from ernie_cmtl.checkpoint import CheckpointError

            raise CheckpointError(f"DeepSpeed could not load the checkpoint in {directory}")

    def model_state_dict(self) -> dict[str, Any]:
        return self.engine.module.state_dict()


def read_model_state(checkpoint: Path) -> dict[str, Tensor] | None:
    """The model state dict in a checkpoint the DeepSpeed engine wrote (ZeRO 0-2: rank 0's module state), or
    None when ``checkpoint`` holds none. ZeRO-3 partitions the weights: run its ``zero_to_fp32.py`` first."""
    from ernie_cmtl.checkpoint import load_tensors

    path = checkpoint / MODEL_STATES_FILE
    if not path.is_file():
        return None
    allow_deepspeed_checkpoint_globals()
    state = load_tensors(path).get("module")
    return state if isinstance(state, dict) else None
