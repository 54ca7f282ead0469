from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ernie_cmtl.assembly import load_config
from ernie_cmtl.config import ConfigError, ScheduleConfig
from ernie_cmtl.scheduler import ALLOCATION_RULES, build_plan, largest_remainder

PAPER = ["knowledge_masking", "capitalization", "token_document_relation", "sentence_reordering"]
NAMES = [f"task{i}" for i in range(8)]


def test_ernie_paper_table_is_reproduced_exactly():
    plan = build_plan(ScheduleConfig(strategy="cmtl", steps_per_task=50_000), PAPER, 0, 0)
    assert [s.steps for s in plan.stages] == [
        {"knowledge_masking": 20_000},
        {"knowledge_masking": 10_000, "capitalization": 30_000},
        {"knowledge_masking": 10_000, "capitalization": 10_000, "token_document_relation": 40_000},
        {"knowledge_masking": 10_000, "capitalization": 10_000, "token_document_relation": 10_000,
         "sentence_reordering": 50_000},
    ]
    assert plan.total_steps == 200_000
    assert [(s.start, s.end) for s in plan.stages] == [(0, 20_000), (20_000, 60_000), (60_000, 120_000),
                                                       (120_000, 200_000)]


def test_shipped_paper_config_gives_the_table():
    from pathlib import Path

    config = load_config(Path(__file__).resolve().parents[1] / "configs" / "cmtl_paper_table.yaml")
    plan = build_plan(config.schedule, list(config.tasks), config.train.max_steps, config.seed)
    assert plan.task_budget() == dict.fromkeys(PAPER, 50_000)
    assert [s.num_steps for s in plan.stages] == [20_000, 40_000, 60_000, 80_000]


schedules = st.fixed_dictionaries({
    "strategy": st.sampled_from(["cmtl", "continual", "multitask"]),
    "n_tasks": st.integers(1, 6),
    "group_first_two": st.booleans(),
    "budget": st.one_of(st.tuples(st.just("per_task"), st.integers(1, 300)),
                        st.tuples(st.just("total"), st.integers(8, 2000))),
    "always": st.booleans(),
    "seed": st.integers(0, 2**31),
})


def _make(params):
    tasks = NAMES[: params["n_tasks"]]
    always = [tasks[0]] if params["always"] and len(tasks) > 1 else []
    introduced = [t for t in tasks if t not in always]
    stages: list = list(introduced)
    if params["group_first_two"] and len(introduced) >= 2:
        stages = [introduced[:2], *introduced[2:]]
    kind, amount = params["budget"]
    cfg = ScheduleConfig(strategy=params["strategy"], stages=stages, always_include=always,
                         steps_per_task=amount if kind == "per_task" else 0)
    total = amount if kind == "total" else 0
    return cfg, tasks, stages, total


@settings(max_examples=150, deadline=None)
@given(schedules)
def test_budgets_are_exact_and_tasks_wait_for_their_stage(params):
    cfg, tasks, stages, total = _make(params)
    try:
        plan = build_plan(cfg, tasks, total, params["seed"])
    except ConfigError as err:  # budgets too small for the number of stages are refused, never mis-split
        assert "0 steps" in str(err) or "cannot cover" in str(err) or "cannot put it" in str(err)
        return
    budget = plan.task_budget()
    if cfg.steps_per_task:
        assert budget == dict.fromkeys(tasks, cfg.steps_per_task)
        assert plan.total_steps == cfg.steps_per_task * len(tasks)
    else:
        assert plan.total_steps == total and max(budget.values()) - min(budget.values()) <= 1
    sequence = [plan.task_at(t) for t in range(plan.total_steps)]
    assert Counter(sequence) == Counter(budget)  # proportional sampling: exact counts
    for stage in plan.stages:  # each stage's steps are exactly its table row
        assert Counter(sequence[stage.start:stage.end]) == Counter(stage.steps)
    first_stage = {}
    for i, group in enumerate(stages if cfg.strategy != "multitask" else [sum(([g] if isinstance(g, str) else g
                                                                                for g in stages), [])]):
        for task in [group] if isinstance(group, str) else group:
            first_stage[task] = i
    for step, task in enumerate(sequence):  # no task runs before its stage
        if task in first_stage:
            assert plan.stage_at(step).index >= first_stage[task]
    for task in cfg.always_include:
        assert all(task in s.steps for s in plan.stages)


@settings(max_examples=40, deadline=None)
@given(schedules, st.integers(0, 10_000))
def test_sequence_is_a_pure_function_and_resume_continues_it(params, cut):
    cfg, tasks, _, total = _make(params)
    try:
        plan = build_plan(cfg, tasks, total, params["seed"])
    except ConfigError:
        return
    cut = cut % plan.total_steps
    full = [plan.task_at(t) for t in range(plan.total_steps)]
    again = build_plan(cfg, tasks, total, params["seed"])  # a fresh process / a resumed run
    assert [again.task_at(t) for t in range(cut, plan.total_steps)] == full[cut:]
    assert again.hash() == plan.hash()


