"""Importable entry points: everything the CLI does is one call here."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ernie_cmtl.assembly import load_config, settle_run
from ernie_cmtl.build.prepare import PreparedData, prepare_data
from ernie_cmtl.checkpoint import latest_verified_checkpoint, read_state
from ernie_cmtl.config import ConfigError, RunConfig, dump_config
from ernie_cmtl.hf import HFModel, load_hf_model, save_extra_state
from ernie_cmtl.scheduler import Plan, build_plan
from ernie_cmtl.trainer import Trainer, TrainResult

if TYPE_CHECKING:  # downstream builds on ernie_cmtl; it is imported only when fine-tuning runs
    from downstream.finetune import FinetuneConfig
    from downstream.probe import ProbeSettings

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


def build_data(config: RunConfig, progress: bool = True, *, shard: tuple[int, int] | None = None,
               statistics_only: bool = False) -> PreparedData:
    """Build (or load from the cache) the documents, tokenizer and every task's examples. Tasks the corpus
    gives no examples are reported (``empty_tasks``, ``RUN_DIR/data_report.json``), not an error, while at
    least one task has examples. ``shard=(k, n)``: only the examples of the k-th of n parts of the corpus
    (a later run reads the n shards as one dataset); ``statistics_only``: the tokenizer and the tasks' corpus
    statistics, no examples (see :func:`ernie_cmtl.build.prepare.prepare_data`). ``config`` is not edited."""
    run_dir = Path(config.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    return prepare_data(config, run_dir, progress=progress, allow_empty_tasks=True, shard=shard,
                        statistics_only=statistics_only)


def plan(config: RunConfig, png: str | Path | None = None) -> Plan:
    """The run's continual multi-task plan (no data, no compute); optionally its timeline as a PNG."""
    schedule_plan = build_plan(config.schedule, list(config.tasks), config.train.max_steps, config.seed)
    if png is not None:
        from ernie_cmtl.plots import plot_plan

        plot_plan(schedule_plan, Path(png))
    return schedule_plan


def report(run_dir: str | Path) -> list[Path]:
    """Plots and ``summary.md`` of a run, written into ``RUN_DIR/report/`` from its ``metrics.jsonl`` and
    ``config.yaml``; returns the files written. Raises :class:`ernie_cmtl.report.ReportError` (a ValueError)
    when the directory has no metrics to report."""
    from ernie_cmtl.report import write_report

    return write_report(Path(run_dir))


