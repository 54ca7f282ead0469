"""The engine's settings (OptimConfig, one schedule for every loop) and who owns a checkpoint's files."""

from __future__ import annotations

import ast
import json
import math
from pathlib import Path

import pytest
import torch
import yaml

from data_builders.tokenizer import train_wordpiece
from ernie_cmtl.checkpoint import CheckpointError
from ernie_cmtl.config import ConfigError, ModelConfig, OptimConfig, TrainConfig, to_plain
from ernie_cmtl.engine import lr_lambda
from ernie_cmtl.model import Encoder
from ernie_cmtl.pretrained import open_pretrained

REPO = Path(__file__).resolve().parents[1]


def test_the_train_section_gives_the_engine_its_settings():
    train = TrainConfig(lr=3e-4, max_steps=50, warmup_steps=5, lr_decay="cosine", min_lr_ratio=0.1,
                        weight_decay=0.05, adam_betas=[0.9, 0.95], adam_eps=1e-8, grad_clip=0.5,
                        grad_accum_steps=2, precision="bf16")
    assert train.optim == OptimConfig(lr=3e-4, total_steps=50, warmup_steps=5, decay="cosine", min_lr_ratio=0.1,
                                      weight_decay=0.05, betas=(0.9, 0.95), eps=1e-8, grad_clip=0.5,
                                      grad_accum_steps=2, precision="bf16")


def test_the_schedule_warms_up_then_decays_to_its_floor():
    factor = lr_lambda(OptimConfig(lr=1.0, total_steps=12, warmup_steps=3, decay="cosine", min_lr_ratio=0.2))
    assert [factor(s) for s in range(3)] == pytest.approx([0.25, 0.5, 0.75])
    assert factor(3) == pytest.approx(1.0)
    assert factor(3 + 9 // 2) == pytest.approx(0.2 + 0.8 * 0.5 * (1 + math.cos(math.pi * 4 / 9)))
    assert factor(12) == factor(100) == pytest.approx(0.2)
    linear = lr_lambda(OptimConfig(lr=1.0, total_steps=10, decay="linear"))
    assert [linear(s) for s in (0, 5, 10)] == pytest.approx([1.0, 0.5, 0.0])
    constant = lr_lambda(OptimConfig(lr=1.0, decay="constant", warmup_steps=1))  # no horizon needed
    assert [constant(s) for s in (0, 1, 10**9)] == [0.5, 1.0, 1.0]


def test_a_decaying_schedule_needs_its_length():
    with pytest.raises(ConfigError, match="total_steps"):
        OptimConfig(lr=1e-3, decay="linear")
    with pytest.raises(ConfigError, match="betas"):
        OptimConfig(lr=1e-3, decay="constant", betas=(0.9, 1.0))


def test_the_checkpoint_module_knows_no_engine():
    """Each engine owns its file layout; checkpoint.py (atomic commit, verification) imports none of them."""
    tree = ast.parse((REPO / "ernie_cmtl" / "checkpoint.py").read_text(encoding="utf-8"))
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    assert not {m for m in imported if m and m.startswith("ernie_cmtl.")}, imported


def _run_dir(root: Path, encoder: Encoder) -> Path:
    (root / "checkpoints").mkdir(parents=True)
    (root / "config.yaml").write_text(yaml.safe_dump({"model": to_plain(encoder.config)}))
    words = [f"w{i}" for i in range(60)]
    tokenizer = train_wordpiece([" ".join(words)] * 3, vocab_size=encoder.config.vocab_size, min_frequency=1)
    tokenizer.save(str(root / "tokenizer.json"))
    return root


def test_open_pretrained_reads_a_deepspeed_checkpoint_through_its_engine(tmp_path):
    """A DeepSpeed (ZeRO 0-2) checkpoint holds the module state in rank 0's file; the DeepSpeed engine reads it
    (its allow-listed classes included), the same function opens it as a torch-engine checkpoint."""
    torch.manual_seed(0)
    encoder = Encoder(ModelConfig(flavour="custom", hidden_size=16, num_layers=1, num_heads=2,
                                  intermediate_size=32, vocab_size=50, max_position=32))
    run = _run_dir(tmp_path / "run", encoder)
    step = run / "checkpoints" / "step_00000003"
    step.mkdir()
    state = {f"encoder.{k}": v for k, v in encoder.state_dict().items()}
    torch.save({"module": state, "global_steps": 3}, step / "mp_rank_00_model_states.pt")
    (step / "trainer_state.json").write_text(json.dumps({"step": 3, "task_ids": {"knowledge_masking": 0},
                                                         "engine": "deepspeed"}))
    pretrained = open_pretrained(run)
    assert pretrained.checkpoint == step and pretrained.task_ids == {"knowledge_masking": 0}
    for name, value in encoder.state_dict().items():
        assert torch.equal(pretrained.encoder().state_dict()[name], value), name
    (step / "mp_rank_00_model_states.pt").unlink()
    with pytest.raises(CheckpointError, match="no model weights"):
        open_pretrained(run)
