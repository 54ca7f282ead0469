"""Open a trained encoder, wherever it was written: the one entry point for fine-tuning, probing and any other
consumer of a pretrained model.

:func:`open_pretrained` takes a pretraining run directory (its latest checkpoint), one
``RUN_DIR/checkpoints/step_N`` directory, or a Hugging Face BERT / ERNIE model directory (``config.json`` +
weights + tokenizer files, a sentence-transformers directory too), and returns a :class:`Pretrained`: the
encoder's weights, its model config, its tokenizer and the task-embedding ids. A run is read by
:func:`ernie_cmtl.run_checkpoint.load_run_checkpoint` (the engine that wrote it reads the weights), a Hugging Face
directory by :func:`ernie_cmtl.hf.load_hf_model`, so a public model's baseline goes through the same code as
our own checkpoints.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer
from torch import Tensor

from data_builders.tokenizer import load_hf_tokenizer
from ernie_cmtl.checkpoint import CheckpointError
from ernie_cmtl.config import ModelConfig
from ernie_cmtl.hf import is_hf_model_dir, load_hf_model
from ernie_cmtl.model import Encoder
from ernie_cmtl.run_checkpoint import load_run_checkpoint


@dataclass
class Pretrained:
    """A trained encoder as its consumers take it."""

    checkpoint: Path
    """Where it was read from: the checkpoint directory, or the Hugging Face model directory."""
    model_config: ModelConfig
    tokenizer: Tokenizer
    encoder_state: dict[str, Tensor]
    """The encoder's state dict (a run checkpoint's ``encoder.*`` entries, prefix removed)."""
    task_ids: dict[str, int]
    """Pretraining task -> task-embedding row (empty when the checkpoint does not record them)."""

    def encoder(self) -> Encoder:
        """A fresh encoder holding the pretrained weights."""
        encoder = Encoder(self.model_config)
        encoder.load_state_dict(self.encoder_state)
        return encoder


def open_pretrained(path: str | Path) -> Pretrained:
    """Open the trained encoder at ``path``: a pretraining run directory (its latest checkpoint), one
    ``checkpoints/step_N`` directory, or a Hugging Face model directory. A run needs its ``config.yaml`` (the
    ``model`` section) and ``tokenizer.json`` beside the checkpoint; weights are read with
    ``weights_only=True``. Raises :class:`~ernie_cmtl.checkpoint.CheckpointError` /
    :class:`~ernie_cmtl.hf.HFCheckpointError` (one line) naming what is missing or does not fit."""
    path = Path(path).expanduser()
    if is_hf_model_dir(path):
        return _open_hf(path)
    run = load_run_checkpoint(path)
    pretrained = Pretrained(run.checkpoint, run.model_config, run.tokenizer, run.encoder_state, run.task_ids)
    try:
        pretrained.encoder()
    except RuntimeError as err:
        raise CheckpointError(f"{run.checkpoint}: weights do not fit {run.run_dir / 'config.yaml'}'s model "
                              f"section: {str(err).splitlines()[0]}") from None
    return pretrained


def _open_hf(directory: Path) -> Pretrained:
    """A Hugging Face model directory: its encoder, tokenizer and (ERNIE exports of ours) task ids; task
    embeddings zero unless the checkpoint has them."""
    hf = load_hf_model(directory)
    rows = hf.task_embeddings.shape[0] if hf.task_embeddings is not None else 1
    model_config = ModelConfig(init_from=str(directory), num_task_embeddings=rows, **hf.sizes)
    task_ids = dict((hf.config.get("ernie_cmtl") or {}).get("task_ids", {}))
    return Pretrained(directory, model_config, load_hf_tokenizer(directory), hf.encoder_state_for(rows), task_ids)