def finetune(checkpoint: str | Path, tasks: list[str] | str | None = None,
             config: FinetuneConfig | None = None, *, progress: bool = True) -> dict[str, Any]:
    """Fine-tune a pretrained checkpoint (a run directory or one ``checkpoints/step_N``) on GLUE tasks, the
    Chinese sets (chnsenticorp, ocnli, c3) and the ``wikiqp`` ranking task, MT-DNN style (see
    :func:`downstream.finetune.finetune`); returns the results, also written to ``RUN_DIR/results.json``, and
    logs to ``RUN_DIR/train.log``."""
    from downstream.finetune import FinetuneConfig
    from downstream.finetune import finetune as run_finetune

    config = config or FinetuneConfig()
    run_dir = Path(config.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    with run_log(run_dir):
        return run_finetune(checkpoint, tasks, config, progress=progress)


def pretrain(config: RunConfig, *, resume: bool = False, stop_at: int | None = None,
             progress: bool = True, allow_plan_change: bool = False) -> TrainResult:
    """Run (or resume) pretraining as configured; returns the losses, evaluations and last checkpoint.

    The run is settled in one place before anything trains: the data is built (rank 0 first), its facts and
    the plan give the final config (:func:`ernie_cmtl.assembly.settle_run`), which is written to
    ``RUN_DIR/config.yaml`` at once (on resume: once the checkpoint has accepted it) and handed to the
    trainer. ``config`` itself is not edited."""
    run_dir = Path(config.run_dir)
    if not resume and (run_dir / "checkpoints").is_dir() and any((run_dir / "checkpoints").iterdir()):
        raise ConfigError(f"run directory {run_dir} already has checkpoints: pass --resume to continue it, "
                          "or choose another --run-dir")
    run_dir.mkdir(parents=True, exist_ok=True)
    rank = 0
    if config.train.engine == "deepspeed":  # the one start of the process group, before any rank reads data
        from ernie_cmtl.ds_engine import init_distributed

        rank, _ = init_distributed()
    with run_log(run_dir) if rank == 0 else contextlib.nullcontext():
        data = _prepare_rank_zero_first(config, run_dir, rank, progress)
        config, run_plan = settle_run(config, data)
        if rank == 0 and not resume:
            dump_config(config, run_dir / "config.yaml")
        task_ids = None
        # The newest checkpoint whose files match their checksums; newer broken ones are named in warnings.
        checkpoint = latest_verified_checkpoint(run_dir / "checkpoints") if resume else None
        if checkpoint is not None:  # keep the task-embedding ids the checkpoint was trained with
            task_ids = read_state(checkpoint)["task_ids"]
        init_model = None
        if config.model.init_from is not None and checkpoint is None:
            init_model = load_hf_model(config.model.init_from)
            if rank == 0:
                save_extra_state(run_dir, init_model)
        trainer = Trainer(config, data, run_dir, run_plan, task_ids=task_ids, init_model=init_model)
        if resume:  # a refused resume leaves the run's config.yaml as it was
            trainer.resume(checkpoint, allow_plan_change=allow_plan_change)
            if rank == 0:
                dump_config(config, run_dir / "config.yaml")
        log.info("run %s: tasks %s, %d parameters", run_dir, ", ".join(data.tasks), count_params(trainer))
        return trainer.train(stop_at=stop_at, progress=progress)


def evaluate(checkpoint: str | Path, *, batches: int = 0, progress: bool = False) -> dict[str, dict[str, Any]]:
    """Held-out loss and accuracy of every task of a run (a run directory: its newest verified checkpoint; or
    one ``checkpoints/step_N``), computed as the forgetting monitor computes them (the same fixed batches and
    masks), on ``batches`` batches of each task's valid split (0: all of it), beside each task's chance loss
    (``PretrainTask.chance_loss``) and, for tasks with a ``label(s)`` column, the share of the majority label
    in its valid split (what always guessing it scores). The run's ``config.yaml`` and cached data are read (the
    data step refreshes the run's ``data_report.json``). Torch-engine checkpoints only (a DeepSpeed run's are
    refused with the reason)."""
    from collections import Counter

    from ernie_cmtl.checkpoint import resolve_checkpoint
    from ernie_cmtl.tasks import IGNORE_INDEX

    path, run_dir = resolve_checkpoint(checkpoint)
    config = load_config(run_dir / "config.yaml", [])
    if config.train.engine != "torch":
        raise ConfigError(f"evaluate: {run_dir} was trained with train.engine={config.train.engine}; only "
                          "torch-engine checkpoints are read here")
    config.train = replace(config.train, eval_batches=max(batches, 0) or 1 << 30)
    data = prepare_data(config, run_dir, progress=progress)
    config, run_plan = settle_run(config, data)
    trainer = Trainer(config, data, run_dir, run_plan, task_ids=read_state(path)["task_ids"])
    trainer.resume(path)
    results: dict[str, dict[str, Any]] = trainer.evaluate()
    for name, values in results.items():
        valid, task = data.valid[name], data.tasks[name]
        values["examples"] = min(len(valid), trainer.eval_batch_count(name) * config.train.batch_size)
        values["chance_loss"] = task.chance_loss()
        column = next((c for c in ("label", "labels") if c in valid.column_names), None)
        if column is not None:
            counts = Counter(v for row in valid[column] for v in (row if isinstance(row, list) else [row])
                             if v != IGNORE_INDEX)
            values["majority_accuracy"] = max(counts.values()) / sum(counts.values()) if counts else None
    return results


def probe(checkpoint: str | Path, settings: ProbeSettings | None = None, out: str | Path | None = None,
          progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Frozen-encoder evaluation of a run directory, one ``checkpoints/step_N`` or a Hugging Face model
    directory: zero-shot similarity (STS-B dev, ``settings.pairs``) and linear probes on GLUE / Chinese sets
    (see :mod:`downstream.probe`); returns the results, also written to ``out`` (default
    ``CHECKPOINT/probe.json``)."""
    from downstream.probe import probe as run_probe

    return run_probe(checkpoint, settings, out, progress)


def import_hf(directory: str | Path) -> HFModel:
    """Read a local Hugging Face BERT / ERNIE model directory into our parameter names (encoder, masked-LM
    head, task embeddings if any); what ``model.init_from`` starts a run from. See :mod:`ernie_cmtl.hf`."""
    return load_hf_model(directory)


def export(checkpoint: str | Path, out_dir: str | Path, fmt: str = "ernie", task: str | None = None) -> Path:
    """Write a pretraining checkpoint (a run directory: its latest checkpoint; or one ``checkpoints/step_N``)
    as a Hugging Face model directory that ``transformers.AutoModel`` / ``AutoTokenizer`` load offline.
    ``fmt``: ``ernie`` (``ErnieForPreTraining``, task embeddings kept) or ``bert`` (``BertForMaskedLM`` with
    ``task``'s embedding folded into the position embeddings). Returns ``out_dir``."""
    from ernie_cmtl.hf import export_checkpoint

    return export_checkpoint(checkpoint, out_dir, fmt, task)


def _prepare_rank_zero_first(config: RunConfig, run_dir: Path, rank: int, progress: bool) -> PreparedData:
    """Rank 0 builds (tokenizer training is not reproducible, so it must happen once); the other ranks then
    load the same tokenizer and cached examples."""
    import torch.distributed as dist

    distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
    if distributed and rank != 0:
        dist.barrier()
    data = prepare_data(config, run_dir, progress=progress and rank == 0)
    if distributed and rank == 0:
        dist.barrier()
    return data


def shutdown_distributed() -> None:
    """End the process group, if one was started, once the process is done with it. Without this, gloo's
    teardown at interpreter exit intermittently aborts two-rank runs (SIGABRT). Call it once per process:
    DeepSpeed cannot be initialized again afterwards. Removes this rank's DeepSpeed shared-memory buffer."""
    import gc

    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        from ernie_cmtl.ds_engine import remove_shm_buffers

        gc.collect()  # release the engine's communication buffers before the group goes
        dist.barrier()
        rank = dist.get_rank()
        dist.destroy_process_group()
        remove_shm_buffers(rank)


def count_params(trainer: Trainer) -> int:
    from ernie_cmtl.model import count_parameters

    return count_parameters(trainer.engine.module)
