from __future__ import annotations

import itertools
import math
import time
from collections import Counter, defaultdict

import pytest
import torch
from datasets import Dataset
from hypothesis import given
from hypothesis import strategies as st

from data_builders.corpus import DOCUMENT_FEATURES
from data_builders.sentence_reordering import (
    label_to_permutation,
    num_reordering_classes,
    permutation_to_label,
    reordering_example,
)
from ernie_cmtl.config import ConfigError, ModelConfig
from ernie_cmtl.model import Encoder
from ernie_cmtl.tasks import BuildContext, SpecialIds
from pretrain_tasks.sentence_reordering import (
    SentenceReorderingConfig,
    SentenceReorderingTask,
    segment_count_baseline_loss,
)

MAX_LEN = 128
# Chi-square critical values at p = 0.001 for n! - 1 degrees of freedom (n = 2, 3, 4): a deterministic build
# fails these only if the permutation draw is biased.
CHI2_CRITICAL = {1: 10.83, 5: 20.52, 23: 49.73}


def _context(tok, docs, tmp_path_factory, seed=0):
    return BuildContext(tokenizer=tok, max_seq_len=MAX_LEN, seed=seed, num_proc=1,
                        cache_dir=tmp_path_factory.mktemp("sr"), train_documents=docs)


@pytest.fixture(scope="module")
def built(wiki_corpus, tmp_path_factory):
    """(task, examples) for m = 3 and m = 4."""
    docs, tok = wiki_corpus
    out = {}
    for m in (3, 4):
        task = SentenceReorderingTask(SentenceReorderingConfig(max_segments=m), SpecialIds.from_tokenizer(tok))
        out[m] = task, task.build(docs, _context(tok, docs, tmp_path_factory))
    return out


def _segments(ids: list[int], sep: int) -> list[list[int]]:
    """Input segments in input order (between [CLS] and the [SEP]s)."""
    segments, current = [], []
    for token in ids[1:]:
        if token == sep:
            segments.append(current)
            current = []
        else:
            current.append(token)
    return segments


# -- the label encoding ------------------------------------------------------------------------------------


def test_class_counts():
    assert [num_reordering_classes(m) for m in range(1, 6)] == [1, 3, 9, 33, 153]
    with pytest.raises(ValueError):
        num_reordering_classes(0)


@pytest.mark.parametrize("m", [1, 2, 3, 4, 5])
def test_every_label_round_trips_and_permutations_fill_the_label_space(m):
    k = num_reordering_classes(m)
    for label in range(k):
        assert permutation_to_label(label_to_permutation(label)) == label
    labels = [permutation_to_label(p) for n in range(1, m + 1) for p in itertools.permutations(range(n))]
    assert sorted(labels) == list(range(k))
    # each n owns a contiguous block starting at offset(n) with the identity, in lexicographic order
    offset = 0
    for n in range(1, m + 1):
        block = [permutation_to_label(p) for p in itertools.permutations(range(n))]
        assert block == list(range(offset, offset + math.factorial(n)))
        offset += math.factorial(n)


@given(st.integers(1, 5).flatmap(lambda n: st.permutations(list(range(n)))))
def test_permutation_round_trip_property(perm):
    label = permutation_to_label(perm)
    assert label_to_permutation(label) == tuple(perm)
    lower = num_reordering_classes(len(perm) - 1) if len(perm) > 1 else 0
    assert lower <= label < num_reordering_classes(len(perm))


def test_bad_permutations_are_rejected():
    for bad in ([], [1], [0, 0], [0, 2]):
        with pytest.raises(ValueError):
            permutation_to_label(bad)
    with pytest.raises(ValueError):
        label_to_permutation(-1)


# -- built examples ----------------------------------------------------------------------------------------


