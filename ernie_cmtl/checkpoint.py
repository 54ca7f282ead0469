"""Checkpoints: one directory per step, written atomically, the last ``keep_last`` kept.

Layout of ``RUN_DIR/checkpoints/step_00000100/``: ``model.pt`` and ``optimizer.pt`` (tensor state dicts),
``rng.pt`` (RNG states as tensors), ``trainer_state.json`` (step, data positions, task ids, ...). The directory
is written under a temporary name and renamed when complete, so a crash mid-write never leaves a checkpoint that
looks valid. Loading uses ``torch.load(weights_only=True)``: no arbitrary object is ever unpickled.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

STEP_DIR = re.compile(r"^step_(\d{8})$")
STATE_FILE = "trainer_state.json"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, incomplete or does not match this run."""


def checkpoint_dirs(root: Path) -> list[Path]:
    """Complete checkpoints under ``root``, oldest first."""
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and STEP_DIR.match(p.name) and (p / STATE_FILE).is_file()]
    return sorted(found, key=lambda p: int(STEP_DIR.match(p.name).group(1)))


def latest_checkpoint(root: Path) -> Path | None:
    dirs = checkpoint_dirs(root)
    return dirs[-1] if dirs else None


def rng_state() -> dict[str, torch.Tensor]:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state.update({f"cuda{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    return state


def set_rng_state(state: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(state["torch"])
    cuda = [state[k] for k in sorted(state) if k.startswith("cuda")]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)


def save_checkpoint(root: Path, step: int, *, model: dict[str, Any], optimizer: dict[str, Any],
                    trainer_state: dict[str, Any], keep_last: int) -> Path:
    """Write ``root/step_NNNNNNNN`` atomically, then delete all but the newest ``keep_last``."""
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{step:08d}"
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{final.name}-"))
    try:
        torch.save(model, tmp / "model.pt")
        torch.save(optimizer, tmp / "optimizer.pt")
        torch.save(rng_state(), tmp / "rng.pt")
        (tmp / STATE_FILE).write_text(json.dumps({**trainer_state, "step": step}, indent=2))
        for f in tmp.iterdir():  # the data is on disk before the rename makes it visible
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        if final.exists():
            shutil.rmtree(final)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in checkpoint_dirs(root)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint directory: ``{"model", "optimizer", "rng", "state"}``."""
    if not (path / STATE_FILE).is_file():
        raise CheckpointError(f"{path} is not a complete checkpoint (no {STATE_FILE})")
    try:
        return {
            "model": torch.load(path / "model.pt", map_location=map_location, weights_only=True),
            "optimizer": torch.load(path / "optimizer.pt", map_location=map_location, weights_only=True),
            "rng": torch.load(path / "rng.pt", map_location="cpu", weights_only=True),
            "state": json.loads((path / STATE_FILE).read_text()),
        }
    except (OSError, RuntimeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"cannot read checkpoint {path}: {str(err).splitlines()[0]}") from None
