"""The retention methods' pieces (ernie_cmtl.preserve): L2-SP penalty, distillation loss, head warm-up steps,
and the frozen source anchor on a real (debug-size) encoder."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

from ernie_cmtl.config import ConfigError, ModelConfig, PreserveConfig, ScheduleConfig
from ernie_cmtl.model import Encoder
from ernie_cmtl.preserve import (
    TASK_EMBEDDING_PREFIX,
    AnchorGradient,
    SourceAnchor,
    anchor_penalty,
    distillation_loss,
    head_warmup_steps,
    source_encoder,
)
from ernie_cmtl.scheduler import build_plan
from tests.conftest import WIKI


def test_anchor_penalty_is_the_squared_distance_to_the_source() -> None:
    g = torch.Generator().manual_seed(0)
    params = [torch.randn(3, 4, generator=g), torch.randn(5, generator=g)]
    sources = [torch.randn(3, 4, generator=g), torch.randn(5, generator=g)]
    expected = sum(((p - s) ** 2).sum() for p, s in zip(params, sources, strict=True))
    assert float(anchor_penalty(params, sources)) == pytest.approx(float(expected), rel=1e-6)
    assert float(anchor_penalty(sources, sources)) == 0.0


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_anchor_gradient_is_the_penalty_s_gradient(dtype: torch.dtype) -> None:
    """AnchorGradient's gradient equals autograd's of weight * anchor_penalty on a real encoder's weights,
    beside a task loss, under loss scaling (the upstream gradient) and with bf16 weights (DeepSpeed's bf16)
    against fp32 sources. Tolerance, relative to each tensor's largest entry: 1e-5 in fp32 (summation
    order), bf16's rounding in bf16."""
    torch.manual_seed(0)
    cfg = ModelConfig(flavour="debug", vocab_size=100)
    encoder = Encoder(cfg).to(dtype).eval()  # no dropout: both passes see the same task gradient
    sources = [p.detach().float() + 0.01 * torch.randn(p.shape) for p in encoder.parameters()]
    params = list(encoder.parameters())
    ids = torch.randint(5, 100, (2, 7))

    def grads(anchor: str) -> list[torch.Tensor]:
        encoder.zero_grad()
        loss = encoder(ids).float().pow(2).mean()
        if anchor == "penalty":
            loss = loss + 0.3 * anchor_penalty(params, sources)
        else:
            loss = loss + AnchorGradient.apply(0.3, sources, *params)
        (loss * 8.0).backward()  # a loss scale: the upstream gradient is not 1
        return [p.grad.float().clone() for p in params]

    expected, got = grads("penalty"), grads("function")
    tolerance = 1e-5 if dtype == torch.float32 else 2**-7
    for e, g in zip(expected, got, strict=True):
        assert torch.allclose(g, e, rtol=tolerance, atol=tolerance * float(e.abs().max())), (e - g).abs().max()
    assert float(AnchorGradient.apply(0.3, sources, *params)) == 0.0  # a gradient, not a value


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
    anchor = SourceAnchor(encoder, copy.deepcopy(encoder), PreserveConfig(l2sp_weight=0.5, distill_weight=2.0, distill_on="mean"))
    batch = {"input_ids": torch.randint(5, 100, (2, 7)), "attention_mask": torch.ones(2, 7, dtype=torch.long),
             "task_ids": torch.tensor([3, 3])}
    encoder(batch["input_ids"], batch["attention_mask"], None, batch["task_ids"])
    assert float(anchor.extra_loss(batch).detach()) == pytest.approx(0.0, abs=1e-6)
    assert {k: float(v) for k, v in anchor.terms().items()} == pytest.approx({"l2sp": 0.0, "distill": 0.0}, abs=1e-6)
    with torch.no_grad():
        encoder.layers[0].ffn_in.weight.add_(0.01)
        encoder.embeddings.task.weight.add_(1.0)  # task embeddings are new: not anchored
    encoder.zero_grad()
    encoder(batch["input_ids"], batch["attention_mask"], None, batch["task_ids"])
    anchor.config.distill_weight = 0.0
    loss = anchor.extra_loss(batch)
    n = encoder.layers[0].ffn_in.weight.numel()
    assert float(anchor.terms()["l2sp"]) == pytest.approx(0.5 * n * 0.01**2, rel=1e-4)
    loss.backward()
    assert torch.allclose(encoder.layers[0].ffn_in.weight.grad, torch.full_like(encoder.layers[0].ffn_in.weight,
                                                                               2 * 0.5 * 0.01), atol=1e-6)
    anchor.close()


