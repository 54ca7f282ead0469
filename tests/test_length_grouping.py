"""Length-grouped batches (``TaskStream(length_group_window=W)``): a pure function of (seed, task, batch number),
ranks that split the same global batch, every example once per epoch, less padding on real examples, and no
label information in the batch layout (which row an example lands in, how long its batch pads) beyond what
the example's own length already carries."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import pytest
import torch
from datasets import Dataset

from ernie_cmtl.config import ConfigError, ModelConfig, OptimConfig, TrainConfig
from ernie_cmtl.engine import TorchEngine, make_adamw
from ernie_cmtl.model import Encoder
from ernie_cmtl.registry import get_task_class
from ernie_cmtl.stream import TaskStream, example_lengths, hash_seed
from ernie_cmtl.tasks import BuildContext, PretrainTask, SpecialIds

TASKS = ["knowledge_masking", "capitalization", "token_document_relation", "sentence_reordering",
         "sentence_distance", "discourse_relation", "ir_relevance"]
BATCH, WINDOW = 16, 8


def _lengths_dataset(lengths: list[int]) -> Dataset:
    return Dataset.from_dict({"input_ids": [[7] * n for n in lengths], "label": [n % 3 for n in lengths]})


@pytest.fixture(scope="module")
def synthetic() -> Dataset:
    gen = torch.Generator().manual_seed(0)
    return _lengths_dataset(torch.randint(5, 129, (1024,), generator=gen).tolist())


@pytest.fixture(scope="module")
def built(wiki_corpus, tmp_path_factory) -> dict[str, tuple[PretrainTask, Dataset]]:
    """All seven tasks built with their default configs from the session's 200 real Wikipedia articles."""
    docs, tok = wiki_corpus
    special = SpecialIds.from_tokenizer(tok)
    out = {}
    for name in TASKS:
        cls = get_task_class(name)
        config = cls.config_class(**({"min_class_examples": 5} if name == "discourse_relation" else {}))
        task = cls(config, special)
        ctx = BuildContext(tokenizer=tok, max_seq_len=128, seed=0, num_proc=1,
                           cache_dir=Path(tmp_path_factory.mktemp(name)), train_documents=docs)
        out[name] = task, task.build(docs, ctx)
    return out


def test_without_a_window_batches_are_the_epoch_permutations_in_order(synthetic):
    """Window 0 and 1 keep the original order (runs started before grouping existed resume the same)."""
    n = len(synthetic)
    perms = [torch.randperm(n, generator=torch.Generator().manual_seed(hash_seed(3, 2, e))) for e in range(2)]
    positions = torch.cat(perms)
    for window in (0, 1):
        stream = TaskStream(synthetic, BATCH, seed=3, task_index=2, length_group_window=window)
        for k in (0, 1, 63, 64, 70):
            assert stream.indices(k) == positions[k * BATCH:(k + 1) * BATCH].tolist()


def test_grouped_batches_depend_only_on_seed_task_and_batch_number(synthetic):
    sequential = TaskStream(synthetic, BATCH, seed=1, task_index=4, length_group_window=WINDOW)
    expected = {k: sequential.indices(k) for k in range(3 * WINDOW)}
    fresh = TaskStream(synthetic, BATCH, seed=1, task_index=4, length_group_window=WINDOW)
    for k in (17, 0, 23, 5, 17, 8, 9):  # random access, as after a resume
        assert fresh.indices(k) == expected[k]
    other_task = TaskStream(synthetic, BATCH, seed=1, task_index=5, length_group_window=WINDOW)
    other_seed = TaskStream(synthetic, BATCH, seed=2, task_index=4, length_group_window=WINDOW)
    assert other_task.indices(0) != expected[0] and other_seed.indices(0) != expected[0]


def test_two_ranks_split_the_global_batch_of_one_process(synthetic):
    one = TaskStream(synthetic, 2 * BATCH, seed=0, task_index=1, length_group_window=WINDOW)
    ranks = [TaskStream(synthetic, BATCH, seed=0, task_index=1, rank=r, world_size=2,
                        length_group_window=WINDOW) for r in range(2)]
    for k in range(2 * WINDOW + 3):
        assert ranks[0].indices(k) + ranks[1].indices(k) == one.indices(k)


def test_every_example_is_seen_once_per_epoch(synthetic):
    stream = TaskStream(synthetic, BATCH, seed=0, task_index=0, length_group_window=WINDOW)
    per_epoch = len(synthetic) // BATCH  # 1024 = 8 windows of 8 batches of 16
    seen = [i for k in range(per_epoch) for i in stream.indices(k)]
    assert sorted(seen) == list(range(len(synthetic)))
    second = [i for k in range(per_epoch, 2 * per_epoch) for i in stream.indices(k)]
    assert sorted(second) == list(range(len(synthetic))) and second != seen


