"""The shared tokenization pass: builders that read it produce exactly what they produce when tokenizing."""

from __future__ import annotations

from pathlib import Path

import pytest

from data_builders.segments import (
    SENTENCE_TOKEN_COLUMNS,
    add_sentence_tokens,
    document_sentences,
    pack_sentences,
    tokenize_sentences,
)
from ernie_cmtl.assembly import load_config
from ernie_cmtl.build.examples import make_tasks
from ernie_cmtl.build.prepare import prepare_data
from ernie_cmtl.tasks import BuildContext, SpecialIds


def test_tokenized_columns_give_the_same_sentences(wiki_corpus):
    documents, tokenizer = wiki_corpus
    tokenized = add_sentence_tokens(documents, tokenizer)
    assert set(SENTENCE_TOKEN_COLUMNS) <= set(tokenized.column_names)
    checked = 0
    for batch in tokenized.iter(batch_size=32):
        for index, paragraphs in enumerate(batch["sentences"]):
            expected = tokenize_sentences(tokenizer, [s for p in paragraphs for s in p])
            assert document_sentences(batch, index, tokenizer) == expected
            checked += len(expected)
    assert checked > 1000  # real sentences, not an empty corpus


@pytest.mark.parametrize("name", ["knowledge_masking", "capitalization", "token_document_relation",
                                  "sentence_reordering"])
def test_builders_reading_the_shared_pass_build_identical_examples(wiki_corpus, name, tmp_path: Path):
    documents, tokenizer = wiki_corpus
    task = make_tasks(load_config(None, [f"tasks={{{name}: {{}}}}"]), SpecialIds.from_tokenizer(tokenizer))[name]
    assert task.reads_sentence_tokens

    def build(docs, sub):
        ctx = BuildContext(tokenizer, 128, 0, 1, tmp_path / sub, documents)
        return task.build(docs, ctx).to_dict()

    assert build(add_sentence_tokens(documents, tokenizer), "shared") == build(documents, "own")


def test_prepare_data_tokenizes_once_and_caches_the_pass(wiki_shards, tmp_path: Path):
    config = load_config(None, ["data.max_documents=60", f"data.cache_dir={tmp_path / 'cache'}",
                                "tokenizer.vocab_size=2000",
                                "tasks={capitalization: {}, token_document_relation: {}, sentence_distance: {}}"])
    config.data.corpus = wiki_shards[:1]
    data = prepare_data(config, tmp_path / "run", progress=False)
    passes = list((tmp_path / "cache" / "sentence_tokens").glob("*/*"))
    assert sorted(p.name for p in passes) == ["train", "valid"]  # one pass per split, shared by both tasks
    for name in ("capitalization", "token_document_relation"):  # examples keep only their own columns
        assert not set(SENTENCE_TOKEN_COLUMNS) & set(data.train[name].column_names)


def test_pack_sentences_keeps_order_and_budget():
    assert pack_sentences([3, 4, 5, 10, 1], 8) == [(0, 2), (2, 3), (3, 4), (4, 5)]
