"""Retention monitoring (ernie_cmtl/retention.py and the trainer's ``retention/*`` records).

Unit tests of the pure measures (CKA, cosine drift, Spearman of cosines, mean pooling, the pair-set reader), and
one tiny continued-pretraining run from all-MiniLM-L6-v2 on real Wikipedia text: the retention records appear
at step 0 (the source's own values: no drift) and at every later evaluation, and not in a run without
``model.init_from``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from downstream.metrics import spearman as glue_spearman
from ernie_cmtl import api
from ernie_cmtl.config import ConfigError
from ernie_cmtl.retention import (
    RetentionProbe,
    ScoredPairs,
    average_ranks,
    linear_cka,
    mean_cosine,
    mean_pool,
    pooled_states,
    similarity_spearman,
    spearman,
)
from ernie_cmtl.trainer import read_scored_pairs

STSB_DEV = Path(__file__).resolve().parents[2] / "shared" / "data" / "glue" / "STS-B" / "dev.tsv"


def random_matrix(rows: int, cols: int, seed: int) -> torch.Tensor:
    return torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_linear_cka_is_one_for_a_rotated_scaled_shifted_copy_and_low_for_independent_states():
    x = random_matrix(200, 16, 0)
    rotation, _ = torch.linalg.qr(random_matrix(16, 16, 1))
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-12)
    assert linear_cka(x, 3.0 * x @ rotation + 5.0) == pytest.approx(1.0, abs=1e-9)
    independent = linear_cka(x, random_matrix(200, 16, 2))
    assert independent < 0.2  # E[CKA] of independent Gaussians ~ d / n here
    half = torch.cat([x[:, :8], random_matrix(200, 8, 3)], dim=1)  # half the directions kept
    assert independent < linear_cka(x, half) < 1.0
    with pytest.raises(ValueError, match="same N"):
        linear_cka(x, x[:10])


def test_mean_cosine_of_copies_rescaled_and_opposed_states():
    x = random_matrix(50, 8, 4)
    assert mean_cosine(x, 2.5 * x) == pytest.approx(1.0, abs=1e-12)
    assert mean_cosine(x, -x) == pytest.approx(-1.0, abs=1e-12)
    y = x.clone()
    y[:25] = -y[:25]
    assert mean_cosine(x, y) == pytest.approx(0.0, abs=1e-12)


def test_spearman_matches_scipy_and_the_glue_metric_with_ties():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    a = rng.integers(0, 5, 300).astype(float)  # many ties
    b = a + rng.normal(0, 2, 300)
    assert spearman(a, b) == pytest.approx(stats.spearmanr(a, b).statistic, abs=1e-12)
    assert spearman(a, b) == pytest.approx(glue_spearman(a, b), abs=1e-12)
    assert list(average_ranks(np.array([10.0, 20.0, 10.0, 5.0]))) == [2.5, 4.0, 2.5, 1.0]
    assert spearman(np.ones(5), np.arange(5)) == 0.0


def test_similarity_spearman_ranks_pairs_by_the_cosine_of_their_embeddings():
    u = random_matrix(40, 6, 5)
    w = random_matrix(40, 6, 6)
    w = w - (w * u).sum(1, keepdim=True) / (u * u).sum(1, keepdim=True) * u  # orthogonal to u, row by row
    angle = torch.linspace(0, 3.0, 40, dtype=torch.float64)[:, None]  # the pairs' angles grow with the index
    v = torch.cos(angle) * u / u.norm(dim=1, keepdim=True) + torch.sin(angle) * w / w.norm(dim=1, keepdim=True)
    scores = torch.linspace(5, 0, 40)
    assert similarity_spearman(u, v, scores) == pytest.approx(1.0)
    assert similarity_spearman(u, v, -scores) == pytest.approx(-1.0)
    shuffled = scores[torch.randperm(40, generator=torch.Generator().manual_seed(0))]
    assert abs(similarity_spearman(u, v, shuffled)) < 0.5


def test_mean_pool_ignores_padding_and_pooled_states_keep_input_order():
    states = torch.arange(24, dtype=torch.float32).reshape(2, 3, 4)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    pooled = mean_pool(states, mask)
    assert torch.equal(pooled[0], states[0, :2].mean(0)) and torch.equal(pooled[1], states[1].mean(0))

    class Lookup(torch.nn.Module):
        """An 'encoder' whose state at a token is its id, so pooling and order are checkable by hand."""

        def __init__(self) -> None:
            super().__init__()
            self.scale = torch.nn.Parameter(torch.ones(1))

        def forward(self, ids, mask, segments, task_ids):
            return (ids.float() * self.scale)[..., None].expand(-1, -1, 2)

    sequences = [[1, 2, 3], [7], [4, 4, 4, 4, 10], [2, 4]]
    out = pooled_states(Lookup(), sequences, batch_size=2)
    expected = torch.tensor([[2.0] * 2, [7.0] * 2, [5.2] * 2, [3.0] * 2])
    assert torch.allclose(out, expected)
    # another pooling (here the first token's state, as a [CLS] head reads it), still in input order
    first = pooled_states(Lookup(), sequences, batch_size=2, pool=lambda states, mask: states[:, 0])
    assert torch.equal(first, torch.tensor([[1.0] * 2, [7.0] * 2, [4.0] * 2, [2.0] * 2]))


def test_read_scored_pairs_by_header_name_or_first_columns(tmp_path):
    if not STSB_DEV.is_file():
        pytest.skip(f"shared data not found: {STSB_DEV}")
    first, second, scores = read_scored_pairs(STSB_DEV)
    assert len(first) == len(second) == len(scores) == 1500
    assert first[0] == "A man with a hard hat is dancing." and scores[0] == 5.0
    assert len(read_scored_pairs(STSB_DEV, limit=7)[2]) == 7
    plain = tmp_path / "plain.tsv"
    plain.write_text("a\tb\tscore_of_pair\none\ttwo\t0.5\nthree\tfour\t1\n")  # an unnamed header: skipped
    assert read_scored_pairs(plain) == (["one", "three"], ["two", "four"], [0.5, 1.0])
    plain.write_text("one\ttwo\t0.5\nthree\tfour\thigh\n")
    with pytest.raises(ValueError, match="plain.tsv:2"):
        read_scored_pairs(plain)
    with pytest.raises(FileNotFoundError):
        read_scored_pairs(tmp_path / "missing.tsv")


def test_retention_probe_of_the_source_itself_is_no_drift():
    torch.manual_seed(0)
    from ernie_cmtl.config import ModelConfig
    from ernie_cmtl.model import Encoder

    encoder = Encoder(ModelConfig(vocab_size=50, hidden_size=16, num_layers=1, num_heads=2,
                                  intermediate_size=32))
    ids = [[1 + (i * j) % 49 for j in range(3 + i % 5)] for i in range(12)]
    pairs = ScoredPairs(ids[:6], ids[6:], [float(i) for i in range(6)])
    probe = RetentionProbe.from_source(encoder, ids, None, pairs, batch_size=4)
    values = probe.measure(encoder)
    assert round(values["drift_cosine"], 6) == 1.0 and round(values["drift_cka"], 6) == 1.0
    assert values["similarity_change"] == 0.0
    with torch.no_grad():
        encoder.layers[0].ffn_out.weight.add_(0.5 * torch.randn_like(encoder.layers[0].ffn_out.weight))
    moved = probe.measure(encoder)
    assert moved["drift_cosine"] < 1.0 and moved["drift_cka"] < 1.0


def test_retention_config_keys_are_checked():
    with pytest.raises(ConfigError, match="monitor.retention.drift_sequences"):
        api.configure(None, ["monitor.retention.drift_sequences=1"])
    with pytest.raises(ConfigError, match="monitor.retention"):
        api.configure(None, ["monitor.retention.pair_file=x.tsv"])


# ---------------------------------------------------------------------------------------------------------
# In a run

TINY = ["train.batch_size=4", "data.max_seq_len=64", "data.max_documents=150", "train.max_steps=4",
        "train.warmup_steps=1", "train.eval_every=2", "train.eval_batches=1", "train.log_every=2"]
"""Knowledge masking alone (the default tasks), 4 steps, evaluations at steps 2 and 4."""


def retention_records(run_dir: Path) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == "retention"]


def test_retention_is_logged_at_step_0_and_every_evaluation_of_a_continued_run(tmp_path, minilm_dir,
                                                                                 wiki_shards, cache_dir):
    if not STSB_DEV.is_file():
        pytest.skip(f"shared data not found: {STSB_DEV}")
    overrides = [f"model.init_from={minilm_dir}", *TINY, f"data.cache_dir={cache_dir}",
                 f"monitor.retention.pairs={STSB_DEV}", "monitor.retention.max_pairs=60",
                 "monitor.retention.drift_sequences=32"]
    run_dir = tmp_path / "continued"
    api.pretrain(api.configure(None, overrides, wiki_shards[:1], run_dir), stop_at=2, progress=False)
    result = api.pretrain(api.configure(None, overrides, wiki_shards[:1], run_dir), resume=True, progress=False)
    records = retention_records(run_dir)
    assert [r["step"] for r in records] == [0, 2, 4] and [e["step"] for e in result.eval_history] == [4]
    start = records[0]
    assert start["drift_cosine"] == 1.0 and start["drift_cka"] == 1.0 and start["similarity_change"] == 0.0
    assert start["similarity_spearman"] == start["source_similarity_spearman"] > 0.5  # MiniLM knows STS
    for later in records[1:]:  # step 4 after a resume: the source's states computed again, the same
        assert later["drift_cosine"] < 1.0 and later["drift_cka"] < 1.0
        assert later["source_similarity_spearman"] == start["source_similarity_spearman"]
        assert later["similarity_change"] == pytest.approx(
            later["similarity_spearman"] - start["similarity_spearman"], abs=2e-6)
    assert run_dir / "report" / "retention.png" in api.report(run_dir)
    assert "## Retention of the source model" in (run_dir / "report" / "summary.md").read_text()


def test_no_retention_records_without_init_from(tmp_path, wiki_shards, cache_dir):
    config = api.configure(None, [*TINY, f"data.cache_dir={cache_dir}", "tokenizer.vocab_size=2000",
                                  f"monitor.retention.pairs={STSB_DEV}"], wiki_shards[:1], tmp_path / "scratch")
    api.pretrain(config, stop_at=1, progress=False)
    assert retention_records(tmp_path / "scratch") == []
