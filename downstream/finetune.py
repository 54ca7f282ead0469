"""Fine-tuning a pretrained encoder on GLUE, Chinese sets and a ranking task, the MT-DNN way (Liu et al., 2019).

Flow: a trained encoder (``RUN_DIR``, ``RUN_DIR/checkpoints/step_N`` or a Hugging Face directory, opened by
:func:`ernie_cmtl.pretrained.open_pretrained`) -> each task's train/dev examples, tokenized once
(:mod:`downstream.encoding`) -> stage 1: multi-task fine-tuning, each step one task's batch through the encoder
and that task's output layer (:mod:`downstream.multitask`) -> optional stage 2: a copy of the multi-task model
fine-tuned on each task alone -> dev metrics (:mod:`downstream.metrics`), written to ``results.json``.

Every stage steps through the training engine pretraining uses (:mod:`downstream.loop`, built by
:func:`ernie_cmtl.engine.build_engine`): fused AdamW, warm-up and linear decay, clipping, ``precision: bf16``
and ``engine: deepspeed`` as in pretraining. The configuration is :class:`downstream.config.FinetuneConfig`;
docs/FINETUNING.md explains the recipe and what it measured.

Monitoring: every record goes to ``RUN_DIR/metrics.jsonl``; with ``monitor.wandb.enabled`` (``--wandb``) the
same values also go to Weights & Biases the way pretraining logs them (:class:`downstream.loop.FinetuneMonitor`
over :class:`ernie_cmtl.monitor.MetricsLog`).

The names of the modules above are re-exported here (``from downstream.finetune import FinetuneConfig, ...``).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import torch
import yaml

from downstream.benchmarks import GLUE_TASKS
from downstream.config import FinetuneConfig, FinetuneMonitorConfig, load_finetune_config
from downstream.encoding import (
    DEV_SUBSET_SEED,
    Encoded,
    EpochBatches,
    TaskData,
    collate,
    encode_examples,
    load_task_data,
    read_task_splits,
    sampling_probabilities,
    task_order,
)
from downstream.loop import FinetuneMonitor, evaluate, stage_engine, train_stage
from downstream.multitask import FinetuneModel, soft_sharing_penalty, task_loss
from ernie_cmtl.config import ConfigError, from_dict, require, to_plain
from ernie_cmtl.pretrained import Pretrained
from ernie_cmtl.pretrained import open_pretrained as load_pretrained

log = logging.getLogger(__name__)


def finetune(checkpoint: str | Path, tasks: list[str] | str | None = None,
             config: FinetuneConfig | None = None, *, progress: bool = False) -> dict[str, Any]:
    """Fine-tune a pretrained checkpoint on ``tasks`` (default ``config.tasks``; names case-insensitive,
    a comma-separated string is accepted) and return the results, also written to ``RUN_DIR/results.json``:
    ``dev`` (final dev metrics per task), ``multitask`` (after stage 1), ``per_task`` (after stage 2, when
    ``per_task_steps`` > 0), ``baseline`` (a model that ignores its input), ``glue_score`` (mean of the GLUE
    tasks' scores), example counts (``skipped_examples``: rows the readers left out by rule), steps and
    timing."""
    config = config or FinetuneConfig()
    if tasks is not None:
        names = [t for t in tasks.split(",") if t.strip()] if isinstance(tasks, str) else list(tasks)
        config = from_dict(FinetuneConfig, {**to_plain(config), "tasks": names})
    started = time.perf_counter()
    pretrained = load_pretrained(checkpoint)
    model_cfg = pretrained.model_config
    require(config.task_embedding_id < model_cfg.num_task_embeddings, "task_embedding_id",
            f"-1 or a row < {model_cfg.num_task_embeddings} (the checkpoint's model.num_task_embeddings; its "
            f"pretraining tasks use {pretrained.task_ids})")
    require(config.max_seq_len <= model_cfg.max_position, "max_seq_len",
            f"an integer <= {model_cfg.max_position} (the checkpoint's model.max_position)")
    run_dir = Path(config.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(to_plain(config), sort_keys=False))
    (run_dir / "metrics.jsonl").write_text("")

    data = {name: load_task_data(name, config, pretrained.tokenizer) for name in config.tasks}
    log.info("fine-tuning %s on %s", pretrained.checkpoint,
             ", ".join(f"{n} ({len(d.train)} train / {' + '.join(str(len(v)) for v in d.devs.values())} dev)"
                       for n, d in data.items()))
    for name, d in data.items():
        if d.skipped:
            log.info("%s: rows left out by the reader: %s", name, d.skipped)
    if config.engine == "deepspeed":
        _start_deepspeed()
    # the wandb run starts once the data are read: a missing data folder leaves no empty run behind
    monitor = FinetuneMonitor(run_dir, config, {**to_plain(config), "checkpoint": str(pretrained.checkpoint)})
    try:
        return _train_and_evaluate(pretrained, data, config, run_dir, monitor, started, progress)
    finally:
        monitor.close()


def _start_deepspeed() -> None:
    """The process group DeepSpeed needs; fine-tuning runs in one process (every rank would train the same
    batches)."""
    from ernie_cmtl.ds_engine import init_distributed

    _, world_size = init_distributed()
    if world_size != 1:
        raise ConfigError(f"engine: fine-tuning with DeepSpeed runs in one process (launched on {world_size}); "
                          "start it without launch.sh")


def _train_and_evaluate(pretrained: Pretrained, data: dict[str, TaskData], config: FinetuneConfig,
                        run_dir: Path, monitor: FinetuneMonitor, started: float,
                        progress: bool) -> dict[str, Any]:
    pad_id = pretrained.tokenizer.token_to_id("[PAD]")
    torch.manual_seed(config.seed)
    model = FinetuneModel.build(pretrained.encoder(), [d.spec for d in data.values()], config.sharing,
                                config.pair_head)
    probabilities = sampling_probabilities({n: len(d.train) for n, d in data.items()}, config.sampling,
                                           config.temperature)
    order = task_order(probabilities, config.max_steps, config.seed)
    engine = stage_engine(model, config, len(order))
    losses = train_stage(engine, data, order, config, pad_id, stage="multitask", monitor=monitor,
                         progress=progress)
    multitask = evaluate(engine, data, config, pad_id)
    for name, values in multitask.items():
        monitor.record({"stage": "multitask", "step": config.max_steps, "split": "dev", "task": name, **values})
        log.info("multi-task dev %s: %s", name, values)
    monitor.end_stage(config.max_steps)

    results: dict[str, Any] = {"checkpoint": str(pretrained.checkpoint), "tasks": config.tasks,
                               "sharing": config.sharing, "task_probabilities": probabilities,
                               "train_examples": {n: len(d.train) for n, d in data.items()},
                               "dev_examples": {n: d.dev_size for n, d in data.items()},
                               "skipped_examples": {n: d.skipped for n, d in data.items() if d.skipped},
                               "baseline": {n: d.baseline for n, d in data.items()},
                               "multitask": multitask,
                               "steps": {"multitask": config.max_steps, "per_task": config.per_task_steps},
                               "train_loss": {n: _mean_tail([loss for _, t, loss in losses if t == n])
                                              for n in data}}
    final = multitask
    if config.per_task_steps:
        results["per_task"] = final = _per_task_stage(engine.module, data, config, pad_id, monitor, progress)
    results["dev"] = final
    glue = [final[n]["score"] for n in config.tasks if n in GLUE_TASKS]
    if glue:
        results["glue_score"] = round(sum(glue) / len(glue), 6)
    results["seconds"] = round(time.perf_counter() - started, 1)
    summary = {f"baseline/{n}/{k}": v for n, values in results["baseline"].items() for k, v in values.items()}
    monitor.summary({**summary, **({"glue_score": results["glue_score"]} if glue else {})})
    (run_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    return results


def _per_task_stage(model: FinetuneModel, data: dict[str, TaskData], config: FinetuneConfig, pad_id: int,
                    monitor: FinetuneMonitor, progress: bool) -> dict[str, dict[str, float]]:
    """Stage 2: a copy of the multi-task model fine-tuned on each task alone; its dev metrics per task."""
    per_task = {}
    for name in config.tasks:
        engine = stage_engine(model.single_task(name), config, config.per_task_steps)
        train_stage(engine, data, [name] * config.per_task_steps, config, pad_id, stage=f"per_task:{name}",
                    monitor=monitor, progress=progress)
        per_task.update(evaluate(engine, data, config, pad_id))
        monitor.record({"stage": f"per_task:{name}", "step": config.per_task_steps, "split": "dev",
                        "task": name, **per_task[name]})
        monitor.end_stage(config.per_task_steps)
        log.info("per-task dev %s: %s", name, per_task[name])
        del engine
    return per_task


def _mean_tail(values: list[float], tail: int = 20) -> float | None:
    """Mean of the last ``tail`` training losses of a task (None if it never trained)."""
    return round(sum(values[-tail:]) / len(values[-tail:]), 6) if values else None


__all__ = ["DEV_SUBSET_SEED", "Encoded", "EpochBatches", "FinetuneConfig", "FinetuneModel", "FinetuneMonitor",
           "FinetuneMonitorConfig", "Pretrained", "TaskData", "collate", "encode_examples", "evaluate",
           "finetune", "load_finetune_config", "load_pretrained", "load_task_data", "read_task_splits",
           "sampling_probabilities", "soft_sharing_penalty", "task_loss", "task_order", "train_stage"]
