"""Where a run is assembled: the parsed config tree checked as a whole, then settled by its data's facts.

:mod:`ernie_cmtl.config` parses and checks each section on its own and imports nothing of the project. Here the
parts that depend on each other are resolved: ``tasks.<name>`` sections become their plugins' typed configs,
the schedule is checked against the tasks, and ``model.init_from`` fills the model's sizes from the
checkpoint's ``config.json`` (a disagreeing size set in the config is an error naming both values).

Then :func:`settle_run` is the one place a run's config takes what only the data build can know (tasks
without examples, the tokenizer's vocabulary) and the plan's length: its result is final, written to
``config.yaml`` at once and read, never edited, by the trainer.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ernie_cmtl.config import (
    CHECKPOINT_FIELDS,
    REPLAY_TASK,
    ConfigError,
    ModelConfig,
    RunConfig,
    ScheduleConfig,
    from_dict,
    read_config,
)

if TYPE_CHECKING:
    from ernie_cmtl.build.prepare import PreparedData
    from ernie_cmtl.scheduler import Plan

log = logging.getLogger(__name__)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Load a run config from YAML (or defaults when ``path`` is None), apply ``KEY=VALUE`` overrides and
    validate the whole tree: task sections against their plugins, the schedule against the tasks,
    ``model.init_from`` against its checkpoint. Raises :class:`ConfigError` (one line) on anything wrong."""
    config = read_config(path, overrides)
    return assemble(config)


def assemble(config: RunConfig) -> RunConfig:
    """Whole-tree validation of a parsed config (in place; returned for chaining)."""
    from ernie_cmtl.scheduler import build_plan

    config.tasks = resolve_task_configs(config.tasks)
    if config.data.language == "zh" and "capitalization" in config.tasks:
        # Chinese has no letter case: every example would be empty (with language auto, Chinese documents
        # simply give the task none).
        raise ConfigError("tasks.capitalization: not available with data.language: zh (Chinese has no letter "
                          "case to predict); remove the task or use data.language: auto or en")
    if config.model.init_from is not None:
        config.model = resolve_init_from(config.model)
        if config.tokenizer.path is not None and Path(config.tokenizer.path).expanduser().resolve() != \
                Path(config.model.init_from).expanduser().resolve():
            raise ConfigError(f"tokenizer.path: expected unset with model.init_from (the run uses the tokenizer "
                              f"of {config.model.init_from}, which matches its embeddings), got "
                              f"{config.tokenizer.path!r}")
        config.tokenizer = dataclasses.replace(config.tokenizer, path=config.model.init_from)
    check_preserve(config)
    build_plan(config.schedule, list(config.tasks), config.train.max_steps, config.seed)  # validates
    return config


def check_preserve(config: RunConfig) -> None:
    """Anchoring and distillation keep a frozen copy of the ``model.init_from`` encoder: they need a source,
    and whole parameters on every rank (DeepSpeed ZeRO 0-2; ZeRO-3 partitions the weights themselves)."""
    keep = config.preserve
    if keep.replay_fraction > 0 and REPLAY_TASK not in config.tasks:
        raise ConfigError(f"preserve.replay_fraction: replayed examples join {REPLAY_TASK}'s, which this run "
                          f"does not train (tasks: {', '.join(config.tasks)}); add {REPLAY_TASK} to tasks")
    if not keep.needs_source:
        return
    key = "preserve.l2sp_weight" if keep.l2sp_weight > 0 else "preserve.distill_weight"
    if config.model.init_from is None:
        raise ConfigError(f"{key}: needs model.init_from (anchoring and distillation keep the source model's "
                          "weights); set it, or use preserve.head_warmup_steps alone")
    if config.train.engine == "deepspeed" and deepspeed_zero_stage(config) >= 3:
        raise ConfigError(f"{key}: not supported with DeepSpeed ZeRO-3 (it partitions the weights the penalty "
                          "and the source copy need whole); use configs/ds/zero1.json or zero2.json")


def deepspeed_zero_stage(config: RunConfig) -> int:
    """The ZeRO stage the run's DeepSpeed JSON and its overrides select (0 when unreadable: DeepSpeed's own
    check reports a missing file when the engine starts)."""
    import json

    section = config.train.deepspeed
    stage = section.overrides.get("zero_optimization", {}).get("stage")
    if stage is None:
        try:
            stage = json.loads(Path(section.config).read_text()).get("zero_optimization", {}).get("stage", 0)
        except (OSError, ValueError):
            stage = 0
    return int(stage)


