from __future__ import annotations

import json
import time
from collections import defaultdict
from dataclasses import replace
from itertools import pairwise

import pytest
import torch
from corpus_helpers import hand_made_documents, wiki_context

from data_builders.segments import tokenize_sentences
from data_builders.token_document_relation import build_token_document_relation, frequent_words, word_key
from ernie_cmtl import api
from ernie_cmtl.config import ConfigError, ModelConfig, from_dict
from ernie_cmtl.model import TokenClassificationHead
from ernie_cmtl.registry import get_task_class
from ernie_cmtl.tasks import IGNORE_INDEX, SpecialIds
from pretrain_tasks.token_document_relation import TokenDocumentRelationConfig, TokenDocumentRelationTask

MAX_LEN = 128


@pytest.fixture(scope="module")
def setup(wiki_corpus, tmp_path_factory):
    return wiki_context(wiki_corpus, tmp_path_factory.mktemp("tdr"), MAX_LEN)


def _task(tok, **config) -> TokenDocumentRelationTask:
    return TokenDocumentRelationTask(TokenDocumentRelationConfig(**config), SpecialIds.from_tokenizer(tok))


@pytest.fixture(scope="module")
def built(setup):
    docs, tok, ctx = setup
    task = _task(tok)
    return task, task.build(docs, ctx)


def _labelled_words(tok, ids: list[int], labels: list[int]) -> list[tuple[tuple[int, ...], int]]:
    """(token ids of the word, label) for every labelled word: its first token and the ## pieces after it."""
    out = []
    for i, y in enumerate(labels):
        if y == IGNORE_INDEX:
            continue
        j = i + 1
        while j < len(ids) and tok.id_to_token(ids[j]).startswith("##"):
            j += 1
        out.append((tuple(ids[i:j]), y))
    return out


def test_registered_under_its_name():
    assert get_task_class("token_document_relation") is TokenDocumentRelationTask
    assert TokenDocumentRelationTask.level == "token" and TokenDocumentRelationTask.label_summary == "2"


def test_examples_are_well_formed(built, setup):
    task, examples = built
    _, tok, ctx = setup
    assert len(examples) > 1000 and task.num_labels == 2
    assert set(examples.column_names) == {"input_ids", "labels", "doc_id", "segment"}
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    frequent = set(json.loads((ctx.cache_dir / "frequent_words.json").read_text())["words"])
    assert {"the", "of", "and", "was", "in"} <= frequent and len(frequent) < 100  # 30 on these documents
    for ids, labels in zip(examples["input_ids"], examples["labels"], strict=True):
        assert len(ids) == len(labels) <= 64 + 2
        assert ids[0] == cls_id and ids[-1] == sep_id and labels[0] == labels[-1] == IGNORE_INDEX
        assert set(labels) <= {IGNORE_INDEX, 0, 1}
        for word, _ in _labelled_words(tok, ids, labels):
            assert not tok.id_to_token(word[0]).startswith("##")
            text = tok.decode(list(word))
            assert any(c.isalpha() for c in text) and text not in frequent, text
    # every example's document has at least two examples' worth of text (documents of one segment give none)
    per_doc = defaultdict(list)
    for doc_id, segment in zip(examples["doc_id"], examples["segment"], strict=True):
        per_doc[doc_id].append(segment)
    assert all(segments == sorted(set(segments)) for segments in per_doc.values())


def test_label_distribution(built):
    task, examples = built
    counts = task.label_counts(examples)
    share = counts[1] / (counts[0] + counts[1])
    # measured 0.483 on these 200 documents, 0.52 on all 18 shards (segments of 64 tokens, max_doc_freq 0.3)
    assert 0.40 < share < 0.58, counts


def test_labels_match_an_independent_recount(setup):
    docs, tok, _ = setup
    frequent = frequent_words(docs, 0.3)
    # min_tokens=1 keeps every segment as an example, so all "other segments" are visible here
    examples = build_token_document_relation(docs, tok, frequent, segment_tokens=64, min_tokens=1)
    by_doc: dict[str, list[list[tuple[tuple[int, ...], int]]]] = defaultdict(list)
    for doc_id, ids, labels in zip(examples["doc_id"], examples["input_ids"], examples["labels"], strict=True):
        by_doc[doc_id].append(_labelled_words(tok, ids, labels))
    checked = wrong = 0
    for segments in by_doc.values():
        types = [{word for word, _ in segment} for segment in segments]
        for i, segment in enumerate(segments):
            elsewhere = set().union(*(t for j, t in enumerate(types) if j != i))
            for word, label in segment:
                checked += 1
                wrong += label != int(word in elsewhere)
    # words are compared by their text in the builder, by token ids here: only [UNK] words may disagree
    # (measured: 0 of 35468)
    assert checked > 30000 and wrong / checked < 0.002, (wrong, checked)


