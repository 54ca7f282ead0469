"""The continual multi-task scheduler: stages, a fixed total budget, automatic allocation.

``build_plan(schedule, tasks, max_steps, seed)`` turns the ``schedule:`` section into a :class:`Plan`: a table of
stages, each with its steps per task, whose integer entries add up exactly (largest remainder). The task
trained at step ``t`` is ``plan.task_at(t)``, a pure function of (plan, seed, t): every distributed rank picks
the same task without communicating, and a resumed run continues the identical sequence.

ERNIE 2.0 allocation (strategy ``cmtl``, rule ``ernie``): with N stages and budget B per task, the task(s) new in
stage i (0-based) get (i+2)·B/(N+1) steps there and every earlier task B/(N+1), so each task gets exactly B.
For N = 4, B = 50k: 20k | 10k+30k | 10k+10k+40k | 10k+10k+10k+50k.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction

import torch

from ernie_cmtl.config import ConfigError, ScheduleConfig

AllocationRule = Callable[[int, int], list[Fraction]]
"""(number of stages N, stage i where a task is introduced) -> share of its budget in each stage 0..N-1."""


def ernie_allocation(num_stages: int, introduced: int) -> list[Fraction]:
    """ERNIE 2.0: (i+2)/(N+1) of the budget in the introducing stage i, 1/(N+1) in each later stage."""
    n = num_stages
    return [Fraction(0)] * introduced + [Fraction(introduced + 2, n + 1)] + [Fraction(1, n + 1)] * (
        n - introduced - 1)


def even_allocation(num_stages: int, introduced: int) -> list[Fraction]:
    """The budget spread evenly over the stages from the introducing one on."""
    remaining = num_stages - introduced
    return [Fraction(0)] * introduced + [Fraction(1, remaining)] * remaining


ALLOCATION_RULES: dict[str, AllocationRule] = {"ernie": ernie_allocation, "even": even_allocation}
"""Replaceable: add a rule here (``ALLOCATION_RULES["mine"] = fn``) and name it in ``schedule.allocation``."""


def largest_remainder(total: int, shares: list[Fraction]) -> list[int]:
    """Integers proportional to ``shares`` (which sum to 1) that add up to exactly ``total``; the leftover
    units go to the largest fractional parts, earlier entries first on ties."""
    exact = [total * s for s in shares]
    floors = [int(x) for x in exact]  # exact >= 0, so int() is floor
    leftover = total - sum(floors)
    order = sorted(range(len(exact)), key=lambda i: (-(exact[i] - floors[i]), i))
    for i in order[:leftover]:
        floors[i] += 1
    return floors


@dataclass(frozen=True)
class Stage:
    index: int
    steps: dict[str, int]
    """Task -> steps in this stage, in order of introduction."""
    start: int
    end: int
    new_tasks: tuple[str, ...]

    @property
    def num_steps(self) -> int:
        return self.end - self.start


@dataclass
class Plan:
    strategy: str
    stages: list[Stage]
    seed: int
    sampling: str = "proportional"
    temperature: float = 1.0
    _slots: dict[int, torch.Tensor] = field(default_factory=dict, repr=False, compare=False)

    @property
    def total_steps(self) -> int:
        return self.stages[-1].end

    @property
    def tasks(self) -> list[str]:
        """Every task, in order of first appearance."""
        return list(dict.fromkeys(t for s in self.stages for t in s.steps))

    def task_budget(self) -> dict[str, int]:
        budget: dict[str, int] = {}
        for stage in self.stages:
            for task, steps in stage.steps.items():
                budget[task] = budget.get(task, 0) + steps
        return budget

    def stage_at(self, step: int) -> Stage:
        if not 0 <= step < self.total_steps:
            raise IndexError(f"step {step} outside the plan (0..{self.total_steps - 1})")
        return self.stages[bisect.bisect_right([s.end for s in self.stages], step)]

    def task_at(self, step: int) -> str:
        """The task of step ``step``: a pure function of (plan, seed, step)."""
        stage = self.stage_at(step)
        names = [t for t, n in stage.steps.items() if n > 0]
        if self.sampling == "proportional":
            return names[int(self._stage_slots(stage)[step - stage.start])]
        weights = [1.0 if self.sampling == "uniform" else stage.steps[t] ** (1.0 / self.temperature)
                   for t in names]
        draw = random.Random(f"{self.seed}:task:{step}").random() * sum(weights)
        for name, weight in zip(names, weights, strict=True):
            draw -= weight
            if draw < 0:
                return name
        return names[-1]

    def _stage_slots(self, stage: Stage) -> torch.Tensor:
        """A seeded shuffle of the stage's multiset of task slots: drawing each step's task with probability
        proportional to the task's remaining steps in the stage, with exact counts."""
        if stage.index not in self._slots:
            counts = torch.tensor([n for n in stage.steps.values() if n > 0])
            slots = torch.repeat_interleave(torch.arange(len(counts), dtype=torch.int16), counts)
            g = torch.Generator().manual_seed(int.from_bytes(
                hashlib.sha1(f"{self.seed}:stage:{stage.index}".encode()).digest()[:7], "big"))
            self._slots[stage.index] = slots[torch.randperm(len(slots), generator=g)]
        return self._slots[stage.index]

    def boundaries(self) -> list[int]:
        """Steps at which a stage ends (the last one is the end of the run)."""
        return [s.end for s in self.stages]

    def to_dict(self) -> dict:
        return {"strategy": self.strategy, "seed": self.seed, "sampling": self.sampling,
                "temperature": self.temperature,
                "stages": [{"steps": s.steps, "start": s.start, "end": s.end, "new_tasks": list(s.new_tasks)}
                           for s in self.stages]}

    def hash(self) -> str:
        """Identifies the step -> task sequence; stored in checkpoints to refuse resuming under another plan."""
        return hashlib.sha1(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]

    def table(self) -> str:
        """The stage x task table as text (what ``ernie-cmtl plan`` prints)."""
        tasks = self.tasks
        header = ["stage", "start", "end", "steps", *tasks]
        rows = [[str(s.index), str(s.start), str(s.end), str(s.num_steps),
                 *[str(s.steps.get(t, "")) + ("*" if t in s.new_tasks else "") for t in tasks]]
                for s in self.stages]
        budget = self.task_budget()
        rows.append(["total", "0", str(self.total_steps), str(self.total_steps), *[str(budget[t]) for t in tasks]])
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
        lines = ["  ".join(v.rjust(w) for v, w in zip(r, widths, strict=True)) for r in [header, *rows]]
        return "\n".join(lines) + f"\n(* = introduced in that stage; strategy {self.strategy}, " \
                                  f"sampling {self.sampling})"


