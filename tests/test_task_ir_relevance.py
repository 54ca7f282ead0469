from __future__ import annotations

import math
import re
import statistics
import time

import pytest
import torch
from bm25s.stopwords import STOPWORDS_EN
from datasets import Dataset

from data_builders.corpus import DOCUMENT_FEATURES
from data_builders.ir_relevance import (
    IRRELEVANT,
    STRONG,
    WEAK,
    build_ir_relevance,
    collect_passages,
    select_examples,
)
from ernie_cmtl.config import ConfigError, ModelConfig
from ernie_cmtl.tasks import BuildContext, SpecialIds
from pretrain_tasks.ir_relevance import IRRelevanceConfig, IRRelevanceTask

MAX_LEN = 128
STOP = set(STOPWORDS_EN)


def _ctx(tok, docs, tmp_path, seed=0):
    return BuildContext(tokenizer=tok, max_seq_len=MAX_LEN, seed=seed, num_proc=1, cache_dir=tmp_path,
                        train_documents=docs)


@pytest.fixture(scope="module")
def built(wiki_corpus, tmp_path_factory):
    docs, tok = wiki_corpus
    task = IRRelevanceTask(IRRelevanceConfig(), SpecialIds.from_tokenizer(tok))
    return task, task.build(docs, _ctx(tok, docs, tmp_path_factory.mktemp("ir"))), tok


def _split(tok, ids, segments):
    query = [t for t, s in zip(ids, segments, strict=True) if s == 0][1:-1]
    passage = [t for t, s in zip(ids, segments, strict=True) if s == 1][:-1]
    return tok.decode(query), tok.decode(passage), len(passage)


def _terms(text):
    return [w for w in re.findall(r"\w\w+", text.lower()) if w not in STOP]


def _per_label(built):
    """label -> (query-term coverage, query-term occurrences, passage tokens) of every example."""
    _, examples, tok = built
    stats = {STRONG: [], WEAK: [], IRRELEVANT: []}
    for ids, segments, label in zip(examples["input_ids"], examples["segment_ids"], examples["label"],
                                    strict=True):
        query, passage, length = _split(tok, ids, segments)
        q, p = set(_terms(query)), _terms(passage)
        stats[label].append((len(q & set(p)) / max(1, len(q)), sum(w in q for w in p), length))
    return stats


def test_examples_are_well_formed_and_balanced(built):
    task, examples, tok = built
    counts = task.label_counts(examples)
    assert counts[STRONG] == counts[WEAK] == counts[IRRELEVANT] > 100, counts
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    for ids, segments in zip(examples["input_ids"], examples["segment_ids"], strict=True):
        assert len(ids) == len(segments) <= MAX_LEN
        assert ids[0] == cls_id and ids[-1] == sep_id and ids.count(sep_id) == 2
        first = segments.index(1)
        assert ids[first - 1] == sep_id and set(segments[:first]) == {0} and set(segments[first:]) == {1}
        assert first >= 3 and len(ids) - first >= 2


def test_passages_come_from_the_right_documents(built):
    _, examples, _ = built
    for doc_id, passage_doc, label in zip(examples["doc_id"], examples["passage_doc_id"], examples["label"],
                                          strict=True):
        assert (passage_doc == doc_id) == (label == STRONG)  # weak and irrelevant: never the own document


def test_queries_are_the_titles(built, wiki_corpus):
    docs, _ = wiki_corpus
    _, examples, tok = built
    titles = dict(zip(docs["id"], docs["title"], strict=True))
    for ids, segments, doc_id in list(zip(examples["input_ids"], examples["segment_ids"], examples["doc_id"],
                                          strict=True))[:60]:
        query, _, _ = _split(tok, ids, segments)
        assert query == tok.decode(tok.encode(titles[doc_id], add_special_tokens=False).ids[:24])


def test_weak_is_harder_than_irrelevant_and_easier_than_strong(built):
    stats = _per_label(built)
    coverage = {label: statistics.mean(c for c, _, _ in rows) for label, rows in stats.items()}
    occurrences = {label: statistics.mean(o for _, o, _ in rows) for label, rows in stats.items()}
    # coverage = share of the query's terms found in the passage
    assert coverage[STRONG] > coverage[WEAK] > 0.3 > 0.05 > coverage[IRRELEVANT], coverage
    assert occurrences[WEAK] > 1.0 > 0.2 > occurrences[IRRELEVANT], occurrences
    # every weak passage was retrieved: it shares at least one query term
    assert min(c for c, _, _ in stats[WEAK]) > 0


