"""Monitoring: ``metrics.jsonl`` (always), Weights & Biases (optional), task-gradient affinity.

Every record goes to ``RUN_DIR/metrics.jsonl``; with ``monitor.wandb.enabled`` the same values go to wandb under
task-namespaced keys (``train/<task>/loss``, ``valid/<task>/accuracy``, ``forgetting/<task>``, ...), the
resolved config is the run config, stage boundaries are events with the plan as a table, and the affinity
matrix is a heatmap. wandb writes inside the run directory (``RUN_DIR/wandb/``). Only rank 0 logs.

Record kinds in ``metrics.jsonl`` (the ``kind`` key): ``train`` (per logged step), ``valid`` (per task per
evaluation), ``retention`` (drift from the ``model.init_from`` source and its zero-shot similarity, per
evaluation and at step 0), ``stage`` (a stage starts), ``affinity`` (task-gradient cosine matrix).
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ernie_cmtl.config import MonitorConfig, WandbConfig

log = logging.getLogger(__name__)


def _wandb_has_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    return netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="ignore")


def resolve_wandb_mode(cfg: WandbConfig) -> str:
    """The wandb mode a run uses: an explicit config mode wins; ``auto`` follows WANDB_MODE when set,
    else online with credentials, offline without."""
    if not cfg.enabled or cfg.mode == "disabled":
        return "disabled"
    if cfg.mode != "auto":
        return cfg.mode
    env = os.environ.get("WANDB_MODE")
    if env in ("online", "offline", "disabled"):
        return env
    return "online" if _wandb_has_credentials() else "offline"


def truncate_metrics(path: Path, last_step: int) -> int:
    """Keep the records of ``path`` up to ``last_step``; returns how many were kept. The file is replaced
    atomically (a temporary sibling, then ``os.replace``), so a kill during truncation leaves the old file or the
    new one, never a cut one. A last line cut short by a crash is dropped, not an error."""
    kept = []
    with path.open() as fh:
        for line in fh:
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:  # the half-written last line of a killed run
                continue
            if record.get("step", 0) <= last_step:
                kept.append(line if line.endswith("\n") else line + "\n")
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w") as fh:
        fh.writelines(kept)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return len(kept)


class MetricsLog:
    """A run's ``metrics.jsonl`` and, if enabled, its wandb run: what every loop's monitor writes through
    (pretraining's :class:`Monitor`, fine-tuning's ``downstream.loop.FinetuneMonitor``). A no-op on ranks
    other than 0. ``resume``: the wandb run id is kept in ``RUN_DIR/wandb_run_id``, so a resumed run logs into
    the same wandb run; without it every run is a new wandb run. Mode ``disabled`` never imports wandb."""

    def __init__(self, run_dir: Path, wandb_cfg: WandbConfig, run_config: dict[str, Any], rank: int = 0,
                 truncate_after: int | None = None, resume: bool = True) -> None:
        self.run_dir = run_dir
        self.active = rank == 0
        self.path = run_dir / "metrics.jsonl"
        self.run = None
        if not self.active:
            return
        if truncate_after is not None and self.path.is_file():  # drop records past the resumed checkpoint
            truncate_metrics(self.path, truncate_after)
        mode = resolve_wandb_mode(wandb_cfg)
        if mode != "disabled":  # "disabled" never imports wandb, so no service process can start
            import wandb

            run_id, id_file = None, run_dir / "wandb_run_id"
            if resume:
                run_id = id_file.read_text().strip() if id_file.is_file() else uuid.uuid4().hex[:8]
                id_file.write_text(run_id)
            self.run = wandb.init(project=wandb_cfg.project, entity=wandb_cfg.entity, mode=mode,
                                  name=wandb_cfg.name or run_dir.name, tags=wandb_cfg.tags, id=run_id,
                                  resume="allow" if resume else None, dir=str(run_dir), config=run_config,
                                  reinit="create_new")
            log.info("wandb run %s (%s), files in %s", self.run.id, mode, run_dir / "wandb")

    def _write(self, record: dict[str, Any]) -> None:
        with self.path.open("a") as fh:
            fh.write(json.dumps(record) + "\n")

    def log(self, record: dict[str, Any], values: dict[str, Any] | None, step: int) -> None:
        """``record`` as one line of ``metrics.jsonl``; ``values`` (wandb's keys) to wandb at ``step``."""
        if not self.active:
            return
        self._write(record)
        if self.run is not None and values:
            self.run.log(values, step=step)

    def summary(self, values: dict[str, Any]) -> None:
        """Values of the whole run (wandb's run summary; nothing in ``metrics.jsonl``)."""
        if self.run is not None:
            self.run.summary.update(values)

    def close(self) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None


class Monitor(MetricsLog):
    """Pretraining's records: training steps, the forgetting monitor's evaluations, stages, task-gradient
    affinity, checkpoints as artifacts."""

    def __init__(self, run_dir: Path, cfg: MonitorConfig, run_config: dict[str, Any], rank: int = 0,
                 truncate_after: int | None = None) -> None:
        self.cfg = cfg
        super().__init__(run_dir, cfg.wandb, run_config, rank, truncate_after)

    def train(self, record: dict[str, Any]) -> None:
        """One logged training step: step, stage, task, loss, accuracy, lr, grad_norm, throughput, and the
        retention terms (``preserve``: the weighted L2-SP penalty and distillation loss of the last batch)."""
        if not self.active:
            return
        self._write({"kind": "train", **record})
        if self.run is not None:
            task = record["task"]
            values = {f"train/{task}/loss": record["loss"], "train/lr": record["lr"],
                      "train/grad_norm": record["grad_norm"], "stage": record["stage"], "task": task,
                      "task_id": record.get("task_id")}
            if "accuracy" in record:
                values[f"train/{task}/accuracy"] = record["accuracy"]
            for name, count in record.get("skipped_steps", {}).items():  # non-finite steps, per task
                values[f"train/{name}/skipped_steps"] = count
            for name, value in record.get("preserve", {}).items():  # weighted L2-SP / distillation terms
                values[f"preserve/{name}"] = value
            for key in ("tokens_per_s", "sequences_per_s", "mfu"):
                if key in record:
                    values[f"perf/{key}"] = record[key]
            self.run.log(values, step=record["step"])

    def valid(self, step: int, stage: int, results: dict[str, dict[str, float]], stage_end: bool) -> None:
        """The forgetting monitor's evaluation of every task."""
        if not self.active:
            return
        for task, values in results.items():
            self._write({"kind": "valid", "step": step, "stage": stage, "split": "valid", "task": task,
                         "stage_end": stage_end, **values})
        if self.run is not None:
            flat = {}
            for task, values in results.items():
                flat[f"valid/{task}/loss"] = values["loss"]
                if "accuracy" in values:
                    flat[f"valid/{task}/accuracy"] = values["accuracy"]
                flat[f"forgetting/{task}"] = values["forgetting"]
            self.run.log(flat, step=step)

    def retention(self, step: int, stage: int, values: dict[str, float]) -> None:
        """What the encoder still knows of its ``model.init_from`` source (:mod:`ernie_cmtl.retention`):
        ``drift_cosine``, ``drift_cka`` and, with a pair set, ``similarity_spearman`` / ``similarity_change``;
        wandb keys ``retention/<name>``."""
        if not self.active:
            return
        self._write({"kind": "retention", "step": step, "stage": stage, **values})
        if self.run is not None:
            self.run.log({f"retention/{key}": value for key, value in values.items()
                          if isinstance(value, int | float)}, step=step)

    def stage_start(self, step: int, stage_index: int, stage_steps: dict[str, int], new_tasks: list[str],
                    plan_rows: list[list[Any]]) -> None:
        if not self.active:
            return
        self._write({"kind": "stage", "step": step, "stage": stage_index, "steps": stage_steps,
                     "new_tasks": new_tasks})
        if self.run is not None:
            import wandb

            table = wandb.Table(columns=["stage", "start", "end", "task", "steps", "introduced"], data=plan_rows)
            self.run.log({"events/stage_start": stage_index, "events/new_tasks": ", ".join(new_tasks),
                          "plan": table}, step=step)

    def affinity(self, step: int, stage: int, tasks: list[str], matrix: torch.Tensor) -> None:
        if not self.active:
            return
        self._write({"kind": "affinity", "step": step, "stage": stage, "tasks": tasks,
                     "matrix": [[round(float(x), 6) for x in row] for row in matrix]})
        if self.run is not None:
            import wandb

            from ernie_cmtl.plots import affinity_figure

            fig = affinity_figure(tasks, matrix, f"task-gradient cosine, step {step}")
            data = [[a, b, float(matrix[i, j])] for i, a in enumerate(tasks) for j, b in enumerate(tasks)]
            self.run.log({"affinity/heatmap": wandb.Image(fig),
                          "affinity/table": wandb.Table(columns=["task_a", "task_b", "cosine"], data=data)},
                         step=step)
            import matplotlib.pyplot as plt

            plt.close(fig)

    def checkpoint(self, path: Path, step: int) -> None:
        if self.active and self.run is not None and self.cfg.wandb.log_checkpoints:
            import wandb

            artifact = wandb.Artifact(f"{self.run.id}-checkpoint", type="model", metadata={"step": step})
            artifact.add_dir(str(path))
            self.run.log_artifact(artifact, aliases=[f"step-{step}", "latest"])


def gradient_affinity(model: nn.Module, shared: list[nn.Parameter], losses: dict[str, Any]) -> torch.Tensor:
    """Cosine similarity of the tasks' gradients on the shared parameters. ``losses``: task -> a callable
    returning that task's loss on its probe batch. Gradients are taken with ``torch.autograd.grad``, so the
    training gradients (accumulated in ``.grad``) are untouched."""
    grads = []
    for compute_loss in losses.values():
        loss = compute_loss()
        parts = torch.autograd.grad(loss, shared, allow_unused=True)
        grads.append(torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1).float()
                                for g, p in zip(parts, shared, strict=True)]))
    stacked = torch.nn.functional.normalize(torch.stack(grads), dim=1)
    return stacked @ stacked.T
