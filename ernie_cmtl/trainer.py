"""The pretraining loop: pick the step's task, feed its batches through the engine, evaluate, checkpoint.

Everything random is a pure function of (seed, step): the task order, each task's batch order and each batch's
masking. Dropout draws from the global torch RNG, which checkpoints save and restore. So a resumed run continues
exactly where the interrupted one was (tested: 2N steps straight == N, resume, N).
"""

from __future__ import annotations

import errno
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer
from tqdm.auto import tqdm

from ernie_cmtl.build.prepare import PreparedData
from ernie_cmtl.checkpoint import (
    CheckpointError,
    commit_checkpoint,
    latest_checkpoint,
    latest_verified_checkpoint,
    load_rng,
    read_state,
    save_rng,
    set_rng_state,
    staging_dir,
    verify_checkpoint,
)
from ernie_cmtl.config import ModelConfig, RunConfig
from ernie_cmtl.engine import Engine, build_engine
from ernie_cmtl.engine import resolve_device as resolve_device  # re-exported (older callers import it here)
from ernie_cmtl.faults import NonFiniteGuard, StopSignals, agree_any, stop_group, write_failure
from ernie_cmtl.hf import HFModel, load_into
from ernie_cmtl.model import Encoder, PretrainingModel, encoder_flops_per_token
from ernie_cmtl.monitor import Monitor, gradient_affinity
from ernie_cmtl.preserve import SourceAnchor, encoder_lr_scale, source_encoder
from ernie_cmtl.retention import RetentionProbe, ScoredPairs
from ernie_cmtl.scheduler import Plan
from ernie_cmtl.stream import TaskStream, hash_seed
from ernie_cmtl.tasks import PretrainTask

log = logging.getLogger(__name__)

EVAL_SEED_OFFSET = 1_000_003


def assign_task_ids(names: list[str], existing: dict[str, int] | None = None) -> dict[str, int]:
    """Stable task-embedding ids: ids already given keep their value; new tasks get the next free ids."""
    ids = dict(existing or {})
    for name in names:
        if name not in ids:
            ids[name] = max(ids.values(), default=-1) + 1
    return ids


def training_flops_per_token(task: PretrainTask, model_config: ModelConfig, seq_len: int) -> float:
    """Model FLOPs of one training token of ``task`` (forward + backward = 3x forward): the encoder plus
    what the task's head declares it decodes (``perf/mfu``'s numerator)."""
    return 3.0 * (encoder_flops_per_token(model_config, seq_len) + task.head_flops_per_token(model_config, seq_len))


def build_model(model_config: ModelConfig, tasks: dict[str, PretrainTask]) -> PretrainingModel:
    encoder = Encoder(model_config)
    heads = {name: task.make_head(model_config, encoder.embeddings.word) for name, task in tasks.items()}
    return PretrainingModel(encoder, heads)


