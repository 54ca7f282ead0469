"""Checkpoints that verify themselves (issue 14): per-file checksums in trainer_state.json, ``--resume`` from the
newest checkpoint that verifies with a warning naming each skipped one, and an atomic metrics.jsonl truncation."""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

import pytest
import torch

from ernie_cmtl.checkpoint import (
    FILES_KEY,
    STATE_FILE,
    CheckpointError,
    commit_checkpoint,
    latest_verified_checkpoint,
    staging_dir,
    verify_checkpoint,
)
from ernie_cmtl.cli import main
from ernie_cmtl.monitor import truncate_metrics


def write_checkpoint(root: Path, step: int, keep_last: int = 5) -> Path:
    staging = staging_dir(root, step)
    staging.mkdir(parents=True)
    torch.save({"weight": torch.full((64, 64), float(step))}, staging / "model.pt")
    torch.save({"optimizer": {"lr": 0.1 * step}}, staging / "optimizer.pt")
    (staging / "engine").mkdir()  # DeepSpeed writes sub-directories: they are covered too
    (staging / "engine" / "shard_0.bin").write_bytes(os.urandom(1000))
    return commit_checkpoint(staging, {"step": step}, keep_last)


def test_trainer_state_records_size_and_sha256_of_every_file(tmp_path):
    path = write_checkpoint(tmp_path, 10)
    files = json.loads((path / STATE_FILE).read_text())[FILES_KEY]
    assert set(files) == {"model.pt", "optimizer.pt", "engine/shard_0.bin"}
    assert files["model.pt"]["bytes"] == (path / "model.pt").stat().st_size
    assert re.fullmatch(r"[0-9a-f]{64}", files["model.pt"]["sha256"])
    assert verify_checkpoint(path) is None


@pytest.mark.parametrize(("damage", "reason"), [
    (lambda p: p.write_bytes(p.read_bytes()[:100]), "model.pt has 100 bytes"),
    (lambda p: p.write_bytes(bytes([p.read_bytes()[0] ^ 1]) + p.read_bytes()[1:]), "SHA-256"),
    (lambda p: p.unlink(), "model.pt is missing"),
])
def test_a_damaged_file_fails_verification(tmp_path, damage, reason):
    path = write_checkpoint(tmp_path, 10)
    damage(path / "model.pt")
    assert reason in verify_checkpoint(path)


def test_the_newest_checkpoint_that_verifies_is_chosen_and_the_others_named(tmp_path, caplog):
    for step in (10, 20, 30):
        write_checkpoint(tmp_path, step)
    (tmp_path / "step_00000030" / "model.pt").write_bytes(b"cut")
    (tmp_path / "step_00000020" / STATE_FILE).unlink()
    with caplog.at_level(logging.WARNING, logger="ernie_cmtl.checkpoint"):
        assert latest_verified_checkpoint(tmp_path) == tmp_path / "step_00000010"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert "step_00000030" in warnings[0] and "truncated" in warnings[0] and "step_00000010" in warnings[0]
    assert "step_00000020" in warnings[1] and f"no {STATE_FILE}" in warnings[1]

    (tmp_path / "step_00000010" / "optimizer.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="no checkpoint in .* verifies: .*step_00000030.*step_00000010"):
        latest_verified_checkpoint(tmp_path)
    assert latest_verified_checkpoint(tmp_path / "none") is None


def test_a_checkpoint_without_checksums_still_resumes(tmp_path):
    path = write_checkpoint(tmp_path, 10)
    state = json.loads((path / STATE_FILE).read_text())
    del state[FILES_KEY]  # written before checksums were recorded
    (path / STATE_FILE).write_text(json.dumps(state))
    assert verify_checkpoint(path) is None


def test_metrics_truncation_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "metrics.jsonl"
    lines = [json.dumps({"kind": "train", "step": s}) for s in range(1, 11)]
    path.write_text("\n".join(lines) + '\n{"kind": "train", "st')  # a run killed mid-line
    original = path.read_text()

    def killed(*args: object) -> None:
        raise KeyboardInterrupt  # the process dies between writing the new file and putting it in place

    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        truncate_metrics(path, 4)
    assert path.read_text() == original  # nothing lost
    monkeypatch.undo()
    assert truncate_metrics(path, 4) == 4
    assert path.read_text() == "\n".join(lines[:4]) + "\n"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.jsonl"]  # the leftover of the killed try is gone


def test_resume_skips_a_truncated_newest_checkpoint(tmp_path, cache_dir, capsys):
    run_dir = tmp_path / "run"
    args = ["--run-dir", str(run_dir), "--set", f"data.cache_dir={cache_dir}", "--set", "data.max_documents=60",
            "--set", "tokenizer.vocab_size=1000", "--set", "train.batch_size=4", "--set", "train.save_every=1",
            "--set", "train.keep_last=3", "--set", "schedule.steps_per_task=2", "--set", "train.eval_batches=1",
            "--set", "train.log_every=1", "--quiet"]
    assert main(["pretrain", *args]) == 0, capsys.readouterr().err
    checkpoints = run_dir / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["step_00000001", "step_00000002"]
    model = checkpoints / "step_00000002" / "model.pt"
    model.write_bytes(model.read_bytes()[: model.stat().st_size // 2])  # the disk filled up while copying
    capsys.readouterr()

    assert main(["pretrain", "--resume", *args]) == 0
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    warning = next(line for line in err.splitlines() if "skipped checkpoint" in line)
    assert "step_00000002" in warning and "model.pt" in warning and "truncated" in warning
    assert "step_00000001" in warning  # the one used instead
    assert "done: step 2" in out
    assert verify_checkpoint(checkpoints / "step_00000002") is None  # rewritten by the resumed run
    steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()
             if json.loads(line)["kind"] == "train"]
    assert steps == [1, 2]  # the record of step 2 was dropped on resume, then written again
