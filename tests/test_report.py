"""``ernie-cmtl report``: plots and summary.md from metrics.jsonl, on synthetic runs and a real short run."""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import pytest

from ernie_cmtl import api
from ernie_cmtl.assembly import load_config
from ernie_cmtl.config import dump_config
from ernie_cmtl.report import ReportError, write_report
from ernie_cmtl.scheduler import build_plan

TASKS = ["knowledge_masking", "capitalization", "sentence_distance"]
CMTL = ["tasks={knowledge_masking: {}, capitalization: {}, sentence_distance: {}}", "schedule.strategy=cmtl",
        "schedule.stages=[knowledge_masking, capitalization, sentence_distance]",
        "schedule.steps_per_task=40", "train.max_steps=120", "train.log_every=2", "train.eval_every=10",
        "monitor.affinity_every=4"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# initial loss, floor and held-out accuracy range of each task (the sizes a debug model shows on wiki text)
SHAPE = {"knowledge_masking": (8.3, 5.5, 0.0, 0.12), "capitalization": (0.69, 0.25, 0.5, 0.9),
         "sentence_distance": (1.10, 0.80, 0.33, 0.6)}


def synthetic_run(run_dir: Path, overrides: list[str] = CMTL, *, accuracy: bool = True,
                  stop_at: int | None = None, config_yaml: bool = True, peak_flops: bool = False) -> Path:
    """A metrics.jsonl written the way the trainer writes one (same record kinds, keys, cadence and order),
    with losses that fall while a task trains and drift up while it does not (forgetting)."""
    config = load_config(None, overrides)
    run_dir.mkdir(parents=True)
    if config_yaml:
        dump_config(config, run_dir / "config.yaml")
    plan = build_plan(config.schedule, list(config.tasks), config.train.max_steps, config.seed)
    rng = random.Random(0)
    trained = dict.fromkeys(plan.tasks, 0)
    idle = dict.fromkeys(plan.tasks, 0)
    best: dict[str, float] = {}

    def held_out(task: str) -> float:
        start, floor, _, _ = SHAPE[task]
        return floor + (start - floor) * math.exp(-trained[task] / 12) + 0.004 * start * min(idle[task], 30)

    records = []
    end = stop_at or plan.total_steps
    for step in range(end):
        stage = plan.stage_at(step)
        task = plan.task_at(step)
        if step == stage.start:
            records.append({"kind": "stage", "step": step, "stage": stage.index, "steps": stage.steps,
                            "new_tasks": list(stage.new_tasks)})
        trained[task] += 1
        for other in plan.tasks:
            idle[other] = 0 if other == task else idle[other] + (trained[other] > 0)
        done = step + 1
        if done % config.train.log_every == 0 or done == end:
            loss = round(held_out(task) * rng.uniform(0.93, 1.07), 6)
            record = {"kind": "train", "step": done, "stage": stage.index, "task": task,
                      "task_id": plan.tasks.index(task), "loss": loss,
                      "lr": 5e-4 * min(1.0, done / 30), "grad_norm": round(rng.uniform(0.5, 3), 6),
                      "tokens_per_s": round(rng.gauss(2400 if task == "sentence_distance" else 1800, 150), 1),
                      "sequences_per_s": round(rng.gauss(20, 1.5), 2)}
            if accuracy:
                record["accuracy"] = round(rng.uniform(*SHAPE[task][2:]), 6)
            if peak_flops:
                record["mfu"] = round(rng.uniform(0.2, 0.3), 6)
            records.append(record)
        at_boundary = done in plan.boundaries()
        if done % config.train.eval_every == 0 or done == end or at_boundary:
            for name in plan.tasks:
                loss = held_out(name)
                best[name] = min(best.get(name, loss), loss)
                values = {"loss": loss, "forgetting": round(loss - best[name], 6)}
                if accuracy:
                    lo, hi = SHAPE[name][2:]
                    values["accuracy"] = lo + (hi - lo) * (1 - math.exp(-trained[name] / 12))
                records.append({"kind": "valid", "step": done, "stage": stage.index, "split": "valid",
                                "task": name, "stage_end": at_boundary, **values})
        every = config.monitor.affinity_every
        tasks = list(stage.steps)
        if every and done % every == 0 and len(tasks) >= 2:
            matrix = [[1.0 if i == j else round(0.3 - 0.25 * (i + j) + rng.uniform(-0.05, 0.05), 6)
                       for j in range(len(tasks))] for i in range(len(tasks))]
            matrix = [[matrix[min(i, j)][max(i, j)] for j in range(len(tasks))] for i in range(len(tasks))]
            records.append({"kind": "affinity", "step": done, "stage": stage.index, "tasks": tasks,
                            "matrix": matrix})
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return run_dir


def assert_real_png(path: Path) -> None:
    """A PNG file (signature) that decodes to an image that is not one flat colour."""
    assert path.read_bytes()[:8] == PNG_SIGNATURE, path
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100, (path, image.shape)
    assert float(image[..., :3].var()) > 0, f"{path} is blank"


def test_report_of_a_three_stage_run(tmp_path: Path):
    run_dir = synthetic_run(tmp_path / "run", peak_flops=True)
    written = write_report(run_dir)
    names = [p.name for p in written]
    assert names == ["loss_per_task.png", "forgetting.png", "throughput.png", "affinity_stage_1.png",
                     "affinity_stage_2.png", "summary.md"]
    assert all(p.parent == run_dir / "report" for p in written)
    for path in written[:-1]:
        assert_real_png(path)
    summary = (run_dir / "report" / "summary.md").read_text()
    for task in TASKS:
        assert task in summary
    for name in names[:-1]:
        assert f"]({name})" in summary  # an image link per plot
    assert "Strategy: cmtl" in summary and "Steps: 120 of 120 planned" in summary
    assert "| 2 | 60–120 | knowledge_masking 10, capitalization 10, sentence_distance 40* | done |" in summary
    assert "median tokens/s" in summary and "median MFU" in summary
    assert "## Notes" not in summary  # nothing was skipped


def test_max_forgetting_counts_only_after_introduction(tmp_path: Path):
    run_dir = synthetic_run(tmp_path / "run")
    records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    # sentence_distance drifts before its introduction at step 60: that is not forgetting
    records.append({"kind": "valid", "step": 30, "stage": 1, "split": "valid", "task": "sentence_distance",
                    "stage_end": False, "loss": 9.0, "forgetting": 7.5})
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    write_report(run_dir)
    row = next(line for line in (run_dir / "report" / "summary.md").read_text().splitlines()
               if line.startswith("| sentence_distance |"))
    assert "7.5" not in row and "stage 2 (step 60)" in row


def test_partial_single_stage_run_without_affinity_or_accuracy(tmp_path: Path):
    overrides = ["tasks={capitalization: {}, sentence_distance: {}}", "schedule.strategy=multitask",
                 "train.max_steps=60", "train.log_every=2", "train.eval_every=10"]
    run_dir = synthetic_run(tmp_path / "run", overrides, accuracy=False, stop_at=37)
    with (run_dir / "metrics.jsonl").open("a") as fh:
        fh.write('{"kind": "affinity", "step": 36, "tasks": ["capitalization"], "matrix": [[1, 0]]}\n')  # bad
        fh.write('{"kind": "train", "step": 38, "sta')  # killed mid-write
    written = write_report(run_dir)
    assert [p.name for p in written] == ["loss_per_task.png", "forgetting.png", "throughput.png",
                                         "summary.md"]
    for path in written[:-1]:
        assert_real_png(path)
    summary = written[-1].read_text()
    assert "Steps: 37 of 60 planned (partial run)" in summary and "partial (to step 37)" in summary
    assert "No `affinity` records" in summary and "no accuracy panel" in summary
    assert "single stage" in summary and "2 line(s) of `metrics.jsonl` were unreadable" in summary
    assert "capitalization" in summary and "sentence_distance" in summary


def test_stages_not_reached_come_from_the_plan_and_records_suffice_without_config(tmp_path: Path):
    run_dir = synthetic_run(tmp_path / "run", stop_at=25)
    summary = write_report(run_dir)[-1].read_text()
    assert "partial (to step 25)" in summary and "| 2 | 60–120 |" in summary and "not reached" in summary
    bare = synthetic_run(tmp_path / "bare", config_yaml=False)
    summary = write_report(bare)[-1].read_text()
    assert "Strategy: unknown" in summary and "No `config.yaml`" in summary
    assert "| 2 | 60–120 |" in summary and "affinity_stage_2.png" in summary


def test_rerun_replaces_an_earlier_report(tmp_path: Path):
    run_dir = synthetic_run(tmp_path / "run")
    stale = run_dir / "report" / "affinity_stage_7.png"
    write_report(run_dir)
    stale.write_bytes(b"old")
    write_report(run_dir)
    assert not stale.exists() and (run_dir / "report" / "affinity_stage_2.png").is_file()


def test_missing_or_empty_metrics_is_a_report_error(tmp_path: Path):
    with pytest.raises(ReportError, match="no metrics.jsonl"):
        write_report(tmp_path)
    (tmp_path / "metrics.jsonl").write_text("\n")
    with pytest.raises(ValueError, match="no records"):
        write_report(tmp_path)
    with pytest.raises(ReportError, match="not a directory"):
        api.report(tmp_path / "absent")


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ernie_cmtl.cli", *args], capture_output=True, text=True,
                          timeout=300)


