"""Monitoring: wandb (offline) per task and stage, metrics.jsonl, affinity, and 'disabled' means no wandb."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ernie_cmtl import api
from ernie_cmtl.config import WandbConfig
from ernie_cmtl.monitor import gradient_affinity, resolve_wandb_mode

sys.path.insert(0, str(Path(__file__).parent))
from wandb_records import read_history  # noqa: E402

TASKS = "tasks={knowledge_masking: {}, capitalization: {}, sentence_distance: {}}"
TINY = ["model.hidden_size=64", "model.num_heads=2", "model.intermediate_size=256", "train.batch_size=8",
        "tokenizer.vocab_size=4000", "data.max_documents=300", "train.log_every=2", "train.eval_every=10",
        "train.eval_batches=2", "train.save_every=100", TASKS, "schedule.strategy=cmtl",
        "schedule.stages=[knowledge_masking, capitalization, sentence_distance]", "schedule.steps_per_task=8"]


@pytest.fixture(scope="module")
def monitored_run(tmp_path_factory, wiki_shards, cache_dir) -> Path:
    run_dir = tmp_path_factory.mktemp("monitored") / "run"
    config = api.configure(None, [*TINY, f"data.cache_dir={cache_dir}", "monitor.wandb.enabled=true",
                                  "monitor.wandb.mode=offline", "monitor.affinity_every=4"], wiki_shards, run_dir)
    result = api.pretrain(config, progress=False)
    assert result.step == 24
    return run_dir


@pytest.mark.slow
def test_offline_wandb_run_has_per_task_keys_stage_events_and_affinity(monitored_run: Path):
    assert (monitored_run / "wandb").is_dir()  # wandb files live inside the run directory
    rows, config = read_history(monitored_run)
    keys = set().union(*rows)
    for task in ("knowledge_masking", "capitalization", "sentence_distance"):
        assert f"train/{task}/loss" in keys and f"valid/{task}/loss" in keys and f"forgetting/{task}" in keys
    assert {"train/lr", "train/grad_norm", "stage", "perf/tokens_per_s"} <= keys
    stages = [r["events/stage_start"] for r in rows if "events/stage_start" in r]
    assert stages == [0, 1, 2]
    assert any(k.startswith("plan/") for k in keys) and any(k.startswith("affinity/heatmap") for k in keys)
    assert config["train"]["max_steps"] == 24 and "schedule" in config


@pytest.mark.slow
def test_metrics_jsonl_has_every_record_kind(monitored_run: Path):
    records = [json.loads(x) for x in (monitored_run / "metrics.jsonl").read_text().splitlines()]
    kinds = {r["kind"] for r in records}
    assert kinds == {"train", "valid", "stage", "affinity"}
    affinity = [r for r in records if r["kind"] == "affinity"]
    # cmtl with B = 8 over 3 stages: [0, 4) km | [4, 12) km + cap | [12, 24) all three. Stage 0 has one
    # task (no matrix); the affinity interval is 4.
    assert [r["step"] for r in affinity] == [8, 12, 16, 20, 24]
    assert affinity[0]["tasks"] == ["knowledge_masking", "capitalization"]
    last = affinity[-1]
    assert last["tasks"] == ["knowledge_masking", "capitalization", "sentence_distance"]
    matrix = torch.tensor(last["matrix"])
    assert torch.allclose(matrix.diagonal(), torch.ones(3), atol=1e-4) and torch.allclose(matrix, matrix.T)
    valid = [r for r in records if r["kind"] == "valid"]
    assert {r["task"] for r in valid if r["step"] == 4} == {"knowledge_masking", "capitalization",
                                                            "sentence_distance"}  # also untrained tasks
    assert all("forgetting" in r and r["forgetting"] >= 0 for r in valid)
    assert {r["step"] for r in valid if r["stage_end"]} == {4, 12, 24}
    assert [r["stage"] for r in records if r["kind"] == "stage"] == [0, 1, 2]


def test_disabled_mode_never_imports_wandb(tmp_path: Path, wiki_shards, cache_dir):
    script = f"""
import sys
from ernie_cmtl import api
config = api.configure(None, {[*TINY[:-4], "train.max_steps=2", f"data.cache_dir={cache_dir}",
                               "monitor.wandb.enabled=true", "monitor.wandb.mode=disabled"]!r},
                       {wiki_shards!r}, {str(tmp_path / "run")!r})
api.pretrain(config, progress=False)
print("wandb imported:", "wandb" in sys.modules)
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "wandb imported: False" in proc.stdout
    assert not (tmp_path / "run" / "wandb").exists()


def test_mode_resolution(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert resolve_wandb_mode(WandbConfig(enabled=False)) == "disabled"
    assert resolve_wandb_mode(WandbConfig(enabled=True, mode="auto")) == "offline"
    assert resolve_wandb_mode(WandbConfig(enabled=True, mode="disabled")) == "disabled"
    monkeypatch.delenv("WANDB_MODE")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", "/nonexistent")
    assert resolve_wandb_mode(WandbConfig(enabled=True, mode="auto")) == "offline"
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert resolve_wandb_mode(WandbConfig(enabled=True, mode="auto")) == "online"


def test_gradient_affinity_detects_aligned_and_opposed_tasks():
    torch.manual_seed(0)
    layer = torch.nn.Linear(4, 1)
    x = torch.randn(16, 4)
    losses = {"a": lambda: layer(x).sum(), "b": lambda: 2 * layer(x).sum(), "c": lambda: -layer(x).sum()}
    matrix = gradient_affinity(layer, list(layer.parameters()), losses)
    assert matrix[0, 1] == pytest.approx(1.0, abs=1e-5) and matrix[0, 2] == pytest.approx(-1.0, abs=1e-5)
    assert layer.weight.grad is None  # training gradients untouched
