"""Corpora that are not UTF-8 (issue 27): ``data.encoding: auto`` reads GB18030 and Big5 law texts, a cp1252 and
a UTF-16 Wikipedia shard into exactly the documents of their UTF-8 originals, and says per file which encoding
it chose; a named codec is used as given; what still cannot be decoded is skipped and counted, and the message
names ``data.encoding``. Every file is re-encoded here, at test time, from the shared data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from data_builders.corpus import (
    CorpusError,
    CorpusReport,
    build_documents,
    corpus_fingerprint,
    load_documents_with_report,
    read_jsonl,
)
from ernie_cmtl.config import ConfigError, read_config

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
LAWS = DATA / "chinese-laws-lawrefbook" / "train" / "宪法"  # the Constitution and its five amendments, 84 kB
WIKI_SHARD = DATA / "wikipedia-en-2018-sample" / "train" / "wiki_05"

pytestmark = pytest.mark.skipif(not (LAWS.is_dir() and WIKI_SHARD.is_file()),
                                reason=f"shared data not found under {DATA}")


def build(paths: list[Path], **options) -> tuple[list[dict], CorpusReport]:
    report = CorpusReport()
    docs = build_documents([str(p) for p in paths], report=report, **options)
    return docs.to_list(), report


def encodings(report: CorpusReport) -> set[tuple[str, str]]:
    return {(f["encoding"], f["encoding_source"]) for f in report.to_dict()["files"]}


def write_laws(root: Path, texts: dict[str, str], codec: str) -> Path:
    """``texts`` (file name -> text) written in ``codec`` under ``root/宪法``, so document ids (folder/file) match
    the originals'."""
    folder = root / LAWS.name
    folder.mkdir(parents=True)
    for name, text in texts.items():
        (folder / name).write_bytes(text.encode(codec))
    return folder


@pytest.fixture(scope="module")
def laws() -> dict[str, str]:
    return {path.name: path.read_text(encoding="utf-8") for path in sorted(LAWS.glob("*.md"))}


@pytest.fixture(scope="module")
def utf8_laws(laws, tmp_path_factory) -> list[dict]:
    docs, _ = build([write_laws(tmp_path_factory.mktemp("utf8"), laws, "utf-8")])
    assert len(docs) == len(laws) == 6
    return docs


def test_gb18030_laws_read_as_their_utf8_originals(laws, utf8_laws, tmp_path):
    docs, report = build([write_laws(tmp_path, laws, "gb18030")])
    assert docs == utf8_laws
    assert encodings(report) == {("gb18030", "detected")}
    assert report.totals()["skipped"] == {}
    assert "encodings: gb18030 (detected): 6 file(s)" in report.summary()
    # Named outright, the codec is used as given (and is part of the fingerprint: a build of its own).
    named, report = build([tmp_path / LAWS.name], encoding="gb18030")
    assert named == utf8_laws and encodings(report) == {("gb18030", "given")}


def test_big5_laws_read_as_their_utf8_traditional_form(laws, tmp_path):
    from opencc import OpenCC  # dev dependency: Simplified -> Traditional (Taiwan standard, as Big5 holds it)

    traditional = {name: OpenCC("s2tw").convert(text) for name, text in laws.items()}
    expected, _ = build([write_laws(tmp_path / "utf8", traditional, "utf-8")])
    docs, report = build([write_laws(tmp_path / "big5", traditional, "big5")])
    assert docs == expected and len(docs) == 6
    assert encodings(report) == {("big5", "detected")} and report.totals()["skipped"] == {}
    assert "憲法" in expected[0]["title"] + expected[1]["title"]  # really the traditional text


@pytest.fixture(scope="module")
def cp1252_shard(tmp_path_factory) -> tuple[Path, Path]:
    """The shard with every character cp1252 lacks replaced by "?", as UTF-8 and as cp1252."""
    text = WIKI_SHARD.read_text(encoding="utf-8").encode("cp1252", errors="replace").decode("cp1252")
    root = tmp_path_factory.mktemp("cp1252")
    (root / "utf8").mkdir()
    (root / "cp1252").mkdir()
    (root / "utf8" / WIKI_SHARD.name).write_text(text, encoding="utf-8")
    (root / "cp1252" / WIKI_SHARD.name).write_bytes(text.encode("cp1252"))
    return root / "utf8" / WIKI_SHARD.name, root / "cp1252" / WIKI_SHARD.name


def test_a_cp1252_wikipedia_shard_reads_as_its_utf8_original(cp1252_shard):
    original, encoded = cp1252_shard
    expected, _ = build([original])
    docs, report = build([encoded])
    assert docs == expected and len(docs) > 300
    assert encodings(report) == {("cp1252", "detected")}
    assert report.to_dict()["files"][0]["format"] == "wikiextractor" and report.totals()["skipped"] == {}


