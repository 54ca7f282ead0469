"""Replay (preserve.replay_corpus / replay_fraction, ernie_cmtl.build.replay): the mixture's arithmetic, the
config's one-line errors, and a real build that mixes Wikipedia's held-out shard into a run's masked-LM
examples. Exact resume with replay, under both engines: tests/test_preserve.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from datasets import Dataset

from ernie_cmtl.build import DataBuildError
from ernie_cmtl.build.replay import mix_examples
from ernie_cmtl.config import ConfigError, PreserveConfig


def test_the_mixture_keeps_every_own_example_and_adds_the_share() -> None:
    own = Dataset.from_dict({"x": list(range(10))})
    replay = Dataset.from_dict({"x": [100, 101, 102]})
    mixed, added = mix_examples(own, replay, 0.5, seed=0)
    assert added == 10 and mixed["x"][:10] == list(range(10))
    tail = mixed["x"][10:]
    assert sorted(set(tail)) == [100, 101, 102]  # three replayed examples, repeated whole: 4, 3, 3 times
    assert sorted(tail.count(x) for x in (100, 101, 102)) == [3, 3, 4]
    assert mix_examples(own, replay, 0.5, seed=0)[0]["x"] == mixed["x"]  # a function of the seed
    assert any(mix_examples(own, replay, 0.5, seed=s)[0]["x"] != mixed["x"] for s in range(1, 6))
    few, added = mix_examples(own, replay, 0.2, seed=0)  # 10 * 0.2 / 0.8 = 2.5 -> 2, no repeats
    assert added == 2 and len(set(few["x"][10:])) == 2
    assert mix_examples(own, replay, 0.01, seed=0) == (own, 0)


def test_replay_keys_fail_with_one_line() -> None:
    from ernie_cmtl.assembly import load_config

    with pytest.raises(ConfigError, match="preserve.replay_corpus: expected the files"):
        PreserveConfig(replay_fraction=0.2)
    with pytest.raises(ConfigError, match="preserve.replay_fraction: expected a number in \\(0, 1\\)"):
        PreserveConfig(replay_corpus=["general.txt"])
    with pytest.raises(ConfigError, match="preserve.replay_fraction: expected a number in \\[0, 1\\)"):
        PreserveConfig(replay_corpus=["general.txt"], replay_fraction=1.0)
    with pytest.raises(ConfigError, match="replayed examples join knowledge_masking's, which this run does not"):
        load_config(None, ["tasks={capitalization: {}}", "schedule.stages=[]", "preserve.replay_corpus=[a.txt]",
                           "preserve.replay_fraction=0.2"])


def test_a_build_mixes_the_replay_corpus_into_masked_lm(tmp_path, wiki, wiki_shards, cache_dir, capsys) -> None:
    """The run's corpus: one training shard; the replay corpus: a held-out shard (other articles). The run's
    knowledge-masking examples are all kept, a third as many replayed ones are added (a quarter of the mixture),
    exactly the replay build's examples; the other tasks and the held-out examples are the run's own."""
    from ernie_cmtl import api

    overrides = [f"data.cache_dir={cache_dir}", "data.max_documents=120", "data.max_seq_len=64",
                 "tasks={knowledge_masking: {}, capitalization: {}}", "schedule.stages=[]"]
    plain = api.build_data(api.configure(None, overrides, wiki_shards[:1], tmp_path / "plain"), progress=False)
    replay_shard = str(wiki / "valid" / "wiki_18")
    run_dir = tmp_path / "replay"
    mixed = api.build_data(api.configure(None, [*overrides, f"preserve.replay_corpus=[{replay_shard}]",
                                                "preserve.replay_fraction=0.25"], wiki_shards[:1], run_dir),
                           progress=False)
    own = plain.train["knowledge_masking"]
    km = mixed.train["knowledge_masking"]
    added = round(len(own) / 3)
    assert len(km) == len(own) + added
    assert km[: len(own)]["input_ids"] == own["input_ids"]
    replayed = [tuple(x) for x in km[len(own):]["input_ids"]]
    replay_build = api.build_data(api.configure(None, [*overrides, "tasks={knowledge_masking: {}}",
                                                       f"tokenizer.path={run_dir / 'tokenizer.json'}"],
                                                [replay_shard], tmp_path / "replay_alone"), progress=False)
    pool = {tuple(x) for x in replay_build.train["knowledge_masking"]["input_ids"]}
    assert set(replayed) <= pool and len(set(replayed)) == min(added, len(pool))
    assert mixed.train["capitalization"]["input_ids"] == plain.train["capitalization"]["input_ids"]
    assert mixed.valid["knowledge_masking"]["input_ids"] == plain.valid["knowledge_masking"]["input_ids"]
    report = json.loads((run_dir / "data_report.json").read_text())["replay"]
    assert report["added"] == added and report["own_examples"] == len(own)
    assert report["replay_examples"] == len(pool) and report["corpus"] == [replay_shard]
    assert Path(report["account"]).is_file()
    # build-data says it (the replay build is cached by now)
    from ernie_cmtl.cli import main

    args = [a for o in [*overrides, f"preserve.replay_corpus=[{replay_shard}]", "preserve.replay_fraction=0.25"]
            for a in ("--set", o)]
    assert main(["build-data", "--corpus", wiki_shards[0], "--run-dir", str(run_dir), "--quiet", *args]) == 0
    assert f"replay: knowledge_masking's train examples include {added} of the {len(pool)} from {replay_shard} (25%)" \
        in capsys.readouterr().out
    # an unreadable replay corpus: one line naming the key, before any training
    with pytest.raises(DataBuildError, match="preserve.replay_corpus: .*no-such-corpus"):
        api.build_data(api.configure(None, [*overrides, f"preserve.replay_corpus=[{tmp_path / 'no-such-corpus'}]",
                                            "preserve.replay_fraction=0.25"], wiki_shards[:1], tmp_path / "bad"),
                       progress=False)
