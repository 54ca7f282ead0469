"""A continual multi-task run on real text: all seven tasks, four stages, forgetting metrics for every task."""

from __future__ import annotations

import json

import pytest

from ernie_cmtl import api

ALL = ["knowledge_masking", "capitalization", "token_document_relation", "sentence_reordering",
       "sentence_distance", "discourse_relation", "ir_relevance"]


@pytest.mark.slow
def test_seven_tasks_in_four_stages_on_wikipedia(tmp_path, wiki_shards, cache_dir):
    run_dir = tmp_path / "run"
    overrides = [
        f"data.cache_dir={cache_dir}", "data.max_documents=400", "tokenizer.vocab_size=4000",
        "model.hidden_size=64", "model.num_heads=2", "model.intermediate_size=256",
        "train.batch_size=8", "train.eval_every=1000", "train.eval_batches=1", "train.log_every=1",
        "tasks={" + ", ".join(f"{t}: {{}}" for t in ALL[:-2]) + ", discourse_relation: {min_class_examples: 5}"
        ", ir_relevance: {}}",
        "schedule.strategy=cmtl", "schedule.steps_per_task=5",
        "schedule.stages=[knowledge_masking, [capitalization, token_document_relation],"
        " [sentence_reordering, sentence_distance], [discourse_relation, ir_relevance]]",
    ]
    config = api.configure(None, overrides, wiki_shards, run_dir)
    plan = api.plan(config, run_dir / "plan.png")
    assert len(plan.stages) == 4 and plan.total_steps == 35 and (run_dir / "plan.png").stat().st_size > 10_000
    result = api.pretrain(config, progress=False)
    assert result.step == 35
    records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    trained = {r["task"] for r in records if r["kind"] == "train"}
    assert trained == set(ALL)
    stage_ends = sorted({r["step"] for r in records if r["kind"] == "valid" and r["stage_end"]})
    assert stage_ends == [s.end for s in plan.stages]
    for step in stage_ends:  # the forgetting monitor covers every task at every boundary, trained or not
        at = {r["task"]: r for r in records if r["kind"] == "valid" and r["step"] == step}
        assert set(at) == set(ALL)
        assert all("forgetting" in r and r["forgetting"] >= 0 and "loss" in r for r in at.values())
    # no task ran before its stage
    first_step = {}
    for r in records:
        if r["kind"] == "train":
            first_step.setdefault(r["task"], r["step"])
    for stage in plan.stages:
        for task in stage.new_tasks:
            assert first_step[task] > stage.start