def _stage_groups(cfg: ScheduleConfig, tasks: list[str]) -> list[list[str]]:
    groups = [[s] if isinstance(s, str) else list(s) for s in cfg.stages] if cfg.stages else \
        [[t] for t in tasks if t not in cfg.always_include]
    seen: set[str] = set()
    for i, group in enumerate(groups):
        for task in group:
            if task not in tasks:
                raise ConfigError(f"schedule.stages[{i}]: task '{task}' has no section under tasks "
                                  f"(configured: {', '.join(tasks)}). When tasks is overridden, override the "
                                  f"stages too, e.g. --set 'schedule.stages=[{', '.join(tasks)}]', or "
                                  "--set schedule.stages=[] for one stage per task in the tasks order")
            if task in seen:
                raise ConfigError(f"schedule.stages[{i}]: task '{task}' is introduced twice")
            if task in cfg.always_include:
                raise ConfigError(f"schedule.stages[{i}]: task '{task}' is in schedule.always_include, "
                                  "which puts it in every stage; list it in only one of the two")
            seen.add(task)
    for task in cfg.always_include:
        if task not in tasks:
            raise ConfigError(f"schedule.always_include: task '{task}' has no section under tasks")
    missing = [t for t in tasks if t not in seen and t not in cfg.always_include]
    if missing:
        raise ConfigError(f"schedule.stages: tasks {missing} are configured but never scheduled (add them to "
                          "schedule.stages, or set schedule.stages=[] for one stage per task)")
    return groups