def test_passage_length_gives_no_label_away(built):
    stats = _per_label(built)
    means = [statistics.mean(n for _, _, n in rows) for rows in stats.values()]
    medians = [statistics.median(n for _, _, n in rows) for rows in stats.values()]
    assert max(means) < 1.3 * min(means), means
    assert max(medians) < 1.3 * min(medians), medians


def test_first_paragraphs_are_not_passages():
    paragraphs = [["Alpha is a thing that starts with its own title here.", "Second paragraph of alpha with "
                   "enough words in it to count.", "Short one."],
                  ["Only paragraph of the beta document, long enough to be a passage."]]
    passages = collect_passages(paragraphs, passage_words=8, min_passage_words=5)
    assert passages.texts == ["Second paragraph of alpha with enough words in", "Only paragraph of the beta "
                              "document, long enough"]
    assert passages.doc_index == [0, 1] and passages.starts == [0, 1, 2]


def test_build_is_deterministic(built, wiki_corpus, tmp_path):
    docs, tok = wiki_corpus
    task, examples, _ = built
    assert task.build(docs, _ctx(tok, docs, tmp_path)).to_dict() == examples.to_dict()
    other = task.build(docs, _ctx(tok, docs, tmp_path, seed=1))
    assert other["doc_id"] == examples["doc_id"] and other["input_ids"] != examples["input_ids"]


def test_weak_top_k_one_takes_the_best_other_document_hit(wiki_corpus):
    docs, _ = wiki_corpus
    kwargs = {"seed": 0, "passage_words": 64, "min_passage_words": 12, "pseudo_query_terms": 4}
    top1, _ = select_examples(docs["title"], docs["id"], docs["paragraphs"], weak_top_k=1, **kwargs)
    again, _ = select_examples(docs["title"], docs["id"], docs["paragraphs"], weak_top_k=1, **kwargs)
    top5, _ = select_examples(docs["title"], docs["id"], docs["paragraphs"], weak_top_k=5, **kwargs)
    weak = [p for p, label in zip(top1["passage"], top1["label"], strict=True) if label == WEAK]
    assert weak == [p for p, label in zip(again["passage"], again["label"], strict=True) if label == WEAK]
    assert weak != [p for p, label in zip(top5["passage"], top5["label"], strict=True) if label == WEAK]


def _docs(titles, paragraphs):
    return Dataset.from_dict({"id": [f"d{i}" for i in range(len(titles))], "title": titles,
                              "paragraphs": paragraphs, "sentences": [[[p] for p in ps] for ps in paragraphs],
                              "language": ["en"] * len(titles)},
                             features=DOCUMENT_FEATURES)


BODY = [
    ["Ignored first paragraph about the river.", "The Danube river flows through Vienna and Budapest before "
     "it reaches the Black Sea delta.", "Ships carry grain and coal along the river between the capitals."],
    ["The violin is a string instrument played with a bow in most classical orchestras of the world today."],
    ["Opening words of a paragraph.", "Vienna hosts the opera house, several concert halls and a large "
     "river port on the Danube."],
    ["Glaciers carve valleys over thousands of years, leaving moraines and lakes across the mountain ranges."],
]


def test_documents_without_titles_get_pseudo_queries(wiki_corpus):
    _, tok = wiki_corpus
    docs = _docs(["", "Violin", "", "Glacier"], BODY)
    rows, stats = select_examples(docs["title"], docs["id"], docs["paragraphs"], seed=0, weak_top_k=3,
                                  passage_words=64, min_passage_words=8, pseudo_query_terms=4)
    assert stats["pseudo_queries"] == 2
    query = dict(zip(rows["doc_id"], rows["query"], strict=True))
    assert set(query) == {"d0"}  # no other document mentions a violin or a glacier: no weak passage
    # the untitled river document is queried by its own salient terms (rare in the corpus or frequent in
    # the document), in order of first occurrence
    assert query["d0"] == "ignored first about river"
    examples = build_ir_relevance(docs, tok, max_seq_len=MAX_LEN, seed=0, min_passage_words=8)
    assert set(examples["label"]) <= {STRONG, WEAK, IRRELEVANT} and len(examples) % 3 == 0


