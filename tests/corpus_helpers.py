"""Helpers shared by the task-builder tests: hand-made documents and a build context on the wiki fixture."""

from __future__ import annotations

from pathlib import Path

from datasets import Dataset

from data_builders.corpus import DOCUMENT_FEATURES
from ernie_cmtl.tasks import BuildContext


def hand_made_documents(*docs: list[list[str]]) -> Dataset:
    """Documents in the corpus schema, each given as paragraphs of sentences (ids "0", "1", ...; no titles)."""
    columns = {"id": [str(i) for i in range(len(docs))], "title": [""] * len(docs),
               "paragraphs": [[" ".join(p) for p in paragraphs] for paragraphs in docs], "sentences": list(docs),
               "language": ["en"] * len(docs)}
    return Dataset.from_dict(columns, features=DOCUMENT_FEATURES)


def wiki_context(wiki_corpus: tuple, cache_dir: Path, max_seq_len: int) -> tuple:
    """(documents, tokenizer, BuildContext) for building a task on the session's wiki fixture."""
    docs, tok = wiki_corpus
    ctx = BuildContext(tokenizer=tok, max_seq_len=max_seq_len, seed=0, num_proc=1, cache_dir=cache_dir,
                       train_documents=docs)
    return docs, tok, ctx