def build_plan(cfg: ScheduleConfig, tasks: list[str], max_steps: int, seed: int) -> Plan:
    """The plan for ``tasks`` (the configured task names) under ``cfg``; raises ConfigError if inconsistent."""
    if cfg.strategy == "explicit":
        return _explicit_plan(cfg, tasks, seed)
    groups = _stage_groups(cfg, tasks)
    if cfg.strategy == "multitask":
        groups = [[t for g in groups for t in g]] if groups else []
        if not groups and not cfg.always_include:
            raise ConfigError("schedule: no tasks to schedule")
    num_stages = max(1, len(groups))
    ordered = [t for g in groups for t in g] + list(cfg.always_include)
    budgets = _budgets(cfg, ordered, max_steps)

    shares: dict[str, list[Fraction]] = {}
    for i, group in enumerate(groups):
        for task in group:
            if cfg.strategy == "cmtl":
                if cfg.allocation not in ALLOCATION_RULES:
                    raise ConfigError(f"schedule.allocation: expected one of {', '.join(ALLOCATION_RULES)}, "
                                      f"got {cfg.allocation!r}")
                row = ALLOCATION_RULES[cfg.allocation](num_stages, i)
                if len(row) != num_stages or sum(row) != 1 or any(x < 0 for x in row):
                    raise ConfigError(f"schedule.allocation: rule {cfg.allocation!r} does not split a budget "
                                      f"over {num_stages} stages")
            else:  # continual: the stage alone; multitask: the single stage
                row = [Fraction(int(j == i)) for j in range(num_stages)]
            shares[task] = row
    for task in cfg.always_include:
        shares[task] = [Fraction(1, num_stages)] * num_stages

    table = {task: largest_remainder(budgets[task], row) for task, row in shares.items()}
    for task in cfg.always_include:
        if 0 in table[task]:
            raise ConfigError(f"schedule.always_include: a budget of {budgets[task]} steps for '{task}' cannot "
                              f"put it in each of the {num_stages} stages")
    stage_steps = [{t: table[t][j] for t in ordered if table[t][j] > 0} for j in range(num_stages)]
    new_tasks = [tuple(groups[j]) if j < len(groups) else () for j in range(num_stages)]
    new_tasks[0] = tuple(cfg.always_include) + new_tasks[0]
    return _assemble(cfg, stage_steps, new_tasks, seed)


def _budgets(cfg: ScheduleConfig, ordered: list[str], max_steps: int) -> dict[str, int]:
    if cfg.steps_per_task:
        return dict.fromkeys(ordered, cfg.steps_per_task)
    total = cfg.total_steps or max_steps
    if total < len(ordered):
        raise ConfigError(f"schedule: a total budget of {total} steps cannot cover {len(ordered)} tasks")
    return dict(zip(ordered, largest_remainder(total, [Fraction(1, len(ordered))] * len(ordered)),
                    strict=True))


def _explicit_plan(cfg: ScheduleConfig, tasks: list[str], seed: int) -> Plan:
    seen: list[str] = []
    new_tasks = []
    for i, stage in enumerate(cfg.explicit_steps):
        for task in stage:
            if task not in tasks:
                raise ConfigError(f"schedule.explicit_steps[{i}]: task '{task}' has no section under tasks")
        new_tasks.append(tuple(t for t in stage if t not in seen))
        seen.extend(new_tasks[-1])
    missing = [t for t in tasks if t not in seen]
    if missing:
        raise ConfigError(f"schedule.explicit_steps: tasks {missing} are configured but never scheduled")
    stage_steps = [{t: n for t, n in stage.items() if n > 0} for stage in cfg.explicit_steps]
    return _assemble(cfg, stage_steps, new_tasks, seed)


def _assemble(cfg: ScheduleConfig, stage_steps: list[dict[str, int]], new_tasks: list[tuple[str, ...]],
              seed: int) -> Plan:
    stages, start = [], 0
    for i, steps in enumerate(stage_steps):
        total = sum(steps.values())
        if total == 0:
            raise ConfigError(f"schedule: stage {i} gets 0 steps (the budget is too small for the plan)")
        stages.append(Stage(i, steps, start, start + total, new_tasks[i]))
        start += total
    return Plan(cfg.strategy, stages, seed, cfg.sampling, cfg.temperature)
