"""Importable entry points: everything the CLI does is one call here."""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

from ernie_cmtl.checkpoint import STATE_FILE, latest_checkpoint
from ernie_cmtl.config import ConfigError, RunConfig, dump_config, load_config
from ernie_cmtl.data import PreparedData, prepare_data
from ernie_cmtl.scheduler import Plan, build_plan
from ernie_cmtl.trainer import Trainer, TrainResult

log = logging.getLogger("ernie_cmtl")


LOG_FORMAT = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%Y-%m-%d %H:%M:%S")


def setup_logging(verbose: bool = True) -> None:
    """CLI logging: messages of ours (and the libraries' warnings) to stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(LOG_FORMAT)
    handler.setLevel(logging.INFO if verbose else logging.WARNING)  # train.log still gets INFO
    logging.basicConfig(level=logging.WARNING, handlers=[handler], force=True)
    for name in ("ernie_cmtl", "data_builders", "pretrain_tasks"):
        logging.getLogger(name).setLevel(logging.INFO)


@contextlib.contextmanager
def run_log(run_dir: Path) -> Iterator[None]:
    """Everything our packages log while the block runs also goes to ``RUN_DIR/train.log``."""
    handler = logging.FileHandler(run_dir / "train.log")
    handler.setFormatter(LOG_FORMAT)
    handler.setLevel(logging.INFO)
    loggers = [logging.getLogger(name) for name in ("ernie_cmtl", "data_builders", "pretrain_tasks")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        if lg.getEffectiveLevel() > logging.INFO:
            lg.setLevel(logging.INFO)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.removeHandler(handler)
            lg.setLevel(level)
        handler.close()


def configure(config_path: str | Path | None = None, overrides: list[str] | None = None,
              corpus: list[str] | None = None, run_dir: str | Path | None = None) -> RunConfig:
    """Load a config and apply the CLI's conveniences (``--corpus``, ``--run-dir``)."""
    config = load_config(config_path, overrides)
    if corpus:
        config.data = replace(config.data, corpus=[str(p) for p in corpus])
    if run_dir is not None:
        config.run_dir = str(run_dir)
    return config


def build_data(config: RunConfig, progress: bool = True) -> PreparedData:
    """Build (or load from the cache) the documents, tokenizer and every task's examples."""
    run_dir = Path(config.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    return prepare_data(config, run_dir, progress=progress)


def plan(config: RunConfig, png: str | Path | None = None) -> Plan:
    """The run's continual multi-task plan (no data, no compute); optionally its timeline as a PNG."""
    schedule_plan = build_plan(config.schedule, list(config.tasks), config.train.max_steps, config.seed)
    if png is not None:
        from ernie_cmtl.plots import plot_plan

        plot_plan(schedule_plan, Path(png))
    return schedule_plan


def pretrain(config: RunConfig, *, resume: bool = False, stop_at: int | None = None,
             progress: bool = True, allow_plan_change: bool = False) -> TrainResult:
    """Run (or resume) pretraining as configured; returns the losses, evaluations and last checkpoint."""
    run_dir = Path(config.run_dir)
    if not resume and (run_dir / "checkpoints").is_dir() and any((run_dir / "checkpoints").iterdir()):
        raise ConfigError(f"run directory {run_dir} already has checkpoints: pass --resume to continue it, "
                          "or choose another --run-dir")
    run_dir.mkdir(parents=True, exist_ok=True)
    with run_log(run_dir):
        data = prepare_data(config, run_dir, progress=progress)
        task_ids = None
        checkpoint = latest_checkpoint(run_dir / "checkpoints") if resume else None
        if checkpoint is not None:  # keep the task-embedding ids the checkpoint was trained with
            task_ids = json.loads((checkpoint / STATE_FILE).read_text())["task_ids"]
        trainer = Trainer(config, data, run_dir, task_ids=task_ids)
        if resume:
            trainer.resume(checkpoint, allow_plan_change=allow_plan_change)
        dump_config(config, run_dir / "config.yaml")
        log.info("run %s: tasks %s, %d parameters", run_dir, ", ".join(data.tasks), count_params(trainer))
        return trainer.train(stop_at=stop_at, progress=progress)


def count_params(trainer: Trainer) -> int:
    from ernie_cmtl.model import count_parameters

    return count_parameters(trainer.engine.module)
