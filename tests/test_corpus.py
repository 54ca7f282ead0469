"""Tests for corpus reading, the documents dataset, the embedded stdlib corpus and the on-disk cache."""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import sysconfig
from pathlib import Path

import datasets
import pytest

from data_builders import corpus
from data_builders.corpus import (
    DOCUMENT_FEATURES,
    CorpusError,
    build_documents,
    corpus_fingerprint,
    detect_format,
    iter_stdlib_documents,
    load_documents,
    read_hf,
    read_jsonl,
    read_text,
    read_wikiextractor,
    resolve_corpus_files,
)
from data_builders.corpus import build as corpus_build

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
WIKI_TRAIN = DATA / "wikipedia-en-2018-sample" / "train"

LONG = "This paragraph has clearly more than six words in it"  # 10 words, 52 characters

WIKI_SAMPLE = """<doc id="1" url="?curid=1" title="Stub Page">
Stub Page


</doc>
<doc id="2" url="?curid=2" title="Tom &amp; Jerry">
Tom & Jerry

Tom &amp; Jerry is an American animated   media franchise and series of comedy short films.
Early life and education.
!colspan=9 style=|Regular Season
| a table row | that survived | extraction with enough words
&lt;onlyinclude&gt;&lt;/onlyinclude&gt;
It was created in 1940 by William Hanna and Joseph Barbera.
</doc>
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def save_hf(path: Path, rows: dict[str, list]) -> Path:
    datasets.Dataset.from_dict(rows).save_to_disk(str(path))
    return path


# --------------------------------------------------------------------------------------------------------
# Readers
# --------------------------------------------------------------------------------------------------------


def test_read_text_splits_documents_on_blank_lines(tmp_path: Path) -> None:
    path = write(tmp_path / "notes.txt", f"{LONG}\nshort line\n  {LONG}   again  \n\n\n\n{LONG}\n")
    docs = list(read_text(path, 6))
    assert docs == [
        {"id": "notes.txt:0", "title": "", "paragraphs": [LONG, f"{LONG} again"]},
        {"id": "notes.txt:1", "title": "", "paragraphs": [LONG]},
    ]


def test_read_jsonl_fields_and_defaults(tmp_path: Path) -> None:
    lines = [
        json.dumps({"text": f"{LONG}\n\nfew words\n{LONG}", "title": "T", "id": 7}),
        "",
        json.dumps({"text": LONG}),
    ]
    path = write(tmp_path / "docs.jsonl", "\n".join(lines) + "\n")
    docs = list(read_jsonl(path, 6))
    assert docs == [
        {"id": "7", "title": "T", "paragraphs": [LONG, LONG]},
        {"id": "docs.jsonl:1", "title": "", "paragraphs": [LONG]},
    ]


@pytest.mark.parametrize(
    ("bad_line", "reason"),
    [
        ("{not json", "not valid JSON"),
        (json.dumps({"title": "no text"}), 'missing required field "text"'),
        (json.dumps({"text": 5}), '"text" must be a string'),
        (json.dumps(["text"]), "expected a JSON object"),
        (json.dumps({"text": LONG, "title": ["x"]}), '"title" must be a string'),
    ],
)
def test_read_jsonl_bad_line_names_file_and_line(tmp_path: Path, bad_line: str, reason: str) -> None:
    path = write(tmp_path / "bad.jsonl", "\n".join([json.dumps({"text": LONG}), "", bad_line]) + "\n")
    with pytest.raises(CorpusError) as info:
        list(read_jsonl(path, 6))
    message = str(info.value)
    assert message.startswith(f"{path}:3: ")
    assert reason in message
    assert "\n" not in message


def test_read_wikiextractor_cleans_bodies(tmp_path: Path) -> None:
    path = write(tmp_path / "wiki_00", WIKI_SAMPLE)
    docs = list(read_wikiextractor(path, 6))
    assert [d["id"] for d in docs] == ["1", "2"]
    assert docs[0] == {"id": "1", "title": "Stub Page", "paragraphs": []}
    assert docs[1]["title"] == "Tom & Jerry"
    assert docs[1]["paragraphs"] == [
        "Tom & Jerry is an American animated media franchise and series of comedy short films.",
        "It was created in 1940 by William Hanna and Joseph Barbera.",
    ]


def test_read_wikiextractor_unterminated_doc(tmp_path: Path) -> None:
    broken = (
        WIKI_SAMPLE + '<doc id="3" url="?curid=3" title="Cut">\nCut\n\nThe file ends before the end tag.\n'
    )
    path = write(tmp_path / "wiki_01", broken)
    with pytest.raises(CorpusError, match=re.escape(f"{path}:16: malformed WikiExtractor file")):
        list(read_wikiextractor(path, 6))
    # A <doc> swallowed by an earlier unterminated one is reported too.
    nested = '<doc id="9" url="?curid=9" title="A">\nA\n\n' + WIKI_SAMPLE
    path = write(tmp_path / "wiki_02", nested)
    with pytest.raises(CorpusError, match=re.escape(str(path))):
        list(read_wikiextractor(path, 6))


def test_read_hf_dataset_and_dataset_dict(tmp_path: Path) -> None:
    plain = save_hf(tmp_path / "plain", {"text": [LONG, f"{LONG}\n{LONG}"], "title": ["a", None]})
    assert list(read_hf(plain, 6)) == [
        {"id": "plain:0", "title": "a", "paragraphs": [LONG]},
        {"id": "plain:1", "title": "", "paragraphs": [LONG, LONG]},
    ]
    split = datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict({"text": [LONG], "id": ["x1"]}),
            "test": datasets.Dataset.from_dict({"text": ["ignored"], "id": ["x2"]}),
        }
    )
    split.save_to_disk(str(tmp_path / "dict"))
    assert list(read_hf(tmp_path / "dict", 6)) == [{"id": "x1", "title": "", "paragraphs": [LONG]}]
    no_text = save_hf(tmp_path / "notext", {"body": [LONG]})
    with pytest.raises(CorpusError, match="has no 'text' column"):
        list(read_hf(no_text, 6))
    wrong_type = save_hf(tmp_path / "ints", {"text": [1, 2]})
    with pytest.raises(CorpusError, match="must hold strings"):
        list(read_hf(wrong_type, 6))


def test_detect_format(tmp_path: Path) -> None:
    assert detect_format(write(tmp_path / "a.jsonl", "{}\n")) == "jsonl"
    assert detect_format(write(tmp_path / "wiki_00", "\n\n" + WIKI_SAMPLE)) == "wikiextractor"
    assert detect_format(write(tmp_path / "plain", "Just text.\n")) == "text"
    assert detect_format(write(tmp_path / "empty", "")) == "text"
    assert detect_format(save_hf(tmp_path / "saved", {"text": [LONG]})) == "hf"


# --------------------------------------------------------------------------------------------------------
# Resolving inputs
# --------------------------------------------------------------------------------------------------------


def test_resolve_directories_globs_and_duplicates(tmp_path: Path) -> None:
    root = tmp_path / "corpus"
    a = write(root / "a.txt", LONG)
    b = write(root / "sub" / "b.txt", LONG)
    write(root / ".hidden", LONG)
    write(root / "PROVENANCE.md", "# where it came from")
    write(root / "README.txt", "read me")
    saved = save_hf(root / "saved", {"text": [LONG]})
    expected = sorted(p.resolve() for p in (a, b, saved))
    assert resolve_corpus_files([str(root)]) == expected
    # The same files through a glob, a second spelling and an explicit file: still listed once each.
    assert resolve_corpus_files([str(root / "**" / "*.txt"), str(a), str(root)]) == expected
    assert resolve_corpus_files([str(root / "sub" / "*.txt")]) == [b.resolve()]
    assert resolve_corpus_files([str(saved)]) == [saved.resolve()]
    assert resolve_corpus_files([str(root / "**")]) == expected
    # A file named outright is taken even when a directory listing would skip it.
    assert resolve_corpus_files([str(root / "README.txt")]) == [(root / "README.txt").resolve()]
    split = datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": [LONG]})})
    split.save_to_disk(str(tmp_path / "dict"))
    assert resolve_corpus_files([str(tmp_path / "dict" / "**")]) == [(tmp_path / "dict").resolve()]


def test_resolve_reports_entries_that_match_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "nope.txt"
    with pytest.raises(CorpusError, match=re.escape(str(missing))):
        resolve_corpus_files([str(missing)])
    with pytest.raises(CorpusError, match="matches no files"):
        resolve_corpus_files([str(tmp_path / "*.jsonl")])
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(CorpusError, match="empty_dir"):
        resolve_corpus_files([str(tmp_path / "empty_dir")])


# --------------------------------------------------------------------------------------------------------
# build_documents
# --------------------------------------------------------------------------------------------------------


def test_build_documents_mixed_formats(tmp_path: Path) -> None:
    long_body = " ".join([LONG + "."] * 5)
    write(
        tmp_path / "in" / "one.txt", f"{long_body} Second sentence here is long.\n{LONG}.\n\nshort doc line\n"
    )
    write(tmp_path / "in" / "two.jsonl", json.dumps({"text": long_body, "title": "J", "id": "j"}) + "\n")
    write(
        tmp_path / "in" / "wiki_00", WIKI_SAMPLE.replace("comedy short films.", "comedy films. " + long_body)
    )
    ds = build_documents([str(tmp_path / "in")], min_body_chars=100)
    assert ds.features == DOCUMENT_FEATURES
    assert ds["id"] == ["one.txt:0", "j", "2"]  # sorted file order; stubs and short documents dropped
    for paragraphs, sentences in zip(ds["paragraphs"], ds["sentences"], strict=True):
        assert len(paragraphs) == len(sentences)
        for paragraph, pieces in zip(paragraphs, sentences, strict=True):
            assert " ".join(pieces) == paragraph
    assert ds[0]["sentences"][0][-1] == "Second sentence here is long."
    assert len(build_documents([str(tmp_path / "in")], min_body_chars=100, max_documents=2)) == 2


def test_build_documents_explicit_format_applies_to_all_files(tmp_path: Path) -> None:
    path = write(tmp_path / "looks_like.jsonl", f"{LONG}\n{LONG}\n")
    with pytest.raises(CorpusError, match=re.escape(f"{path.resolve()}:1: not valid JSON")):
        build_documents([str(path)], min_body_chars=10)
    ds = build_documents([str(path)], format="text", min_body_chars=10)
    assert ds["paragraphs"] == [[LONG, LONG]]
    with pytest.raises(CorpusError, match=re.escape("data.format: expected one of 'auto'")):
        build_documents([str(path)], format="xml")


def test_build_documents_with_no_usable_documents(tmp_path: Path) -> None:
    path = write(tmp_path / "wiki_00", WIKI_SAMPLE)
    with pytest.raises(CorpusError) as info:
        build_documents([str(path)])
    message = str(info.value)
    assert str(path) in message
    assert "read 2 documents" in message
    assert ">= 200 body characters" in message


def test_build_documents_nonexistent_path(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="does not exist"):
        build_documents([str(tmp_path / "missing_dir")])


def test_build_documents_on_real_wikipedia_shards() -> None:
    shards = [WIKI_TRAIN / "wiki_00", WIKI_TRAIN / "wiki_01"]
    if not all(s.is_file() for s in shards):
        pytest.skip(f"shared Wikipedia sample not found under {WIKI_TRAIN}")
    ds = build_documents([str(s) for s in shards])
    # PROVENANCE.md: ~7.7k substantive documents out of 28.3k over 18 shards, so a few hundred per shard.
    assert 600 <= len(ds) <= 1100, len(ds)
    assert ds.features == DOCUMENT_FEATURES
    heading = re.compile(r"(?:\S+ ){0,4}\S+\.")
    for row in ds:
        assert row["id"].isdigit() and row["title"]
        assert row["paragraphs"], row["id"]
        assert row["paragraphs"][0] != row["title"]
        assert sum(len(p) for p in row["paragraphs"]) >= 200
        assert len(row["sentences"]) == len(row["paragraphs"])
        for paragraph, pieces in zip(row["paragraphs"], row["sentences"], strict=True):
            assert not heading.fullmatch(paragraph), paragraph
            assert "colspan" not in paragraph and "{{" not in paragraph and not paragraph.startswith("!")
            assert pieces and " ".join(pieces) == paragraph
    assert not any(
        p in {"Early life.", "Early life and education.", "Career."} for ps in ds["paragraphs"] for p in ps
    )


# --------------------------------------------------------------------------------------------------------
# The embedded standard-library corpus
# --------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stdlib_documents() -> list[dict]:
    already_loaded = {"antigravity", "this"} & set(sys.modules)
    docs = list(iter_stdlib_documents(6))
    # Reading must be static: importing these two has visible side effects (a browser tab, a printed poem).
    assert {"antigravity", "this"} & set(sys.modules) == already_loaded
    return docs


def test_stdlib_corpus_shape(stdlib_documents: list[dict]) -> None:
    titles = [d["title"] for d in stdlib_documents]
    assert len(stdlib_documents) > 100
    assert titles == sorted(titles) and len(set(titles)) == len(titles)
    assert not {"test", "idlelib", "lib2to3", "ensurepip", "turtledemo"} & set(titles)
    assert not any(t.startswith("_") for t in titles)
    by_title = {d["title"]: d for d in stdlib_documents}
    for name in ("json", "collections", "asyncio"):
        prose = by_title[name]["paragraphs"]
        assert len(prose) >= 10, name
        assert sum(len(p.split()) for p in prose) > 300, name
    assert any("JSON" in p for p in by_title["json"]["paragraphs"])


def test_stdlib_corpus_has_no_code(stdlib_documents: list[dict]) -> None:
    for doc in stdlib_documents:
        for paragraph in doc["paragraphs"]:
            assert ">>>" not in paragraph, (doc["title"], paragraph)
            assert len(paragraph.split()) >= 6
            assert paragraph == " ".join(paragraph.split())


def test_build_documents_defaults_to_stdlib(
    monkeypatch: pytest.MonkeyPatch, stdlib_documents: list[dict]
) -> None:
    monkeypatch.setattr(corpus, "iter_stdlib_documents", lambda min_paragraph_words: iter(stdlib_documents))
    ds = build_documents([], max_documents=5)
    assert len(ds) == 5
    assert all(i.startswith("stdlib:") for i in ds["id"])


# --------------------------------------------------------------------------------------------------------
# Fingerprint and cache
# --------------------------------------------------------------------------------------------------------


@pytest.fixture
def small_corpus(tmp_path: Path) -> Path:
    root = tmp_path / "corpus"
    write(root / "a.txt", " ".join([LONG + "."] * 6) + "\n")
    write(root / "b.jsonl", json.dumps({"text": " ".join([LONG + "."] * 6)}) + "\n")
    return root


def test_fingerprint_tracks_files_and_options(small_corpus: Path) -> None:
    paths = [str(small_corpus)]
    base = corpus_fingerprint(paths)
    assert re.fullmatch(r"[0-9a-f]{16}", base)
    assert corpus_fingerprint(paths, min_body_chars=200) == base  # defaults are filled in
    assert corpus_fingerprint(paths, min_body_chars=100) != base
    stat = (small_corpus / "a.txt").stat()
    os.utime(small_corpus / "a.txt", ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    touched = corpus_fingerprint(paths)
    assert touched != base
    write(small_corpus / "c.txt", LONG)
    assert corpus_fingerprint(paths) not in {base, touched}
    assert corpus_fingerprint([]) == corpus_fingerprint([]) != base
    with pytest.raises(TypeError, match="unknown corpus option"):
        corpus_fingerprint(paths, min_body_char=1)


# corpus_fingerprint as the single-module corpus.py computed it (run from the tree before the corpus package,
# commit 0b0f9f7) on the shared data of the machine that wrote this test. The package must give the same bytes,
# or every user's cached documents would be rebuilt; a non-default data.encoding is the only new input.
OLD_FINGERPRINTS = {
    "wiki_default": "461824c4cc4e79c3",
    "wiki_one_file": "407ad636eef04880",
    "law_markdown": "3101db6f1be19059",
    "law_text_file_zh": "00a059ced80294e6",
    "embedded": "bf6d896326e8d647",
    "wiki_nondefault": "06cecbd5208595a5",
}
OLD_INPUTS = "6cd9b84631cb897f"  # path, size and mtime of the wiki and law training files they were computed on
OLD_PYTHON = ("3.11.7 (main, May  9 2026, 07:35:25) [GCC 12.2.0]", "/root/.pyenv/versions/3.11.7/lib/python3.11")
LAW_TRAIN = DATA / "chinese-laws-lawrefbook" / "train"
FINGERPRINT_CASES: dict[str, tuple[list[Path], dict]] = {
    "wiki_default": ([WIKI_TRAIN], {}),
    "wiki_one_file": ([WIKI_TRAIN / "wiki_03"], {}),
    "law_markdown": ([LAW_TRAIN], {"format": "markdown"}),
    "law_text_file_zh": ([LAW_TRAIN / "刑法"], {"format": "text_file", "language": "zh", "min_paragraph_chars": 2}),
    "embedded": ([], {}),
    "wiki_nondefault": ([WIKI_TRAIN], {"format": "wikiextractor", "min_body_chars": 100, "min_paragraph_words": 4,
                                       "max_documents": 50, "on_bad_input": "error", "max_paragraph_chars": 5000,
                                       "max_document_chars": 50000, "language": "en", "min_paragraph_chars": 2}),
}


def _inputs_digest() -> str:
    digest = hashlib.sha256()
    for path in resolve_corpus_files([str(WIKI_TRAIN), str(LAW_TRAIN)]):
        stat = path.stat()
        digest.update(f"{path}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


@pytest.mark.parametrize("case", sorted(FINGERPRINT_CASES))
def test_fingerprints_are_those_of_the_single_module(case: str) -> None:
    paths, options = FINGERPRINT_CASES[case]
    if paths and not (WIKI_TRAIN.is_dir() and LAW_TRAIN.is_dir() and _inputs_digest() == OLD_INPUTS):
        pytest.skip("not the copy of the shared data the old fingerprints were computed on (paths, mtimes)")
    if not paths and (sys.version, sysconfig.get_paths()["stdlib"]) != OLD_PYTHON:
        pytest.skip("not the interpreter the old embedded-corpus fingerprint was computed with")
    assert corpus_fingerprint([str(p) for p in paths], **options) == OLD_FINGERPRINTS[case]
    # data.encoding: the default leaves the fingerprint alone; a named codec is a new build.
    assert corpus_fingerprint([str(p) for p in paths], encoding="auto", **options) == OLD_FINGERPRINTS[case]
    assert corpus_fingerprint([str(p) for p in paths], encoding="gb18030", **options) != OLD_FINGERPRINTS[case]


def test_fingerprint_hashes_the_same_bytes_as_the_single_module(tmp_path: Path) -> None:
    """The same check anywhere: the fingerprint of one file, from the pre-image the single module hashed (its
    options JSON copied from what it wrote), path and mtime set here."""
    path = write(tmp_path / "a.txt", LONG + "\n")
    os.utime(path, ns=(1_600_000_000_000_000_000, 1_600_000_000_000_000_000))
    old_options = {
        (): '{"format": "auto", "language": "auto", "max_document_chars": 100000, "max_documents": 0, '
            '"max_paragraph_chars": 10000, "min_body_chars": 200, "min_paragraph_chars": 4, '
            '"min_paragraph_words": 6, "on_bad_input": "skip"}',
        (("format", "markdown"), ("language", "zh")):
            '{"format": "markdown", "language": "zh", "max_document_chars": 100000, "max_documents": 0, '
            '"max_paragraph_chars": 10000, "min_body_chars": 200, "min_paragraph_chars": 4, '
            '"min_paragraph_words": 6, "on_bad_input": "skip"}',
    }
    for options, options_json in old_options.items():
        stat = path.resolve().stat()
        preimage = f"builder=1\n{options_json}\n{path.resolve()}\t{stat.st_size}\t{stat.st_mtime_ns}"
        expected = hashlib.sha256(preimage.encode()).hexdigest()[:16]
        assert corpus_fingerprint([str(path)], **dict(options)) == expected


def test_load_documents_reuses_the_cache(
    small_corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    first = load_documents([str(small_corpus)], cache_dir=cache, min_body_chars=100)
    entries = sorted(p.name for p in (cache / "documents").iterdir())
    assert entries == [corpus_fingerprint([str(small_corpus)], min_body_chars=100)]  # no staging leftovers

    def no_rebuild(*args: object, **kwargs: object) -> datasets.Dataset:
        raise AssertionError("build_documents called although the cache is valid")

    monkeypatch.setattr(corpus_build, "build_documents", no_rebuild)  # what the cache calls
    second = load_documents([str(small_corpus)], cache_dir=cache, min_body_chars=100)
    assert second.to_dict() == first.to_dict()
    assert len(second) == 2
    assert sorted(p.name for p in (cache / "documents").iterdir()) == entries


def test_load_documents_uses_the_copy_of_a_process_that_won_the_race(
    small_corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    target = cache / "documents" / corpus_fingerprint([str(small_corpus)], min_body_chars=100)
    real_build = corpus_build.build_documents
    raced = []

    def racing_build(paths: list[str], options: object, **kwargs: object) -> datasets.Dataset:
        # Another process finishes its identical build while this one is still working.
        winner = real_build(paths, options)
        winner.save_to_disk(str(target))
        raced.append(target)
        return real_build(paths, options, **kwargs)

    monkeypatch.setattr(corpus_build, "build_documents", racing_build)
    ds = load_documents([str(small_corpus)], cache_dir=cache, min_body_chars=100)
    assert raced and len(ds) == 2
    assert [p.name for p in (cache / "documents").iterdir()] == [target.name]


def test_the_option_lists_are_declared_once() -> None:
    """The format list is the reader table's keys plus auto; the language list is the language module's."""
    import typing

    from data_builders.corpus.readers import READERS
    from data_builders.corpus_options import FORMATS, CorpusLanguage
    from data_builders.language import LANGUAGES

    assert tuple(FORMATS) == ("auto", *READERS)
    assert typing.get_args(CorpusLanguage) == LANGUAGES