def test_preserve_keys_fail_with_one_line() -> None:
    with pytest.raises(ConfigError, match="preserve.head_warmup_encoder_lr"):
        PreserveConfig(head_warmup_encoder_lr=2.0)
    with pytest.raises(ConfigError, match="preserve.distill_on"):
        PreserveConfig(distill_on="cls")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------------------
# In a run: a small random BERT as the source (real transformers weights and MiniLM's real tokenizer)

TINY_RUN = ["train.batch_size=4", "data.max_seq_len=64", "data.max_documents=150", "train.warmup_steps=1",
            "train.eval_every=100", "train.eval_batches=1", "train.log_every=1", "monitor.retention.enabled=false",
            "tasks={knowledge_masking: {}, sentence_reordering: {}}", "schedule.strategy=multitask",
            "schedule.stages=[]", "schedule.steps_per_task=3"]
REPLAY_SHARD = WIKI / "valid" / "wiki_18"
"""Replay's second corpus in these runs: held-out Wikipedia articles (the runs read a training shard)."""
ALL_METHODS = ["preserve.head_warmup_steps=1", "preserve.head_warmup_encoder_lr=0.0", "preserve.l2sp_weight=0.5",
               "preserve.distill_weight=1.0", f"preserve.replay_corpus=[{REPLAY_SHARD}]", "preserve.replay_fraction=0.3"]


@pytest.fixture(scope="module")
def small_bert(tmp_path_factory: pytest.TempPathFactory, minilm_dir) -> Path:
    transformers = pytest.importorskip("transformers")
    from data_builders.tokenizer import load_hf_tokenizer, save_hf_tokenizer_files

    tokenizer = load_hf_tokenizer(minilm_dir)
    directory = tmp_path_factory.mktemp("small_bert")
    config = transformers.BertConfig(vocab_size=tokenizer.get_vocab_size(), hidden_size=64, num_hidden_layers=2,
                                     num_attention_heads=2, intermediate_size=128, max_position_embeddings=128,
                                     architectures=["BertForMaskedLM"])
    torch.manual_seed(0)
    transformers.BertForMaskedLM(config).save_pretrained(directory)
    save_hf_tokenizer_files(tokenizer, directory)
    return directory


def _run(tmp_path: Path, name: str, small_bert: Path, wiki_shards, cache_dir, extra: list[str], **kwargs):
    from ernie_cmtl import api

    overrides = [f"model.init_from={small_bert}", f"data.cache_dir={cache_dir}", *TINY_RUN, *extra]
    return api.pretrain(api.configure(None, overrides, wiki_shards[:1], tmp_path / name), progress=False, **kwargs)


def _weights(result) -> dict[str, torch.Tensor]:
    return torch.load(result.checkpoint / "model.pt", weights_only=True)


def test_every_method_changes_the_run_and_resumes_exactly(tmp_path, small_bert, wiki_shards, cache_dir) -> None:
    from ernie_cmtl.assembly import load_config

    plain = _run(tmp_path, "plain", small_bert, wiki_shards, cache_dir, [])
    straight = _run(tmp_path, "straight", small_bert, wiki_shards, cache_dir, ALL_METHODS)
    assert straight.step == plain.step == 6
    assert [x[2] for x in straight.losses] != [x[2] for x in plain.losses]
    _run(tmp_path, "resumed", small_bert, wiki_shards, cache_dir, ALL_METHODS, stop_at=3)
    resumed = _run(tmp_path, "resumed", small_bert, wiki_shards, cache_dir, ALL_METHODS, resume=True)
    assert [loss for *_, loss in resumed.losses] == [loss for *_, loss in straight.losses[3:]]
    a, b = _weights(straight), _weights(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)
    # the weighted terms are logged beside the task's loss (train.log_every=1: every step)
    logged = [r for r in _records(tmp_path / "straight") if r["kind"] == "train"]
    assert len(logged) == 6 and all(set(r["preserve"]) == {"l2sp", "distill"} for r in logged)
    # L2-SP: the penalty at the weights after the logged step (the first step is a head warm-up with the encoder
    # frozen: no drift yet); the last one at the final weights
    final = {k.removeprefix("encoder."): v for k, v in a.items() if k.startswith("encoder.")}
    source = source_encoder(load_config(tmp_path / "straight" / "config.yaml").model).state_dict()
    anchored = [k for k in source if not k.startswith(TASK_EMBEDDING_PREFIX)]
    penalty = 0.5 * float(anchor_penalty([final[k] for k in anchored], [source[k] for k in anchored]))
    assert logged[0]["preserve"]["l2sp"] == 0.0 and logged[-1]["preserve"]["l2sp"] == pytest.approx(penalty, rel=1e-4)
    assert all(r["preserve"]["distill"] >= 0.0 for r in logged) and logged[-1]["preserve"]["distill"] > 0.0
    assert not any("preserve" in r for r in _records(tmp_path / "plain"))
    replay = json.loads((tmp_path / "straight" / "data_report.json").read_text())["replay"]
    assert replay["added"] == round(replay["own_examples"] * 0.3 / 0.7) > 0


