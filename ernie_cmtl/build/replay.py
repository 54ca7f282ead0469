"""Replay (``preserve.replay_corpus``, ``preserve.replay_fraction``): a second corpus's masked-LM examples mixed
into the run's own, for runs whose own corpus is narrow (a domain corpus, in continued pretraining that should
keep what the source model knew of general text).

The replay corpus is built as the run's corpus is (:func:`ernie_cmtl.build.prepare.replay_step`): the same
``data`` options and knowledge-masking config, the run's tokenizer, into ``RUN_DIR/replay`` (its own
``data_report.json``; examples cached under their own fingerprints). Its training examples are then added to
knowledge masking's until they make up the configured share. Which ones is a function of the seed, so a resumed
run reads the same stream. The held-out examples stay the run's own. A sharded build (``build-data --shard``)
adds none: the run's own build, which reads the shards, does.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
from datasets import Dataset, concatenate_datasets

from ernie_cmtl.config import REPLAY_TASK, PreserveConfig, RunConfig


def mix_examples(own: Dataset, replay: Dataset, fraction: float, seed: int) -> tuple[Dataset, int]:
    """``own``'s examples, all of them, then ``round(len(own) * fraction / (1 - fraction))`` of ``replay``'s, so
    that those make up ``fraction`` of the result: a seeded permutation of ``replay``, repeated whole as often as
    needed. Returns the mixture and how many replayed examples it holds."""
    wanted = round(len(own) * fraction / (1.0 - fraction))
    if wanted == 0 or len(replay) == 0:
        return own, 0
    picks = np.resize(np.random.default_rng(seed).permutation(len(replay)), wanted)
    return concatenate_datasets([own, replay.select(picks)]), wanted


def replay_config(config: RunConfig, run_dir: Path) -> RunConfig:
    """The config the replay corpus is built with: the run's, reading ``preserve.replay_corpus`` with the run's
    tokenizer (``RUN_DIR/tokenizer.json``, written by the run's own build) into knowledge masking alone."""
    return replace(config, run_dir=str(run_dir / "replay"),
                   data=replace(config.data, corpus=list(config.preserve.replay_corpus)),
                   tokenizer=replace(config.tokenizer, path=str(run_dir / "tokenizer.json")),
                   tasks={REPLAY_TASK: config.tasks[REPLAY_TASK]}, preserve=PreserveConfig())