def test_examples_are_well_formed(built, wiki_corpus):
    _, tok = wiki_corpus
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    for m, (task, examples) in built.items():
        assert task.num_labels == num_reordering_classes(m)
        assert len(examples) > 1000
        for ids, seg, label, n in zip(examples["input_ids"], examples["segment_ids"], examples["label"],
                                      examples["num_segments"], strict=True):
            assert len(ids) <= MAX_LEN and ids[0] == cls and ids[-1] == sep
            assert ids.count(sep) == n and 1 <= n <= m
            assert all(_segments(ids, sep))  # every segment non-empty
            assert seg == [0] * len(ids)
            assert len(label_to_permutation(label)) == n and 0 <= label < task.num_labels


def test_label_restores_the_original_text(built, wiki_corpus):
    """Putting the input segments back in the order the label names gives a contiguous run of the
    document's tokens: the label is right, and the segments are consecutive pieces of one paragraph."""
    docs, tok = wiki_corpus
    _, examples = built[3]
    sep = tok.token_to_id("[SEP]")
    doc_tokens = {}
    for doc_id, paragraphs in zip(docs["id"], docs["sentences"], strict=True):
        encs = tok.encode_batch([s for p in paragraphs for s in p], add_special_tokens=False)
        doc_tokens[doc_id] = "," + ",".join(str(t) for e in encs for t in e.ids) + ","
    checked = scrambled = 0
    for ids, label, doc_id in zip(examples["input_ids"][:400], examples["label"][:400],
                                  examples["doc_id"][:400], strict=True):
        shown = _segments(ids, sep)
        perm = label_to_permutation(label)
        original = [None] * len(perm)
        for position, index in enumerate(perm):
            original[index] = shown[position]
        restored = "," + ",".join(str(t) for segment in original for t in segment) + ","
        assert restored in doc_tokens[doc_id]
        checked += 1
        if perm != tuple(sorted(perm)):
            as_shown = "," + ",".join(str(t) for segment in shown for t in segment) + ","
            scrambled += as_shown not in doc_tokens[doc_id]
    assert checked == 400 and scrambled > 100


def test_number_of_segments_is_uniform(built):
    """n is uniform in 1..m up to sampling noise; chunks with fewer words than the drawn n (rare: a few
    words of a chunked long paragraph) move a little mass to smaller n."""
    for m, (_, examples) in built.items():
        counts = Counter(examples["num_segments"])
        total = sum(counts.values())
        for n in range(1, m + 1):
            assert abs(counts[n] / total - 1 / m) < 0.05, (m, sorted(counts.items()))


def test_cuts_fall_on_sentence_boundaries_when_there_are_enough_sentences(built):
    _, examples = built[3]
    kinds = Counter(zip(examples["num_segments"], examples["sentence_cuts"], strict=True))
    # n = 1 never cuts; "not at sentences" with n = 1 means a one-word chunk that could not be cut at all
    assert kinds[(1, False)] <= 2
    assert kinds[(2, True)] > 100 and kinds[(2, False)] > 100 and kinds[(3, True)] > 50


# -- leak checks -------------------------------------------------------------------------------------------


def test_labels_are_uniform_given_the_number_of_segments(built):
    """The order is a uniform draw: per n, a chi-square test against uniform over the n! permutations."""
    for _, examples in built.values():
        by_n = defaultdict(Counter)
        for label, n in zip(examples["label"], examples["num_segments"], strict=True):
            by_n[n][label] += 1
        for n, counts in by_n.items():
            k = math.factorial(n)
            if k == 1:
                continue
            total = sum(counts.values())
            expected = total / k
            chi2 = sum((counts.get(label, 0) - expected) ** 2 / expected
                       for label in range(permutation_to_label(range(n)), permutation_to_label(range(n)) + k))
            assert chi2 < CHI2_CRITICAL[k - 1], (n, sorted(counts.items()))


def test_segment_ids_are_identical_across_labels(built):
    _, examples = built[3]
    by_length = defaultdict(set)
    for ids, seg, n in zip(examples["input_ids"], examples["segment_ids"], examples["num_segments"],
                           strict=True):
        by_length[(n, len(ids))].add(tuple(seg))
    assert all(len(patterns) == 1 for patterns in by_length.values())


