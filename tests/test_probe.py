"""Frozen-encoder evaluation (downstream/probe.py, ``ernie-cmtl probe``) on real GLUE files.

- parity: MiniLM's mean-pooled embeddings through our loader equal ``transformers``' (AutoModel, mean pooling)
  within 1e-5;
- one checkpoint, three ways in: a run directory, its ``checkpoints/step_N`` and the Hugging Face directory it
  was started from give the same probe;
- sanity: an untrained encoder scores near the input-blind baselines on the classification probes, MiniLM well
  above them (tiny subsamples: seconds, not the minutes of the full probe).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from downstream.probe import ProbeSettings, SentenceEncoder, pair_features, probe, probe_encoder
from ernie_cmtl import api
from ernie_cmtl.cli import main
from ernie_cmtl.config import ConfigError
from ernie_cmtl.model import Encoder
from ernie_cmtl.pretrained import open_pretrained
from ernie_cmtl.trainer import read_scored_pairs

GLUE = Path(__file__).resolve().parents[2] / "shared" / "data" / "glue"
QUICK = {"max_train_examples": 150, "max_dev_examples": 100, "glue_dir": str(GLUE)}


@pytest.fixture(scope="module")
def glue() -> Path:
    if not (GLUE / "STS-B" / "dev.tsv").is_file():
        pytest.skip(f"shared GLUE data not found at {GLUE}")
    return GLUE


@pytest.fixture(scope="module")
def minilm(minilm_dir):
    """MiniLM opened once through our loader (encoder in eval mode, tokenizer)."""
    pretrained = open_pretrained(minilm_dir)
    return pretrained.encoder().eval(), pretrained.tokenizer


def test_features_match_transformers_mean_pooling(minilm_dir, minilm, glue):
    transformers = pytest.importorskip("transformers")
    first, second, _ = read_scored_pairs(glue / "STS-B" / "dev.tsv", limit=24)
    sentences = first + second
    encoder, tokenizer = minilm
    ours = SentenceEncoder(encoder, tokenizer, ProbeSettings())(sentences)

    reference_tokenizer = transformers.AutoTokenizer.from_pretrained(minilm_dir)
    model = transformers.AutoModel.from_pretrained(minilm_dir).eval()
    batch = reference_tokenizer(sentences, padding=True, truncation=True, max_length=128, return_tensors="pt")
    with torch.no_grad():
        states = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    reference = (states * mask).sum(1) / mask.sum(1)
    assert bool((batch["attention_mask"] == 0).any())  # padding was there to be ignored
    assert (ours - reference).abs().max().item() <= 1e-5


def test_pair_features_are_senteval_s():
    u, v = torch.tensor([[1.0, -2.0]]).numpy(), torch.tensor([[3.0, 5.0]]).numpy()
    assert pair_features(u, v).tolist() == [[1.0, -2.0, 3.0, 5.0, 2.0, 7.0, 3.0, -10.0]]


def test_untrained_encoder_scores_near_the_input_blind_baselines_and_minilm_above(minilm, glue):
    encoder, tokenizer = minilm
    settings = ProbeSettings(tasks=["sst2", "cola"], **QUICK)
    trained = probe_encoder(encoder, tokenizer, settings)
    torch.manual_seed(0)
    random_init = Encoder(dataclasses.replace(encoder.config, num_layers=2))  # MiniLM's shape, 2 layers: cheaper
    untrained = probe_encoder(random_init, tokenizer, settings)
    for name in ("sst2", "cola"):
        values = untrained["probes"][name]
        assert abs(values["metrics"]["score"] - values["baseline"]["score"]) < 0.12, (name, values)
        assert values["train_examples"] == 150 and values["dev_examples"] == 100
    assert trained["probes"]["sst2"]["metrics"]["accuracy"] > trained["probes"]["sst2"]["baseline"]["score"] + 0.1
    # mean pooling of random embeddings still sees word overlap, so zero-shot STS-B is not 0; MiniLM is far above
    assert trained["zero_shot"]["stsb_dev"]["spearman"] > untrained["zero_shot"]["stsb_dev"]["spearman"] + 0.2
    assert trained["zero_shot"]["stsb_dev"]["spearman"] > 0.8


def test_run_dir_step_dir_and_hf_dir_give_the_same_probe(tmp_path, minilm_dir, wiki_shards, cache_dir, glue):
    """A run stopped at step 0 holds MiniLM exactly (zero task embeddings): all three ways in agree."""
    run_dir = tmp_path / "run"
    config = api.configure(None, [f"model.init_from={minilm_dir}", "train.batch_size=4", "data.max_seq_len=64",
                                  "data.max_documents=150", "train.max_steps=4", f"data.cache_dir={cache_dir}"],
                           wiki_shards[:1], run_dir)
    api.pretrain(config, stop_at=0, progress=False)
    settings = ProbeSettings(tasks=["mrpc"], max_train_examples=60, max_dev_examples=40, glue_dir=str(glue))
    results = [probe(path, settings, tmp_path / f"probe_{i}.json")
               for i, path in enumerate([minilm_dir, run_dir, run_dir / "checkpoints" / "step_00000000"])]
    for result in results[1:]:
        assert result["zero_shot"] == results[0]["zero_shot"]
        assert result["probes"]["mrpc"]["metrics"] == results[0]["probes"]["mrpc"]["metrics"]
    written = json.loads((tmp_path / "probe_1.json").read_text())
    assert written["checkpoint"].endswith("step_00000000") and written["probes"]["mrpc"]["features"] == 4 * 384


def test_cli_prints_the_table_and_writes_probe_json(tmp_path, minilm_dir, glue, capsys):
    out = tmp_path / "probe.json"
    assert main(["probe", str(minilm_dir), "--tasks", "stsb", "--max-train-examples", "80", "--max-dev-examples",
                 "60", "--glue-dir", str(glue), "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "stsb_dev (zero-shot)" in printed and "pearson/spearman" in printed and "80/5749" in printed
    result = json.loads(out.read_text())
    assert set(result["probes"]) == {"stsb"} and "alpha" in result["probes"]["stsb"]
    assert result["settings"]["max_train_examples"] == 80
    assert main(["probe", str(minilm_dir), "--tasks", "nope", "--out", str(out)]) == 2
    assert main(["probe", str(tmp_path / "missing"), "--out", str(out)]) == 2


def test_settings_are_checked():
    with pytest.raises(ConfigError, match="ranking task"):
        ProbeSettings(tasks=["c3"])
    with pytest.raises(ConfigError, match="max_seq_len"):
        ProbeSettings(max_seq_len=2)
    assert ProbeSettings(tasks=["SST-2", "STS_B"]).tasks == ["sst2", "stsb"]