def resolve_init_from(model: ModelConfig) -> ModelConfig:
    """The model section with the sizes of its ``init_from`` checkpoint filled in. A size the config also
    sets must agree with ``config.json``; the checkpoint's task-embedding rows widen the table if needed."""
    from ernie_cmtl.hf import HFCheckpointError, read_hf_config

    assert model.init_from is not None
    try:
        hf_config = read_hf_config(model.init_from)
    except HFCheckpointError as err:
        raise ConfigError(f"model.init_from: {err}") from None
    from ernie_cmtl.hf import model_sizes

    sizes = model_sizes(hf_config)
    source = Path(model.init_from) / "config.json"
    values: dict[str, Any] = {}
    for key in CHECKPOINT_FIELDS:
        ours = getattr(model, key)
        unset = ours is None or (key == "vocab_size" and ours == 0)
        if not unset and ours != sizes[key]:
            raise ConfigError(f"model.{key}: {ours} disagrees with {source} ({sizes[key]}); leave it unset "
                              "with model.init_from, the checkpoint decides it")
        values[key] = sizes[key]
    if hf_config.get("use_task_id"):
        values["num_task_embeddings"] = max(model.num_task_embeddings, int(hf_config.get("task_type_vocab_size", 0)))
    resolved = dataclasses.replace(model, **values)
    resolved.check()
    return resolved


def resolve_task_configs(sections: dict[str, Any]) -> dict[str, Any]:
    """Turn ``tasks.<name>`` mappings into the typed config objects of the registered task plugins."""
    from ernie_cmtl.registry import get_task_class

    if not sections:
        raise ConfigError("tasks: expected at least one task (e.g. tasks: {knowledge_masking: {}})")
    resolved = {}
    for name, section in sections.items():
        if dataclasses.is_dataclass(section):
            resolved[name] = section
            continue
        try:
            task_cls = get_task_class(name)
        except KeyError as err:
            raise ConfigError(f"tasks.{name}: {err.args[0]}") from None
        resolved[name] = from_dict(task_cls.config_class, section, f"tasks.{name}")
    return resolved


def settle_run(config: RunConfig, data: PreparedData) -> tuple[RunConfig, Plan]:
    """The run's final config and its plan, from an assembled ``config`` and the facts its data build
    returned (``config`` itself is not edited):

    - tasks without examples (``data.empty_tasks``) leave ``tasks`` and the schedule (:func:`without_tasks`);
    - the tokenizer's vocabulary sizes the model, or, with ``model.init_from``, must fit the checkpoint's
      embeddings (:class:`~ernie_cmtl.hf.HFCheckpointError` otherwise);
    - the plan is built once, and its length becomes ``train.max_steps`` (the schedule's budget may set it).
    """
    from ernie_cmtl.scheduler import build_plan

    empty = set(data.empty_tasks)
    tasks = {name: section for name, section in config.tasks.items() if name not in empty}
    schedule = without_tasks(config.schedule, empty) if empty else config.schedule
    model = config.model
    if model.init_from is None:
        model = dataclasses.replace(model, vocab_size=data.vocab_size)
    elif data.vocab_size > model.vocab_size:
        from ernie_cmtl.hf import HFCheckpointError

        raise HFCheckpointError(f"{model.init_from}: the tokenizer has {data.vocab_size} tokens but the "
                                f"checkpoint's embeddings only {model.vocab_size} rows (expected a tokenizer "
                                "from the same model)")
    plan = build_plan(schedule, list(tasks), config.train.max_steps, config.seed)
    if config.train.max_steps != plan.total_steps:
        log.info("the schedule's budget sets the run length: %d steps", plan.total_steps)
    train = dataclasses.replace(config.train, max_steps=plan.total_steps)
    return dataclasses.replace(config, tasks=tasks, schedule=schedule, model=model, train=train), plan


def without_tasks(schedule: ScheduleConfig, names: set[str]) -> ScheduleConfig:
    """``schedule`` with the tasks ``names`` removed from its stages (a stage left empty goes),
    ``always_include`` and ``explicit_steps``."""
    stages = []
    for stage in schedule.stages:
        kept = [t for t in ([stage] if isinstance(stage, str) else stage) if t not in names]
        if kept:
            stages.append(kept[0] if isinstance(stage, str) else kept)
    return dataclasses.replace(schedule, stages=stages,
                               always_include=[t for t in schedule.always_include if t not in names],
                               explicit_steps=[{t: n for t, n in s.items() if t not in names}
                                               for s in schedule.explicit_steps])


__all__ = ["load_config", "assemble", "resolve_init_from", "resolve_task_configs", "settle_run", "without_tasks"]
