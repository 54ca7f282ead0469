"""Checkpoints: one directory per step, written atomically, the last ``keep_last`` kept.

``RUN_DIR/checkpoints/step_00000100/`` holds the engine's files (each engine owns its layout and reads its
own weights back: :mod:`ernie_cmtl.engine`, :mod:`ernie_cmtl.ds_engine`; this module knows neither),
``rng_rank<r>.pt`` (each rank's RNG states as tensors) and ``trainer_state.json`` (step, data positions, task
ids, plan hash, ..., and the size and SHA-256 of every other file in the checkpoint). Everything is written
into a staging directory first and renamed when complete, so a crash mid-write never leaves a checkpoint that
looks valid; the checksums catch what happens to it later (a disk that fills, a copy cut short): ``--resume``
takes the newest checkpoint that verifies and names the newer ones it skipped. Our files are read with
``torch.load(weights_only=True)``: no arbitrary object is ever unpickled. Reading a run's checkpoint outside
the trainer: :mod:`ernie_cmtl.run_checkpoint`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch

STEP_DIR = re.compile(r"^step_(\d{8})$")
STATE_FILE = "trainer_state.json"
FILES_KEY = "files"
"""Key of ``trainer_state.json`` holding ``{relative path: {"bytes": size, "sha256": hex digest}}``."""

log = logging.getLogger(__name__)


class CheckpointError(RuntimeError):
    """A checkpoint is missing, incomplete or does not match this run."""


def checkpoint_dirs(root: Path) -> list[Path]:
    """Complete checkpoints under ``root``, oldest first."""
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and STEP_DIR.match(p.name) and (p / STATE_FILE).is_file()]
    return sorted(found, key=lambda p: int(STEP_DIR.match(p.name).group(1)))


def latest_checkpoint(root: Path) -> Path | None:
    """The newest complete checkpoint under ``root`` (not verified; see :func:`latest_verified_checkpoint`)."""
    dirs = checkpoint_dirs(root)
    return dirs[-1] if dirs else None


def file_checksums(directory: Path) -> dict[str, dict[str, Any]]:
    """Size and SHA-256 of every file under ``directory`` but ``trainer_state.json``, by relative path."""
    sums = {}
    for path in sorted(p for p in directory.rglob("*") if p.is_file() and p.name != STATE_FILE):
        with path.open("rb") as fh:
            digest = hashlib.file_digest(fh, "sha256").hexdigest()
        sums[path.relative_to(directory).as_posix()] = {"bytes": path.stat().st_size, "sha256": digest}
    return sums


def verify_checkpoint(path: Path) -> str | None:
    """Why the checkpoint ``path`` cannot be resumed from (one phrase), or None when every file it recorded is
    there with its size and checksum. A checkpoint written before checksums were recorded passes unverified."""
    try:
        state = json.loads((path / STATE_FILE).read_text())
    except FileNotFoundError:
        return f"no {STATE_FILE}"
    except (OSError, json.JSONDecodeError) as err:
        return f"{STATE_FILE} is unreadable ({err})"
    for name, recorded in state.get(FILES_KEY, {}).items():
        file = path / name
        if not file.is_file():
            return f"{name} is missing"
        size = file.stat().st_size
        if size != recorded["bytes"]:
            return f"{name} has {size} bytes, {recorded['bytes']} were written (truncated or overwritten)"
        with file.open("rb") as fh:
            if hashlib.file_digest(fh, "sha256").hexdigest() != recorded["sha256"]:
                return f"{name} does not match its recorded SHA-256 (corrupted)"
    return None


def latest_verified_checkpoint(root: Path) -> Path | None:
    """The newest checkpoint under ``root`` that verifies (:func:`verify_checkpoint`); each newer one that does
    not is named in a warning with the reason. None when ``root`` holds no checkpoint; raises
    :class:`CheckpointError` listing them all when none verifies."""
    candidates = [p for p in root.iterdir() if p.is_dir() and STEP_DIR.match(p.name)] if root.is_dir() else []
    candidates.sort(key=lambda p: int(STEP_DIR.match(p.name).group(1)), reverse=True)
    skipped: list[str] = []
    for candidate in candidates:
        reason = verify_checkpoint(candidate)
        if reason is None:
            for line in skipped:
                log.warning("resume: skipped checkpoint %s; using %s instead", line, candidate)
            return candidate
        skipped.append(f"{candidate} ({reason})")
    if skipped:
        raise CheckpointError(f"no checkpoint in {root} verifies: {'; '.join(skipped)}")
    return None


def staging_dir(root: Path, step: int) -> Path:
    """Where a checkpoint is written before it is committed (the same path on every rank)."""
    return root / f".staging-step_{step:08d}"


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


def save_rng(directory: Path, rank: int) -> None:
    torch.save(rng_state(), directory / f"rng_rank{rank}.pt")


def load_rng(directory: Path, rank: int) -> dict[str, torch.Tensor] | None:
    path = directory / f"rng_rank{rank}.pt"
    return torch.load(path, map_location="cpu", weights_only=True) if path.is_file() else None


def _fsync_tree(directory: Path) -> None:
    for f in directory.rglob("*"):
        if f.is_file():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())


def commit_checkpoint(staging: Path, trainer_state: dict[str, Any], keep_last: int) -> Path:
    """Write the trainer state (with :func:`file_checksums` of the staged files) into ``staging``, make it durable, rename it to ``step_NNNNNNNN`` and delete all
    but the newest ``keep_last`` checkpoints. Called once (rank 0) after every rank wrote its files."""
    root = staging.parent
    final = root / staging.name.removeprefix(".staging-")
    trainer_state = {**trainer_state, FILES_KEY: file_checksums(staging)}
    (staging / STATE_FILE).write_text(json.dumps(trainer_state, indent=2))
    _fsync_tree(staging)
    if final.exists():
        shutil.rmtree(final)
    os.rename(staging, final)
    for old in checkpoint_dirs(root)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def read_state(path: Path) -> dict[str, Any]:
    if not (path / STATE_FILE).is_file():
        raise CheckpointError(f"{path} is not a complete checkpoint (no {STATE_FILE})")
    try:
        return json.loads((path / STATE_FILE).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise CheckpointError(f"cannot read {path / STATE_FILE}: {err}") from None


def load_tensors(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """A tensor state dict written by ``torch.save``, read without unpickling arbitrary objects."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except (OSError, RuntimeError) as err:
        raise CheckpointError(f"cannot read checkpoint file {path}: {str(err).splitlines()[0]}") from None


def resolve_checkpoint(path: str | Path) -> tuple[Path, Path]:
    """A run directory (its latest checkpoint) or one ``checkpoints/step_N`` -> (checkpoint, run directory)."""
    path = Path(path).expanduser()
    if (path / STATE_FILE).is_file():
        return path, path.parent.parent
    if (path / "checkpoints").is_dir():
        found = latest_checkpoint(path / "checkpoints")
        if found is None:
            raise CheckpointError(f"no complete checkpoint in {path / 'checkpoints'}")
        return found, path
    raise CheckpointError(f"{path} is neither a pretraining run directory (with checkpoints/) nor a checkpoint "
                          f"directory (with {STATE_FILE})")