def test_reshuffling_the_input_changes_only_the_label(built, wiki_corpus):
    """Every reordering of a real example's segments keeps segment_ids, length and tokens; only the label
    moves, through all n! values of that n."""
    _, tok = wiki_corpus
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    _, examples = built[4]
    done = 0
    for ids, seg, label, n in zip(examples["input_ids"], examples["segment_ids"], examples["label"],
                                  examples["num_segments"], strict=True):
        if n < 3:
            continue
        shown = _segments(ids, sep)
        perm = label_to_permutation(label)
        original = [shown[perm.index(i)] for i in range(n)]
        assert reordering_example(original, perm, cls, sep) == (ids, seg, label)
        labels = set()
        for sigma in itertools.permutations(range(n)):
            new_ids, new_seg, new_label = reordering_example(original, [perm[s] for s in sigma], cls, sep)
            assert new_ids == [cls] + [t for s in sigma for t in [*shown[s], sep]]
            assert new_seg == seg and sorted(new_ids) == sorted(ids)
            labels.add(new_label)
        assert len(labels) == math.factorial(n)
        done += 1
        if done == 20:
            break
    assert done == 20


def test_segment_lengths_do_not_give_the_order_away(built, wiki_corpus):
    """A classifier that only sees the segment lengths (which input segment is the longest / shortest)
    and predicts the majority label per feature value, fitted on the very examples it is scored on, barely
    beats always answering the majority label of that n."""
    _, tok = wiki_corpus
    sep = tok.token_to_id("[SEP]")
    for _, examples in built.values():
        table = defaultdict(lambda: defaultdict(Counter))
        for ids, label, n in zip(examples["input_ids"], examples["label"], examples["num_segments"],
                                 strict=True):
            if n < 2:
                continue
            lengths = [len(s) for s in _segments(ids, sep)]
            feature = (lengths.index(max(lengths)), lengths.index(min(lengths)))
            table[n][feature][label] += 1
        for n, by_feature in table.items():
            total = sum(sum(c.values()) for c in by_feature.values())
            fitted = sum(max(c.values()) for c in by_feature.values()) / total
            majority = max(sum(by_feature.values(), Counter()).values()) / total
            assert fitted - majority < 0.08, (n, fitted, majority)


# -- determinism and edge cases ----------------------------------------------------------------------------


def test_build_is_deterministic_and_seeded(built, wiki_corpus, tmp_path_factory):
    docs, tok = wiki_corpus
    task, examples = built[3]
    again = task.build(docs, _context(tok, docs, tmp_path_factory))
    assert again["input_ids"] == examples["input_ids"] and again["label"] == examples["label"]
    other = task.build(docs, _context(tok, docs, tmp_path_factory, seed=1))
    assert other["label"] != examples["label"]
    # per-document RNGs: a document's examples do not depend on what else is in the batch
    alone = task.build(docs.select([5]), _context(tok, docs, tmp_path_factory))
    doc_id = docs[5]["id"]
    assert alone["input_ids"] == [ids for ids, d in zip(examples["input_ids"], examples["doc_id"], strict=True)
                                  if d == doc_id]


def _documents(rows: list[tuple[str, str, list[list[str]]]]) -> Dataset:
    return Dataset.from_dict({"id": [r[0] for r in rows], "title": [r[1] for r in rows],
                              "paragraphs": [[" ".join(p) for p in r[2]] for r in rows],
                              "sentences": [r[2] for r in rows], "language": ["en"] * len(rows)},
                             features=DOCUMENT_FEATURES)


