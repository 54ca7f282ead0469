"""``ernie_cmtl.build.examples.build_tasks``: whole tasks in forked workers report their progress, their empty tasks and
their examples to the parent as one process would."""

from __future__ import annotations

from typing import Any

import pytest
from datasets import Dataset
from tokenizers import Tokenizer
from tokenizers.models import WordLevel

from ernie_cmtl.build.examples import TaskJob, build_tasks
from ernie_cmtl.build.parallel import fork_available
from ernie_cmtl.tasks import BuildContext, EmptyTaskError, PretrainTask

pytestmark = pytest.mark.skipif(not fork_available(), reason="the task pool needs the fork start method")


class Doubling(PretrainTask):
    """A task whose examples are each document's number doubled; no examples from a split without numbers."""

    name, level, label_summary = "doubling", "sequence", "1"
    document_local = True

    def __init__(self, cost: float) -> None:
        self.build_cost = cost

    @property
    def num_labels(self) -> int:
        return 1

    def build(self, documents: Dataset, ctx: BuildContext) -> Dataset:
        if len(documents) == 0 or documents["n"][0] < 0:
            raise EmptyTaskError("no numbers here")
        return Dataset.from_dict({"twice": [2 * n for n in documents["n"]]})

    def collate(self, rows, generator):  # pragma: no cover - never trained
        raise NotImplementedError

    def make_head(self, model_config, word_embeddings):  # pragma: no cover
        raise NotImplementedError


@pytest.fixture
def tokenizer() -> Tokenizer:  # the builders here read no text
    return Tokenizer(WordLevel({"[UNK]": 0}, unk_token="[UNK]"))


class Recorder:
    """A BuildProgress that records what each task's line was told."""

    def __init__(self) -> None:
        self.done: dict[str, int] = {}
        self.totals: dict[str, int] = {}

    def bar(self, name: str, total: int, position: int | None = None) -> Any:
        recorder = self
        recorder.totals[name], recorder.done[name] = total, 0

        class Line:
            def update(self, n: int) -> None:
                recorder.done[name] += n

            def close(self) -> None:
                pass

        return Line()


def _jobs(tmp_path, tokenizer) -> list[TaskJob]:
    jobs = []
    for k, numbers in enumerate([list(range(50)), [-1, -2, -3], list(range(7)), list(range(20))]):
        ctx = BuildContext(tokenizer=tokenizer, max_seq_len=16, seed=0, num_proc=2, cache_dir=tmp_path / f"c{k}",
                           train_documents=Dataset.from_dict({"n": numbers}), work_dir=tmp_path / f"w{k}")
        docs = Dataset.from_dict({"n": numbers})
        jobs.append(TaskJob(f"task{k}", Doubling(cost=float(k)), ctx, [("train", docs), ("valid", docs.select([0]))],
                            tmp_path / f"out{k}"))
    return jobs


@pytest.mark.parametrize("num_proc", [1, 2])
def test_the_pool_returns_what_one_process_builds(tmp_path, tokenizer, num_proc):
    bars = Recorder()
    results = build_tasks(_jobs(tmp_path / str(num_proc), tokenizer), block=8, num_proc=num_proc, bars=bars)
    assert [r.error for r in results] == [None, "train split: no numbers here", None, None]
    assert results[0].examples["train"]["twice"] == [2 * n for n in range(50)]
    assert results[3].examples["valid"]["twice"] == [0]
    assert all(r.examples == {} for r in results if r.error)
    # every document of a built task reached its progress line, in the workers as here
    assert bars.done == {"task0": 51, "task1": 3, "task2": 8, "task3": 21}  # task1: its train split
    assert bars.totals == {"task0": 51, "task1": 4, "task2": 8, "task3": 21}
    assert not any((tmp_path / str(num_proc) / f"w{k}").exists() for k in range(4))  # scratch removed


def test_built_tasks_are_read_back_not_rebuilt(tmp_path, tokenizer):
    jobs = _jobs(tmp_path, tokenizer)
    build_tasks(jobs, block=8, num_proc=2)
    bars = Recorder()
    again = build_tasks(jobs, block=8, num_proc=2, bars=bars)
    assert again[2].examples["train"]["twice"] == [2 * n for n in range(7)]
    assert bars.totals["task0"] == 0 and bars.done["task0"] == 0  # loaded from out/, no work shown


class Halving(Doubling):
    """A builder with a bug on odd numbers (a plain ValueError, not an empty task)."""

    name = "halving"

    def build(self, documents: Dataset, ctx: BuildContext) -> Dataset:
        if any(n % 2 for n in documents["n"]):
            raise ValueError("odd number: a bug, not an empty task")
        return super().build(documents, ctx)


@pytest.mark.parametrize("num_proc", [1, 2])
def test_a_builder_bug_is_raised_not_taken_for_an_empty_task(tmp_path, tokenizer, num_proc):
    jobs = _jobs(tmp_path, tokenizer)
    jobs[2].task = Halving(cost=2.0)  # numbers 0..6: its blocks hold odd ones
    with pytest.raises(ValueError, match="odd number") as raised:
        build_tasks(jobs, block=8, num_proc=num_proc)
    assert not isinstance(raised.value, EmptyTaskError)
