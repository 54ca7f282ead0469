"""End-to-end runs on real text: the shared Wikipedia sample, corpus to checkpoint and back."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ernie_cmtl import api
from ernie_cmtl.checkpoint import checkpoint_dirs

TINY = ["model.hidden_size=64", "model.num_heads=2", "model.intermediate_size=256", "model.num_layers=2",
        "train.batch_size=16", "train.log_every=5", "tokenizer.vocab_size=4000", "data.max_documents=400"]


def _config(run_dir: Path, corpus: list[str], cache_dir: Path, extra: list[str]):
    return api.configure(None, [*TINY, f"data.cache_dir={cache_dir}", *extra], corpus, run_dir)


@pytest.mark.slow
def test_pretrain_on_wikipedia_loss_falls_and_checkpoint_round_trips(tmp_path, wiki_shards, cache_dir):
    run_dir = tmp_path / "run"
    config = _config(run_dir, wiki_shards, cache_dir,
                     ["train.max_steps=80", "train.lr=2e-3", "train.warmup_steps=8", "train.eval_every=40",
                      "train.save_every=40", "train.keep_last=1"])
    result = api.pretrain(config, progress=False)
    losses = [loss for _, _, loss in result.losses]
    assert len(losses) == 80
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    assert last < first - 1.0, (first, last)
    evals = [e["knowledge_masking"]["loss"] for e in result.eval_history]
    assert evals[-1] < evals[0]
    assert [p.name for p in checkpoint_dirs(run_dir / "checkpoints")] == ["step_00000080"]  # keep_last=1
    for name in ("config.yaml", "tokenizer.json", "train.log", "metrics.jsonl"):
        assert (run_dir / name).is_file(), name
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train_records = [r for r in records if r["kind"] == "train"]
    assert [r["step"] for r in train_records] == list(range(5, 81, 5))
    assert all(r["task"] == "knowledge_masking" and r["loss"] > 0 for r in train_records)
    assert {r["step"] for r in records if r.get("split") == "valid"} == {40, 80}

    # the checkpoint loads into a fresh model and reproduces the held-out loss exactly
    from ernie_cmtl.assembly import settle_run
    from ernie_cmtl.build.prepare import prepare_data
    from ernie_cmtl.trainer import Trainer

    data = prepare_data(config, run_dir, progress=False)
    settled, plan = settle_run(config, data)
    trainer = Trainer(settled, data, run_dir, plan)
    trainer.resume()
    assert trainer.step == 80
    grad_modes: list[bool] = []
    hook = trainer.engine.module.register_forward_hook(lambda *_: grad_modes.append(torch.is_grad_enabled()))
    assert trainer.evaluate()["knowledge_masking"]["loss"] == pytest.approx(evals[-1], rel=1e-6)
    hook.remove()
    assert grad_modes and not any(grad_modes)  # evaluation builds no autograd graph
    # so does api.evaluate / `ernie-cmtl evaluate` on the run directory, and on the whole valid split it
    # reports every example
    held_out = api.evaluate(run_dir, batches=config.train.eval_batches)["knowledge_masking"]
    assert held_out["loss"] == pytest.approx(evals[-1], rel=1e-6)
    assert held_out["chance_loss"] == pytest.approx(math.log(data.vocab_size), rel=0.01)
    assert "majority_accuracy" not in held_out  # knowledge masking has no label column
    whole = api.evaluate(run_dir / "checkpoints" / "step_00000080")["knowledge_masking"]
    assert whole["examples"] == len(data.valid["knowledge_masking"]) // 16 * 16  # every full batch
    from ernie_cmtl.cli import main

    assert main(["evaluate", str(run_dir), "--batches", "1", "--json", str(tmp_path / "heldout.json")]) == 0
    assert json.loads((tmp_path / "heldout.json").read_text())["knowledge_masking"]["examples"] == 16


@pytest.mark.slow
def test_resume_is_identical_to_an_uninterrupted_run(tmp_path, wiki_shards, cache_dir):
    extra = ["train.max_steps=12", "train.eval_every=4", "train.save_every=100", "model.dropout=0.1",
             "train.grad_accum_steps=2"]
    straight = api.pretrain(_config(tmp_path / "a", wiki_shards, cache_dir, extra), progress=False)
    api.pretrain(_config(tmp_path / "b", wiki_shards, cache_dir, extra), stop_at=6, progress=False)
    resumed = api.pretrain(_config(tmp_path / "b", wiki_shards, cache_dir, extra), resume=True, progress=False)
    assert [s for s, _, _ in resumed.losses] == list(range(7, 13))
    assert [loss for _, _, loss in straight.losses[6:]] == [loss for _, _, loss in resumed.losses]
    steps = [json.loads(line)["step"] for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()
             if json.loads(line)["kind"] == "train"]
    assert steps == sorted(set(steps))  # no duplicated records after the resume


def test_refuses_to_overwrite_a_run_without_resume(tmp_path, wiki_shards, cache_dir):
    config = _config(tmp_path / "run", wiki_shards, cache_dir, ["train.max_steps=2", "train.eval_batches=1"])
    api.pretrain(config, progress=False)
    from ernie_cmtl.config import ConfigError

    with pytest.raises(ConfigError, match="--resume"):
        api.pretrain(config, progress=False)


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ernie_cmtl.cli", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=600)


@pytest.mark.slow
def test_cli_pretrain_on_wikipedia(tmp_path, wiki_shards, cache_dir):
    repo = Path(__file__).resolve().parents[1]
    proc = _cli("pretrain", "--config", str(repo / "configs" / "default.yaml"), "--corpus", *wiki_shards,
                "--run-dir", str(tmp_path / "run"), "--max-steps", "3", "--quiet",
                "--set", f"data.cache_dir={cache_dir}", "--set", "train.eval_batches=1", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "done: step 3" in proc.stdout
    assert (tmp_path / "run" / "checkpoints" / "step_00000003" / "model.pt").is_file()


def test_cli_corpus_without_usable_documents_names_the_input(tmp_path, cache_dir):
    corpus = tmp_path / "stubs.txt"
    corpus.write_text("Too short.\n\nAlso short.\n")
    proc = _cli("build-data", "--corpus", str(corpus), "--run-dir", str(tmp_path / "run"),
                "--set", f"data.cache_dir={cache_dir}", cwd=tmp_path)
    assert proc.returncode == 2  # a user error (cli.EXIT_USER_ERROR)
    assert str(corpus) in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_cli_tasks_lists_knowledge_masking(tmp_path):
    proc = _cli("tasks", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    line = next(line for line in proc.stdout.splitlines() if line.startswith("knowledge_masking"))
    assert "ernie-cmtl" in line and "token" in line


def test_help_explains_every_command(tmp_path):
    for command in ("pretrain", "build-data", "tasks"):
        proc = _cli(command, "--help", cwd=tmp_path)
        assert proc.returncode == 0 and "usage: ernie-cmtl" in proc.stdout
    assert "--max-steps" in _cli("pretrain", "--help", cwd=tmp_path).stdout


def test_a_refused_resume_leaves_the_runs_config_as_it_was(tmp_path, wiki_shards, cache_dir):
    """Resuming under another schedule is refused by the checkpoint; the run's config.yaml still says what
    the checkpoint was trained with."""
    from ernie_cmtl.checkpoint import CheckpointError

    base = ["train.max_steps=2", "train.eval_batches=1"]
    api.pretrain(_config(tmp_path / "run", wiki_shards, cache_dir, base), progress=False)
    written = (tmp_path / "run" / "config.yaml").read_text()
    changed = _config(tmp_path / "run", wiki_shards, cache_dir, ["train.max_steps=4", "train.eval_batches=1"])
    with pytest.raises(CheckpointError, match="another schedule"):
        api.pretrain(changed, resume=True, progress=False)
    assert (tmp_path / "run" / "config.yaml").read_text() == written