def read_scored_pairs(path: str | Path, limit: int = 0) -> tuple[list[str], list[str], list[float]]:
    """Sentence pairs and their scores from a TSV: the ``sentence1``, ``sentence2`` and ``score`` columns by
    header name (STS-B's files), else the first three columns (a first row whose score is not a number is a
    header). ``limit``: the first this many pairs (0 = all). Errors name the file and line."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"scored sentence pairs: {path} not found")
    lines = [line.rstrip("\r") for line in path.read_text(encoding="utf-8-sig").split("\n")]
    header = lines[0].split("\t") if lines else []
    named = all(name in header for name in ("sentence1", "sentence2", "score"))
    columns = [header.index(n) for n in ("sentence1", "sentence2", "score")] if named else [0, 1, 2]
    first, second, scores = [], [], []
    for number, line in enumerate(lines, start=1):
        cells = line.split("\t")
        if not line or (number == 1 and named) or (limit and len(scores) == limit):
            continue
        try:
            score = float(cells[columns[2]])
        except (IndexError, ValueError):
            if number == 1:  # a header without the known names
                continue
            raise ValueError(f"{path}:{number}: expected sentence1, sentence2 and a numeric score "
                             f"(columns {columns}), got {len(cells)} columns") from None
        first.append(cells[columns[0]])
        second.append(cells[columns[1]])
        scores.append(score)
    if len(scores) < 2:
        raise ValueError(f"{path}: fewer than 2 scored sentence pairs")
    return first, second, scores


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    losses: list[tuple[int, str, float]] = field(default_factory=list)
    """(step, task, training loss) of every step run in this call."""
    eval_history: list[dict[str, Any]] = field(default_factory=list)
    checkpoint: Path | None = None
    stopped_by: str | None = None
    """The signal that stopped the run early (after writing and verifying ``checkpoint``), else None."""


class Trainer:
    def __init__(self, config: RunConfig, data: PreparedData, run_dir: Path, plan: Plan,
                 task_ids: dict[str, int] | None = None, init_model: HFModel | None = None) -> None:
        """A run of a settled ``config`` and its ``plan`` over ``data``'s examples: both come from
        :func:`ernie_cmtl.assembly.settle_run`; the config is final and only read here.
        ``task_ids``: the ids a checkpoint recorded, kept so that adding a task never renumbers others.
        ``init_model``: pretrained weights (``model.init_from``) to start from instead of a random encoder.
        With ``train.engine=deepspeed`` the process group must be started first
        (:func:`ernie_cmtl.ds_engine.init_distributed`, as :func:`ernie_cmtl.api.pretrain` does)."""
        self.config = config
        self.data = data
        self.run_dir = run_dir
        self.task_names = list(data.tasks)
        if sorted(plan.tasks) != sorted(self.task_names) or config.train.max_steps != plan.total_steps \
                or (config.model.init_from is None and config.model.vocab_size != data.vocab_size):
            raise ValueError("Trainer: config and plan are not settled for this data (tasks, train.max_steps or "
                             "model.vocab_size differ): pass what ernie_cmtl.assembly.settle_run returns")
        self.plan = plan
        self.cfg = config.train
        self.task_ids = assign_task_ids(self.plan.tasks, task_ids)
        model_cfg = config.model
        if max(self.task_ids.values()) >= model_cfg.num_task_embeddings:
            raise ValueError(f"{len(self.task_ids)} tasks need model.num_task_embeddings >= "
                             f"{len(self.task_ids)} (is {model_cfg.num_task_embeddings})")
        self.rank, self.world_size = 0, 1
        if self.cfg.engine == "deepspeed":  # the process group was started once, before the data was built
            if not torch.distributed.is_initialized():
                raise RuntimeError("train.engine=deepspeed: start the process group first "
                                   "(ernie_cmtl.ds_engine.init_distributed)")
            self.rank, self.world_size = torch.distributed.get_rank(), torch.distributed.get_world_size()
        # the same initial weights on every rank; then per-rank dropout streams
        torch.manual_seed(config.seed)
        model = build_model(model_cfg, data.tasks)
        if init_model is not None:
            imported = load_into(model, init_model)
            log.info("initialized from %s: %s", init_model.directory, ", ".join(imported))
        # retention methods (ernie_cmtl.preserve): the source is read from init_from, whatever a resume loads
        self.anchor = (SourceAnchor(model.encoder, source_encoder(model_cfg), config.preserve)
                       if config.preserve.needs_source else None)
        torch.manual_seed(hash_seed(config.seed, self.rank))
        self.engine: Engine
        self.engine = build_engine(model, self.cfg.optim, engine=self.cfg.engine, device=self.cfg.device,
                                   compile=self.cfg.compile, deepspeed=self.cfg.deepspeed,
                                   micro_batch_size=self.cfg.batch_size, world_size=self.world_size,
                                   encoder_lr_scale=encoder_lr_scale(plan, config.preserve))
        self.device = self.engine.device
        if self.anchor is not None:
            self.anchor.to(self.device)
        rank, world_size = self.rank, self.world_size
        if rank == 0:
            log.info("global batch = %d micro x %d accumulation x %d ranks = %d sequences per step",
                     self.cfg.batch_size, self.cfg.grad_accum_steps, world_size,
                     self.cfg.batch_size * self.cfg.grad_accum_steps * world_size)
        self.streams = {
            name: TaskStream(data.train[name], self.cfg.batch_size, config.seed, self.task_ids[name], rank,
                             world_size, length_group_window=self.cfg.length_group_window)
            for name in self.task_names
        }
        self.positions = dict.fromkeys(self.task_names, 0)
        self.best_valid_loss: dict[str, float] = {}
        self.step = 0
        self.guard = NonFiniteGuard(self.cfg.max_bad_steps)

    # -- batches --------------------------------------------------------------------------------------------
    def _batch(self, task_name: str, rows: dict[str, list], seed: int) -> dict[str, torch.Tensor]:
        return self._to_device(self._collate(task_name, rows, seed))

    def _collate(self, task_name: str, rows: dict[str, list], seed: int) -> dict[str, torch.Tensor]:
        """The task's collated batch plus ``task_ids``, on the host."""
        generator = torch.Generator().manual_seed(seed)
        batch = self.data.tasks[task_name].collate(rows, generator)
        batch["task_ids"] = torch.full((batch["input_ids"].shape[0],), self.task_ids[task_name])
        return batch

    def _to_device(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if self.device.type == "cuda":  # pinned pages: the copy is truly asynchronous
            return {k: v.pin_memory().to(self.device, non_blocking=True) for k, v in batch.items()}
        return {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}

    # -- checkpoints ----------------------------------------------------------------------------------------
    @property
    def checkpoint_root(self) -> Path:
        return self.run_dir / "checkpoints"

    def save(self, verify: bool = False) -> Path:
        """Every rank writes its part into a staging directory; rank 0 commits it atomically (``verify``: then
        checks every file against its checksum). A write that fails on any rank (a full disk, an I/O error, a
        permission lost) removes the staging directory and raises :class:`CheckpointWriteError` on every rank;
        the checkpoints written before stay as they were."""
        self.guard.read()  # the skip flags of the steps so far belong to this checkpoint's state
        staging = staging_dir(self.checkpoint_root, self.step)
        final = self.checkpoint_root / f"step_{self.step:08d}"
        error: BaseException | None = None
        try:
            if self.rank == 0:
                shutil.rmtree(staging, ignore_errors=True)
                staging.mkdir(parents=True)
            self._barrier()
            self.engine.save_checkpoint(staging)
            save_rng(staging, self.rank)
        except OSError as err:
            error = err
        if not self._agree(error is not None) and self.rank == 0:  # every rank's part is written
            state = {"step": self.step, "positions": self.positions, "task_ids": self.task_ids,
                     "seed": self.config.seed, "world_size": self.world_size, "engine": self.cfg.engine,
                     "plan_hash": self.plan.hash(), "plan": self.plan.to_dict(),
                     "best_valid_loss": self.best_valid_loss, "nonfinite": self.guard.state_dict()}
            try:
                final = commit_checkpoint(staging, state, self.cfg.keep_last)
                reason = verify_checkpoint(final) if verify else None
                if reason is not None:
                    shutil.rmtree(final, ignore_errors=True)
                    raise OSError(errno.EIO, f"the checkpoint just written does not verify ({reason})", str(final))
                log.info("checkpoint written%s: %s", " and verified" if verify else "", final)
            except OSError as err:
                error = err
        if self._agree(error is not None):
            if self.rank == 0:
                shutil.rmtree(staging, ignore_errors=True)
            raise write_failure(self.checkpoint_root, self.step, error or OSError("another rank's write failed"),
                                latest_checkpoint(self.checkpoint_root))
        return final

    def _agree(self, flag: bool) -> bool:
        """``flag`` or-ed over the ranks (one small all-reduce on a gloo group; no-op in one process)."""
        if self.world_size > 1 and not hasattr(self, "_flag_group"):
            self._flag_group = stop_group()
        return agree_any(flag, self.world_size, getattr(self, "_flag_group", None))

    def _barrier(self) -> None:
        if self.world_size > 1:
            torch.distributed.barrier()

    def _all_reduce(self, values: list[float]) -> list[float]:
        """Sums over ranks (identity in one process)."""
        if self.world_size == 1:
            return values
        tensor = torch.tensor(values, dtype=torch.float64)
        torch.distributed.all_reduce(tensor)
        return tensor.tolist()

    def resume(self, path: Path | None = None, allow_plan_change: bool = False) -> int:
        """Restore model, optimizer, schedule position, data positions and RNG from a checkpoint.
        A checkpoint written under another plan is refused unless ``allow_plan_change``: then tasks new to
        the plan start with fresh heads and the step sequence follows the new plan from the saved step."""
        path = path or latest_verified_checkpoint(self.checkpoint_root)
        if path is None:
            raise CheckpointError(f"--resume: no checkpoint in {self.checkpoint_root}")
        state = read_state(path)
        if any(self.task_ids.get(n) != i for n, i in state["task_ids"].items() if n in self.task_ids):
            raise CheckpointError(f"{path}: task ids {state['task_ids']} do not match this run's {self.task_ids}")
        if state.get("plan_hash") != self.plan.hash():
            if not allow_plan_change:
                raise CheckpointError(
                    f"{path} was written under another schedule (plan {state.get('plan_hash')}, this config "
                    f"gives {self.plan.hash()}); resuming would change which task each step trains. Pass "
                    "--allow-plan-change to continue under the new plan anyway")
            log.warning("resuming %s under a changed plan (%s -> %s)", path, state.get("plan_hash"),
                        self.plan.hash())
        if state.get("engine", "torch") != self.cfg.engine:
            raise CheckpointError(f"{path} was written by the {state.get('engine')} engine; this run uses "
                                  f"train.engine={self.cfg.engine}")
        saved_world_size = int(state.get("world_size", 1))
        self.engine.load_checkpoint(path, strict=not allow_plan_change, saved_world_size=saved_world_size,
                                    step=int(state["step"]))
        rng = load_rng(path, self.rank)
        if saved_world_size != self.world_size or rng is None:
            log.warning("resuming a %d-rank checkpoint on %d ranks: the weights, step, schedule and data "
                        "positions continue; each rank now reads a different share of every global batch, "
                        "dropout RNG starts afresh and (DeepSpeed ZeRO cannot re-partition it) the optimizer's "
                        "moment estimates restart from zero, so the run continues correctly but not "
                        "bit-identically to an uninterrupted one (docs/DISTRIBUTED.md)", saved_world_size,
                        self.world_size)
        else:
            set_rng_state(rng)
        self.positions.update({k: v for k, v in state["positions"].items() if k in self.positions})
        self.best_valid_loss.update(state.get("best_valid_loss", {}))
        self.guard.load_state_dict(state.get("nonfinite", {}))
        self.step = int(state["step"])
        log.info("resumed from %s at step %d", path, self.step)
        return self.step

    # -- evaluation -----------------------------------------------------------------------------------------
    def eval_batch_count(self, name: str) -> int:
        """How many batches per rank :meth:`evaluate` reads of task ``name``'s valid split: ``train.eval_batches``,
        at most the split's full global batches, at least one."""
        return min(self.cfg.eval_batches,
                   max(1, len(self.data.valid[name]) // (self.cfg.batch_size * self.world_size)))

    @torch.no_grad()
    def evaluate(self) -> dict[str, dict[str, float]]:
        """Held-out loss and accuracy of every task, on the same fixed batches (and masks) every time."""
        model = self.engine.module
        was_training = model.training
        model.eval()
        results = {}
        for name in self.task_names:
            task = self.data.tasks[name]
            stream = TaskStream(self.data.valid[name], self.cfg.batch_size, self.config.seed, 0, self.rank,
                                self.world_size)
            n_batches = self.eval_batch_count(name)
            loss_sum, correct, count = 0.0, 0.0, 0.0
            for i in range(n_batches):
                batch = self._batch(name, stream.rows(i), hash_seed(self.config.seed, EVAL_SEED_OFFSET, i,
                                                                    self.rank))
                logits = self.engine(name, batch)
                loss_sum += float(task.loss(logits, batch))
                stats = task.metrics(logits, batch)
                correct += float(stats.get("correct", 0))
                count += float(stats.get("count", 0))
            loss_sum, correct, count = self._all_reduce([loss_sum, correct, count])
            result = {"loss": loss_sum / (n_batches * self.world_size)}
            if count:
                result["accuracy"] = correct / count
            results[name] = result
        model.train(was_training)
        return results

    # -- the loop -------------------------------------------------------------------------------------------
    def train(self, stop_at: int | None = None, progress: bool = True) -> TrainResult:
        """Train until ``train.max_steps`` (or ``stop_at``, for early stops); checkpoint at the end.
        ``stop_at=0`` on a new run writes the initialization as ``step_00000000`` (an untrained control that
        fine-tunes through the same code)."""
        cfg = self.cfg
        end = min(cfg.max_steps, stop_at) if stop_at is not None else cfg.max_steps
        monitor = Monitor(self.run_dir, self.config.monitor, self.config.to_dict(), self.rank,
                          truncate_after=self.step)
        try:
            with StopSignals(cfg.stop_signals) as stop:
                return self._train(end, monitor, progress, stop)
        finally:
            monitor.close()

    def _plan_rows(self) -> list[list]:
        return [[s.index, s.start, s.end, task, steps, task in s.new_tasks]
                for s in self.plan.stages for task, steps in s.steps.items()]

    def _log_affinity(self, monitor: Monitor, stage) -> None:
        """Cosine similarity of the stage's tasks' gradients on the shared encoder, on fixed probe batches."""
        tasks = [t for t in stage.steps if t in self.data.tasks]
        if len(tasks) < 2:
            return
        model = self.engine.module
        was_training = model.training
        model.eval()  # no dropout: the probe neither perturbs the RNG nor depends on it

        def loss_of(name: str):
            def compute():
                stream = TaskStream(self.data.valid[name], self.config.monitor.affinity_batch_size,
                                    self.config.seed, 0)
                batch = self._batch(name, stream.rows(0), hash_seed(self.config.seed, EVAL_SEED_OFFSET, -1))
                return self.data.tasks[name].loss(self.engine(name, batch), batch)
            return compute

        shared = [p for p in model.encoder.parameters() if p.requires_grad]
        matrix = gradient_affinity(model, shared, {t: loss_of(t) for t in tasks})
        model.train(was_training)
        monitor.affinity(self.step, stage.index, tasks, matrix)

    def _retention_probe(self) -> RetentionProbe | None:
        """The ``model.init_from`` source's pooled states on fixed held-out sequences (and its zero-shot
        similarity on ``monitor.retention.pairs``), computed once from the checkpoint directory, in the dtype
        and on the device of the trained encoder; None when retention is not monitored."""
        cfg = self.config.monitor.retention
        if self.config.model.init_from is None or not cfg.enabled or self.rank != 0:
            return None
        if not hasattr(self, "_retention"):
            start = time.perf_counter()
            valid = next(self.data.valid[t] for t in self.plan.tasks if t in self.data.valid)
            rows = valid[: min(cfg.drift_sequences, len(valid))]
            pairs = None
            if cfg.pairs is not None:
                first, second, scores = read_scored_pairs(cfg.pairs, cfg.max_pairs)
                tokenizer = Tokenizer.from_str(self.data.tokenizer.to_str())
                tokenizer.enable_truncation(self.config.data.max_seq_len)
                pairs = ScoredPairs(*([e.ids for e in tokenizer.encode_batch(texts)] for texts in (first, second)),
                                    scores)
            trained = next(self.engine.module.encoder.parameters())
            source = source_encoder(self.config.model).to(device=trained.device, dtype=trained.dtype)
            self._retention = RetentionProbe.from_source(source, rows["input_ids"], rows.get("segment_ids"), pairs,
                                                         task_id=0, batch_size=cfg.batch_size)
            log.info("retention monitor: source %s, %d held-out sequences%s, %.1fs", self.config.model.init_from,
                     len(rows["input_ids"]), f", {len(pairs.scores)} pairs of {cfg.pairs}" if pairs else "",
                     time.perf_counter() - start)
        return self._retention

    def _log_retention(self, monitor: Monitor, stage: int) -> None:
        """``retention/*``: drift of the encoder's mean-pooled states from the source's, zero-shot similarity."""
        probe = self._retention_probe()
        if probe is None:
            return
        start = time.perf_counter()
        values = probe.measure(self.engine.module.encoder)
        values = {k: round(v, 6) for k, v in values.items()}
        if probe.source_similarity is not None:
            values["source_similarity_spearman"] = round(probe.source_similarity, 6)
        monitor.retention(self.step, stage, {**values, "seconds": round(time.perf_counter() - start, 3)})

    def _settle_skips(self) -> None:
        """Read the steps' skip flags (where the losses are read); at multiples of ``train.log_every`` give the
        engine back the schedule positions of skipped steps (at fixed steps, so a resumed run's learning rates
        equal an uninterrupted run's)."""
        self.guard.read()
        if self.step % self.cfg.log_every == 0:
            self.engine.rewind_schedule(self.guard.take_rewind())

    def _train(self, end: int, monitor: Monitor, progress: bool, stop: StopSignals) -> TrainResult:
        cfg = self.cfg
        result = TrainResult(self.run_dir, self.step)
        if self.step == 0:  # the source's own values, before any step
            self._log_retention(monitor, 0)
        if self.step == end == 0:
            result.checkpoint = self.save()
            monitor.checkpoint(result.checkpoint, self.step)
            return result
        model = self.engine.module
        model.train()
        flops_token = {name: training_flops_per_token(self.data.tasks[name], self.config.model,
                                                      self.config.data.max_seq_len)
                       for name in self.task_names}
        bar = tqdm(total=end, initial=self.step, disable=not progress or self.rank != 0, dynamic_ncols=True,
                   desc="pretrain")
        window_tokens, window_seqs, window_flops, window_start = 0, 0, 0.0, time.perf_counter()
        boundaries = set(self.plan.boundaries())
        # (step, task, per-micro-batch loss tensors) not read yet: reading a device value is a host sync, so
        # they are read together on logging steps (every log_every steps and the last one)
        unread: list[tuple[int, str, list[torch.Tensor]]] = []
        while self.step < end:
            stage = self.plan.stage_at(self.step)
            name = self.plan.task_at(self.step)
            if self.step == stage.start:
                monitor.stage_start(self.step, stage.index, stage.steps, list(stage.new_tasks), self._plan_rows())
            task = self.data.tasks[name]
            losses, totals = [], {}
            stats = None
            # accuracy is reported only on logging steps, so it is only computed there
            logging_step = (self.step + 1) % cfg.log_every == 0 or self.step + 1 == end
            first_batch = self.positions[name]
            for micro in range(cfg.grad_accum_steps):
                rows = self.streams[name].rows(self.positions[name])
                self.positions[name] += 1
                host_batch = self._collate(name, rows, hash_seed(self.config.seed, self.step, micro, self.rank))
                tokens = int(host_batch["attention_mask"].sum())  # counted on the host: no device sync
                batch = self._to_device(host_batch)
                logits = self.engine(name, batch)
                loss = task.loss(logits, batch)
                extra = self.anchor.extra_loss(batch) if self.anchor is not None else None
                self.engine.backward(loss if extra is None else loss + extra)  # logged: the task's loss
                stats = self.engine.step()
                losses.append(loss.detach())
                if logging_step:
                    for key, value in task.metrics(logits.detach(), batch).items():
                        totals[key] = totals.get(key, 0.0) + float(value)
                window_tokens += tokens
                window_seqs += host_batch["input_ids"].shape[0]
                window_flops += tokens * flops_token[name]
            self.step += 1
            self.guard.record(self.step, name, (first_batch, self.positions[name] - 1), stats.get("skipped", False))
            stopping = self._agree(stop.requested)  # every rank stops after the same step
            unread.append((self.step, name, losses))
            bar.update(1)
            if logging_step or stopping:
                values = torch.stack([x.float() for _, _, step_losses in unread for x in step_losses]).tolist()
                means, i = [], 0
                for _, _, step_losses in unread:
                    means.append(sum(values[i:i + len(step_losses)]) / len(step_losses))
                    i += len(step_losses)
                means = [v / self.world_size for v in self._all_reduce(means)]
                result.losses.extend((s, t, v) for (s, t, _), v in zip(unread, means, strict=True))
                unread.clear()
                self._settle_skips()
                loss_value = means[-1]
                elapsed = time.perf_counter() - window_start
                record = {"step": self.step, "stage": stage.index, "task": name, "task_id": self.task_ids[name],
                          "loss": round(loss_value, 6),
                          "lr": stats["lr"] if stats else None,
                          "grad_norm": round(float(stats["grad_norm"]), 6) if stats else None,
                          "tokens_per_s": round(window_tokens / elapsed, 1),
                          "sequences_per_s": round(window_seqs / elapsed, 2)}
                if totals.get("count"):
                    record["accuracy"] = round(totals["correct"] / totals["count"], 6)
                if self.anchor is not None:  # weighted: L2-SP at the weights after this step, distillation's last batch
                    record["preserve"] = {k: round(float(v), 6) for k, v in self.anchor.terms().items()}
                if cfg.peak_flops > 0:
                    record["mfu"] = round(window_flops / elapsed / cfg.peak_flops, 6)
                if self.guard.skipped:
                    record["skipped_steps"] = dict(self.guard.skipped)
                monitor.train(record)
                bar.set_postfix(stage=stage.index, task=name, loss=f"{loss_value:.3f}",
                                tok_s=f"{record['tokens_per_s']:.0f}")
                window_tokens, window_seqs, window_flops, window_start = 0, 0, 0.0, time.perf_counter()
            at_boundary = self.step in boundaries
            if self.step % cfg.eval_every == 0 or self.step == end or at_boundary:
                # the forgetting monitor: every task, trained right now or not
                evaluation = self.evaluate()
                for task_name, values in evaluation.items():
                    best = min(self.best_valid_loss.get(task_name, values["loss"]), values["loss"])
                    self.best_valid_loss[task_name] = best
                    values["forgetting"] = round(values["loss"] - best, 6)
                monitor.valid(self.step, stage.index, evaluation, at_boundary)
                self._log_retention(monitor, stage.index)
                result.eval_history.append({"step": self.step, **evaluation})
                window_start = time.perf_counter()  # evaluation time is not training throughput
            every = self.config.monitor.affinity_every
            if every and self.step % every == 0:
                self._log_affinity(monitor, stage)
                window_start = time.perf_counter()
            if self.step % cfg.save_every == 0 or self.step == end or stopping:
                result.checkpoint = self.save(verify=stopping)
                monitor.checkpoint(result.checkpoint, self.step)
                window_start = time.perf_counter()
            if stopping:
                result.stopped_by = stop.received or "a signal to another rank"
                log.warning("stopped by %s after step %d; checkpoint %s verified; continue with --resume",
                            result.stopped_by, self.step, result.checkpoint)
                break
        bar.close()
        result.step = self.step
        return result