def test_a_utf16_wikipedia_shard_with_bom_reads_as_its_utf8_original(tmp_path):
    expected, _ = build([WIKI_SHARD])
    path = tmp_path / WIKI_SHARD.name
    path.write_bytes(WIKI_SHARD.read_text(encoding="utf-8").encode("utf-16"))  # with a byte-order mark
    docs, report = build([path])
    assert docs == expected
    assert encodings(report) == {("utf-16", "bom")} and report.to_dict()["files"][0]["format"] == "wikiextractor"


def test_utf8_with_a_bom_and_utf32_read_as_utf8(tmp_path):
    expected, _ = build([WIKI_SHARD], max_documents=40)
    text = WIKI_SHARD.read_text(encoding="utf-8")
    (tmp_path / "sig").write_bytes(text.encode("utf-8-sig"))
    (tmp_path / "u32").write_bytes(text.encode("utf-32"))
    for name, source in (("sig", ("utf-8-sig", "bom")), ("u32", ("utf-32", "bom"))):
        docs, report = build([tmp_path / name], max_documents=40)
        assert docs == expected and encodings(report) == {source}, name


def test_stray_lines_in_a_utf8_file_are_skipped_a_latin1_file_is_read(tmp_path):
    """Auto detection needs most of a file's non-ASCII lines to fail UTF-8: one Latin-1 line in a UTF-8 shard
    is dropped and counted, while an English file whose accented lines are all Latin-1 is read whole."""
    latin1 = "Un paragraphe en Latin-1 : café crème à la française, très bien écrit."
    lines = WIKI_SHARD.read_bytes().split(b"\n")
    lines.insert(5, latin1.encode("latin-1"))
    (tmp_path / "mixed").write_bytes(b"\n".join(lines))
    _, report = build([tmp_path / "mixed"])
    assert encodings(report) == {("utf-8", "default")}
    entry = report.totals()["skipped"]["invalid_utf8"]
    assert entry["count"] == 1 and "data.encoding" in entry["first"][0]

    paragraphs = [f"Paragraph {i} of an old English export, written before Unicode was everywhere." for i in range(8)]
    paragraphs[3] = latin1
    (tmp_path / "export.txt").write_bytes("\n".join(paragraphs).encode("latin-1") + b"\n")
    docs, report = build([tmp_path / "export.txt"], min_body_chars=100)
    assert docs[0]["paragraphs"] == paragraphs and encodings(report) == {("cp1252", "detected")}


def test_jsonl_in_gb18030(laws, tmp_path):
    records = [{"id": name, "title": name, "text": text} for name, text in laws.items()]
    path = tmp_path / "laws.jsonl"
    path.write_bytes("\n".join(json.dumps(r, ensure_ascii=False) for r in records).encode("gb18030") + b"\n")
    expected = list(read_jsonl(_utf8_copy(path, tmp_path), 6))
    docs = list(read_jsonl(path, 6))
    assert docs == expected and [d["id"] for d in docs] == list(laws)


def _utf8_copy(path: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "utf8.jsonl"
    copy.write_text(path.read_bytes().decode("gb18030"), encoding="utf-8")
    return copy


def test_a_wrong_codec_skips_and_counts_and_the_message_names_the_option(laws, tmp_path):
    folder = write_laws(tmp_path, laws, "gb18030")
    with pytest.raises(CorpusError) as info:
        build([folder], encoding="utf-8")
    message = str(info.value)
    assert "invalid_utf8" in message and "data.encoding" in message and "\n" not in message
    # A UTF-16 file named as GB18030 decodes to nothing usable either; its lines are counted, not fatal.
    (tmp_path / "utf16.txt").write_bytes("\n".join(laws.values()).encode("utf-16"))
    report = CorpusReport()
    with pytest.raises(CorpusError):
        build_documents([str(tmp_path / "utf16.txt")], encoding="big5", report=report)
    assert report.totals()["skipped"]


def test_the_option_is_checked_at_load_and_fingerprinted_only_when_named(tmp_path):
    assert read_config(None, ["data.encoding=GB18030"]).data.encoding == "GB18030"
    for bad in ("klingon", "base64"):
        with pytest.raises(ConfigError) as info:
            read_config(None, [f"data.encoding={bad}"])
        assert str(info.value).startswith("data.encoding: expected 'auto' or a Python text codec name")
    path = tmp_path / "a.txt"
    path.write_text("Some plain text that is long enough to be a paragraph of its own.\n")
    auto = corpus_fingerprint([str(path)])
    assert corpus_fingerprint([str(path)], encoding="auto") == auto != corpus_fingerprint([str(path)], encoding="cp1252")


def test_the_report_with_encodings_survives_the_cache(laws, tmp_path):
    folder = write_laws(tmp_path / "corpus", laws, "gb18030")
    _, first = load_documents_with_report([str(folder)], cache_dir=tmp_path / "cache")
    _, again = load_documents_with_report([str(folder)], cache_dir=tmp_path / "cache")
    assert again.to_dict() == first.to_dict() and first.to_dict()["encodings"] == {"gb18030 (detected)": 6}