def test_one_paragraph_documents_use_their_only_paragraph(wiki_corpus):
    orchestra = "The city orchestra hired a new violin teacher for its youth programme last spring."
    docs = _docs(["Violin", "Orchestra", "Glacier"], [BODY[1], [orchestra], BODY[3]])
    rows, _ = select_examples(docs["title"], docs["id"], docs["paragraphs"], seed=0, weak_top_k=3,
                              passage_words=64, min_passage_words=8, pseudo_query_terms=4)
    by_label = {label: (d, p) for d, p, label in zip(rows["doc_id"], rows["passage"], rows["label"], strict=True)
                if d == "d0"}
    assert by_label[STRONG] == ("d0", BODY[1][0])
    assert by_label[WEAK] == ("d0", orchestra)


def test_a_single_document_is_refused(wiki_corpus):
    _, tok = wiki_corpus
    with pytest.raises(ValueError, match="needs >= 2 documents with passages .* found 1 in 1 documents"):
        build_ir_relevance(_docs(["Danube"], [BODY[0]]), tok, max_seq_len=MAX_LEN, seed=0)
    with pytest.raises(ValueError, match="retrieve a passage of another document; found 0 in 2 documents"):
        build_ir_relevance(_docs(["Violin", "Glacier"], [BODY[1], BODY[3]]), tok, max_seq_len=MAX_LEN,
                           seed=0, min_passage_words=8)


def test_config_is_validated():
    with pytest.raises(ConfigError, match="weak_top_k"):
        IRRelevanceConfig(weak_top_k=0)


def test_collate_head_loss_and_metrics(built):
    task, examples, _ = built
    rows = examples[:12]
    batch = task.collate(rows, torch.Generator().manual_seed(0))
    longest = max(len(ids) for ids in rows["input_ids"])
    assert batch["input_ids"].shape == batch["segment_ids"].shape == batch["attention_mask"].shape == (12, longest)
    assert batch["labels"].tolist() == rows["label"]
    cfg = ModelConfig(hidden_size=32, num_heads=2, num_layers=1, intermediate_size=64, vocab_size=4000)
    head = task.make_head(cfg, torch.nn.Embedding(4000, 32))
    with torch.no_grad():
        logits = head(torch.randn(12, longest, 32))
    assert logits.shape == (12, 3)
    assert abs(float(task.loss(logits, batch)) - math.log(3)) < 0.5
    metrics = task.metrics(logits, batch)
    assert int(metrics["count"]) == 12 and 0 <= int(metrics["correct"]) <= 12


@pytest.mark.slow
@pytest.mark.xfail(strict=False, reason=(
    "every label needs query-passage token matching, which a 2-layer model trained from scratch does not pick "
    "up within 150 steps (it stays at ln 3 for 2,000 steps, as on a synthetic 'is token 1 repeated in segment "
    "B' task, while it learns 'is token X present' in 50); ERNIE 2.0 trains this task on a pretrained encoder"))
def test_training_learns_relevance(tmp_path, wiki_shards, cache_dir):
    from ernie_cmtl import api

    overrides = ["model.hidden_size=64", "model.num_heads=2", "model.intermediate_size=256",
                 "model.num_layers=2", "train.batch_size=16", "train.lr=2e-3", "train.warmup_steps=10",
                 "train.max_steps=150", "train.eval_every=50", "train.eval_batches=8", "train.save_every=1000",
                 "tokenizer.vocab_size=4000", "data.max_documents=400", "data.valid_fraction=0.1",
                 f"data.cache_dir={cache_dir}", "tasks={ir_relevance: {}}"]
    config = api.configure(None, overrides, wiki_shards, tmp_path / "run")
    started = time.perf_counter()
    result = api.pretrain(config, progress=False)
    elapsed = time.perf_counter() - started
    chance = math.log(3)
    final = result.eval_history[-1]["ir_relevance"]
    train_tail = sum(loss for _, _, loss in result.losses[-20:]) / 20
    print(f"ir_relevance: chance {chance:.3f}, train {train_tail:.3f}, valid {final['loss']:.3f}, "
          f"accuracy {final['accuracy']:.3f}, steps {len(result.losses)}, {elapsed:.0f}s")
    assert final["loss"] < 0.9 * chance