def test_edge_cases(wiki_corpus, tmp_path_factory):
    docs, tok = wiki_corpus
    sep = tok.token_to_id("[SEP]")
    long_sentence = " ".join(["the river flows north through the old town"] * 40) + "."
    tiny = _documents([
        ("a", "", [["It rained."]]),  # no title, one paragraph, one sentence of 3 words
        ("b", "B", [["One.", "Two.", "Three.", "Four.", "Five."], ["A paragraph of a single sentence here."]]),
        ("c", "C", [[long_sentence]]),
    ])
    task = SentenceReorderingTask(SentenceReorderingConfig(max_segments=5), SpecialIds.from_tokenizer(tok))
    examples = task.build(tiny, _context(tok, docs, tmp_path_factory))
    assert examples["doc_id"] == ["a", "b", "b", "c"]
    for ids, n in zip(examples["input_ids"], examples["num_segments"], strict=True):
        assert len(ids) <= MAX_LEN and ids.count(sep) == n and all(_segments(ids, sep))
    # "it rained ." has 3 words, so n <= 3 whatever was drawn
    assert examples["num_segments"][0] <= 3
    # an over-long sentence is cut to fit
    assert len(examples["input_ids"][3]) >= MAX_LEN - 5
    with pytest.raises(ValueError, match="sentence_reordering"):
        task.build(tiny.select([]), _context(tok, docs, tmp_path_factory))


def test_config_is_validated():
    for bad in (0, 6):
        with pytest.raises(ConfigError, match="max_segments"):
            SentenceReorderingConfig(max_segments=bad)


# -- collate, head, loss -----------------------------------------------------------------------------------


def test_collate_head_loss_and_metrics(built, wiki_corpus):
    _, tok = wiki_corpus
    task, examples = built[3]
    rows = examples[:16]
    batch = task.collate(rows, torch.Generator().manual_seed(0))
    longest = max(map(len, rows["input_ids"]))
    assert batch["input_ids"].shape == (16, longest) == batch["segment_ids"].shape
    assert batch["attention_mask"].sum().item() == sum(map(len, rows["input_ids"]))
    assert batch["labels"].tolist() == rows["label"]
    cfg = ModelConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64,
                      vocab_size=tok.get_vocab_size())
    encoder = Encoder(cfg)
    head = task.make_head(cfg, encoder.embeddings.word)
    logits = head(encoder(batch["input_ids"], batch["attention_mask"], batch["segment_ids"]))
    assert logits.shape == (16, 9)
    loss = task.loss(logits, batch)
    assert torch.isfinite(loss) and abs(loss.item() - task.chance_loss()) < 0.5
    metrics = task.metrics(logits, batch)
    assert int(metrics["count"]) == 16 and 0 <= int(metrics["correct"]) <= 16
    assert task.label_counts(examples) == dict(sorted(Counter(examples["label"]).items()))
    assert task.chance_loss() == pytest.approx(math.log(9))
    assert segment_count_baseline_loss(3) == pytest.approx((math.log(2) + math.log(6)) / 3)


# -- it learns ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_training_learns_the_order(tmp_path, wiki_shards, cache_dir):
    from ernie_cmtl import api

    overrides = ["model.hidden_size=64", "model.num_heads=2", "model.intermediate_size=256",
                 "model.num_layers=2", "train.batch_size=16", "train.lr=2e-3", "train.warmup_steps=10",
                 "train.max_steps=300", "train.eval_every=300", "train.eval_batches=16", "train.log_every=10",
                 "train.save_every=1000", "tokenizer.vocab_size=4000", "data.max_documents=400",
                 f"data.cache_dir={cache_dir}", "tasks={sentence_reordering: {}}"]
    config = api.configure(None, overrides, wiki_shards, tmp_path / "run")
    started = time.perf_counter()
    result = api.pretrain(config, progress=False)
    wall = time.perf_counter() - started
    task = SentenceReorderingTask(SentenceReorderingConfig(), SpecialIds(0, 0, 0, 0, 0, 0, 0))
    final = result.eval_history[-1]["sentence_reordering"]
    train_tail = sum(loss for _, _, loss in result.losses[-20:]) / 20
    print(f"\nsentence_reordering: chance {task.chance_loss():.3f}, [SEP]-count baseline "
          f"{task.baseline_loss():.3f}, train (last 20) {train_tail:.3f}, valid {final['loss']:.3f}, "
          f"accuracy {final['accuracy']:.3f}, steps {result.step}, {wall:.0f}s")
    assert final["loss"] < 0.9 * task.chance_loss()