def test_label_is_not_a_function_of_the_word(built, setup):
    _, examples = built
    _, tok, _ = setup
    seen = defaultdict(set)
    for ids, labels in zip(examples["input_ids"], examples["labels"], strict=True):
        for word, label in _labelled_words(tok, ids, labels):
            seen[word].add(label)
    positive = [word for word, labels in seen.items() if 1 in labels]
    both = sum(1 for word in positive if 0 in seen[word])
    # measured 0.57 of 2842 words (0.90 counting first tokens only): most words repeated in one document are
    # unrepeated in another, so the label depends on the document, not on the word
    assert len(positive) > 1000 and both / len(positive) > 0.4, (both, len(positive))


def test_labels_on_a_hand_made_document(setup):
    _, tok, _ = setup
    sentences = ["Paris has many old bridges.", "Berlin has many new bridges.",
                 "Rome has 2000 ruins, like PARIS."]
    lengths = [len(s.ids) for s in tokenize_sentences(tok, sentences)]
    budget = max(lengths)
    assert all(a + b > budget for a, b in pairwise(lengths))  # one sentence per segment
    docs = hand_made_documents([sentences[:2], sentences[2:]], [["A single short sentence is one segment only."]])
    examples = build_token_document_relation(docs, tok, {"has"}, segment_tokens=budget, min_tokens=1)
    assert examples["doc_id"] == ["0", "0", "0"] and examples["segment"] == [0, 1, 2]
    words = [[(tok.decode(list(w)), y) for w, y in _labelled_words(tok, ids, labels)]
             for ids, labels in zip(examples["input_ids"], examples["labels"], strict=True)]
    assert words == [
        [("paris", 1), ("many", 1), ("old", 0), ("bridges", 1)],
        [("berlin", 0), ("many", 1), ("new", 0), ("bridges", 1)],
        [("rome", 0), ("ruins", 0), ("like", 0), ("paris", 1)],
    ]
    assert word_key("Café") == word_key("CAFE") == "cafe"


def test_frequent_words_are_cached_and_configurable(setup, tmp_path):
    docs, tok, ctx = setup
    cached = tmp_path / "cache"
    cached.mkdir()
    # a cache file for this max_doc_freq is read, not recomputed
    (cached / "frequent_words.json").write_text(json.dumps({"max_doc_freq": 0.3, "documents": 1,
                                                            "words": ["american"]}))
    small = docs.select(range(40))
    examples = _task(tok).build(small, replace(ctx, cache_dir=cached))
    decoded = {tok.decode(list(w)) for ids, labels in zip(examples["input_ids"], examples["labels"], strict=True)
               for w, _ in _labelled_words(tok, ids, labels)}
    assert "american" not in decoded and "the" in decoded
    # another max_doc_freq recomputes; 1 labels every word with a letter
    everything = _task(tok, max_doc_freq=1.0).build(small, replace(ctx, cache_dir=cached))
    assert json.loads((cached / "frequent_words.json").read_text())["words"] == []
    default = _task(tok).build(small, replace(ctx, cache_dir=tmp_path / "fresh"))
    assert json.loads((tmp_path / "fresh" / "frequent_words.json").read_text())["max_doc_freq"] == 0.3
    # measured x1.56: the frequent words are a third of all words
    assert sum(y != IGNORE_INDEX for row in everything["labels"] for y in row) > \
        1.3 * sum(y != IGNORE_INDEX for row in default["labels"] for y in row)
    # too few training documents for frequencies: nothing is frequent
    assert frequent_words(docs.select(range(5)), 0.3) == set()


def test_build_is_deterministic(setup, built, tmp_path):
    docs, tok, ctx = setup
    _, examples = built
    again = _task(tok).build(docs, replace(ctx, seed=1, cache_dir=tmp_path))
    assert again["input_ids"] == examples["input_ids"] and again["labels"] == examples["labels"]


def test_edge_cases(setup):
    docs, tok, ctx = setup
    short = hand_made_documents([["Only one sentence here."]], [["One paragraph.", "Two sentences."]],
                       [["Para one is short."], ["Para two too."]])
    with pytest.raises(ValueError, match=r">= 2 segments of <= 64 tokens.*found 0 in 3 documents"):
        build_token_document_relation(short, tok, set(), segment_tokens=64)
    with pytest.raises(ValueError, match=r"found 0 in 3 documents"):
        _task(tok).build(short, replace(ctx, cache_dir=ctx.cache_dir / "short"))
    # a single over-long sentence is one truncated segment; with a second sentence it gives two examples
    long_sentence = "Words " + " ".join(f"w{i} and" for i in range(100)) + "."
    docs = hand_made_documents([[long_sentence, "The w3 word and others."]])
    examples = build_token_document_relation(docs, tok, set(), segment_tokens=30, min_tokens=1)
    assert len(examples) == 2 and max(len(ids) for ids in examples["input_ids"]) <= 32
    # segment_tokens is capped by max_seq_len
    capped = _task(tok, segment_tokens=500).build(docs, replace(ctx, max_seq_len=40))
    assert max(len(ids) for ids in capped["input_ids"]) <= 40


