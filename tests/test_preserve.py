"""The retention methods' pieces (ernie_cmtl.preserve): L2-SP penalty, distillation loss, head warm-up steps,
and the frozen source anchor on a real (debug-size) encoder."""

from __future__ import annotations

import pytest
import torch

from ernie_cmtl.config import ConfigError, ModelConfig, PreserveConfig, ScheduleConfig
from ernie_cmtl.model import Encoder
from ernie_cmtl.preserve import (
    SourceAnchor,
    anchor_penalty,
    distillation_loss,
    head_warmup_steps,
    mean_pooled,
)
from ernie_cmtl.scheduler import build_plan


def test_anchor_penalty_is_the_squared_distance_to_the_source() -> None:
    g = torch.Generator().manual_seed(0)
    params = [torch.randn(3, 4, generator=g), torch.randn(5, generator=g)]
    sources = [torch.randn(3, 4, generator=g), torch.randn(5, generator=g)]
    expected = sum(((p - s) ** 2).sum() for p, s in zip(params, sources, strict=True))
    assert float(anchor_penalty(params, sources)) == pytest.approx(float(expected), rel=1e-6)
    assert float(anchor_penalty(sources, sources)) == 0.0


def test_distillation_is_zero_on_agreement_and_blind_to_padding() -> None:
    g = torch.Generator().manual_seed(1)
    states = torch.randn(2, 5, 8, generator=g)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    for on in ("mean", "tokens"):
        assert float(distillation_loss(states, states.clone(), mask, on)) == pytest.approx(0.0, abs=1e-6)
        other = states.clone()
        other[0, 3:] += 10.0  # padding only: no change
        assert float(distillation_loss(states, other, mask, on)) == pytest.approx(0.0, abs=1e-6)
        other[1, 0] += 3.0  # a real token
        assert float(distillation_loss(states, other, mask, on)) > 1e-4
    assert torch.allclose(mean_pooled(states, mask)[0], states[0, :3].mean(0))


def test_head_warmup_covers_each_tasks_first_steps_of_the_plan() -> None:
    schedule = ScheduleConfig(strategy="cmtl", stages=["a", ["b", "c"]], steps_per_task=20)
    plan = build_plan(schedule, ["a", "b", "c"], 0, seed=0)
    steps = head_warmup_steps(plan.task_at, plan.total_steps, 5)
    assert len(steps) == 15
    for task in ("a", "b", "c"):
        own = [s for s in range(plan.total_steps) if plan.task_at(s) == task]
        assert set(own[:5]) <= steps and not set(own[5:]) & steps
    assert head_warmup_steps(plan.task_at, plan.total_steps, 0) == frozenset()


def test_the_source_anchor_starts_at_zero_and_pulls_back_toward_the_source() -> None:
    torch.manual_seed(0)
    cfg = ModelConfig(flavour="debug", vocab_size=100)
    encoder = Encoder(cfg).eval()
    anchor = SourceAnchor(encoder, PreserveConfig(l2sp_weight=0.5, distill_weight=2.0, distill_on="mean"))
    batch = {"input_ids": torch.randint(5, 100, (2, 7)), "attention_mask": torch.ones(2, 7, dtype=torch.long),
             "task_ids": torch.tensor([3, 3])}
    encoder(batch["input_ids"], batch["attention_mask"], None, batch["task_ids"])
    assert float(anchor.extra_loss(batch).detach()) == pytest.approx(0.0, abs=1e-6)
    with torch.no_grad():
        encoder.layers[0].ffn_in.weight.add_(0.01)
        encoder.embeddings.task.weight.add_(1.0)  # task embeddings are new: not anchored
    encoder.zero_grad()
    encoder(batch["input_ids"], batch["attention_mask"], None, batch["task_ids"])
    anchor.config.distill_weight = 0.0
    loss = anchor.extra_loss(batch)
    n = encoder.layers[0].ffn_in.weight.numel()
    assert float(loss) == pytest.approx(0.5 * n * 0.01**2, rel=1e-4)
    loss.backward()
    assert torch.allclose(encoder.layers[0].ffn_in.weight.grad, torch.full_like(encoder.layers[0].ffn_in.weight,
                                                                               2 * 0.5 * 0.01), atol=1e-6)
    anchor.close()


def test_preserve_keys_fail_with_one_line() -> None:
    with pytest.raises(ConfigError, match="preserve.head_warmup_encoder_lr"):
        PreserveConfig(head_warmup_encoder_lr=2.0)
    with pytest.raises(ConfigError, match="preserve.distill_on"):
        PreserveConfig(distill_on="cls")  # type: ignore[arg-type]
