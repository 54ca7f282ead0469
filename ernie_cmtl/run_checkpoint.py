"""A pretraining run's checkpoint, read for use outside the trainer (export, fine-tuning, probing).

:func:`load_run_checkpoint` takes a run directory (its latest checkpoint) or one ``checkpoints/step_N`` and
returns the weights with the run's resolved config and tokenizer. The weights are read by the engine that wrote
them (:func:`read_model_state` asks each engine in turn), so neither this module nor :mod:`ernie_cmtl.checkpoint`
knows an engine's file names. To open any trained encoder, a Hugging Face directory included, use
:func:`ernie_cmtl.pretrained.open_pretrained`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from tokenizers import Tokenizer

from data_builders.tokenizer import load_tokenizer
from ernie_cmtl import ds_engine, engine
from ernie_cmtl.checkpoint import CheckpointError, read_state, resolve_checkpoint
from ernie_cmtl.config import ModelConfig, from_dict

ENGINE_READERS = (engine.read_model_state, ds_engine.read_model_state)
"""Each engine's reader of the weights it writes; the first that finds its files wins."""


def read_model_state(checkpoint: Path) -> dict[str, torch.Tensor]:
    """The model state dict of one of our checkpoints, whichever engine wrote it (torch, DeepSpeed ZeRO 0-2)."""
    for read in ENGINE_READERS:
        state = read(checkpoint)
        if state is not None:
            return state
    raise CheckpointError(f"{checkpoint}: no model weights (expected {engine.MODEL_FILE}, or DeepSpeed's "
                          f"{ds_engine.MODEL_STATES_FILE}; for ZeRO-3 run zero_to_fp32.py first)")


@dataclass
class RunCheckpoint:
    """One checkpoint of a pretraining run, read for use outside the trainer (export, fine-tuning, probing)."""

    checkpoint: Path
    run_dir: Path
    raw_config: dict[str, Any]
    """The run's resolved ``config.yaml``, as a mapping."""
    model_config: ModelConfig
    """Its ``model`` section (a :class:`~ernie_cmtl.config.ModelConfig`, vocabulary size filled in)."""
    tokenizer: Tokenizer
    weights: dict[str, torch.Tensor]
    """The whole model state (``encoder.*``, ``heads.<task>.*``)."""
    state: dict[str, Any]
    """``trainer_state.json``."""

    @property
    def encoder_state(self) -> dict[str, torch.Tensor]:
        """The ``encoder.*`` entries of the weights, prefix removed."""
        return {k.removeprefix("encoder."): v for k, v in self.weights.items() if k.startswith("encoder.")}

    @property
    def task_ids(self) -> dict[str, int]:
        """Pretraining task -> task-embedding row, as the checkpoint recorded them (empty if it did not)."""
        return dict(self.state.get("task_ids", {}))


def load_run_checkpoint(path: str | Path) -> RunCheckpoint:
    """Read a run directory's latest checkpoint (or one ``checkpoints/step_N``) with the run's config and
    tokenizer. Raises :class:`CheckpointError` (one line) naming what is missing."""
    checkpoint, run_dir = resolve_checkpoint(path)
    config_path = run_dir / "config.yaml"
    if not config_path.is_file():
        raise CheckpointError(f"{config_path} not found: reading a checkpoint needs the run's resolved config")
    raw = yaml.safe_load(config_path.read_text()) or {}
    model_config = from_dict(ModelConfig, raw.get("model", {}), "model")
    tokenizer = load_tokenizer(run_dir / "tokenizer.json")
    weights = read_model_state(checkpoint)
    run = RunCheckpoint(checkpoint, run_dir, raw, model_config, tokenizer, weights, read_state(checkpoint))
    encoder = run.encoder_state
    if not encoder:
        raise CheckpointError(f"{checkpoint}: the checkpoint holds no encoder.* weights")
    if model_config.vocab_size <= 0:
        model_config.vocab_size = int(encoder["embeddings.word.weight"].shape[0])
    return run