def test_cli_report_and_its_error(tmp_path: Path):
    run_dir = synthetic_run(tmp_path / "run")
    proc = _cli("report", str(run_dir))
    assert proc.returncode == 0, proc.stderr
    assert str(run_dir / "report" / "summary.md") in proc.stdout
    assert (run_dir / "report" / "affinity_stage_1.png").is_file()
    proc = _cli("report", str(tmp_path / "empty"))
    assert proc.returncode == 2  # a user error (cli.EXIT_USER_ERROR)
    assert proc.stderr.startswith("ernie-cmtl: error:") and len(proc.stderr.strip().splitlines()) == 1


TINY = ["model.hidden_size=64", "model.num_heads=2", "model.intermediate_size=256", "train.batch_size=8",
        "tokenizer.vocab_size=4000", "data.max_documents=300", "train.log_every=2", "train.eval_every=10",
        "train.eval_batches=2", "train.save_every=100", CMTL[0], "schedule.strategy=cmtl",
        "schedule.stages=[knowledge_masking, capitalization, sentence_distance]", "schedule.steps_per_task=8",
        "monitor.affinity_every=4"]


@pytest.mark.slow
def test_report_of_a_real_run(tmp_path: Path, wiki_shards, cache_dir):
    config = api.configure(None, [*TINY, f"data.cache_dir={cache_dir}"], wiki_shards, tmp_path / "run")
    assert api.pretrain(config, progress=False).step == 24
    written = api.report(tmp_path / "run")
    assert [p.name for p in written] == ["loss_per_task.png", "forgetting.png", "throughput.png",
                                         "affinity_stage_1.png", "affinity_stage_2.png", "summary.md"]
    for path in written[:-1]:
        assert_real_png(path)
    summary = written[-1].read_text()
    assert all(task in summary for task in TASKS)
    assert "Steps: 24 of 24 planned" in summary and "## Notes" not in summary