def test_config_validation():
    assert from_dict(TokenDocumentRelationConfig, {"segment_tokens": 32}).segment_tokens == 32
    with pytest.raises(ConfigError, match="max_doc_freq"):
        from_dict(TokenDocumentRelationConfig, {"max_doc_freq": 0}, "tasks.token_document_relation")
    with pytest.raises(ConfigError, match="segment_tokens"):
        TokenDocumentRelationConfig(segment_tokens=4)


def test_collate_head_loss_and_metrics(setup):
    docs, tok, ctx = setup
    task = _task(tok)
    examples = task.build(docs.select(range(20)), ctx)
    rows = examples[:8]
    batch = task.collate(rows, torch.Generator().manual_seed(0))
    n_labelled = sum(y != IGNORE_INDEX for row in rows["labels"] for y in row)
    longest = max(len(ids) for ids in rows["input_ids"])
    assert batch["input_ids"].shape == batch["attention_mask"].shape == (8, longest)
    assert batch["positions"].shape == batch["labels"].shape == (n_labelled,)
    model_config = ModelConfig(hidden_size=32, num_heads=2)
    head = task.make_head(model_config, torch.nn.Embedding(tok.get_vocab_size(), 32))
    assert isinstance(head, TokenClassificationHead)
    logits = head(torch.randn(8, longest, 32), batch["positions"])
    assert logits.shape == (n_labelled, 2)
    loss = task.loss(logits, batch)
    assert torch.isfinite(loss) and abs(float(loss.detach()) - task.chance_loss()) < 0.2
    metrics = task.metrics(logits, batch)
    assert int(metrics["count"]) == n_labelled and 0 <= int(metrics["correct"]) <= n_labelled


@pytest.mark.slow
def test_token_document_relation_trains(tmp_path, wiki_shards, cache_dir):
    """The model fits the task on its training documents; it does NOT yet beat chance on held-out documents.

    Whether a word recurs elsewhere in its document is only weakly predictable from one segment: the best
    per-word predictor (each word's label rate) trained on 3,500 documents scores 0.659 nats on held-out
    documents (0.95 x chance), and from 400 documents it scores worse than chance (0.735). A tiny model after
    a few hundred steps on 400-800 documents stays at chance on held-out documents (0.66-0.79 measured). The
    training loss falls well below chance, partly by remembering a document's words across its segments, so
    it shows that labels, head and loss are consistent, not that the skill generalizes at this scale."""
    steps = 200
    overrides = ["model.hidden_size=64", "model.num_heads=2", "model.intermediate_size=256", "model.num_layers=2",
                 "train.batch_size=16", "train.lr=2e-3", "train.warmup_steps=10", f"train.max_steps={steps}",
                 f"train.eval_every={steps}", f"train.save_every={steps}", "train.log_every=10",
                 "train.eval_batches=8", "tokenizer.vocab_size=4000", "data.max_documents=400",
                 f"data.cache_dir={cache_dir}", "tasks={token_document_relation: {}}"]
    config = api.configure(None, overrides, wiki_shards, tmp_path / "run")
    started = time.perf_counter()
    result = api.pretrain(config, progress=False)
    wall = time.perf_counter() - started
    data = api.build_data(config, progress=False)
    task = data.tasks["token_document_relation"]
    counts = task.label_counts(data.valid["token_document_relation"])
    majority = max(counts.values()) / sum(counts.values())
    final = result.eval_history[-1]["token_document_relation"]
    losses = [loss for _, _, loss in result.losses]
    first, last = sum(losses[:20]) / 20, sum(losses[-20:]) / 20
    print(f"\ntoken_document_relation: chance {task.chance_loss():.3f}, train first {first:.3f} last {last:.3f}, "
          f"valid {final['loss']:.3f}, accuracy {final['accuracy']:.3f} (majority {majority:.3f}), "
          f"{len(losses)} steps, {wall:.0f}s")
    assert last < 0.93 * task.chance_loss() and last < first - 0.04
    assert final["loss"] < 1.2 * task.chance_loss()  # held out: near chance, not diverging