def test_different_seeds_give_different_orders_same_counts():
    cfg = ScheduleConfig(strategy="multitask", steps_per_task=50)
    a = build_plan(cfg, NAMES[:3], 0, 1)
    b = build_plan(cfg, NAMES[:3], 0, 2)
    seq_a = [a.task_at(t) for t in range(150)]
    seq_b = [b.task_at(t) for t in range(150)]
    assert seq_a != seq_b and Counter(seq_a) == Counter(seq_b)
    assert a.hash() != b.hash()


def test_continual_trains_one_task_per_stage():
    plan = build_plan(ScheduleConfig(strategy="continual", steps_per_task=7), NAMES[:3], 0, 0)
    assert [s.steps for s in plan.stages] == [{"task0": 7}, {"task1": 7}, {"task2": 7}]


def test_always_include_keeps_a_task_in_every_stage():
    cfg = ScheduleConfig(strategy="continual", steps_per_task=10, always_include=["task0"])
    plan = build_plan(cfg, NAMES[:4], 0, 0)
    assert [s.steps for s in plan.stages] == [{"task1": 10, "task0": 4}, {"task2": 10, "task0": 3},
                                              {"task3": 10, "task0": 3}]


def test_multitask_temperature_sampling_covers_the_total():
    cfg = ScheduleConfig(strategy="multitask", sampling="temperature", temperature=2.0,
                         stages=["task0", "task1"], explicit_steps=[])
    plan = build_plan(cfg, NAMES[:2], 1000, 3)
    counts = Counter(plan.task_at(t) for t in range(plan.total_steps))
    assert sum(counts.values()) == 1000 and 400 < counts["task0"] < 600


def test_explicit_plan_and_its_errors():
    cfg = ScheduleConfig(strategy="explicit", explicit_steps=[{"task0": 5}, {"task0": 2, "task1": 9}])
    plan = build_plan(cfg, NAMES[:2], 0, 0)
    assert plan.task_budget() == {"task0": 7, "task1": 9}
    assert plan.stages[1].new_tasks == ("task1",)
    with pytest.raises(ConfigError, match="never scheduled"):
        build_plan(cfg, NAMES[:3], 0, 0)


@pytest.mark.parametrize(("override", "message"), [
    ("schedule.stages=[knowledge_masking, nope]", "schedule.stages[1]: task 'nope' has no section under tasks"),
    ("schedule.strategy=bogus", "schedule.strategy: expected one of"),
    ("schedule.allocation=mine", "schedule.allocation: expected one of ernie, even"),
    ("schedule.sampling=uniform", "schedule.sampling: expected 'proportional' unless"),
])
def test_bad_schedules_fail_at_load_time(override, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_config(None, [override])


def test_overriding_tasks_under_configured_stages_says_how_to_fix_it():
    default = Path(__file__).resolve().parents[1] / "configs" / "default.yaml"
    tasks = "tasks={knowledge_masking: {}, capitalization: {}}"
    with pytest.raises(ConfigError, match=r"--set 'schedule.stages=\[knowledge_masking, capitalization\]'"):
        load_config(default, [tasks])
    for stages in ("schedule.stages=[knowledge_masking, capitalization]", "schedule.stages=[]"):
        config = load_config(default, [tasks, stages])
        plan = build_plan(config.schedule, list(config.tasks), config.train.max_steps, config.seed)
        assert [stage.new_tasks for stage in plan.stages] == [("knowledge_masking",), ("capitalization",)]


def test_allocation_rule_is_replaceable():
    from fractions import Fraction

    ALLOCATION_RULES["front_loaded"] = lambda n, i: [Fraction(int(j == i)) for j in range(n)]
    try:
        plan = build_plan(ScheduleConfig(allocation="front_loaded", steps_per_task=5), NAMES[:2], 0, 0)
        assert [s.steps for s in plan.stages] == [{"task0": 5}, {"task1": 5}]
    finally:
        del ALLOCATION_RULES["front_loaded"]


@given(st.integers(0, 10**6), st.lists(st.integers(1, 50), min_size=1, max_size=8))
def test_largest_remainder_adds_up(total, weights):
    from fractions import Fraction

    shares = [Fraction(w, sum(weights)) for w in weights]
    parts = largest_remainder(total, shares)
    assert sum(parts) == total and all(abs(p - total * s) < 1 for p, s in zip(parts, shares, strict=True))