def test_lengths_are_read_through_a_selection():
    dataset = _lengths_dataset([3, 9, 4, 1]).select([2, 0, 1])
    assert example_lengths(dataset).tolist() == [4, 3, 9]
    with pytest.raises(ValueError, match="'input_ids' column"):
        TaskStream(Dataset.from_dict({"tokens": [[1]]}), 1, 0, 0, length_group_window=4)


def test_config_refuses_a_negative_window_and_compile_with_deepspeed():
    with pytest.raises(ConfigError, match="train.length_group_window"):
        TrainConfig(length_group_window=-1)
    with pytest.raises(ConfigError, match="train.compile"):
        TrainConfig(compile=True, engine="deepspeed")


def _real_share(task: PretrainTask, examples: Dataset, stream: TaskStream, batches: int) -> float:
    real = padded = 0
    for k in range(batches):
        batch = task.collate(examples[stream.indices(k)], torch.Generator().manual_seed(k))
        real += int(batch["attention_mask"].sum())
        padded += batch["attention_mask"].numel()
    return real / padded


@pytest.mark.parametrize("name", TASKS)
def test_grouping_removes_most_padding_on_real_examples(built, name):
    task, examples = built[name]
    batches = max(WINDOW, len(examples) // BATCH)
    plain = _real_share(task, examples, TaskStream(examples, BATCH, 0, 0), batches)
    grouped = _real_share(task, examples, TaskStream(examples, BATCH, 0, 0, length_group_window=WINDOW), batches)
    assert grouped > plain and grouped >= (0.85 if len(examples) >= 8 * BATCH * WINDOW else 0.75), (plain, grouped)


# -- labels and batch layout ---------------------------------------------------------------------------------


def _layout_records(task: PretrainTask, examples: Dataset, stream: TaskStream,
                    min_records: int = 3000) -> list[dict[str, int | float]]:
    """One record per example per batch: its row in the batch, the batch's padded length, its own length, its
    example index and its label. Token-level tasks give one label per example: the mean of its labels as the
    real collate draws them (token ids for knowledge masking, 0/1 for the others), split at the median."""
    records, k = [], 0
    while len(records) < min_records:
        indices = stream.indices(k)
        rows = examples[indices]
        batch = task.collate(rows, torch.Generator().manual_seed(hash_seed(0, k)))
        padded = batch["input_ids"].shape[1]
        if task.level == "token":
            row_of = batch["positions"] // padded
            sums = torch.zeros(len(indices)).index_add_(0, row_of, batch["labels"].float())
            counts = torch.zeros(len(indices)).index_add_(0, row_of, torch.ones(len(row_of)))
            labels = (sums / counts.clamp_min(1)).tolist()
            labelled = (counts > 0).tolist()
        else:
            labels, labelled = batch["labels"].tolist(), [True] * len(indices)
        for row, (index, ids) in enumerate(zip(indices, rows["input_ids"], strict=True)):
            if labelled[row]:
                records.append({"row": row, "padded": padded, "own": len(ids), "example": index,
                                "label": labels[row]})
        k += 1
    if task.level == "token":
        median = sorted(r["label"] for r in records)[len(records) // 2]
        for r in records:
            r["label"] = int(r["label"] > median)
    return records


def _quantile_bins(values: list[int], bins: int = 5) -> dict[int, int]:
    ordered = sorted(values)
    edges = [ordered[len(ordered) * q // bins] for q in range(1, bins)]
    return {v: sum(v > e for e in edges) for v in set(values)}


def _held_out_accuracy(records: list[dict], features) -> tuple[float, int]:
    """A majority-label-per-cell classifier on ``features(record)``, fit on the even-numbered examples and
    scored on the odd-numbered ones (so no example is on both sides)."""
    train = [r for r in records if r["example"] % 2 == 0]
    test = [r for r in records if r["example"] % 2 == 1]
    overall = Counter(r["label"] for r in train).most_common(1)[0][0]
    cells: dict[tuple, Counter] = {}
    for r in train:
        cells.setdefault(features(r), Counter())[r["label"]] += 1
    hits = sum((cells[features(r)].most_common(1)[0][0] if features(r) in cells else overall) == r["label"]
               for r in test)
    return hits / len(test), len(test)


def _leak_report(records: list[dict]) -> dict[str, float]:
    own_bin = _quantile_bins([r["own"] for r in records])
    padded_bin = _quantile_bins([r["padded"] for r in records])
    row_bin = lambda r: r["row"] * 4 // BATCH  # noqa: E731  (quarters of the batch)
    chance, n = _held_out_accuracy(records, lambda r: ())
    row, _ = _held_out_accuracy(records, lambda r: (row_bin(r),))
    own, _ = _held_out_accuracy(records, lambda r: (own_bin[r["own"]],))
    layout, _ = _held_out_accuracy(records, lambda r: (own_bin[r["own"]], padded_bin[r["padded"]], row_bin(r)))
    margin = 3 * math.sqrt(max(chance * (1 - chance), 0.05) / n)
    return {"chance": chance, "row": row, "own": own, "layout": layout, "margin": margin}


@pytest.mark.parametrize("name", TASKS)
def test_batch_layout_does_not_predict_labels(built, name):
    """The row an example lands in predicts its label no better than chance, and the row plus the batch's
    padded length add nothing to what the example's own length (which the model sees anyway) predicts."""
    task, examples = built[name]
    stream = TaskStream(examples, BATCH, seed=0, task_index=0, length_group_window=WINDOW)
    report = _leak_report(_layout_records(task, examples, stream))
    assert report["row"] <= report["chance"] + report["margin"], report
    assert report["layout"] <= report["own"] + report["margin"], report


class _LabelSortedStream(TaskStream):
    """A broken layout the test above must catch: each batch's rows ordered by label."""

    def indices(self, batch_number: int) -> list[int]:
        labels = self.dataset["label"]
        return sorted(super().indices(batch_number), key=lambda i: labels[i])


def test_the_layout_check_catches_a_label_sorted_batch(built):
    task, examples = built["sentence_distance"]
    stream = _LabelSortedStream(examples, BATCH, seed=0, task_index=0, length_group_window=WINDOW)
    report = _leak_report(_layout_records(task, examples, stream))
    assert report["row"] > report["chance"] + 0.2, report


def test_padding_does_not_reach_the_encoder(built):
    """The batch's padded length is invisible to the model: an example's states are the same padded in a
    batch as alone, so length grouping cannot hand the model anything through the layout."""
    task, examples = built["sentence_distance"]
    lengths = example_lengths(examples)
    picked = [int(lengths.argmin()), int(lengths.argmax()), 0, 1]
    rows = examples[picked]
    torch.manual_seed(0)
    encoder = Encoder(ModelConfig(flavour="debug", vocab_size=task.special.vocab_size)).eval()
    batch = task.collate(rows, torch.Generator())
    assert batch["attention_mask"].sum(1).min() < batch["input_ids"].shape[1]  # padding is there
    with torch.no_grad():
        together = encoder(batch["input_ids"], batch["attention_mask"], batch["segment_ids"])
        for row, (ids, segments) in enumerate(zip(rows["input_ids"], rows["segment_ids"], strict=True)):
            alone = encoder(torch.tensor([ids]), None, torch.tensor([segments]))
            assert torch.allclose(together[row, :len(ids)], alone[0], atol=1e-5), row


# -- the rest of the step: AdamW implementation, no per-step reads ------------------------------------------


def _debug_model(vocab: int = 300) -> torch.nn.Module:
    torch.manual_seed(0)
    return Encoder(ModelConfig(flavour="debug", vocab_size=vocab, dropout=0.0, attention_dropout=0.0))


def test_the_engine_takes_fused_adamw_where_torch_has_it_and_it_matches_the_for_loop():
    """Fused (the engine's choice on this CPU) and torch's for-loop AdamW give the same weights."""
    cfg = OptimConfig(lr=1e-2, decay="constant")
    ids = torch.randint(0, 300, (4, 16), generator=torch.Generator().manual_seed(1))
    engines = {impl: TorchEngine(_debug_model(), cfg, torch.device("cpu"), adamw=impl)
               for impl in ("auto", "for-loop")}
    assert engines["auto"].adamw_impl == "fused" and engines["for-loop"].adamw_impl == "for-loop"
    for _ in range(3):
        for engine in engines.values():
            engine.backward(engine.module(ids).square().mean())
            stats = engine.step()
            assert isinstance(stats["grad_norm"], torch.Tensor)  # handed back unread: no host sync
    fused, loop = (dict(e.module.named_parameters()) for e in engines.values())
    # same update up to float rounding: the fused kernel orders its arithmetic differently (1.35e-6 apart after
    # 3 steps on this machine's CPU), far below one step's change at lr 1e-2
    assert all(torch.allclose(fused[k], loop[k], atol=1e-5) for k in fused)
    assert any(not torch.equal(fused[k], p) for k, p in _debug_model().named_parameters())  # it trained


def test_without_a_fused_kernel_the_engine_falls_back_to_foreach():
    complex_param = torch.nn.Parameter(torch.zeros(3, dtype=torch.complex64))  # no fused kernel takes these
    _, impl = make_adamw([{"params": [complex_param]}], OptimConfig(lr=1e-3, decay="constant"))
    assert impl == "foreach"


def test_the_encoder_never_reads_the_mask_off_the_cpu():
    """Reading a device tensor on the host is a sync: on an accelerator the mask goes to attention unread. The
    meta device stands in for one here: any read of a meta tensor raises."""
    cfg = ModelConfig(flavour="custom", hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64,
                      vocab_size=100, max_position=16)
    with torch.device("meta"):
        states = Encoder(cfg)(torch.zeros(2, 8, dtype=torch.long), torch.ones(2, 8, dtype=torch.long))
    assert states.shape == (2, 8, 32) and states.device.type == "meta"
