"""``--wandb`` / ``--wandb-project`` on ``pretrain`` and ``finetune``: sugar over ``monitor.wandb.*``, and real
offline wandb runs (read back from their ``.wandb`` files) from the CLI, with the mode from WANDB_MODE."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from glue_fixtures import write_glue_fixtures
from wandb_records import iter_payloads, read_history

from downstream.finetune import load_finetune_config
from ernie_cmtl import api, cli

TASKS = ("knowledge_masking", "capitalization")
# Two tasks in two cmtl stages, 8 steps, every step logged: the smallest pretraining run with per-task keys.
TINY = ["model.hidden_size=32", "model.num_heads=2", "model.intermediate_size=128", "model.num_layers=2",
        "tokenizer.vocab_size=4000", "data.max_documents=200", "data.max_seq_len=64", "train.batch_size=8",
        "train.log_every=1", "train.eval_every=100", "train.eval_batches=1", "train.save_every=100",
        "tasks={knowledge_masking: {}, capitalization: {}}", "schedule.strategy=cmtl",
        "schedule.stages=[knowledge_masking, capitalization]", "schedule.steps_per_task=4"]


def _cli(*args: str, cwd: Path, wandb_mode: str = "offline") -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": wandb_mode}
    return subprocess.run([sys.executable, "-m", "ernie_cmtl.cli", *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=600)


def _run_record(run_dir: Path) -> tuple[str, dict[str, Any]]:
    """(project, summary) of the single offline wandb run under ``run_dir/wandb``."""
    from wandb.proto import wandb_internal_pb2

    files = sorted((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 1, files
    project, summary = None, {}
    for payload in iter_payloads(files[0]):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(payload)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            project = record.run.project
        elif kind == "summary":
            for item in record.summary.update:
                summary[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
    assert project is not None, f"no run record in {files[0]}"
    return project, summary


# -- the flags are the --set overrides ----------------------------------------------------------------------


@pytest.mark.parametrize("command", ["pretrain", "finetune"])
def test_help_explains_both_flags_and_wandb_mode(command: str, capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([command, "--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for needle in ("--wandb ", "--wandb-project NAME", "implies --wandb", "monitor.wandb.enabled=true",
                   "monitor.wandb.project=NAME", "WANDB_MODE=offline", "WANDB_MODE=online", "wandb login",
                   "wandb sync", "RUN_DIR/wandb/"):
        assert needle in text, needle


def _args(*argv: str):
    return cli.build_parser().parse_args(list(argv))


def test_flags_configure_exactly_what_the_set_overrides_do():
    set_form = api.configure(None, ["monitor.wandb.enabled=true", "monitor.wandb.project=my-proj"])
    flag_form = api.configure(None, cli.wandb_overrides(_args("pretrain", "--wandb", "--wandb-project", "my-proj")))
    assert flag_form == set_form and flag_form.monitor.wandb.enabled
    implied = api.configure(None, cli.wandb_overrides(_args("pretrain", "--wandb-project", "my-proj")))
    assert implied == set_form  # --wandb-project implies --wandb
    default_project = api.configure(None, cli.wandb_overrides(_args("pretrain", "--wandb"))).monitor.wandb
    assert default_project.enabled and default_project.project == "ernie-cmtl"
    assert cli.wandb_overrides(_args("pretrain")) == [] and not api.configure(None, []).monitor.wandb.enabled
    # a name YAML would read as a number or a boolean stays the string given
    for name in ("2024", "yes", "a: b"):
        assert api.configure(None, cli.wandb_overrides(_args("pretrain", "--wandb-project", name))
                             ).monitor.wandb.project == name
    finetune = _args("finetune", "--checkpoint", "x", "--wandb-project", "glue-runs")
    config = load_finetune_config(None, cli.wandb_overrides(finetune))
    assert config == load_finetune_config(None, ["monitor.wandb.enabled=true", "monitor.wandb.project=glue-runs"])
    assert config.monitor.wandb.enabled and config.monitor.wandb.project == "glue-runs"
    assert not load_finetune_config(None, cli.wandb_overrides(_args("finetune", "--checkpoint", "x"))
                                    ).monitor.wandb.enabled


def test_flag_values_are_validated_with_the_other_overrides(tmp_path: Path):
    proc = _cli("finetune", "--checkpoint", str(tmp_path), "--wandb", "--set", "monitor.wandb.mode=sometimes",
                cwd=tmp_path)
    assert proc.returncode == 2 and "monitor.wandb.mode" in proc.stderr, proc.stderr
    proc = _cli("finetune", "--checkpoint", str(tmp_path), "--wandb", "--set",
                "monitor.wandb.log_checkpoints=true", cwd=tmp_path)
    assert proc.returncode == 2 and "monitor.wandb.log_checkpoints" in proc.stderr, proc.stderr


# -- real offline runs from the CLI -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pretrain_run(tmp_path_factory: pytest.TempPathFactory, wiki_shards: list[str], cache_dir: Path) -> Path:
    """``ernie-cmtl pretrain --wandb --wandb-project P`` under WANDB_MODE=offline, 8 steps of two tasks."""
    run_dir = tmp_path_factory.mktemp("wandb_pretrain") / "run"
    sets = [x for item in [*TINY, f"data.cache_dir={cache_dir}"] for x in ("--set", item)]
    proc = _cli("pretrain", "--wandb", "--wandb-project", "ernie-flags-test", "--run-dir", str(run_dir), "--quiet",
                "--corpus", *wiki_shards, *sets, cwd=run_dir.parent)
    assert proc.returncode == 0, proc.stderr
    return run_dir


@pytest.mark.slow
def test_cli_pretrain_with_wandb_flags_writes_an_offline_run_with_per_task_keys(pretrain_run: Path):
    project, _ = _run_record(pretrain_run)
    assert project == "ernie-flags-test"
    rows, config = read_history(pretrain_run)
    assert config["monitor"]["wandb"]["enabled"] is True
    assert config["monitor"]["wandb"]["project"] == "ernie-flags-test"
    assert config["train"]["max_steps"] == 8 and list(config["tasks"]) == list(TASKS)
    keys = set().union(*rows)
    for task in TASKS:
        assert f"train/{task}/loss" in keys and f"valid/{task}/loss" in keys, sorted(keys)
    losses = [r["train/capitalization/loss"] for r in rows if "train/capitalization/loss" in r]
    assert losses and all(loss > 0 for loss in losses)
    assert [r["events/stage_start"] for r in rows if "events/stage_start" in r] == [0, 1]


@pytest.mark.slow
def test_cli_finetune_with_wandb_project_logs_train_loss_and_dev_scores(tmp_path: Path, pretrain_run: Path):
    glue = write_glue_fixtures(tmp_path / "glue")
    run_dir = tmp_path / "ft"
    proc = _cli("finetune", "--checkpoint", str(pretrain_run), "--tasks", "mnli,qqp", "--max-steps", "4",
                "--per-task-steps", "2", "--run-dir", str(run_dir), "--quiet", "--wandb-project", "ernie-ft-test",
                "--set", f"glue_dir={glue}", "--set", "max_seq_len=32", "--set", "batch_size=4",
                "--set", "log_every=1", "--set", "sampling=uniform", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    project, summary = _run_record(run_dir)
    assert project == "ernie-ft-test"
    rows, config = read_history(run_dir)
    assert config["monitor"]["wandb"] == {**config["monitor"]["wandb"], "enabled": True, "project": "ernie-ft-test"}
    assert config["tasks"] == ["mnli", "qqp"] and config["checkpoint"].endswith("step_00000008")

    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    trained = [r for r in records if "split" not in r]
    assert len(trained) == 4 + 2 + 2  # every step logged: the multi-task stage, then each task alone
    # one wandb row per step: the stages' steps (1..4, then 1..2 per task) follow each other on wandb's axis
    steps = [r["_step"] for r in rows if "stage" in r]
    assert steps == list(range(1, 9))
    for record, row in zip(trained, [r for r in rows if "stage" in r], strict=True):
        assert row[f"train/{record['task']}/loss"] == record["loss"] and row["stage"] == record["stage"]
        assert row["train/lr"] == pytest.approx(record["lr"])
    assert [r["stage"] for r in rows if "stage" in r][4:] == ["per_task:mnli"] * 2 + ["per_task:qqp"] * 2

    results = json.loads((run_dir / "results.json").read_text())
    dev_rows = {r["_step"]: r for r in rows if any(k.startswith("dev/") for k in r)}
    assert sorted(dev_rows) == [4, 6, 8]  # after the multi-task stage and after each per-task stage
    for metric, value in results["multitask"]["mnli"].items():
        assert dev_rows[4][f"dev/mnli/{metric}"] == value
    assert {"dev/mnli/accuracy_matched", "dev/mnli/accuracy_mismatched", "dev/mnli/score"} <= set(dev_rows[6])
    assert dev_rows[8]["dev/qqp/score"] == results["per_task"]["qqp"]["score"]
    assert summary["glue_score"] == results["glue_score"]
    assert summary["baseline/qqp/score"] == results["baseline"]["qqp"]["score"]


@pytest.mark.slow
def test_finetune_without_the_flag_or_with_wandb_disabled_writes_no_wandb_run(
        tmp_path: Path, pretrain_run: Path, monkeypatch: pytest.MonkeyPatch):
    glue = write_glue_fixtures(tmp_path / "glue")
    common = [f"glue_dir={glue}", "max_seq_len=32", "batch_size=4", "max_steps=2"]
    off = load_finetune_config(None, [*common, f"run_dir={tmp_path / 'off'}"])
    api.finetune(pretrain_run, ["wnli"], off, progress=False)
    assert (tmp_path / "off" / "results.json").is_file() and not (tmp_path / "off" / "wandb").exists()
    monkeypatch.setenv("WANDB_MODE", "disabled")  # the environment turns an enabled run off
    disabled = load_finetune_config(None, [*common, f"run_dir={tmp_path / 'disabled'}",
                                           "monitor.wandb.enabled=true"])
    api.finetune(pretrain_run, ["wnli"], disabled, progress=False)
    assert (tmp_path / "disabled" / "results.json").is_file() and not (tmp_path / "disabled" / "wandb").exists()
