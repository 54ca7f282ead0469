"""Fine-tuning's loop: a stage of steps through the training engine, evaluation, and what the run logs.

A stage (multi-task, or one task alone) gets a fresh engine from :func:`stage_engine`: the same
:func:`ernie_cmtl.engine.build_engine` as pretraining, with the stage's :class:`~ernie_cmtl.config.OptimConfig`
(AdamW with fine-tuning's betas, warm-up then linear decay over the stage, clipping, precision), so fine-tuning
gets bf16, the fused AdamW and DeepSpeed the way pretraining does. :func:`train_stage` feeds it one task's batch
per step; :func:`evaluate` computes dev metrics through the same engine.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from downstream.config import FinetuneConfig
from downstream.encoding import EpochBatches, TaskData, collate, examples_per_batch
from downstream.metrics import combine_dev_splits, task_metrics
from downstream.multitask import FinetuneModel, soft_sharing_penalty, task_loss
from ernie_cmtl.engine import Engine, build_engine
from ernie_cmtl.monitor import MetricsLog


class FinetuneMonitor(MetricsLog):
    """A fine-tuning run's records in ``RUN_DIR/metrics.jsonl`` and, with ``monitor.wandb.enabled``, a new wandb
    run (fine-tuning does not resume) whose config is the resolved fine-tuning config. wandb keys follow
    pretraining's: ``train/<task>/loss`` (soft sharing also ``train/<task>/total_loss``), ``train/lr``,
    ``stage`` and ``task`` per logged step; ``dev/<task>/<metric>`` (and ``score``) per evaluation;
    ``glue_score``, ``baseline/<task>/<metric>`` in the run summary. Stage steps restart at 1 in
    ``metrics.jsonl``; the wandb step runs on across stages (:meth:`end_stage`), as wandb needs."""

    def __init__(self, run_dir: Path, config: FinetuneConfig, run_config: dict[str, Any]) -> None:
        super().__init__(run_dir, config.monitor.wandb, run_config, resume=False)
        self.offset = 0
        """Steps of the stages already finished: the wandb step of a record is ``offset + step``."""

    def record(self, record: dict[str, Any]) -> None:
        """One record: a logged training step (``loss``, ``lr``, ...) or, with ``"split": "dev"``, one task's
        dev metrics."""
        task = record["task"]
        if record.get("split") == "dev":
            values = {f"dev/{task}/{key}": value for key, value in record.items()
                      if key not in ("stage", "step", "split", "task") and isinstance(value, int | float)}
        else:
            values = {f"train/{task}/loss": record["loss"], "train/lr": record["lr"], "stage": record["stage"],
                      "task": task}
            if "total_loss" in record:
                values[f"train/{task}/total_loss"] = record["total_loss"]
        self.log(record, values, self.offset + record["step"])

    def end_stage(self, steps: int) -> None:
        """A stage of ``steps`` steps is over: the next stage's steps follow it on the wandb step axis."""
        self.offset += steps


def stage_engine(model: FinetuneModel, config: FinetuneConfig, steps: int) -> Engine:
    """A fresh engine (optimizer, schedule, precision) for a stage of ``steps`` steps on ``model``.
    ``engine: deepspeed`` needs the process group started (:func:`ernie_cmtl.ds_engine.init_distributed`)."""
    return build_engine(model, config.optim(steps), engine=config.engine, device=config.device,
                        deepspeed=config.deepspeed, micro_batch_size=config.batch_size)


@torch.no_grad()
def evaluate(engine: Engine, data: dict[str, TaskData], config: FinetuneConfig,
             pad_id: int) -> dict[str, dict[str, float]]:
    """Dev metrics of every task the engine's model has an output layer for."""
    model: FinetuneModel = engine.module
    was_training = model.training
    model.eval()
    results = {}
    for name in model.heads:
        task = data[name]
        per_split = {}
        for split, dev in task.devs.items():
            outputs = []
            step = max(1, config.eval_batch_size // dev.group)
            for start in range(0, len(dev), step):
                indices = list(range(start, min(start + step, len(dev))))
                batch = collate(dev, indices, task.spec.kind, pad_id, config.task_embedding_id, engine.device)
                logits = engine(name, batch).float()
                outputs.append(logits.argmax(-1) if task.spec.kind in ("single", "pair") else logits)
            per_split[split] = task_metrics(name, torch.cat(outputs).cpu().numpy(), dev.labels)
        results[name] = {k: round(v, 6) for k, v in combine_dev_splits(name, per_split).items()}
    model.train(was_training)
    return results


def train_stage(engine: Engine, data: dict[str, TaskData], order: list[str], config: FinetuneConfig,
                pad_id: int, *, stage: str, monitor: FinetuneMonitor | None = None,
                progress: bool = False) -> list[tuple[int, str, float]]:
    """Run ``len(order)`` optimizer steps through ``engine`` (step i trains task ``order[i]``; the engine's
    schedule spans the stage: :func:`stage_engine`); returns (step, task, loss) per step. Soft sharing adds
    the weighted penalty to every step's loss. Records (every ``log_every`` steps and the last, mid-stage
    evaluations every ``eval_every``) go to ``monitor`` if given."""
    model: FinetuneModel = engine.module
    batches = {name: EpochBatches(len(data[name].train), examples_per_batch(data[name], config.batch_size),
                                  config.seed * 1000 + i)
               for i, name in enumerate(data) if name in model.heads}
    soft = len(model.distinct_encoders()) > 1 and config.soft_sharing_weight > 0
    losses: list[tuple[int, str, float]] = []
    model.train()
    bar = tqdm(total=len(order), disable=not progress, dynamic_ncols=True, desc=stage)
    for step, name in enumerate(order, start=1):
        task = data[name]
        batch = collate(task.train, batches[name].next(), task.spec.kind, pad_id, config.task_embedding_id,
                        engine.device)
        loss = task_loss(task.spec.kind, engine(name, batch), batch["labels"])
        total = loss
        if soft:
            total = total + config.soft_sharing_weight * soft_sharing_penalty(model.distinct_encoders())
        engine.backward(total)
        stats = engine.step()
        losses.append((step, name, float(loss.detach())))
        bar.update(1)
        if monitor is not None and (step % config.log_every == 0 or step == len(order)):
            record = {"stage": stage, "step": step, "task": name, "loss": round(losses[-1][2], 6),
                      "lr": stats["lr"] if stats else None}
            if soft:
                record["total_loss"] = round(float(total.detach()), 6)
            monitor.record(record)
            bar.set_postfix(task=name, loss=f"{losses[-1][2]:.3f}")
        mid_stage_eval = config.eval_every and step % config.eval_every == 0 and step < len(order)
        if monitor is not None and mid_stage_eval:
            for task_name, values in evaluate(engine, data, config, pad_id).items():
                monitor.record({"stage": stage, "step": step, "split": "dev", "task": task_name, **values})
    bar.close()
    return losses