def _records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_head_warmup_at_rate_zero_leaves_the_encoder_exactly_the_source(tmp_path, small_bert, wiki_shards,
                                                                      cache_dir) -> None:
    """Warm-up of 3 steps covers every step of both tasks here (3 each): only the heads learn, and the
    encoder (task embeddings included) stays the initialization, i.e. the source."""
    frozen = ["preserve.head_warmup_steps=3", "preserve.head_warmup_encoder_lr=0.0"]
    start = _weights(_run(tmp_path, "start", small_bert, wiki_shards, cache_dir, frozen, stop_at=0))
    trained = _weights(_run(tmp_path, "frozen", small_bert, wiki_shards, cache_dir, frozen))
    encoder = [k for k in start if k.startswith("encoder.")]
    heads = [k for k in start if k.startswith("heads.")]
    assert encoder and heads
    assert all(torch.equal(trained[k], start[k]) for k in encoder)
    assert sum(not torch.equal(trained[k], start[k]) for k in heads) >= len(heads) // 2


def test_anchoring_and_distillation_need_a_source_and_whole_weights(small_bert) -> None:
    from ernie_cmtl.assembly import load_config

    with pytest.raises(ConfigError, match="preserve.l2sp_weight: needs model.init_from"):
        load_config(None, ["preserve.l2sp_weight=0.1"])
    with pytest.raises(ConfigError, match="preserve.distill_weight: not supported with DeepSpeed ZeRO-3"):
        load_config(None, [f"model.init_from={small_bert}", "preserve.distill_weight=1", "train.engine=deepspeed",
                           "train.deepspeed.config=configs/ds/zero3.json"])
    load_config(None, [f"model.init_from={small_bert}", "preserve.distill_weight=1", "train.engine=deepspeed",
                       "train.deepspeed.config=configs/ds/zero2.json"])
    load_config(None, ["preserve.head_warmup_steps=5"])  # warm-up needs no source


@pytest.mark.slow
def test_every_method_resumes_exactly_under_deepspeed_zero2(tmp_path, small_bert, wiki_shards, cache_dir) -> None:
    """One DeepSpeed process (ZeRO-2 on CPU, gloo): the methods run through DeepSpeed's optimizer wrapper and
    an interrupted run resumes to the uninterrupted one's losses and weights."""
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[1]

    def run(name: str, *extra: str) -> Path:
        cmd = [sys.executable, "-m", "ernie_cmtl.cli", "pretrain", "--corpus", wiki_shards[0], "--run-dir",
               str(tmp_path / name), "--quiet", "--set", "train.engine=deepspeed",
               "--set", f"train.deepspeed.config={repo / 'configs' / 'ds' / 'zero2.json'}",
               *(a for o in [f"model.init_from={small_bert}", f"data.cache_dir={cache_dir}", *TINY_RUN,
                             *ALL_METHODS] for a in ("--set", o)), *extra]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=repo,
                              env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
        assert proc.returncode == 0, proc.stderr[-3000:]
        return tmp_path / name

    def losses(run_dir: Path) -> dict[int, float]:
        records = [__import__("json").loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
        return {r["step"]: r["loss"] for r in records if r["kind"] == "train"}

    straight = losses(run("straight"))
    run("resumed", "--max-steps", "3")
    run("resumed", "--resume")
    resumed = losses(tmp_path / "resumed")
    assert len(straight) == 6 and resumed == straight
